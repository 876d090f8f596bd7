"""``conformance.check``: a module you wrote, checked against the float64 reference of an attn_core spec.

::

    report = conformance.check(my_se, SEConfig(64, rd_divisor=None, bias=False),
                               param_map={"fc1.weight": ("fc.0.weight", "conv1x1_to_linear"),
                                          "fc2.weight": ("fc.2.weight", "conv1x1_to_linear")})
    print(report)            # one row per case x dtype x mode; for a failure, what differs, by how much, where first
    assert report.passed

The module is wrapped by its framework's runner (:meth:`conformance.runners.Runner.wrap`: the parameter map says
where each canonical parameter lives and how its layout converts), loaded with the same seeded canonical weights
as the suite would use, run forward and backward on the cases of :func:`conformance.cases.cases_for` (the spec's
channel count with non-square odd sizes, batch 1, 1 x 1, and training mode when the module has BatchNorm), and
every output, input gradient and parameter gradient is compared with the reference by
:func:`conformance.suite.run_case`, the very path the suite's own rows take.

Where a row fails, the report says where the first difference appears (:class:`Diagnosis`), in the spirit of
PaDiff's layer-by-layer mode but against the reference rather than against another framework: the outputs of the
submodules named in ``taps`` are captured in one more eager forward pass (torch forward hooks, Paddle forward
post-hooks, Flax ``nn.intercept_methods``) and compared, in data-flow order, with the reference's named
intermediates (:data:`TAP_MEANINGS`); then the output, the running statistics (when the suite reports them), the
input gradient and the parameter gradients. The first stage outside tolerance is the diagnosis.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from attn_core import AttentionConfig, create_config
from attn_core.autodiff import Node
from attn_core.layout import NHWC_TO_NCHW

from .cases import Case, cases_for, registry_name
from .precision import is_low_precision
from .runners import Handle, framework_of, get_runner
from .runners.handle import ParamMap
from .suite import CaseReference, Comparison, Report, Row, compare, reference_for, run_case
from .tolerances import TOLERANCES, tolerance_for

__all__ = ["check", "CheckReport", "Diagnosis", "spec_for", "infer_framework", "default_taps", "reference_taps",
           "TAP_MEANINGS", "TAP_STAGES"]

#: What each reference tap holds (NCHW shapes). A submodule mapped to a gate tap may return the gate itself or the
#: input multiplied by it: the comparison goes by shape (see :func:`check`).
TAP_MEANINGS: Mapping[str, str] = MappingProxyType({
    "gate": "the gate the module multiplies its input by: (N, C, 1, 1) for SE, ECA and channel attention, "
            "(N, 1, H, W) for spatial attention, (N, C, H, W) for SimAM; a submodule returning x * gate (the "
            "module's output) is compared with the output",
    "channel_gate": "CBAM: the channel attention map gate(mlp(mean_hw x) + mlp(max_hw x)), (N, C, 1, 1) "
                    "(LightCbamModule: sigmoid(mlp(0.5 mean_hw x + 0.5 max_hw x))); a submodule returning x * map "
                    "is compared with 'channel_out'",
    "channel_out": "CBAM, LightCbamModule: x * channel_gate, the input of the spatial attention, (N, C, H, W)",
    "spatial_gate": "CBAM: the spatial attention map gate(conv(cat(mean_c, max_c))) of channel_out, (N, 1, H, W) "
                    "(LightCbamModule: sigmoid(bn(conv(0.5 mean_c + 0.5 max_c)))); a submodule returning "
                    "channel_out * map is compared with the output",
    "gate_h": "CoordAttn, EfficientLocalAttn: the height gate, a function of the strip pooled over W, (N, C, H, 1)",
    "gate_w": "CoordAttn, EfficientLocalAttn: the width gate, a function of the strip pooled over H, (N, C, 1, W)",
    "paths": "SelectiveKernel: the paths act(BN(conv_i(x_i))) stacked on axis 1, (N, P, C_out, H', W')",
    "path_attn": "SelectiveKernel: the softmax over the paths, (N, P, C_out, 1, 1) (timm's `attn` returns it)",
    "radix_splits": "SplitAttn: act(norm(conv(x))), the radix splits one after the other, (N, radix * C_out, H', W')",
    "radix_attn": "SplitAttn: RadixSoftmax's output, split-major like radix_splits, (N, radix * C_out, 1, 1) (timm's "
                  "`rsoftmax` returns it as (N, radix * C_out))",
    "nl_attention": "NonLocalAttn: the softmax over the positions, (N, H*W, H*W), row i the weights of position i",
    "nl_context": "NonLocalAttn: the attention-weighted g embedding, the input of z, (N, rd, H, W)",
    "bat_p": "BatNonLocalAttn: the row transform P of each group, rows summing to 1, (N, G, b, b)",
    "bat_q": "BatNonLocalAttn: the column transform Q of each group, columns summing to 1, (N, G, b, b)",
    "bat_transform": "BatNonLocalAttn: the bilinear transform's output cna(P u Q), (N, rd, H, W) (submodule 'ba')",
    "bat_branch": "BatNonLocalAttn: conv2's output before the dropout and the residual, (N, C, H, W)",
    "gather": "GatherExcite: the gathered map before the MLP, (N, C, 1, 1) for the global extent, (N, C, ceil(H / e), "
              "ceil(W / e)) for extent e",
    "context": "GlobalContext: the softmax-pooled (or mean) context, (N, C, 1, 1)",
    "add_term": "GlobalContext with fuse_add: mlp_add(context), added to the (scaled) input, (N, C, 1, 1)",
    "gate_cw": "TripletAttention: ChannelGateH's gate sigmoid(bn(conv(cat(max, mean)))) of x.permute(0, 2, 1, 3), "
               "pooled over H, (N, 1, C, W) (the submodule returns it; the authors' returns the rotated product)",
    "gate_hc": "TripletAttention: ChannelGateW's gate of x.permute(0, 3, 2, 1), pooled over W, (N, 1, H, C)",
    "gate_hw": "TripletAttention: SpatialGate's gate of x, pooled over C, (N, 1, H, W)",
    "bam_channel": "BAM: the channel branch M_c, the last Linear's output before the sigmoid, (N, C, 1, 1)",
    "bam_spatial": "BAM: the spatial branch M_s, the last 1x1 convolution's output, (N, 1, H, W)",
    "bam_gate": "BAM: 1 + sigmoid(M_c * M_s) (combine='product') or 1 + sigmoid(M_c + M_s) ('sum'), the factor "
                "of the input, (N, C, H, W)",
    "psa_channel_weights": "PSA: the channel branch's softmax over the H*W positions of conv_q_right(x), (N, 1, H*W)",
    "psa_channel_logits": "PSA: the channel branch's input of the sigmoid, conv_up's output (then the paper's "
                          "LayerNorm over C), (N, C, 1, 1)",
    "psa_spatial_logits": "PSA: the spatial branch's input of the sigmoid, softmax_c(q) @ v (the paper), "
                          "softmax_hw(q @ v) (PSA_p) or q @ softmax_hw(v) (PSA_s), (N, 1, H*W)",
    "gam_channel_gate": "GAM: sigmoid of the channel MLP applied at every position, (N, C, H, W)",
    "gam_spatial_gate": "GAM: sigmoid of gam_spatial_logits (channel-shuffled with shuffle_groups > 1), the factor "
                        "of x * gam_channel_gate, (N, C, H, W)",
    "psa_channel_gate": "PSA: sigmoid of psa_channel_logits, the factor of x, (N, C, 1, 1)",
    "psa_spatial_gate": "PSA: sigmoid of psa_spatial_logits as a map, the factor of x (parallel) or of x times "
                        "psa_channel_gate (sequential), (N, 1, H, W)",
    "gam_spatial_logits": "GAM: BN(conv(ReLU(BN(conv(x * channel gate))))), the spatial sub-module's output before "
                          "the channel shuffle (shuffle_groups > 1) and the sigmoid, (N, C, H, W)",
    "style": "SRM: the style pooling [mean_hw x, sqrt(var_hw x + eps)] of each channel, (N, C, 2)",
    "embedding": "GCT: alpha times each channel's norm over H, W, sqrt(sum_hw x^2 + eps) (l2) or sum_hw |x| (l1), "
                 "(N, C, 1, 1)",
    "sa_channel_gate": "ShuffleAttention: the channel branch's gate sigmoid(cweight * mean_hw x0 + cbias) of the first "
                       "half x0 of every group, groups one after the other, (N, C / 2, 1, 1)",
    "sa_spatial_gate": "ShuffleAttention: the spatial branch's gate sigmoid(sweight * GN(x1) + sbias) of the second "
                       "half x1 of every group, groups one after the other, (N, C / 2, H, W)",
    "sa_unshuffled": "ShuffleAttention: each group's two gated halves side by side, before the channel shuffle, "
                     "(N, C, H, W)",
})
#: how a tap is named in a diagnosis
TAP_STAGES: Mapping[str, str] = MappingProxyType({
    "gate": "gate", "channel_gate": "channel map", "channel_out": "channel output", "spatial_gate": "spatial map",
    "gate_h": "height gate", "gate_w": "width gate",
    "style": "style pooling", "embedding": "embedding", "psa_channel_weights": "PSA channel softmax",
    "psa_channel_logits": "PSA channel logits", "psa_spatial_logits": "PSA spatial logits",
    "gam_channel_gate": "GAM channel gate", "gam_spatial_logits": "GAM spatial logits",
    "gam_spatial_gate": "GAM spatial gate", "psa_channel_gate": "PSA channel gate",
    "psa_spatial_gate": "PSA spatial gate",
    "sa_channel_gate": "channel-branch gate",
    "sa_spatial_gate": "spatial-branch gate", "sa_unshuffled": "output before the shuffle",
    "paths": "paths", "path_attn": "path softmax", "radix_splits": "radix splits", "radix_attn": "radix softmax",
    "nl_attention": "non-local attention", "nl_context": "non-local context", "bat_p": "BAT row transform",
    "bat_q": "BAT column transform", "bat_transform": "bilinear transform", "bat_branch": "BAT branch",
    "gather": "gathered map", "context": "context", "add_term": "added term",
    "gate_cw": "C-W gate", "gate_hc": "H-C gate", "gate_hw": "H-W gate", "bam_channel": "BAM channel branch",
    "bam_spatial": "BAM spatial branch", "bam_gate": "BAM gate"})
#: gate tap -> the tensor it produces by multiplying its input ('output': the module's output)
_GATED: Mapping[str, str] = MappingProxyType({"gate": "output", "channel_gate": "channel_out",
                                              "spatial_gate": "output"})


# ------------------------------------------------------------------------------------------- helpers
def spec_for(name: str, channels: int | None = None, **options: Any) -> AttentionConfig:
    """The attn_core config of registry name ``name`` (``'se'``, ``'eca'``, ``'ca'``, ``'sa'``, ``'cbam'``,
    ``'simam'``) for ``channels``: ``spec_for('se', 64, rd_divisor=None, bias=False)``."""
    return create_config(name, channels, **options)


def runner_for(module: Any, framework: str | None, caller: str) -> tuple[str, Any]:
    """``(framework, runner)`` of a user's module (``framework`` names it, or it is inferred); ``ImportError``
    naming ``conformance.<caller>`` when that framework is not installed."""
    framework = framework or infer_framework(module)
    runner = get_runner(framework)
    ok, why = runner.available()
    if not ok:
        raise ImportError(f"conformance.{caller}: {why}")
    return framework, runner


def infer_framework(module: Any) -> str:
    """'torch', 'paddle' or 'flax' from the module's type, looking only at frameworks already imported (a module of
    a framework is an instance of its class, so its framework is in ``sys.modules``)."""
    framework = framework_of(module)
    if framework is None:
        raise TypeError(f"cannot tell the framework of a {type(module).__module__}.{type(module).__name__}: expected "
                        f"a torch.nn.Module, a paddle.nn.Layer or a flax.linen.Module (or pass framework=...)")
    return framework


def default_taps(module: Any, framework: str) -> dict[str, str]:
    """Taps for the project's own modules: its CBAM's ``channel`` submodule returns ``x * channel map`` and its
    ``spatial`` submodule the output, so the channel and the spatial map can be told apart. The other project
    modules compute their gate inline (no submodule returns it): no taps."""
    backend = sys.modules.get(get_runner(framework).backend_package)
    cbam = getattr(backend, "CBAM", None)
    if isinstance(cbam, type) and isinstance(module, cbam):
        return {"channel_gate": "channel", "spatial_gate": "spatial"}
    return {}


def reference_taps(config: AttentionConfig, weights: Mapping[str, np.ndarray], x: np.ndarray,
                   training: bool = False) -> dict[str, np.ndarray]:
    """The reference's named intermediates in data-flow order, then ``'output'``, as float64 NCHW arrays."""
    params = {k: Node(np.asarray(v, dtype=np.float64)) for k, v in weights.items()}
    taps: dict[str, Node] = {}
    y = config.reference_forward(Node(np.asarray(x, dtype=np.float64)), params, training=training, taps=taps)
    out = {k: v.value for k, v in taps.items()}
    out["output"] = y.value
    return out


