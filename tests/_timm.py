"""Import timm for the parity tests, tolerating torchvision's failed op registration (test code only).

``import timm`` imports torchvision. A torchvision wheel whose compiled ops do not match the installed CPU torch
fails to load them, and then its Python side fails in ``torch.library.register_fake("torchvision::nms")`` with
``RuntimeError: operator torchvision::nms does not exist``. timm's models do not use those ops, so while importing
timm (and only then) exactly that error is swallowed; any other error propagates, and the library never does this.
"""

from __future__ import annotations

import contextlib
import importlib.util
from typing import Any, Callable, Iterator

import pytest


@contextlib.contextmanager
def _tolerate_torchvision_fake_registration() -> Iterator[None]:
    import torch.library

    original = torch.library.register_fake

    def register_fake(op: Any, *args: Any, **kwargs: Any) -> Any:
        registered = original(op, *args, **kwargs)
        if not (isinstance(op, str) and op.startswith("torchvision::")):
            return registered
        if registered is not None and callable(registered) and not args and "func" not in kwargs:
            # decorator form: register_fake("torchvision::nms")(fn); the failure happens when fn is applied
            def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
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
    """``timm``, or a pytest skip when it is not installed."""
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed (pip install timm torch==2.13.0: a plain 'pip install timm' pulls "
                    "another torch and the CUDA packages)")
    with _tolerate_torchvision_fake_registration():
        import timm
    return timm
