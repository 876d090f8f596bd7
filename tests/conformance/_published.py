"""A module transcribed from its authors' published code, as the test peer of the project's module of the same
form: the same float64 step in torch, and the same output and running statistics through the canonical weights in
the other frameworks (test code only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from attn_core import AttentionConfig

from .._fw import runner
from .._timm import canonical, torch_step

RTOL = 1e-10


def assert_same_torch_step(theirs: Any, ours: Any, x: np.ndarray, cot: np.ndarray, training: bool) -> None:
    """``theirs`` and ``ours`` (float64 torch modules holding the same state_dict) give the same output, input and
    parameter gradients (by name) and running statistics after one step on ``x`` in train or eval mode."""
    (y_t, dx_t, g_t, s_t), (y_o, dx_o, g_o, s_o) = (torch_step(m, x, cot, training) for m in (theirs, ours))
    np.testing.assert_allclose(y_o, y_t, rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(dx_o, dx_t, rtol=RTOL, atol=1e-13)
    assert sorted(g_o) == sorted(g_t) and sorted(s_o) == sorted(s_t)
    for name, value in {**g_t, **s_t}.items():
        np.testing.assert_allclose({**g_o, **s_o}[name], value, rtol=RTOL, atol=1e-13, err_msg=name)


def assert_backend_equals_peer(fw: str, key: str, config: AttentionConfig, theirs: Any, x: np.ndarray) -> None:
    """The project's module ``key`` of ``config`` in framework ``fw``, given ``theirs``' state_dict as canonical
    weights, computes its output in eval and in training (float64) and the running statistics its BatchNorms keep."""
    run = runner(fw)
    weights = canonical(theirs)
    for training in (False, True):  # the eval step leaves the statistics as they were for the training one
        y_t, _, _, state_t = torch_step(theirs, x, None, training)
        got = run.run(key, config, weights, x, None, dtype="float64", training=training, mode=run.default_mode)
        np.testing.assert_allclose(got.y, y_t, rtol=RTOL, atol=1e-13, err_msg=f"{fw} training={training}")
        assert training == bool(got.state)
        for name, value in (got.state or {}).items():
            np.testing.assert_allclose(value, state_t[name], rtol=RTOL, atol=1e-14, err_msg=name)