# ------------------------------------------------------------------------------------------- report
@dataclass
class Diagnosis:
    """Where a failing row first differs from the reference.

    ``stage`` is the tap's name in words ('channel map', 'spatial map', 'gate', ...), 'output', 'running
    statistics', 'input gradient', 'parameter gradient', or 'error' (the module raised); ``quantity`` the compared
    quantity (``'tap:channel_gate'``, ``'output'``, ``'state:bn.running_var'``, ``'grad:input'``,
    ``'grad:fc1.weight'``); ``comparison`` its numbers. ``taps`` holds every tap's comparison in data-flow order
    (quantity ``'tap:<reference name>'``, ``detail`` says which submodule and how it was compared);
    ``tap_problems`` the taps that could not be compared and why. ``forward_equal`` is True when the output (and
    every tap) is within tolerance.
    """

    case: str
    dtype: str
    mode: str
    stage: str
    quantity: str
    comparison: Comparison | None
    forward_equal: bool
    text: str
    taps: list[Comparison] = field(default_factory=list)
    tap_problems: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    """The verdict of :func:`check`: one :class:`~conformance.suite.Row` per case x dtype x mode (in ``report``),
    and a :class:`Diagnosis` per failing row.

    ``str(report)`` (or :meth:`table`) prints a table and, for each failing row, every quantity outside tolerance
    (max abs, max rel, times the tolerance, worst index) and the first difference; :meth:`to_dict` /
    :meth:`to_json` give the same as data.
    """

    module: str
    framework: str
    spec: AttentionConfig
    layout: str
    bindings: list[tuple[str, str, str]]
    taps: dict[str, str]
    cases: tuple[Case, ...]
    report: Report
    diagnoses: list[Diagnosis] = field(default_factory=list)

    @property
    def rows(self) -> list[Row]:
        return self.report.rows

    @property
    def passed(self) -> bool:
        """True when at least one row passed and none failed, errored or was skipped ('n/a' rows, dtypes the
        framework cannot run, are neither)."""
        return bool(self.report.passed) and all(r.status in ("pass", "n/a") for r in self.rows)

    @property
    def failed(self) -> list[Row]:
        return self.report.failed

    @property
    def first_difference(self) -> Diagnosis | None:
        """The diagnosis of the first failing row, or None when every row passed."""
        return self.diagnoses[0] if self.diagnoses else None

    def diagnosis(self, case: str, dtype: str = "float32", mode: str | None = None) -> Diagnosis | None:
        """The diagnosis of one failing row (``case`` as in the table: 'n2-7x5'), or None where it passed."""
        return next((d for d in self.diagnoses if d.case == case and d.dtype == dtype
                     and (mode is None or d.mode == mode)), None)

    def failing_quantities(self, case: str | None = None) -> set[str]:
        """Every quantity outside tolerance, over all rows or one case's: {'output', 'grad:fc1.weight', ...}."""
        return {c.quantity for r in self.rows if case is None or r.case == case for c in r.comparisons
                if not c.passed}

    def __str__(self) -> str:
        return self.table()

    def table(self) -> str:
        shapes = {c.case_id: c for c in self.cases}
        head = ("case", "input (NCHW)", "phase", "dtype", "mode", "worst", "max_abs", "max_rel", "x tol", "result")
        body = []
        for r in self.rows:
            case, w = shapes.get(r.case), r.worst
            body.append((r.case, str(case.shape) if case else "?", "train" if case and case.training else "eval",
                         r.dtype, r.mode, w.quantity if w else "-",
                         f"{r.max_abs:.2e}" if r.comparisons else "-", f"{r.max_rel:.2e}" if r.comparisons else "-",
                         f"{w.worst_ratio:.3g}" if w else "-", r.status.upper()))
        widths = [max(len(str(v)) for v in col) for col in zip(head, *body, strict=True)]
        lines = [f"conformance.check: {self.module} against {self.spec!r}",
                 "parameters: " + (", ".join(f"{c} -> {n} ({t})" for c, n, t in self.bindings) or "none"),
                 "taps: " + (", ".join(f"{k} <- {v!r}" for k, v in self.taps.items()) or "none"), ""]
        table = ["  ".join(str(v).ljust(n) for v, n in zip(line, widths, strict=True)).rstrip()
                 for line in [head, *body]]
        table.insert(1, "  ".join("-" * n for n in widths))
        lines += table
        for r in self.rows:
            if not r.failed:
                continue
            lines += ["", Report([r]).failure_details()]
            d = self.diagnosis(r.case, r.dtype, r.mode)
            if d is not None:
                lines.append(f"    first difference: {d.text}")
                lines += [f"    tap not compared: {p}" for p in d.tap_problems]
        lines += ["", ("PASS" if self.passed else "FAIL") + ": " + self.report.summary()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "module": self.module,
            "framework": self.framework,
            "spec": {"name": registry_name(self.spec), "repr": repr(self.spec),
                     "fields": {f.name: getattr(self.spec, f.name) for f in dataclasses.fields(self.spec) if f.init}},
            "layout": self.layout,
            "parameters": [{"canonical": c, "native": n, "transform": t} for c, n, t in self.bindings],
            "taps": dict(self.taps),
            "cases": [{"case": c.case_id, "shape": list(c.shape), "training": c.training, "note": c.note}
                      for c in self.cases],
            "report": self.report.to_dict(),
            "diagnoses": [json_clean(asdict(d)) for d in self.diagnoses],
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


def json_clean(value: Any) -> Any:
    """Non-finite floats -> None, recursively (JSON has no inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_clean(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------- check
def check(module: Any, spec: AttentionConfig, framework: str | None = None, param_map: ParamMap | None = None, *,
          variables: Any = None, layout: str | None = None, dtypes: Sequence[str] = ("float32",),
          modes: Sequence[str] = ("eager",), taps: Mapping[str, str] | None = None) -> CheckReport:
    """Check ``module`` (yours, of any of the three frameworks) against the float64 reference of ``spec``.

    Args:
        module: a ``torch.nn.Module``, ``paddle.nn.Layer`` or ``flax.linen.Module`` that should compute what
            ``spec`` specifies. It is never modified (the runner loads weights into a copy).
        spec: an attn_core config, e.g. ``SEConfig(64, rd_divisor=None, bias=False)``, or
            ``spec_for('cbam', 32, **CBAM_PRESETS['article'])``.
        framework: 'torch', 'paddle' or 'flax'; inferred from the module's type when None.
        param_map: canonical parameter name -> where the module holds it: ``'native.name'`` (the framework's
            default layout for its role) or ``('native.name', transform)`` with a named transform of
            ``attn_core.layout.LAYOUT_TRANSFORMS`` or a pair of NumPy functions ``(to_native, from_native)``; see
            :meth:`conformance.runners.Runner.wrap`. Parameters at their default place need no entry; a map that
            does not fit the module raises one :class:`~conformance.runners.ParamMapError` listing every problem,
            before anything runs.
        variables: Flax only, what ``module.init`` returns (the template of names and shapes); when None the
            module is initialised on zeros of the first case's shape.
        layout: 'NCHW' or 'NHWC', the layout the module takes (default: NCHW in torch and Paddle, NHWC in Flax).
        dtypes: dtypes to run in ('float32', 'float64', 'float16', 'bfloat16'), each with its tolerance from
            ``conformance.tolerances``.
        modes: 'eager' and/or 'compiled' (torch.compile, paddle.jit.to_static, jax.jit), or 'default', the path
            the framework's users get without asking (the runner's ``default_mode``: eager in torch and Paddle,
            jax.jit in Flax).
        taps: reference tap name -> the name of the submodule whose output holds it (torch ``named_modules``,
            Paddle ``named_sublayers``, Flax module path, '/' or '.' separated), used to say where a failing row
            first differs. The reference taps are 'gate' (SE, ECA, ChannelAttention, SpatialAttention, SimAM) and
            'channel_gate', 'channel_out', 'spatial_gate' (CBAM); :data:`TAP_MEANINGS` says what each holds. The
            comparison goes by shape: a submodule may return the map itself (any shape holding the same values
            once size-1 axes are dropped, e.g. an SE's ``(N, C)``; a 4-D NHWC map is transposed first) or the
            input multiplied by the map (then it is compared with the product: 'channel_out' for the channel map,
            the output for the last gate). None: :func:`default_taps` (the project's CBAM); ``{}``: none.

    Returns:
        A :class:`CheckReport`; ``report.passed`` is the verdict, ``print(report)`` the table.

    Raises:
        TypeError: ``spec`` is not an attn_core config, or the framework cannot be told.
        ValueError: an unknown dtype, mode, layout, reference tap or submodule name.
        ParamMapError: the parameter map does not fit the module (a ``WeightLoadError``).
    """
    if not isinstance(spec, AttentionConfig):
        hint = " (for a registry name use conformance.spec_for(name, channels, **options))" \
            if isinstance(spec, str) else ""
        raise TypeError(f"spec must be an attn_core config such as SEConfig(64), got {type(spec).__name__}{hint}")
    framework, runner = runner_for(module, framework, "check")
    for d in dtypes:
        if d not in TOLERANCES:
            raise ValueError(f"unknown dtype {d!r}; known: {', '.join(TOLERANCES)}")
    modes = list(dict.fromkeys(runner.default_mode if m == "default" else m for m in modes))
    for m in modes:
        if m not in runner.modes:
            raise ValueError(f"unknown mode {m!r} for {framework}; known: {', '.join(runner.modes)}, default")
    cases = cases_for(spec)
    if variables is None:
        variables = runner.init_variables(module, cases[0].shape, layout or runner.default_layout)
    handle = runner.wrap(module, spec, param_map, variables, layout=layout)
    taps = dict(default_taps(module, framework) if taps is None else taps)
    _check_taps(taps, spec, cases[0], handle)

    rows: list[Row] = []
    diagnoses: list[Diagnosis] = []
    for case in cases:
        references: dict[str, CaseReference] = {}
        for dtype in dtypes:
            key = dtype if is_low_precision(dtype) else "float64"
            if key not in references:
                references[key] = reference_for(case, True, key)
            for mode in modes:
                row = run_case(case, handle, dtype, True, references[key], mode)
                rows.append(row)
                if row.failed:
                    diagnoses.append(_diagnose(row, case, handle, taps, references[key], dtype))
    bindings = [(b.spec.name, b.native, b.transform) for b in handle.bindings]
    return CheckReport(handle.label, framework, spec, handle.layout, bindings, taps, cases, Report(rows), diagnoses)


def _check_taps(taps: Mapping[str, str], spec: AttentionConfig, case: Case, handle: Handle) -> None:
    """Unknown reference taps, and (torch, Paddle) submodule names the module does not have, are ValueErrors."""
    weights, x, _ = case.data(spec)
    known = [k for k in reference_taps(spec, weights, x, case.training) if k != "output"]
    unknown = [k for k in taps if k not in known]
    if unknown:
        raise ValueError(f"unknown reference tap(s) {', '.join(map(repr, unknown))} for {spec.module_name}; "
                         f"known: {', '.join(known)} ({'; '.join(f'{k}: {TAP_MEANINGS[k]}' for k in known)})")
    bad = [v for v in taps.values() if not isinstance(v, str)]
    if bad:
        raise ValueError(f"taps map reference names to submodule names (strings), got {bad!r}")
    subs = handle.runner.submodules(handle.module)
    if subs is not None:
        missing = [v for v in taps.values() if v not in subs]
        if missing:
            shown = ", ".join(repr(s) for s in list(subs)[:20]) + (", ..." if len(subs) > 20 else "")
            raise ValueError(f"{handle.label} has no submodule {', '.join(map(repr, missing))}; it has: {shown}")


# ------------------------------------------------------------------------------------------- taps
def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(s for s in shape if s != 1)


def _compare_tap(name: str, sub: str, got: np.ndarray, refs: Mapping[str, np.ndarray], layout: str,
                 dtype: str) -> Comparison | str:
    """The tap's comparison by shape (the map, or the input times the map), or why it cannot be compared."""
    if layout == "NHWC" and got.ndim == 4:
        got = np.transpose(got, NHWC_TO_NCHW)
    candidates = [("the map" if name in _GATED else "the tensor", name)]
    if name in _GATED:
        candidates.append((f"x * map, i.e. '{_GATED[name]}'", _GATED[name]))
    tol = tolerance_for(dtype)
    found = []
    for how, target in candidates:
        ref = refs[target]
        if got.shape == ref.shape:
            found.append((f"{how} {ref.shape}", got, ref))
        elif got.size == ref.size and _squeezed(got.shape) == _squeezed(ref.shape):
            found.append((f"{how} {ref.shape}, reshaped from {got.shape}", got.reshape(ref.shape), ref))
    if not found:
        fits = " nor ".join(f"{how.split(',')[0]} {refs[t].shape}" for how, t in candidates)
        return f"{name} <- {sub!r}: its output's shape {got.shape} (NCHW) fits neither {fits}"
    compared = []
    for how, g, ref in found:
        c = compare(f"tap:{name}", g, ref, tol)
        c.detail = f"from submodule {sub!r}, compared as {how}" + (f"; {c.detail}" if c.detail else "")
        compared.append(c)
    return min(compared, key=lambda c: c.worst_ratio)  # of equally close fits, the first candidate


def _stage(quantity: str) -> str:
    if quantity.startswith("tap:"):
        return TAP_STAGES.get(quantity[4:], quantity[4:])
    if quantity == "output":
        return "output"
    if quantity.startswith("state:"):
        return "running statistics"
    if quantity == "grad:input":
        return "input gradient"
    return "parameter gradient"


def comparison_numbers(c: Comparison) -> str:
    return (f"max_abs {c.max_abs:.3e}, max_rel {c.max_rel:.3e}, {c.worst_ratio:.3g}x tolerance"
            + (f"; {c.detail}" if c.detail else ""))


def _diagnose(row: Row, case: Case, handle: Handle, taps: Mapping[str, str], reference: CaseReference,
              dtype: str) -> Diagnosis:
    if row.status == "error":
        raised = row.message.splitlines()[0] if row.message else "the module raised"
        return Diagnosis(row.case, row.dtype, row.mode, "error", "", None, False, f"the module raised: {raised}")
    weights, x = reference[0], reference[1]
    tap_cmps: list[Comparison] = []
    problems: list[str] = []
    if taps:
        refs = reference_taps(handle.config, weights, x, case.training)
        try:
            records = handle.runner.capture(handle, list(dict.fromkeys(taps.values())), weights, x, dtype,
                                                case.training)
        except Exception as err:  # noqa: BLE001 - the user's module failing here is reported, not raised
            records, problems = {}, [f"taps not captured: {type(err).__name__}: {err}"]
        for name in refs:  # data-flow order of the reference
            if name not in taps or taps[name] not in records:
                continue
            sub, got = taps[name], records[taps[name]]
            if got and isinstance(got[0], str):
                problems.append(f"{name}: {got[0]}")
            elif not got or got[-1] is None:
                problems.append(f"{name} <- {sub!r}: " + ("never called" if not got else "did not return one array"))
            else:
                result = _compare_tap(name, sub, got[-1], refs, handle.layout, dtype)
                if isinstance(result, str):
                    problems.append(result)
                else:
                    if len(got) > 1:
                        result.detail += f" (called {len(got)} times: the last call compared)"
                    tap_cmps.append(result)
    by_kind: dict[str, list[Comparison]] = {"output": [], "state": [], "input": [], "param": []}
    for c in row.comparisons:
        kind = ("output" if c.quantity == "output" else "state" if c.quantity.startswith("state:")
                else "input" if c.quantity == "grad:input" else "param")
        by_kind[kind].append(c)
    stages = tap_cmps + by_kind["output"] + by_kind["state"] + by_kind["input"] + by_kind["param"]
    first = next((c for c in stages if not c.passed), None)
    forward_equal = all(c.passed for c in tap_cmps + by_kind["output"])
    eager_note = "" if row.mode == "eager" or not tap_cmps else " (taps captured in an eager run)"
    if first is None:  # a row failed without a failing comparison (e.g. gradients of unknown parameters)
        return Diagnosis(row.case, row.dtype, row.mode, "other", "", None, forward_equal,
                         row.message or "no comparison failed", tap_cmps, problems)
    stage = _stage(first.quantity)
    agree = [TAP_STAGES.get(c.quantity[4:], c.quantity) for c in tap_cmps if c.passed]
    if first.quantity.startswith("tap:"):
        text = f"{stage} (tap {first.quantity[4:]!r}, {comparison_numbers(first)})"
        if agree:
            text += f"; before it, the {' and the '.join(agree)} {'agrees' if len(agree) == 1 else 'agree'}"
        text += eager_note
    elif first.quantity == "output":
        text = f"output ({comparison_numbers(first)})"
        if tap_cmps:
            text += f"; every tap before it agrees ({', '.join(agree)}){eager_note}"
        else:
            text += ("; no taps given: map the submodules that compute " +
                     " / ".join(k for k in reference_taps(handle.config, weights, x, case.training) if k != "output")
                     + " with taps={...} to see whether the difference is already there")
    elif first.quantity.startswith("state:"):
        text = (f"the forward output is equal; the running statistics differ after the training step: "
                f"{first.quantity} ({comparison_numbers(first)})")
    elif first.quantity == "grad:input":
        params_equal = all(c.passed for c in by_kind["param"])
        text = (f"the forward pass is equal (output{' and taps' if tap_cmps else ''}); the first difference is in "
                f"the input gradient{' only (every parameter gradient agrees)' if params_equal else ''}: "
                f"grad:input ({comparison_numbers(first)})")
    else:
        text = (f"the forward pass and the input gradient are equal; the first difference is in a parameter "
                f"gradient: {first.quantity} ({comparison_numbers(first)})")
    return Diagnosis(row.case, row.dtype, row.mode, stage, first.quantity, first, forward_equal, text, tap_cmps,
                     problems)
