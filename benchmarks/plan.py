"""What is timed: module forms, the peers of each module per backend, modes, passes, shapes, and the data.

A *form* is one configuration of a project module (its attn_core options). Every module has its ``default`` form
(what ``create_attn(name, C)`` builds); peers that compute another form of the same math (the seed articles'
``C // r`` width without biases, timm's BatchNorm after the spatial convolution) are compared with the project's
module built in that form, from the same canonical weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from attn_core import CBAM_PRESETS, PSA_PRESETS, SRM_PRESETS, AttentionConfig, ConfigError, create_config
from attn_core.frameworks import FRAMEWORK_INFO, FRAMEWORKS
from attn_core.frameworks import MODES as FRAMEWORK_MODES
from attn_core.registry import CONFIGS, TIMM_KEYS

BACKENDS: tuple[str, ...] = FRAMEWORKS
MODULES: tuple[str, ...] = tuple(CONFIGS)
PASSES: tuple[str, ...] = ("forward", "forward+backward")
DEFAULT_SHAPES: tuple[tuple[int, int, int, int], ...] = ((32, 256, 56, 56), (8, 64, 56, 56))
QUICK_SHAPES: tuple[tuple[int, int, int, int], ...] = ((2, 32, 16, 16), (2, 8, 9, 7))

#: the mode a user gets without asking for anything (the "default path")
DEFAULT_MODE: Mapping[str, str] = MappingProxyType({b: FRAMEWORK_INFO[b].default_mode for b in BACKENDS})
#: backend -> its modes (attn_core.frameworks.MODES), the framework's ordinary one first
MODES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    b: (DEFAULT_MODE[b], *(m for m in FRAMEWORK_MODES if m != DEFAULT_MODE[b])) for b in BACKENDS})
#: the benchmarks' mode names before the one vocabulary -> (backend, mode): read in old JSON, refused on the command
#: line with the new name
LEGACY_MODES: Mapping[str, tuple[str, str]] = MappingProxyType({
    "compile": ("torch", "compiled"), "dygraph": ("paddle", "eager"), "to_static": ("paddle", "compiled"),
    "jit": ("flax", "compiled")})


def mode_label(backend: str, mode: str) -> str:
    """How the tables name ``mode`` of ``backend`` (``'torch.compile'``, ``'Paddle dygraph'``, ``'jax.jit'``...)."""
    return FRAMEWORK_INFO[backend].mode_titles[mode]


def current_mode(mode: str) -> str:
    """``mode`` in the one vocabulary: a record written before it (``'jit'``, ``'dygraph'``...) is read as its
    new name."""
    return LEGACY_MODES[mode][1] if mode in LEGACY_MODES else mode


#: the ratio targets of the performance issue, forward, in the best mode
TARGETS: Mapping[str, float] = MappingProxyType({"se": 1.5, "eca": 1.5, "cbam": 3.0, "simam": 2.0})
#: the performance issue's model targets, as ratios to the plain ResNet-50 of the same backend, mode and pass
MODEL_TARGETS: Mapping[str, float] = MappingProxyType({"seresnet50": 1.15, "ecaresnet50": 1.15})

#: the operations the modules are made of, timed alone (forward, each framework's default mode) beside the same
#: baseline, so that a module's ratio can be read as the sum of its parts: key -> label
SUBOPS: Mapping[str, str] = MappingProxyType({
    "mean_hw": "mean over H, W",
    "max_hw": "max over H, W",
    "mean_c": "mean over C",
    "max_c": "max over C",
    "conv_kxk": "7x7 convolution 2 → 1 on the pooled maps",
    "mul_map": "x * m, m of shape N x 1 x H x W",
    "mul_self": "x * x",
    "sigmoid": "sigmoid(x)",
})
#: the sub-operations each module's forward is made of (besides the final product, which is the baseline itself)
MODULE_SUBOPS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "se": ("mean_hw",), "eca": ("mean_hw",), "ca": ("mean_hw", "max_hw"),
    "sa": ("mean_c", "max_c", "conv_kxk", "mul_map"),
    "cbam": ("mean_hw", "max_hw", "mean_c", "max_c", "conv_kxk", "mul_map"),
    "simam": ("mean_hw", "mul_self", "sigmoid"),
})

#: registry name -> the class name every backend uses
CLASS_NAMES: Mapping[str, str] = MappingProxyType({name: config.module_name for name, config in CONFIGS.items()})

#: the modules with forms of their own above (the seed articles' modules)
SEED_MODULES: tuple[str, ...] = ("se", "eca", "ca", "sa", "cbam", "simam")
#: timm's get_attn keys beyond the seeds' modules (attn_core.TIMM_KEYS): the project names these modules'
#: parameters as timm's state_dict does
TIMM_ATTN_KEYS: tuple[str, ...] = tuple(k for k in TIMM_KEYS if k not in SEED_MODULES)
#: the registered modules timm builds by the same key: timm's own module, ``create_attn(key, C)``, loads their
#: canonical weights as they are
TIMM_NAMED: tuple[str, ...] = tuple(m for m in MODULES if m in TIMM_ATTN_KEYS)

#: the forms of modules timm lacks that their published code computes besides the default
_PUBLISHED_FORMS: Mapping[str, Mapping[str, tuple[str, Mapping[str, Any]]]] = {
    "srm": {"official": ("SRM_PRESETS['official'] (the authors' unbiased std)", dict(SRM_PRESETS["official"]))},
    # the default G = 64 needs C a multiple of 128; 4 divides every width timed (8 and 32 in --quick, 64, 256)
    "shuffle": {"groups4": ("groups=4", {"groups": 4})},
    "psa": {"sequential": ("PSA_PRESETS['sequential'] (PSA_s)", dict(PSA_PRESETS["sequential"]))},
}
#: registry name -> form key -> (label, attn_core options)
FORMS: Mapping[str, Mapping[str, tuple[str, Mapping[str, Any]]]] = MappingProxyType({
    "se": {"default": ("default (timm form: width rounded to 8, biases)", {}),
           "article": ("rd_divisor=None, bias=False (the seeds' C // 16, no bias)",
                       {"rd_divisor": None, "bias": False})},
    "eca": {"default": ("default (Eq. 9 kernel)", {})},
    "ca": {"default": ("default", {}),
           "article": ("rd_divisor=None (the seeds' C // 16)", {"rd_divisor": None})},
    "sa": {"default": ("default (no BatchNorm)", {}),
           "timm": ("norm=True (timm: BatchNorm after the convolution)", {"norm": True})},
    "cbam": {"default": ("default", {}),
             "article": ("CBAM_PRESETS['article']", dict(CBAM_PRESETS["article"])),
             "timm": ("CBAM_PRESETS['timm']", dict(CBAM_PRESETS["timm"]))},
    "simam": {"default": ("default", {})},
    **{m: {"default": ("default (timm's defaults)" if m in TIMM_NAMED else "default", {}),
           **_PUBLISHED_FORMS.get(m, {})}
       for m in MODULES if m not in SEED_MODULES},
})


@dataclass(frozen=True)
class Peer:
    """Someone else's implementation of a module, timed beside the project's."""

    backend: str
    module: str
    key: str        # unique within (backend, module)
    label: str      # what the table shows
    source: str     # where the code comes from
    form: str       # the project form that computes the same math


#: the seed articles' code and its transcriptions, per module: the project form it computes, then each backend's
#: peer as (backend, key, label, source)
_SEED_PEERS: tuple[tuple[str, str, tuple[tuple[str, str, str, str], ...]], ...] = (
    ("se", "article", (
        ("torch", "seed001", "SEModule (seed 001; seed 002's SELayer is the same code)", "seed 001/002"),
        ("paddle", "seed002", "SELayer (seed 002 in Paddle)", "seed 002 (Paddle)"),
        ("flax", "jnp", "jax.numpy SE (seed 001/002)", "jax.numpy"))),
    ("eca", "default", (
        ("torch", "seed004", "eca_layer (seed 004), k_size = Eq. 9", "seed 004"),
        ("paddle", "seed004", "eca_layer (seed 004 in Paddle)", "seed 004 (Paddle)"),
        ("flax", "jnp", "jax.numpy eca_layer (seed 004)", "jax.numpy"))),
    ("ca", "article", (
        ("torch", "seed002", "x * ChannelAttention(x) (seed 002)", "seed 002"),
        ("paddle", "seed002", "x * ChannelAttention(x) (seed 002 in Paddle)", "seed 002 (Paddle)"),
        ("flax", "jnp", "jax.numpy x * ChannelAttention(x) (seed 002)", "jax.numpy"))),
    ("sa", "default", (
        ("torch", "seed002", "x * SpatialAttention(x) (seed 002)", "seed 002"),
        ("paddle", "seed002", "x * SpatialAttention(x) (seed 002 in Paddle)", "seed 002 (Paddle)"),
        ("flax", "jnp", "jax.numpy x * SpatialAttention(x) (seed 002)", "jax.numpy"))),
    ("cbam", "article", (
        ("torch", "seed002", "CBAM (seed 002)", "seed 002"),
        ("paddle", "seed002", "CBAM (seed 002 in Paddle)", "seed 002 (Paddle)"),
        ("flax", "jnp", "jax.numpy CBAM (seed 002)", "jax.numpy"))),
    ("simam", "default", (  # seed 003 is Paddle code: written in torch for torch
        ("torch", "seed003", "seed 003's simam_module written in torch (.pow(2))", "seed 003 (torch)"),
        ("paddle", "seed003", "simam_module (seed 003, .pow(2))", "seed 003"),
        ("flax", "jnp", "jax.numpy simam_module (seed 003)", "jax.numpy"))),
)
#: timm's own modules for the first five (torch, where ``import timm`` works): module, class, the form it computes
_TIMM_CLASSES: tuple[tuple[str, str, str], ...] = (
    ("se", "SEModule", "default"), ("eca", "EcaModule", "default"), ("ca", "ChannelAttn", "default"),
    ("sa", "SpatialAttn", "timm"), ("cbam", "CbamModule", "timm"))
#: timm's code for every module of TIMM_NAMED, per backend: (backend, key, label, source), the label of timm's
#: ``create_attn(key, C)``: its own module in torch, transcriptions in Paddle and jax.numpy (``benchmarks/peers/``)
_TIMM_CODE: tuple[tuple[str, str, str, str], ...] = (
    ("torch", "timm", "timm {name} (create_attn({key!r}, C))", "timm"),
    ("paddle", "timm", "timm {name} (create_attn({key!r}, C)) in Paddle", "timm (Paddle)"),
    ("flax", "jnp", "jax.numpy timm {name} (create_attn({key!r}, C))", "timm (jax.numpy)"))

#: the modules timm lacks: the published code of each (the authors', GAM's the tutorials' copy: its authors published
#: none), ``benchmarks/peers/published_torch.py`` and its transcriptions: module, the project form it computes, peer
#: key (the published class's name), what the label calls it
_PUBLISHED: tuple[tuple[str, str, str, str], ...] = (
    ("srm", "official", "SRMLayer", "the authors' SRMLayer"),
    ("gct", "default", "GCT", "the authors' GCT"),
    ("shuffle", "groups4", "sa_layer", "the authors' sa_layer"),
    ("triplet", "default", "TripletAttention", "the authors' TripletAttention"),
    ("bam", "default", "BAM", "the authors' BAM"),
    ("psa", "default", "PSA_p", "the authors' PSA_p"),
    ("psa", "sequential", "PSA_s", "the authors' PSA_s"),
    ("gam", "default", "GAM_Attention", "the tutorials' GAM_Attention"),
)
#: per backend: (backend, label, source) of the published code's peer; ``{what}`` is the label's name of the code
_PUBLISHED_CODE: tuple[tuple[str, str, str], ...] = (
    ("torch", "{what}", "published"),
    ("paddle", "{what} in Paddle", "published (Paddle)"),
    ("flax", "{what} in jax.numpy", "published (jax.numpy)"))
#: the peer keys of the published code (a driver builds these from ``benchmarks/peers/published_*.py``)
PUBLISHED_KEYS: frozenset[str] = frozenset(key for _, _, key, _ in _PUBLISHED)

PEERS: tuple[Peer, ...] = (
    *(Peer(backend, module, key, label, source, form)
      for module, form, rows in _SEED_PEERS for backend, key, label, source in rows),
    *(Peer("torch", module, "timm", f"timm {name}", "timm", form) for module, name, form in _TIMM_CLASSES),
    *(Peer(backend, m, key, label.format(name=CONFIGS[m].module_name, key=m), source, "default")
      for m in TIMM_NAMED for backend, key, label, source in _TIMM_CODE),
    *(Peer(backend, module, key, label.format(what=what), source, form)
      for module, form, key, what in _PUBLISHED for backend, label, source in _PUBLISHED_CODE),
)


def peers_for(backend: str, module: str) -> list[Peer]:
    return [p for p in PEERS if p.backend == backend and p.module == module]


def forms_for(backend: str, module: str) -> list[str]:
    """The forms timed for ``module`` in ``backend``: the default, then those its peers compute."""
    return list(dict.fromkeys(["default"] + [p.form for p in peers_for(backend, module)]))


def parse_shape(text: str) -> tuple[int, int, int, int]:
    """``'8x64x56x56'`` -> ``(8, 64, 56, 56)`` (N, C, H, W)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"a shape is N x C x H x W, e.g. 8x64x56x56; got {text!r}") from None
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"a shape is four positive sizes N x C x H x W, e.g. 8x64x56x56; got {text!r}")
    return shape  # type: ignore[return-value]


