"""Handles and parameter maps: where each canonical parameter lives in a module, checked before anything runs.

A *handle* is a framework module the suite can run: the module (for Flax, with a variables template), the
attn_core config whose reference it is compared with, the runner that runs it, and one *binding* per canonical
parameter, which says under which native name the module holds it and how its layout converts both ways.
:func:`bind` makes the bindings of a parameter map (:meth:`conformance.runners.Runner.wrap`), listing every
problem in one :class:`ParamMapError`.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from attn_core import AttentionConfig, WeightLoadError, from_native, to_native
from attn_core.layout import LAYOUT_TRANSFORMS, layout_transform, native_key
from attn_core.spec import ParamSpec

if TYPE_CHECKING:
    from .base import Runner

__all__ = ["Handle", "Binding", "ParamMapError", "ParamMap", "Transform", "bind", "default_binding",
           "parse_entry"]

ArrayFn = Callable[[np.ndarray], np.ndarray]
#: a transform: the name of one in ``attn_core.layout.LAYOUT_TRANSFORMS`` or ``(to_native, from_native)``
Transform = str | tuple[ArrayFn, ArrayFn]
#: canonical name -> native name (default layout for its role) or ``(native name, transform)``
ParamMap = Mapping[str, str | tuple[str, Transform]]


class ParamMapError(WeightLoadError):
    """A parameter map that does not fit the module: one error listing every problem, raised before anything runs.

    ``problems`` holds ``(kind, text)`` pairs; ``missing``, ``unexpected`` and ``mismatched`` are filled as in
    :class:`attn_core.WeightLoadError`, whose subclass this is.
    """

    def __init__(self, module: str, problems: Sequence[tuple[str, str]],
                 missing: Sequence[str] = (), unexpected: Sequence[str] = (),
                 mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]] = ()):
        self.module = module
        self.problems = list(problems)
        self.missing, self.unexpected, self.mismatched, self.bad_dtype = \
            list(missing), list(unexpected), list(mismatched), []
        lines = [f"{module}: the parameter map does not fit the module ({len(self.problems)} problem(s)); "
                 f"nothing was loaded."]
        lines += [f"  {kind}: {text}" for kind, text in self.problems]
        ValueError.__init__(self, "\n".join(lines))


@dataclass(frozen=True)
class Binding:
    """Where one canonical parameter lives in a module, and its layout conversion both ways (exact inverses)."""

    spec: ParamSpec
    native: str
    to_native: ArrayFn
    from_native: ArrayFn
    transform: str  # 'default' (the framework's own convention), a LAYOUT_TRANSFORMS name, or 'custom'


@dataclass
class Handle:
    """A module the suite can run on canonical data (see :meth:`Runner.wrap` and :meth:`Runner.build_handle`).

    ``module`` is never modified: :meth:`Runner.execute` works on a copy (torch, Paddle) or on new variables
    (Flax, whose ``variables`` here are only a template of names, shapes and the values of unmapped leaves).
    """

    framework: str
    config: AttentionConfig
    module: Any
    bindings: tuple[Binding, ...]
    #: the runner that built it, which runs it (:func:`conformance.suite.run_case` needs nothing else)
    runner: Runner = field(repr=False, compare=False)
    variables: Any = None
    layout: str = "NCHW"
    label: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def native_weights(self, weights: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Canonical weights (checked strictly against the config first) as ``{native name: float64 array}`` in
        the module's own layout."""
        arrays = {k: np.asarray(v) for k, v in weights.items()}
        self.config.check_weights(arrays)
        return {b.native: np.asarray(b.to_native(arrays[b.spec.name].astype(np.float64)), dtype=np.float64)
                for b in self.bindings}

    @property
    def trainable(self) -> tuple[Binding, ...]:
        return tuple(b for b in self.bindings if b.spec.trainable)

    @property
    def state_bindings(self) -> tuple[Binding, ...]:
        """The bindings of the BatchNorm running statistics (roles ``bn_mean`` / ``bn_var``)."""
        return tuple(b for b in self.bindings if not b.spec.trainable)

    def canonical_state(self, native_state: Mapping[str, np.ndarray | None]) -> dict[str, np.ndarray]:
        """Running statistics by native name -> by canonical name, float64, canonical layout; a binding whose
        native name is absent (or ``None``) is left out, so that its comparison reports it as not computed."""
        out = {}
        for b in self.state_bindings:
            v = native_state.get(b.native)
            if v is not None:
                out[b.spec.name] = np.asarray(b.from_native(np.asarray(v, dtype=np.float64)), dtype=np.float64)
        return out

    def canonical_grads(self, native_grads: Mapping[str, np.ndarray | None]) -> dict[str, np.ndarray]:
        """Gradients by native name -> by canonical name in canonical layout; a parameter the backward pass did
        not reach (``None``) has gradient zero."""
        out = {}
        for b in self.trainable:
            g = native_grads.get(b.native)
            out[b.spec.name] = np.zeros(b.spec.shape) if g is None else \
                np.asarray(b.from_native(np.asarray(g, dtype=np.float64)), dtype=np.float64)
        return out


