"""What the three drivers share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from attn_core.frameworks import FRAMEWORK_INFO
from attn_core.layout import NHWC_TO_NCHW
from conformance.runners import get_runner

from ..plan import MODES, SUBOPS, Data, FormData, Peer
from ..timing import Candidate, describe_error

BASELINE_LABEL = "x * s (baseline)"


class BaseDriver:
    """A backend's driver. Subclasses implement ``_baseline``, ``_project`` and ``_peer`` returning a
    :class:`Candidate`; building errors become rows (``Candidate.error``) rather than exceptions."""

    name = ""

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
        raise NotImplementedError

    def _subop(self, key: str, data: Data) -> Candidate:
        raise NotImplementedError

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