def fmt_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


@dataclass
class FormData:
    """A form of a module at one channel count: its config (None where the project refuses it), the canonical
    weights every implementation of the form is loaded with, and why the project has no module (if so)."""

    key: str
    label: str
    config: AttentionConfig | None
    weights: dict[str, np.ndarray]
    refused: str = ""


def form_data(module: str, form: str, channels: int, seed: int = 0) -> FormData:
    """The config and the seeded canonical float32 weights of ``form`` of ``module``.

    Where the project refuses the form (the seeds' hidden width ``C // 16`` is 0 for C < 16), the weights are
    those of the seeds' own zero-width layers, so the peer still runs, and ``refused`` says why there is no
    project module to compare with.
    """
    label, options = FORMS[module][form]
    rng = np.random.default_rng(seed)
    try:
        config = create_config(module, channels, **options)
    except ConfigError as err:
        try:
            default = create_config(module, channels)
        except ConfigError:  # no form of the module at this width (BAM's C // 16 = 0, shuffle's G = 64)
            return FormData(form, label, None, {}, refused=str(err).splitlines()[0])
        # the seeds' C // 16 = 0: zero-size MLP weights, the rest as the default form draws them
        weights = {k: v.astype(np.float32) for k, v in default.init_weights(rng).items()}
        for name in list(weights):
            if name.endswith("fc1.weight"):
                weights[name] = np.zeros((0, channels, 1, 1), np.float32)
            elif name.endswith("fc2.weight"):
                weights[name] = np.zeros((channels, 0, 1, 1), np.float32)
            elif name.endswith(("fc1.bias", "fc2.bias")):
                del weights[name]
        return FormData(form, label, None, weights, refused=str(err).splitlines()[0])
    weights = {k: v.astype(np.float32) for k, v in config.init_weights(rng).items()}
    return FormData(form, label, config, weights)


@dataclass
class Data:
    """One shape's float32 inputs, NCHW: x, the SE-like scale s (N, C, 1, 1) and an output cotangent g."""

    shape: tuple[int, int, int, int]
    x: np.ndarray
    s: np.ndarray
    g: np.ndarray
    cache: dict[str, Any] = field(default_factory=dict)


def make_data(shape: tuple[int, int, int, int], seed: int = 1234) -> Data:
    rng = np.random.default_rng(seed)
    n, c = shape[0], shape[1]
    x = (rng.standard_normal(shape, dtype=np.float32) * 1.5
         + rng.uniform(-1.0, 1.0, (1, c, 1, 1)).astype(np.float32))
    s = rng.uniform(0.0, 1.0, (n, c, 1, 1)).astype(np.float32)
    g = rng.standard_normal(shape, dtype=np.float32)
    return Data(shape, x, s, g)


def published_config(fd: FormData) -> Any:
    """The project config whose hyperparameters the published code of ``fd``'s form is built with; a ValueError
    naming why where the project refuses the form (the published code has no weights to load then)."""
    if fd.config is None:
        raise ValueError(f"n/a: the project refuses this form ({fd.refused}), no weights to load")
    return fd.config
