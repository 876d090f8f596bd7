"""``import timm``, tolerating torchvision's failed op registration: for the benchmarks' timm peers and the tests.

``import timm`` imports torchvision. A torchvision wheel whose compiled ops do not match the installed CPU torch
fails to load them, and then its Python side fails in ``torch.library.register_fake("torchvision::nms")`` with
``RuntimeError: operator torchvision::nms does not exist``. timm's attention layers and models use none of those
ops, so while importing timm (and only then) exactly that error (a ``torchvision::`` op that "does not exist") is
swallowed; any other error propagates. The library never does this; torch is imported only when timm is.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

#: how to install timm beside the CPU torch this project pins
INSTALL_HINT = "pip install timm torch==2.13.0: a plain 'pip install timm' pulls another torch and the CUDA packages"


def timm_installed() -> bool:
    return importlib.util.find_spec("timm") is not None


@contextlib.contextmanager
def tolerate_torchvision_fake_registration() -> Iterator[None]:
    """While inside, a ``torchvision::`` fake registration whose op does not exist is skipped instead of raising."""
    import torch.library

    original = torch.library.register_fake

    def register_fake(op: Any, *args: Any, **kwargs: Any) -> Any:
        registered = original(op, *args, **kwargs)
        if not (isinstance(op, str) and op.startswith("torchvision::")):
            return registered
        if registered is not None and callable(registered) and not args and "func" not in kwargs:
            def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:  # register_fake("torchvision::nms")(fn)
                try:
                    return registered(fn)
                except RuntimeError as err:
                    if "does not exist" not in str(err):
                        raise
                    return fn
            return decorate
        return registered

    torch.library.register_fake = register_fake
    try:
        yield
    finally:
        torch.library.register_fake = original


def import_timm() -> Any:
    """The ``timm`` module (with ``timm.layers.cbam`` loaded), imported under the tolerance above; an ImportError
    when timm is not installed, and whatever else ``import timm`` raises."""
    if not timm_installed():
        raise ImportError(f"timm is not installed ({INSTALL_HINT})")
    with tolerate_torchvision_fake_registration():
        import timm
        import timm.layers.cbam  # noqa: F401
    return timm
