"""Interleaved timing: every repeat times the baseline, then each implementation in turn, so that a drift of the
machine (another process, frequency scaling, a cache that warms) hits all of them alike.

Warm-up calls (at least one) come first, per implementation; the first one's result is what the equality columns
compare (computed outside the timed loop). The garbage collector is off while timing. Each implementation's
``run`` must return only when its work is done (JAX: ``block_until_ready``); ``prepare`` runs untimed before every
call (clearing gradients, so that each backward writes fresh buffers rather than accumulating).
"""

from __future__ import annotations

import gc
import math
import re
import statistics
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


def _nothing() -> None:
    return None


@dataclass
class Candidate:
    """One implementation in a timing group."""

    label: str
    kind: str                                   # 'baseline', 'project' or 'peer'
    run: Callable[[], Any] | None               # one timed call; None: could not be built (see error)
    form: str = ""                              # project form whose math it computes
    source: str = ""
    prepare: Callable[[], None] = _nothing
    output: Callable[[Any], np.ndarray] | None = None  # the compared array (NCHW) from a result of run()
    note: str = ""
    error: str = ""
    compiles: bool = False                      # its first call compiles (torch.compile, to_static, XLA)
    first: np.ndarray | None = field(default=None, repr=False)
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def spread(self) -> float | None:
        """Interquartile range over the median (0.1 = the middle half of the runs lies within 10%)."""
        if len(self.samples) < 4:
            return None
        q = np.percentile(self.samples, [25, 75])
        return float((q[1] - q[0]) / statistics.median(self.samples))


def describe_error(err: BaseException) -> str:
    """One line: the exception type and its first line, with the innermost frame of the traceback.

    A message that starts with a heading (Paddle's ``In transformed code:``, followed by the user's source) is
    summarised by the error line inside it instead.
    """
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    if first.endswith(":"):
        inner = [ln for ln in lines[1:] if re.match(r"^[A-Za-z_.]*(Error|Exception)\b.*: ", ln)]
        if inner:
            first = inner[-1].removeprefix(f"{type(err).__name__}: ")
    frames = traceback.extract_tb(err.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}: {first[:300]}{where}"


def measure(candidates: list[Candidate], repeats: int, warmup: int, max_call: float = math.inf,
            before_call: Callable[[Candidate, str], None] = lambda c, phase: None) -> None:
    """Warm every candidate up, then time ``repeats`` interleaved rounds; fills ``samples``, ``first``, ``error``
    and ``note``.

    A candidate that raises while warming up is reported (``error``) and left out of the rounds; one that raises
    in a round keeps the samples it has and is left out of the rest. A call after the first that takes more than
    ``max_call`` seconds ends the candidate's timing with what it has (one warm-up call: its time is the only
    sample), so that one pathologically slow implementation cannot hold the run for hours. ``before_call(c,
    phase)`` is told of every call before it starts, outside the timed region, with phase ``'first'``,
    ``'warmup'`` or ``'round'`` (the worker's watchdog uses it to blame a crash or a hang).
    """
    for c in candidates:
        if c.run is None:
            continue
        try:
            for i in range(max(1, warmup)):
                before_call(c, "first" if i == 0 else "warmup")
                c.prepare()
                t0 = time.perf_counter()
                result = c.run()
                elapsed = time.perf_counter() - t0
                if i == 0 and c.output is not None:
                    c.first = np.asarray(c.output(result))
                del result
                if i >= 1 and elapsed > max_call:
                    c.samples.append(elapsed)
                    c.note = (f"timed once: a warm call took {elapsed:.1f} s, over the {max_call:g} s limit "
                              f"(--max-call)")
                    break
        except Exception as err:  # noqa: BLE001 - any failure of foreign code is a row of the report
            c.error = describe_error(err)
    alive = [c for c in candidates if c.run is not None and not c.error and not c.samples]
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for c in list(alive):
                before_call(c, "round")
                try:
                    c.prepare()
                    t0 = time.perf_counter()
                    result = c.run()
                    elapsed = time.perf_counter() - t0
                except Exception as err:  # noqa: BLE001
                    c.error = describe_error(err)
                    alive.remove(c)
                    continue
                del result
                c.samples.append(elapsed)
                if elapsed > max_call:
                    c.note = (f"stopped after {len(c.samples)} run(s): a call took {elapsed:.1f} s, over the "
                              f"{max_call:g} s limit (--max-call)")
                    alive.remove(c)
    finally:
        if was_enabled:
            gc.enable()
