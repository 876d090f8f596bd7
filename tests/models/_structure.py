"""What every model test file checks alike: a stateful backend's ``state_dict`` is the config's parameter table."""

from __future__ import annotations

from typing import Any

from attn_core import native_location


def native_key(fw: str, spec: Any) -> str:
    """The ``state_dict`` key of a canonical parameter in torch or Paddle."""
    return ".".join(native_location(fw, spec)[1])


def assert_state_dict_is_the_table(fw: str, model: Any, config: Any) -> None:
    """The model's ``state_dict`` keys are the table's, in its order (torch adds one ``num_batches_tracked`` buffer
    after each BatchNorm's running variance), each in the canonical shape but Paddle's Linear weight ([in, out])."""
    table = config.param_table()
    want = [k for p in table for k in [native_key(fw, p)] + (
        [p.module_path + ".num_batches_tracked"] if fw == "torch" and p.role == "bn_var" else [])]
    state = model.state_dict()
    assert list(state) == want
    for p in table:
        native = p.shape[::-1] if (fw == "paddle" and p.role == "linear_weight") else p.shape
        assert tuple(state[native_key(fw, p)].shape) == tuple(native), p.name
