"""What every module spec shares: parameter tables, validation of configs, inputs and weights, the errors raised.

Canonical weights are a flat ``dict`` of dotted names to NumPy arrays in torch's layout (convolutions OIHW or
OIK, BatchNorm state as ``running_mean`` / ``running_var``). Backends convert at their edge and call the
validators here, so that every framework accepts and rejects exactly the same things with the same message.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from . import ops
from .autodiff import Node, backward
from .precision import FLOAT_DTYPES, accepted_input_dtypes, dtype_mismatch_message, listing

__all__ = [
    "ConfigError", "InputShapeError", "InputDtypeError", "WeightLoadError",
    "ParamSpec", "AttentionConfig", "ReducedWidthConfig", "make_divisible", "reduced_channels", "prefixed", "subtree",
    "check_positive_int", "check_positive_real", "check_choice", "check_batch_norm_fields", "check_batch_norm_input",
    "check_batch_norm_after", "batch_and_map_size", "as_int", "as_real", "coerce_numbers",
]

# Roles say what a parameter is, so each backend knows where it lives natively and how its layout differs.
# "param": a tensor the module holds itself, outside any layer (GCT's alpha, SRM's cfc): the same layout everywhere,
# and in Flax the canonical leaf name (the other roles' Flax leaves are the layer's: kernel, scale, ...).
ROLES = ("conv_weight", "conv_bias", "linear_weight", "linear_bias", "bn_weight", "bn_bias", "bn_mean", "bn_var",
         "param")
STATE_ROLES = frozenset({"bn_mean", "bn_var"})


class ConfigError(ValueError):
    """Impossible or inconsistent hyperparameters."""


class InputShapeError(ValueError):
    """An input of the wrong rank or channel count."""


class InputDtypeError(TypeError):
    """An input whose dtype the module does not take: not floating-point, or a floating dtype other than its
    parameters' (the policy of :mod:`attn_core.precision`)."""


class WeightLoadError(ValueError):
    """Canonical weights that do not fit a module: lists every missing, unexpected and mis-shaped entry."""

    def __init__(self, module: str, missing: Sequence[str], unexpected: Sequence[str],
                 mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]], bad_dtype: Sequence[str] = ()):
        self.module = module
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)
        self.bad_dtype = list(bad_dtype)
        lines = [f"{module}: weights do not fit; nothing was loaded."]
        if self.missing:
            lines.append("  missing: " + ", ".join(self.missing))
        if self.unexpected:
            lines.append("  unexpected: " + ", ".join(self.unexpected))
        for name, want, got in self.mismatched:
            lines.append(f"  wrong shape: {name}: expected {want}, got {got}")
        if self.bad_dtype:
            lines.append("  not a real floating-point array: " + ", ".join(self.bad_dtype))
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class ParamSpec:
    """One canonical parameter: dotted name, shape in the canonical (torch) layout, and role."""

    name: str
    shape: tuple[int, ...]
    role: str

    @property
    def trainable(self) -> bool:
        return self.role not in STATE_ROLES

    @property
    def module_path(self) -> str:
        """The dotted path of the layer that owns this parameter (``channel.fc1`` for ``channel.fc1.weight``)."""
        return self.name.rpartition(".")[0]