def bind(framework: str, config: AttentionConfig, param_map: Mapping[str, Any],
         entries: Mapping[str, tuple[tuple[int, ...], bool]], label: str) -> tuple[Binding, ...]:
    """The binding of every canonical parameter of ``config`` in a module of ``framework`` whose named arrays are
    ``entries`` (native name -> (shape, natively trainable)), as ``param_map`` asks (see
    :meth:`conformance.runners.Runner.wrap`); one :class:`ParamMapError` naming ``label`` lists every problem."""
    table = config.param_table()
    specs = {s.name: s for s in table}
    problems: list[tuple[str, str]] = []
    missing: list[str] = []
    unexpected: list[str] = []
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    for key in param_map:
        if key not in specs:
            unexpected.append(str(key))
            problems.append(("unknown canonical name", f"{key!r} (the canonical names of "
                             f"{config.module_name}: {', '.join(specs) or 'none'})"))
    bindings = []
    for spec in table:
        if spec.name in param_map:
            parsed = parse_entry(framework, spec, param_map[spec.name])
            if isinstance(parsed, str):
                problems.append(("bad entry", parsed))
                continue
            if parsed.native not in entries:
                problems.append(("not in the module", f"{spec.name} -> {parsed.native!r}{_near(entries)}"))
                continue
        else:
            parsed = default_binding(framework, spec)
            if parsed.native not in entries:
                missing.append(spec.name)
                problems.append(("missing", f"{spec.name} {spec.shape}: not in the map, and the module has no "
                                 f"{parsed.native!r} (the {framework} default){_near(entries)}"))
                continue
        native, how = parsed.native, parsed.transform
        want, why = _native_shape(parsed)
        if why:
            problems.append(("bad transform", f"{spec.name} -> {native!r}: {why}"))
            continue
        have, natively_trainable = entries[native]
        if want != have:
            mismatched.append((spec.name, want, have))
            problems.append(("wrong shape", f"{spec.name} {spec.shape} -> {native!r} via {how!r} is {want}, "
                             f"the module's is {have}"))
            continue
        if spec.trainable and not natively_trainable:
            problems.append(("not trainable", f"{spec.name} -> {native!r}: a trainable canonical parameter "
                             f"mapped to a buffer / non-'params' variable, which gets no gradient"))
            continue
        bindings.append(parsed)
    for native, count in collections.Counter(b.native for b in bindings).items():
        if count > 1:
            names = [b.spec.name for b in bindings if b.native == native]
            problems.append(("mapped twice", f"{native!r} <- {', '.join(names)}"))
    bound = {b.native for b in bindings}
    for native, (shape, natively_trainable) in entries.items():
        if natively_trainable and native not in bound and not _is_mapped(native, param_map):
            unexpected.append(native)
            problems.append(("not mapped", f"{native!r} {shape}: a parameter of the module that no canonical "
                             f"parameter maps to"))
    if problems:
        raise ParamMapError(label, problems, missing, unexpected, mismatched)
    return tuple(bindings)


def default_binding(framework: str, spec: ParamSpec) -> Binding:
    """The binding of a parameter at the framework's default place and layout (``attn_core.layout``)."""
    return Binding(spec, native_key(framework, spec), lambda a: to_native(framework, spec, a),
                   lambda a: from_native(framework, spec, a), "default")


def parse_entry(framework: str, spec: ParamSpec, entry: Any) -> Binding | str:
    """The binding a map entry asks for, or the text of what is wrong with the entry."""
    if isinstance(entry, str):
        return dataclasses.replace(default_binding(framework, spec), native=entry)
    if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)):
        return (f"{spec.name}: {entry!r} is neither a native name nor a pair (native name, transform)")
    native, transform = entry
    if isinstance(transform, str):
        if transform not in LAYOUT_TRANSFORMS:
            return (f"{spec.name} -> {native!r}: unknown transform {transform!r}; known: "
                    f"{', '.join(LAYOUT_TRANSFORMS)}")
        t = layout_transform(transform)
        return Binding(spec, native, t.to_native, t.from_native, transform)
    if isinstance(transform, (tuple, list)) and len(transform) == 2 and all(map(callable, transform)):
        return Binding(spec, native, transform[0], transform[1], "custom")
    return (f"{spec.name} -> {native!r}: the transform must be a name ({', '.join(LAYOUT_TRANSFORMS)}) or a "
            f"pair of functions (to_native, from_native), got {transform!r}")


def _native_shape(binding: Binding) -> tuple[tuple[int, ...], str]:
    """The native shape a binding's transform gives the canonical shape, or ``((), reason)`` where it does not
    apply or a custom pair is not an exact inverse."""
    spec, how = binding.spec, binding.transform
    if how in LAYOUT_TRANSFORMS:
        try:
            return layout_transform(how).native_shape(spec.shape), ""
        except ValueError as err:
            return (), str(err)
    probe = np.random.default_rng(0).standard_normal(spec.shape)
    try:
        native = np.asarray(binding.to_native(probe))
        back = np.asarray(binding.from_native(native))
    except Exception as err:  # noqa: BLE001 - a user's function failing is reported, with its message
        return (), f"the transform raised {type(err).__name__}: {err}"
    if back.shape != spec.shape or not np.array_equal(back, probe):
        return (), "from_native(to_native(w)) is not w: the two functions are not exact inverses"
    return tuple(native.shape), ""


def _near(entries: Mapping[str, Any]) -> str:
    """A hint listing the module's names (at most 12)."""
    names = list(entries)
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return f" (the module has: {shown or 'nothing'})"


def _is_mapped(native: str, param_map: Mapping[str, Any]) -> bool:
    """Whether a map entry names ``native`` (then its own problem, if any, is reported instead)."""
    for entry in param_map.values():
        name = entry if isinstance(entry, str) else entry[0] if isinstance(entry, (tuple, list)) and entry else None
        if name == native:
            return True
    return False
