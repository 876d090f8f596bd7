"""Bad input in every backend: wrong rank, wrong channel count, integer dtype, each a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from attn_core import InputDtypeError, InputShapeError
from attn_core.frameworks import FRAMEWORK_INFO

from .._fw import FRAMEWORKS, backend, call, nchw_to_native, tensor

# (registry name, constructor kwargs, channels, the class name errors must carry)
MODULES = [
    ("se", {}, 32, "SEModule"),
    ("eca", {}, 32, "ECAModule"),
    ("ca", {}, 32, "ChannelAttention"),
    ("sa", {}, 32, "SpatialAttention"),
    ("cbam", {}, 32, "CBAM"),
    ("simam", {}, 32, "SimAM"),
]


def _build(fw, name, kwargs, channels):
    return backend(fw).create_attn(name, channels, **kwargs)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("name,kwargs,channels,cls", MODULES, ids=[m[0] for m in MODULES])
def test_wrong_rank(fw, name, kwargs, channels, cls):
    module = _build(fw, name, kwargs, channels)
    x = tensor(fw, np.zeros((2, channels, 5), dtype=np.float32))
    with pytest.raises(InputShapeError) as exc:
        call(fw, module, x)
    msg = str(exc.value)
    assert cls in msg and "4-D" in msg and "3-D" in msg and "(2, 32, 5)" in msg


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("name,kwargs,channels,cls", MODULES, ids=[m[0] for m in MODULES])
def test_wrong_channel_count(fw, name, kwargs, channels, cls):
    module = _build(fw, name, kwargs, channels)
    x = tensor(fw, nchw_to_native(fw, np.zeros((2, channels + 3, 5, 6), dtype=np.float32)))
    with pytest.raises(InputShapeError) as exc:
        call(fw, module, x)
    msg = str(exc.value)
    assert cls in msg and f"expected {channels} channels" in msg and f"with {channels + 3} channels" in msg


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("name,kwargs,channels,cls", MODULES, ids=[m[0] for m in MODULES])
def test_integer_input(fw, name, kwargs, channels, cls):
    module = _build(fw, name, kwargs, channels)
    x = tensor(fw, nchw_to_native(fw, np.ones((2, channels, 5, 6), dtype=np.int32)))
    with pytest.raises(InputDtypeError) as exc:
        call(fw, module, x)
    msg = str(exc.value)
    assert cls in msg and "floating-point" in msg and "int32" in msg


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_any_channel_count_when_not_configured(fw):
    """SimAM and SpatialAttention without ``channels`` take any C; their output keeps the input's shape."""
    b = backend(fw)
    for module in (b.SimAM(), b.SpatialAttention()):
        for c in (1, 3, 17):
            x = tensor(fw, nchw_to_native(fw, np.ones((1, c, 4, 5), dtype=np.float32)))
            assert tuple(call(fw, module, x).shape) == tuple(x.shape)


# A (N, C, H, W) array with C = 32, H = 5 is the right input where modules take NCHW (torch, Paddle) and the wrong
# one where they take NHWC (Flax): the layout is each framework's entry in attn_core.frameworks
@pytest.mark.parametrize("fw", [fw for fw in FRAMEWORKS if FRAMEWORK_INFO[fw].layout == "NCHW"])
def test_an_nchw_array_is_the_input_of_an_nchw_framework(fw):
    module = _build(fw, "se", {}, 32)
    x = tensor(fw, np.ones((2, 32, 5, 6), dtype=np.float32))
    assert tuple(call(fw, module, x).shape) == (2, 32, 5, 6)


@pytest.mark.parametrize("fw", [fw for fw in FRAMEWORKS if FRAMEWORK_INFO[fw].layout == "NHWC"])
def test_an_nchw_array_is_refused_by_an_nhwc_framework(fw):
    module = _build(fw, "se", {}, 32)
    x = tensor(fw, np.ones((2, 32, 5, 6), dtype=np.float32))
    with pytest.raises(InputShapeError, match="NHWC"):
        call(fw, module, x)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("name,kwargs,channels,cls", MODULES, ids=[m[0] for m in MODULES])
def test_bad_input_after_good_input(fw, name, kwargs, channels, cls):
    """A module remembers the last input shape and dtype it accepted; another one is checked again: the wrong
    channel count after a right one, and an integer tensor of the accepted shape, still raise."""
    module = _build(fw, name, kwargs, channels)
    good = np.zeros((2, channels, 6, 6), dtype=np.float32)
    call(fw, module, tensor(fw, nchw_to_native(fw, good)))
    call(fw, module, tensor(fw, nchw_to_native(fw, good)))
    with pytest.raises(InputShapeError) as exc:
        call(fw, module, tensor(fw, nchw_to_native(fw, np.zeros((2, channels + 1, 6, 6), dtype=np.float32))))
    assert cls in str(exc.value) and str(channels + 1) in str(exc.value)
    with pytest.raises(InputDtypeError):
        call(fw, module, tensor(fw, nchw_to_native(fw, good.astype(np.int32))))