# -------------------------------------------------------------------------------------------- hyperparameters
def as_int(value: Any) -> Any:
    """``value`` as a plain Python ``int`` if it is an integer of any kind (``int``, NumPy's ``int8`` .. ``uint64``),
    else unchanged, so that the field's validator rejects it with its own message (bools are left for it too)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        return value
    return int(value)


def as_real(value: Any) -> Any:
    """``value`` as a plain Python number if it is a real one of any kind: an integer becomes an ``int``, any other
    real (NumPy's ``float16`` .. ``float64``, ``Fraction``) a ``float``; anything else (bools included) unchanged,
    for the field's validator to reject."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return value
    return int(value) if isinstance(value, numbers.Integral) else float(value)


# field annotation (as written, under ``from __future__ import annotations``) -> its coercion
_COERCIONS = {"int": as_int, "int | None": as_int, "float": as_real, "float | None": as_real}


def coerce_numbers(config: Any) -> None:
    """Replace, in place, every ``int`` and ``float`` field of a frozen config dataclass given as a NumPy scalar (or
    another real) by the plain Python number, so that configs compare equal and serialise to JSON whichever kind of
    number built them. The one place numbers are accepted: every :class:`AttentionConfig` runs it first (see
    ``AttentionConfig.__init_subclass__``)."""
    for f in dataclasses.fields(config):
        coerce = _COERCIONS.get(f.type) if isinstance(f.type, str) else None
        if coerce is None or not f.init:
            continue
        value = getattr(config, f.name)
        plain = coerce(value)
        if plain is not value:
            object.__setattr__(config, f.name, plain)


def check_positive_int(module: str, name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{module}: {name} must be a positive integer, got {value!r}")


def is_real(value: Any) -> bool:
    """A finite real number (Python or NumPy), not a bool."""
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Real) and math.isfinite(value)


def check_positive_real(module: str, name: str, value: Any, why: str = "") -> None:
    """A positive finite real (an epsilon, a ratio); ``why``, if given, is said in parentheses after the rule."""
    if not (is_real(value) and value > 0):
        raise ConfigError(f"{module}: {name} must be a positive finite number{f' ({why})' if why else ''}, "
                          f"got {value!r}")


def check_batch_norm_fields(module: str, eps: Any, momentum: Any) -> None:
    """The BatchNorm hyperparameters every config with BatchNorm declares as ``bn_eps`` and ``bn_momentum``."""
    check_positive_real(module, "bn_eps", eps)
    if not (is_real(momentum) and 0 <= momentum <= 1):
        raise ConfigError(f"{module}: bn_momentum (torch convention: weight of the new batch) must be in [0, 1], "
                          f"got {momentum!r}")


def check_odd_kernel(module: str, name: str, value: Any, why: str) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1 or value % 2 == 0:
        raise ConfigError(f"{module}: {name} must be a positive odd integer ({why}), got {value!r}")


def check_choice(module: str, name: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{module}: {name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def batch_and_map_size(shape: Sequence[int | None], layout: str = "NCHW") -> tuple[int | None, ...] | None:
    """``(N, H, W)`` of a 4-D input in ``layout`` (NCHW or NHWC), each size unknown at trace time (``None`` or
    negative) as ``None``; ``None`` for an input of another rank, which :meth:`AttentionConfig.check_input` refuses."""
    shape_t = tuple(None if (s is None or int(s) < 0) else int(s) for s in shape)
    if len(shape_t) != 4:
        return None
    return (shape_t[0], shape_t[2], shape_t[3]) if layout == "NCHW" else shape_t[:3]


def check_batch_norm_input(module: str, shape: Sequence[int | None], layout: str = "NCHW") -> None:
    """The one rule for BatchNorm in training, in every backend and the reference: each channel needs more than
    one value (N*H*W > 1), since the unbiased variance of the running statistics divides by N*H*W - 1 (torch
    refuses such a batch, Paddle's kernel returns its input unchanged, Flax normalises it to its bias).

    ``shape`` is the BatchNorm's input (``layout`` NCHW or NHWC); sizes unknown at trace time (``None`` or
    negative) are not checked. Raises :class:`InputShapeError` naming ``module``.
    """
    sizes = batch_and_map_size(shape, layout)
    if sizes is None:
        return
    n, h, w = sizes
    if n is None or h is None or w is None or n * h * w > 1:
        return
    shape_t = tuple(None if (s is None or int(s) < 0) else int(s) for s in shape)
    raise InputShapeError(f"{module}: BatchNorm in training needs more than one value per channel, got input "
                          f"shape {_fmt_shape(shape_t)} ({layout}: N*H*W = {n * h * w})")


def check_batch_norm_after(name: str, shape: Sequence[int | None], layout: str, channels: int,
                           output_hw: Callable[[int, int], tuple[int, int]] | None = None) -> None:
    """:func:`check_batch_norm_input` for a BatchNorm inside a module, given the module's input ``shape``: it sees
    (N, ``channels``, H', W') with (H', W') = ``output_hw(H, W)`` (after a stride, a gather), or (1, 1) without
    ``output_hw`` (a pooled descriptor). ``name`` names the module and the BatchNorm in the error."""
    sizes = batch_and_map_size(shape, layout)
    if sizes is None:
        return
    n, h, w = sizes
    if output_hw is None:
        hw: tuple[int | None, int | None] = (1, 1)
    else:
        hw = (None, None) if h is None or w is None else output_hw(h, w)
    check_batch_norm_input(name, (n, channels, *hw))


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """timm's rounding of a width to a multiple of ``divisor`` (timm/layers/helpers.py)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def prefixed(prefix: str, table: Iterable[ParamSpec]) -> tuple[ParamSpec, ...]:
    """A submodule's parameter table as its parent names it: every name under ``prefix.``."""
    return tuple(ParamSpec(f"{prefix}.{p.name}", p.shape, p.role) for p in table)


def subtree(params: Mapping[str, Node], prefix: str) -> dict[str, Node]:
    """The entries of ``params`` under ``prefix.``, with the prefix removed (the inverse of :func:`prefixed`)."""
    head = prefix + "."
    return {k[len(head):]: v for k, v in params.items() if k.startswith(head)}


def reduced_channels(module: str, channels: int, rd_ratio: float, rd_channels: int | None,
                     rd_divisor: int | None, round_limit: float = 0.0, divisor_optional: bool = True) -> int:
    """The reduced width from the fields ``rd_ratio``, ``rd_channels`` and ``rd_divisor``, decided once for SE,
    CBAM's channel attention and the modules that size a bottleneck as timm does.

    ``rd_channels`` wins when given. Otherwise ``rd_divisor`` set rounds ``channels * rd_ratio`` as timm does
    (:func:`make_divisible` with ``round_limit``: 0 for the nearest multiple of the divisor, at least the divisor;
    timm's default 0.9 for its non-local blocks and ECA-MLP); ``rd_divisor=None``, where ``divisor_optional``,
    floors it exactly, which is the ``channels // reduction`` of the seed articles, and a result of 0 is an error
    rather than a silent 0.5 gate.
    """
    if rd_channels is not None:
        check_positive_int(module, "rd_channels", rd_channels)
        return int(rd_channels)
    check_positive_real(module, "rd_ratio", rd_ratio)
    check_positive_int(module, "rd_divisor", rd_divisor, allow_none=divisor_optional)
    if rd_divisor is None:
        exact = Fraction(float(rd_ratio)).limit_denominator(1 << 20)
        hidden = int(channels * exact)
        if hidden < 1:
            raise ConfigError(
                f"{module}: hidden width is 0: channels={channels} with rd_ratio={rd_ratio:g} and rd_divisor=None "
                f"gives floor({channels} * {exact}) = 0 (the seed articles' C // r); pass rd_divisor (timm rounding, "
                f"at least the divisor), a larger rd_ratio, or rd_channels")
        return hidden
    return make_divisible(channels * float(rd_ratio), int(rd_divisor), round_limit=round_limit)


# --------------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class AttentionConfig:
    """Base of every module spec: a frozen, validated dataclass.

    Subclasses set ``module_name`` (the class name that errors and every backend use), validate in
    ``__post_init__``, and implement :meth:`param_table` and :meth:`reference_forward`.
    """

    module_name: ClassVar[str] = "AttentionConfig"
    #: whether the module computes half inputs in float32 (attn_core.precision); the models compute in their dtype
    half_in_float32: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every config's own ``__post_init__`` first runs :func:`coerce_numbers`, so that each validator sees plain
        Python numbers and no config can forget to accept NumPy scalars."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is None or getattr(own, "_coerces_numbers", False):
            return

        def __post_init__(self: AttentionConfig) -> None:
            coerce_numbers(self)
            own(self)

        # typed Any: the marker attribute and the method are set at run time, where mypy's view of a function and of
        # the class cannot follow
        wrapper: Any = __post_init__
        wrapper._coerces_numbers = True
        wrapper.__doc__ = own.__doc__
        target: Any = cls
        target.__post_init__ = wrapper

    # ---- validators of fields by name, for ``__post_init__``: each raises the first problem as a ConfigError
    def _check_positive_ints(self, *names: str, optional: bool = False) -> None:
        """:func:`check_positive_int` on each named field, in the order given; ``optional``: ``None`` is taken."""
        for name in names:
            check_positive_int(self.module_name, name, getattr(self, name), allow_none=optional)

    def _check_positive_reals(self, *names: str) -> None:
        """:func:`check_positive_real` on each named field (an epsilon, a ratio), in the order given."""
        for name in names:
            check_positive_real(self.module_name, name, getattr(self, name))

    def _check_flags(self, *names: str) -> None:
        """Each named field is ``True`` or ``False`` (a truthy 1 or ``'yes'`` would pass an ``if`` silently)."""
        self._check_choices(**dict.fromkeys(names, (True, False)))

    def _check_choices(self, **choices: Iterable[Any]) -> None:
        """:func:`check_choice` on each field named by a keyword, against its choices, in keyword order
        (``self._check_choices(act_layer=ACT_LAYERS, gate_layer=GATE_LAYERS)``)."""
        for name, allowed in choices.items():
            check_choice(self.module_name, name, getattr(self, name), allowed)

    def _check_batch_norm_fields(self) -> None:
        """:func:`check_batch_norm_fields` on the fields ``bn_eps`` and ``bn_momentum`` that every config with a
        configurable BatchNorm declares."""
        eps, momentum = (getattr(self, name) for name in ("bn_eps", "bn_momentum"))
        check_batch_norm_fields(self.module_name, eps, momentum)

    # ---- to implement
    def param_table(self) -> tuple[ParamSpec, ...]:
        raise NotImplementedError

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        """The float64 math on :mod:`attn_core.ops` nodes; ``taps`` (if given) receives named intermediates."""
        raise NotImplementedError

    # ---- shared
    @property
    def channels_required(self) -> int | None:
        return getattr(self, "channels", None)

    def replace(self, **changes: Any) -> AttentionConfig:
        return dataclasses.replace(self, **changes)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {p.name: p.shape for p in self.param_table()}

    @property
    def has_batch_norm(self) -> bool:
        """Whether the module holds BatchNorm running statistics (parameters of role ``bn_mean`` / ``bn_var``)."""
        return any(not p.trainable for p in self.param_table())

    def check_training_input(self, shape: Sequence[int | None], layout: str = "NCHW") -> None:
        """For a module with BatchNorm, in training: :func:`check_batch_norm_input` on its input, whose N, H and W
        every BatchNorm of the attention modules sees. (A module whose BatchNorms see other sizes, after a stride,
        calls :func:`check_batch_norm_input` on each BatchNorm's own input instead.)"""
        if self.has_batch_norm:
            check_batch_norm_input(self.module_name, shape, layout)

    def check_input(self, shape: Sequence[int | None], dtype: str, is_floating: bool,
                    layout: str = "NCHW", training: bool = False, param_dtypes: Collection[str] = (),
                    device_dtypes: Sequence[str] = FLOAT_DTYPES, framework: str | None = None) -> None:
        """Raise a clear error for an input that this module cannot take (in training: see
        :meth:`check_training_input`).

        ``shape`` may hold ``None`` or negative numbers for sizes unknown at trace time; those are not checked.
        ``param_dtypes`` (the module's floating parameters' dtypes), ``device_dtypes`` (what the backend computes in
        on this device) and ``framework`` (the spelling of the conversions) apply the dtype policy of
        :mod:`attn_core.precision`; left empty, as the float64 reference does, any floating dtype is taken.
        """
        name = self.module_name
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"{name}: layout must be 'NCHW' or 'NHWC', got {layout!r}")
        want = "(N, C, H, W)" if layout == "NCHW" else "(N, H, W, C)"
        c = self.channels_required
        c_txt = f" with C={c}" if c is not None else ""
        shape_t = tuple(None if (s is None or int(s) < 0) else int(s) for s in shape)
        if len(shape_t) != 4:
            raise InputShapeError(f"{name}: expected a 4-D {layout} input {want}{c_txt}, got a {len(shape_t)}-D "
                                  f"input of shape {_fmt_shape(shape_t)}")
        axis = 1 if layout == "NCHW" else 3
        if c is not None and shape_t[axis] is not None and shape_t[axis] != c:
            raise InputShapeError(f"{name}: expected {c} channels (a {layout} input {want}{c_txt}), got shape "
                                  f"{_fmt_shape(shape_t)} with {shape_t[axis]} channels")
        if any(s == 0 for s in shape_t):
            raise InputShapeError(f"{name}: expected a non-empty input {want}{c_txt}, got shape "
                                  f"{_fmt_shape(shape_t)}")
        accepted = accepted_input_dtypes(param_dtypes, device_dtypes, self.half_in_float32)
        if not is_floating:
            raise InputDtypeError(f"{name}: expected a floating-point input ({listing(accepted)}), got dtype {dtype}")
        if dtype not in accepted and (param_dtypes or dtype in FLOAT_DTYPES):
            raise InputDtypeError(dtype_mismatch_message(name, dtype, param_dtypes, accepted, framework))
        if training:
            self.check_training_input(shape_t, layout)

    def check_weights(self, weights: Mapping[str, Any]) -> None:
        """Strict validation of a canonical weight dict: raise one :class:`WeightLoadError` listing every problem."""
        table = self.param_table()
        expected = {p.name: p.shape for p in table}
        missing = [k for k in expected if k not in weights]
        unexpected = sorted(k for k in weights if k not in expected)
        mismatched = []
        bad_dtype = []
        for k, want in expected.items():
            if k not in weights:
                continue
            got = tuple(np.shape(weights[k]))
            if got != want:
                mismatched.append((k, want, got))
            kind = np.asarray(weights[k]).dtype.kind
            if kind != "f":
                bad_dtype.append(k)
        if missing or unexpected or mismatched or bad_dtype:
            raise WeightLoadError(self.module_name, missing, unexpected, mismatched, bad_dtype)

    def init_weights(self, rng: np.random.Generator, dtype: Any = np.float64) -> dict[str, np.ndarray]:
        """Seeded canonical weights: convolution and linear weights uniform(+-2/sqrt(fan_in)), twice torch's
        default bound so that gates spread well away from 0.5; biases and BatchNorm affine drawn away from their
        identity values; running statistics positive and away from 0/1; so a mix-up of any two shows."""
        out: dict[str, np.ndarray] = {}
        for p in self.param_table():
            if p.role == "conv_weight":
                fan_in = int(np.prod(p.shape[1:]))
                bound = 1.0 / np.sqrt(fan_in)
                v = rng.uniform(-bound, bound, p.shape) * 2.0
            elif p.role == "linear_weight":
                bound = 1.0 / np.sqrt(p.shape[1])
                v = rng.uniform(-bound, bound, p.shape) * 2.0
            elif p.role in ("conv_bias", "linear_bias"):
                v = rng.uniform(-0.5, 0.5, p.shape)
            elif p.role == "bn_weight":
                v = rng.uniform(0.5, 1.5, p.shape)
            elif p.role == "bn_bias":
                v = rng.uniform(-0.5, 0.5, p.shape)
            elif p.role == "bn_mean":
                v = rng.uniform(-0.5, 0.5, p.shape)
            elif p.role == "bn_var":
                v = rng.uniform(0.5, 2.0, p.shape)
            elif p.role == "param":
                # both signs, magnitudes away from 0 (the identity of a scale or a shift is a zero somewhere)
                v = rng.uniform(0.5, 1.5, p.shape) * rng.choice((-1.0, 1.0), p.shape)
            else:  # pragma: no cover - ROLES is closed
                raise ConfigError(f"{self.module_name}: unknown parameter role {p.role!r}")
            out[p.name] = np.asarray(v, dtype=dtype)
        return out

    # ---- NumPy reference entry points
    def reference(self, weights: Mapping[str, np.ndarray], x: np.ndarray, training: bool = False) -> np.ndarray:
        """Float64 reference forward of an NCHW input with canonical weights."""
        self.check_weights(weights)
        x = np.asarray(x)
        self.check_input(x.shape, str(x.dtype), x.dtype.kind == "f", training=training)
        params = {k: Node(np.asarray(v, dtype=np.float64)) for k, v in weights.items()}
        return self.reference_forward(Node(x), params, training=training).value

    def reference_state(self, weights: Mapping[str, np.ndarray], x: np.ndarray) -> dict[str, np.ndarray]:
        """Float64 BatchNorm running statistics after one training forward on the NCHW input ``x``:
        ``{canonical name: new value}`` for every ``bn_mean`` / ``bn_var`` parameter (empty without BatchNorm).

        Every BatchNorm the forward runs records its batch statistics (:func:`attn_core.ops.record_batch_stats`),
        which are found back by the identity of their running-statistics nodes, and is updated by the project's
        convention (:func:`attn_core.ops.running_stats_update`, torch's: the unbiased batch variance enters the
        running variance). For k training steps apply it k times, each on the state the previous step left.
        """
        self.check_weights(weights)
        x = np.asarray(x)
        self.check_input(x.shape, str(x.dtype), x.dtype.kind == "f", training=True)
        params = {k: Node(np.asarray(v, dtype=np.float64)) for k, v in weights.items()}
        state = {p.name: params[p.name].value.copy() for p in self.param_table() if not p.trainable}
        with ops.record_batch_stats() as seen:
            self.reference_forward(Node(x), params, training=True)
        names = {id(node): name for name, node in params.items()}
        for stats in seen:
            mean_name, var_name = names.get(id(stats.running_mean)), names.get(id(stats.running_var))
            if mean_name not in state or var_name not in state:
                raise ValueError(f"{self.module_name}: a training BatchNorm of the reference forward uses running "
                                 f"statistics that are not this config's parameters")
            if stats.momentum is None:
                raise ValueError(f"{self.module_name}: the reference forward runs BatchNorm {mean_name} without "
                                 f"its momentum (ops.batch_norm(..., momentum=...))")
            state[mean_name], state[var_name] = ops.running_stats_update(state[mean_name], state[var_name], stats,
                                                                         stats.momentum)
        return state

    def reference_vjp(self, weights: Mapping[str, np.ndarray], x: np.ndarray, cotangent: np.ndarray,
                      training: bool = False) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Float64 forward and vector-Jacobian product: ``(y, dL/dx, {name: dL/dparam})`` for trainable params,
        where ``L = sum(y * cotangent)``. Gradients are exact (derived VJPs), not finite differences."""
        self.check_weights(weights)
        x = np.asarray(x)
        self.check_input(x.shape, str(x.dtype), x.dtype.kind == "f", training=training)
        xn = Node(x)
        params = {k: Node(np.asarray(v, dtype=np.float64)) for k, v in weights.items()}
        y = self.reference_forward(xn, params, training=training)
        names = [p.name for p in self.param_table() if p.trainable]
        grads = backward(y, cotangent, [xn] + [params[k] for k in names])
        return y.value, grads[0], dict(zip(names, grads[1:], strict=True))


@dataclass(frozen=True)
class ReducedWidthConfig(AttentionConfig):
    """Base of the configs whose fields open with the reduced width of a bottleneck: ``channels, rd_ratio,
    rd_channels, rd_divisor`` (sized by :func:`reduced_channels` or a module's own rule), declared once here. A
    subclass redeclares only a default that differs, which keeps the field in its place, and adds its own fields
    after them."""

    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int
    rd_ratio: float = 1.0 / 16
    rd_channels: int | None = None
    rd_divisor: int | None = 8


def _fmt_shape(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("?" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
