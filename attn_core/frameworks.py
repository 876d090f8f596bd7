"""The frameworks the project ports to: one table of their names, pip extras, packages, layouts and modes.

Every command line speaks of two modes, ``eager`` and ``compiled``; what each means in a framework
(``torch.compile``, ``paddle.jit.to_static``, ``jax.jit``) is a display label here, never a second vocabulary.
Nothing is imported: whether a framework is installed is asked of ``importlib`` without loading it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["FRAMEWORKS", "MODES", "FrameworkInfo", "FRAMEWORK_INFO", "framework_info", "installed_frameworks"]

FRAMEWORKS: tuple[str, ...] = ("torch", "paddle", "flax")
#: the execution modes, in every framework and on every command line
MODES: tuple[str, ...] = ("eager", "compiled")


@dataclass(frozen=True)
class FrameworkInfo:
    """What the project knows of one framework without importing it."""

    name: str                           # 'torch', 'paddle', 'flax': the backend package and the pip extra
    title: str                          # how prose names it
    packages: tuple[str, ...]           # top-level packages that must be importable
    layout: str                         # activation layout of its modules: 'NCHW' or 'NHWC'
    default_mode: str                   # the mode its users get without asking
    mode_labels: Mapping[str, str]      # mode -> short label (conformance reports)
    mode_titles: Mapping[str, str]      # mode -> long label (benchmark tables)
    checkpoint_extensions: tuple[str, ...] = ()  # file extensions of its own checkpoints, the first its usual one
    #: the leaf of a BatchNorm buffer it keeps beside the running statistics, which no forward pass reads and the
    #: canonical weights therefore leave out
    bn_counter: str | None = None
    #: its ReLU and hard-sigmoid backward multiply the incoming gradient by their 0/1 mask instead of selecting it,
    #: so an infinite gradient where the activation is flat becomes NaN (0 * inf) where a selecting one gives 0
    grad_mask_multiplies: bool = False
    #: its modules' own state (``state_dict``) is the canonical weights as they are, names and layouts alike: a
    #: checkpoint of another library's module in it (timm's) loads into the project's module as it is
    native_is_canonical: bool = False

    @property
    def extra(self) -> str:
        return self.name

    @property
    def install_hint(self) -> str:
        return f"pip install 'attn-modules[{self.extra}]'"

    def missing(self) -> tuple[str, ...]:
        """The required packages that are not installed (empty when the framework can be used)."""
        return tuple(p for p in self.packages if importlib.util.find_spec(p) is None)

    def installed(self) -> bool:
        return not self.missing()


FRAMEWORK_INFO: Mapping[str, FrameworkInfo] = MappingProxyType({
    "torch": FrameworkInfo("torch", "PyTorch", ("torch",), "NCHW", "eager",
                           MappingProxyType({"eager": "eager", "compiled": "torch.compile"}),
                           MappingProxyType({"eager": "torch eager", "compiled": "torch.compile"}), (".pt", ".pth"),
                           "num_batches_tracked", native_is_canonical=True),
    "paddle": FrameworkInfo("paddle", "PaddlePaddle", ("paddle",), "NCHW", "eager",
                            MappingProxyType({"eager": "eager", "compiled": "to_static"}),
                            MappingProxyType({"eager": "Paddle dygraph", "compiled": "paddle.jit.to_static"}),
                            (".pdparams",), grad_mask_multiplies=True),
    # Flax users run under jax.jit; op-by-op execution (jax.disable_jit) is the comparison row
    "flax": FrameworkInfo("flax", "JAX/Flax", ("jax", "flax"), "NHWC", "compiled",
                          MappingProxyType({"eager": "eager", "compiled": "jax.jit"}),
                          MappingProxyType({"eager": "jax eager", "compiled": "jax.jit"}), (".msgpack",)),
})


def framework_info(name: str) -> FrameworkInfo:
    """The table's entry for ``name``; a ValueError listing the known frameworks otherwise."""
    if name not in FRAMEWORK_INFO:
        raise ValueError(f"unknown framework {name!r}; expected one of {', '.join(FRAMEWORKS)}")
    return FRAMEWORK_INFO[name]


def installed_frameworks() -> tuple[str, ...]:
    """The frameworks whose packages are all importable, in table order."""
    return tuple(f for f in FRAMEWORKS if FRAMEWORK_INFO[f].installed())
