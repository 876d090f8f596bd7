"""What the three drivers share."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from attn_core.frameworks import FRAMEWORK_INFO
from attn_core.layout import NHWC_TO_NCHW
from conformance.runners import get_runner

from ..plan import MODES, PUBLISHED_KEYS, SUBOPS, Data, FormData, Peer, published_config
from ..timing import Candidate, describe_error

BASELINE_LABEL = "x * s (baseline)"


class BaseDriver:
    """A backend's driver. Subclasses implement ``_baseline`` and ``_project`` returning a :class:`Candidate`, and
    for the peers ``_wrap``, ``_timm_peer`` and ``seeds`` (or ``_peer`` itself); building errors become rows
    (``Candidate.error``) rather than exceptions."""

    name = ""
    #: the framework's file of the seed articles' code (benchmarks/peers/seed_<framework>.py), None if it has none
    seeds: Any = None
    #: the framework's file of the published code of the modules timm lacks (benchmarks/peers/published_*.py)
    published: Any = None

    @property
    def modes(self) -> tuple[str, ...]:
        """The backend's modes (``benchmarks.plan.MODES``), its default first."""
        return MODES[self.name]

    @property
    def model_modes(self) -> tuple[str, ...]:
        """The modes whole models (``--models``) run in."""
        return self.modes

    def versions(self) -> dict[str, str]:
        raise NotImplementedError

    def set_threads(self, n: int) -> str:
        raise NotImplementedError

    def begin_group(self, mode: str) -> None:
        """Called before each timing group (torch: a fresh dynamo cache)."""

    def inputs(self, data: Data) -> tuple[Any, Any, Any]:
        """The group's input, gate and output cotangent as framework tensors in the backend's layout, made once per
        group by the framework's runner (the project's one adapter)."""
        if self.name not in data.cache:
            runner = get_runner(self.name)
            data.cache[self.name] = tuple(runner.tensor(np.ascontiguousarray(runner.nchw_to_native(a)))
                                          for a in (data.x, data.s, data.g))
        arrays: tuple[Any, Any, Any] = data.cache[self.name]
        return arrays

    def output(self, value: Any) -> np.ndarray:
        """A result of the backend as an NCHW NumPy array, for comparing candidates."""
        array = get_runner(self.name).to_numpy(value)
        return array.transpose(NHWC_TO_NCHW) if FRAMEWORK_INFO[self.name].layout == "NHWC" else array

    def baseline(self, data: Data, mode: str, pass_: str) -> Candidate:
        return self._guard(lambda: self._baseline(data, pass_), BASELINE_LABEL, "baseline")

    def project(self, module: str, fd: FormData, data: Data, mode: str, pass_: str, label: str) -> Candidate:
        if fd.config is None:
            return Candidate(label, "project", None, form=fd.key, source="project",
                             error=f"n/a: the project refuses this form ({fd.refused})")
        return self._guard(lambda: self._project(module, fd, data, mode, pass_), label, "project", fd.key,
                           "project")

    def peer(self, peer: Peer, fd: FormData, default: FormData, data: Data, mode: str, pass_: str) -> Candidate:
        return self._guard(lambda: self._peer(peer, fd, default, data, mode, pass_), peer.label, "peer", fd.key,
                           peer.source)

    def subops(self, data: Data) -> list[Candidate]:
        """The sub-operations of :data:`benchmarks.plan.SUBOPS`, forward, in the framework's default mode."""
        out = []
        for key, label in SUBOPS.items():
            out.append(self._guard(lambda key=key: self._subop(key, data), label, "subop", key, self.name))
        return out

    @staticmethod
    def _guard(build: Callable[[], Candidate], label: str, kind: str, form: str = "", source: str = "") -> Candidate:
        try:
            c = build()
        except Exception as err:  # noqa: BLE001 - a module that cannot be built is a row of the report
            return Candidate(label, kind, None, form=form, source=source, error=describe_error(err))
        c.label, c.kind, c.form, c.source = label, kind, form, source or c.source
        return c

    # to implement
    def _baseline(self, data: Data, pass_: str) -> Candidate:
        raise NotImplementedError

    def _project(self, module: str, fd: FormData, data: Data, mode: str, pass_: str) -> Candidate:
        raise NotImplementedError

    def _peer(self, peer: Peer, fd: FormData, default: FormData, data: Data, mode: str, pass_: str) -> Candidate:
        """A peer as the framework's module, timed by :meth:`_wrap`: timm's code (:meth:`_timm_peer`), the published
        code of a module timm lacks (:attr:`published`) or a seed article's (:meth:`_seed_peer`). A framework whose
        peers are functions (Flax) overrides this."""
        c = data.shape[1]
        with warnings.catch_warnings():  # nn.Linear(C, 0) of the seeds for C < 16: "zero-element tensors"
            warnings.simplefilter("ignore", UserWarning)
            if peer.key == "timm":
                module = self._timm_peer(peer.module, c, fd)
            elif peer.key in PUBLISHED_KEYS:
                module = self.published.build(peer.key, published_config(fd), fd.weights)
            else:
                module = self._seed_peer(peer.module, c, fd.weights, default.config)
        return self._wrap(module, data, mode, pass_)

    def _seed_peer(self, module: str, c: int, w: dict[str, np.ndarray], config: Any) -> Any:
        """The seed articles' code for ``module`` from the framework's seed file (:attr:`seeds`), loaded with the
        canonical weights ``w``; ``config`` (the default form's) gives the sizes the seeds take as arguments."""
        s = self.seeds
        builders: dict[str, Callable[[], Any]] = {
            "se": lambda: s.load_seed_se(s.SE(c), w),
            "eca": lambda: s.load_seed_eca(s.eca_layer(c, k_size=config.k), w),
            "ca": lambda: s.GatedBySeed(s.load_seed_channel(s.ChannelAttention(c), w)),
            "sa": lambda: s.GatedBySeed(s.load_seed_spatial(s.SpatialAttention(config.kernel_size), w)),
            "cbam": lambda: s.load_seed_cbam(s.CBAM(c, 16, config.spatial_kernel_size), w),
            "simam": lambda: s.SIMAM(c),
        }
        if s is None or module not in builders:
            raise KeyError(f"no {self.name} seed peer for {module!r}")
        return builders[module]()

    def _timm_peer(self, module: str, c: int, fd: FormData) -> Any:
        """timm's ``create_attn(module, c)`` in this framework, loaded with the canonical weights of ``fd``."""
        raise NotImplementedError

    def _wrap(self, module: Any, data: Data, mode: str, pass_: str) -> Candidate:
        """``module`` (the framework's) timed in ``mode`` for ``pass_`` on the group's data."""
        raise NotImplementedError

    def _subop(self, key: str, data: Data) -> Candidate:
        """Sub-operation ``key`` (:data:`benchmarks.plan.SUBOPS`) alone, forward, without autograd. The operands are
        made here once (the group's input; the cotangent's first channel, whose sigmoid is the map m, and its first
        two, the pooled maps of the 7 x 7 convolution, whose kernel is 0.02 everywhere); the calls are the
        framework's (:meth:`_subop_calls`). A framework that times them otherwise (Flax: jitted) overrides this."""
        x, _, _ = self.inputs(data)
        runner = get_runner(self.name)
        gate, pooled = (runner.tensor(np.ascontiguousarray(runner.nchw_to_native(a)))
                        for a in (data.g[:, :1], data.g[:, :2]))
        kernel = runner.tensor(np.full((1, 2, 7, 7), 0.02, np.float32))
        return Candidate("", "", self._no_grad_call(self._subop_calls(x, gate, pooled, kernel)[key]))

    def _subop_calls(self, x: Any, gate: Any, pooled: Any, kernel: Any) -> dict[str, Callable[[], Any]]:
        """Each key of :data:`benchmarks.plan.SUBOPS` -> the framework's call of it on these operands (m is
        ``sigmoid(gate)``, the convolution is of ``pooled`` with ``kernel``, OIHW)."""
        raise NotImplementedError

    def _no_grad(self) -> AbstractContextManager[Any]:
        """The framework's context without autograd, around every forward call."""
        return contextlib.nullcontext()

    def _no_grad_call(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """``fn`` called inside :meth:`_no_grad`: a forward pass as the drivers time it."""
        no_grad = self._no_grad

        def run() -> Any:
            with no_grad():
                return fn()
        return run

    def model(self, create: Callable[..., Any], name: str, x: np.ndarray, y: np.ndarray, mode: str,
              pass_: str) -> Candidate:
        """Model ``name`` (``create(name)``) in ``mode``: one inference of the NCHW batch ``x``, or one training
        step (cross-entropy on labels ``y``, backward, SGD with momentum; see :mod:`benchmarks.models`)."""
        raise NotImplementedError

    def densenet_memory(self, model: str, efficient: bool, batch: int, size: int) -> dict[str, Any]:
        """The peak memory of one training step of SE-DenseNet ``model`` (see :mod:`benchmarks.densenet_memory`):
        ``{peak_mib, rss_mib, step_s, how}``."""
        raise NotImplementedError


class PeerUnavailable(RuntimeError):
    """The peer's library is missing or fails to import; the message says which and why."""
