"""What every model test file checks alike: a stateful backend's ``state_dict`` is the config's parameter table."""

from __future__ import annotations

from typing import Any

import numpy as np

from attn_core import native_location, to_native
from attn_core.frameworks import framework_info


def native_key(fw: str, spec: Any) -> str:
    """The ``state_dict`` key of a canonical parameter in torch or Paddle."""
    return ".".join(native_location(fw, spec)[1])


def assert_state_dict_is_the_table(fw: str, model: Any, config: Any) -> None:
    """The model's ``state_dict`` keys are the table's, in its order (plus the framework's BatchNorm counter, torch's
    ``num_batches_tracked``, after each BatchNorm's running variance), each in the framework's layout of the
    canonical shape (``attn_core.layout``: Paddle's Linear weight is [in, out])."""
    table = config.param_table()
    counter = framework_info(fw).bn_counter
    want = [k for p in table for k in [native_key(fw, p)] + (
        [f"{p.module_path}.{counter}"] if counter is not None and p.role == "bn_var" else [])]
    state = model.state_dict()
    assert list(state) == want
    for p in table:
        native = to_native(fw, p, np.broadcast_to(np.uint8(0), p.shape)).shape
        assert tuple(state[native_key(fw, p)].shape) == tuple(native), p.name
