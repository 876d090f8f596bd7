"""The suite fails when a backend is deliberately broken, and passes again when it is whole.

Each test replaces one piece of a real backend with a realistic porting mistake, runs the conformance case that
should expose it, checks that the row fails on the expected quantity, then restores the backend and checks that the
same case passes.
"""

from __future__ import annotations

import numpy as np
import pytest

from conformance import run_case
from conformance.runners import get_runner

from .._broken import broken_then_whole, case_named
from .._fw import backend

pytestmark = pytest.mark.usefixtures("fresh_flax_programs")


def test_flax_kernel_reshaped_instead_of_transposed(monkeypatch):
    """A 1x1 convolution loaded as ``w.reshape(1, 1, I, O)`` is a Linear left untransposed: with C = rd = 8 the
    shapes fit and only the numbers are wrong."""
    backend("flax")
    import backends.flax.weights as fw
    from attn_core import to_native

    def reshaped(framework, spec, array):
        if spec.role == "conv_weight" and len(spec.shape) == 4:
            o, i, h, w = spec.shape
            return np.asarray(array).reshape(h, w, i, o)
        return to_native(framework, spec, array)

    monkeypatch.setattr(fw, "to_native", reshaped)
    # The runner loads through attn_core's layout table and checks the backend's own load_weights against it when
    # it builds the module, so the row is an error naming the misplaced kernels.
    runner, case = get_runner("flax"), case_named("se/c8-b1")
    broken = run_case(case, runner, "float32")
    assert broken.status == "error", "the suite missed the broken flax loader"
    assert "fc1.weight (params/fc1/kernel)" in broken.message and "fc2.weight" in broken.message
    monkeypatch.undo()
    assert run_case(case, runner, "float32").status == "pass"


def test_torch_spatial_concat_order_swapped(monkeypatch):
    backend("torch")
    import torch

    from backends.torch import SpatialAttention

    def swapped(self, x):
        avg, mx = x.mean(1, keepdim=True), x.amax(1, keepdim=True)
        z = self.conv(torch.cat([mx, avg] if self._mean_first else [avg, mx], 1))
        if self.bn is not None:
            z = self.bn(z)
        return x * self._gate(z)

    monkeypatch.setattr(SpatialAttention, "forward", swapped)
    failing = broken_then_whole(monkeypatch, "torch", "sa/k7")
    assert {"output", "grad:input", "grad:conv.weight"} <= failing


def test_paddle_cbam_spatial_sigmoid_missing(monkeypatch):
    backend("paddle")
    import paddle

    from backends.paddle import SpatialAttention

    def no_sigmoid(self, x):
        avg, mx = x.mean(axis=1, keepdim=True), x.amax(axis=1, keepdim=True)
        z = self.conv(paddle.concat([avg, mx], axis=1))
        return x * z

    monkeypatch.setattr(SpatialAttention, "forward", no_sigmoid)
    failing = broken_then_whole(monkeypatch, "paddle", "cbam/c32-article")
    assert "output" in failing and "grad:spatial.conv.weight" in failing


def test_flax_simam_with_n_equal_hw(monkeypatch):
    backend("flax")
    import backends.flax.simam as simam

    monkeypatch.setattr(simam, "simam_denominator_count", lambda h, w: h * w)
    failing = broken_then_whole(monkeypatch, "flax", "simam/7x5")
    assert "output" in failing


def test_torch_channel_attention_avg_plus_avg(monkeypatch):
    """``sigmoid(avg + avg)``, a copy-paste bug seen in public CBAM copies (porting notes, section 2)."""
    backend("torch")
    from backends.torch import ChannelAttention

    def avg_avg(self, x):
        avg = self.fc2(self._act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * self._gate(avg + avg)

    monkeypatch.setattr(ChannelAttention, "forward", avg_avg)
    failing = broken_then_whole(monkeypatch, "torch", "ca/c32-bias")
    assert "output" in failing
