"""Interleaved timing: every repeat times the baseline, then each implementation in turn, so that a drift of the
machine (another process, frequency scaling, a cache that warms) hits all of them alike.

Warm-up calls (at least one) come first, per implementation; the first one's result is what the equality columns
compare (computed outside the timed loop). The garbage collector is off while timing. Each implementation's
``run`` must return only when its work is done (JAX: ``block_until_ready``); ``prepare`` runs untimed before every
call (clearing gradients, so that each backward writes fresh buffers rather than accumulating).

Every timed call also counts the process's minor page faults (``getrusage``, outside the timed region), so that a
report can show how much of a time is the kernel handing out fresh pages. A group whose spread
(:func:`group_spread`: of its rows' ratios to the baseline, round by round) exceeds :data:`SPREAD_LIMIT` has its
rounds timed again, at most :data:`MAX_RERUNS` times, and keeps its least spread attempt (:func:`measure_group`); a
row whose ratio still spreads above the limit is unreliable.
"""

from __future__ import annotations

import gc
import math
import re
import resource
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    faults: list[float] = field(default_factory=list)  # minor page faults per call of each sample
    calls: int = 1                              # back-to-back calls averaged into one sample (see measure)

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def spread(self) -> float | None:
        return spread(self.samples)

    @property
    def faults_per_call(self) -> float | None:
        return float(statistics.median(self.faults)) if self.faults else None


#: a group whose spread is above this is timed again; a row still above it after the re-runs is unreliable
SPREAD_LIMIT = 0.25
#: how many times a group's rounds are timed again at most, so that a noisy machine cannot hold a run for hours
MAX_RERUNS = 2
#: seconds of back-to-back calls that make one sample at least (the summary's default; 0: one call per sample)
MIN_SAMPLE = 0.02
#: the most calls one sample averages, so that a call of microseconds cannot make a round take minutes
MAX_CALLS = 1000


def spread(samples: list[float]) -> float | None:
    """Interquartile range over the median (0.1 = the middle half of the runs lies within 10%); None under four
    samples, where quartiles say nothing, or for a median of 0."""
    if len(samples) < 4 or statistics.median(samples) <= 0:
        return None
    q = np.percentile(samples, [25, 75])
    return float((q[1] - q[0]) / statistics.median(samples))


def round_ratios(samples: list[float], base: list[float]) -> list[float] | None:
    """Each round's sample over the baseline's sample of the same round; None unless both finished every round
    (the rounds interleave them, so a pair shares the machine's speed of that moment)."""
    if samples and len(samples) == len(base) and all(b > 0 for b in base):
        return [s / b for s, b in zip(samples, base, strict=True)]
    return None


def ratio_spread(samples: list[float], base: list[float]) -> float | None:
    """The :func:`spread` of a row's ratio to the baseline: of its rounds' ratios where the rounds pair up, since a
    round slowed for both cancels in the ratio as it does in :func:`benchmarks.worker.paired_ratio`; else the larger
    of the two samples' spreads. None for a row without samples."""
    if not samples:
        return None
    paired = round_ratios(samples, base)
    if paired is not None:
        return spread(paired)
    spreads = [s for s in (spread(samples), spread(base)) if s is not None]
    return max(spreads) if spreads else None


def group_spread(sample_lists: list[list[float]]) -> float | None:
    """The largest :func:`ratio_spread` of a group's rows, the baseline's samples first (a group of the baseline
    alone: its own spread): every figure of the group is a ratio to the baseline, so one noisy ratio is enough to
    make the group's figures disagree from run to run. None when no row has four samples."""
    if not sample_lists:
        return None
    base, rows = sample_lists[0], sample_lists[1:]
    spreads = [s for s in (ratio_spread(x, base) for x in rows) if s is not None] if rows else [spread(base)]
    clean = [s for s in spreads if s is not None]
    return max(clean) if clean else None


def needs_rerun(sample_lists: list[list[float]], limit: float = SPREAD_LIMIT) -> bool:
    s = group_spread(sample_lists)
    return s is not None and s > limit


def best_attempt(attempts: list[list[list[float]]]) -> int:
    """The index of the attempt (each a list of the rows' samples, the baseline's first) with the smallest group
    spread; the first of equals. Attempts are kept whole: a ratio is only meaningful between calls of the same
    interleaved rounds."""
    keyed = [(math.inf if (s := group_spread(a)) is None else s, i) for i, a in enumerate(attempts)]
    return min(keyed)[1]


def unreliable(row_spread: float | None, limit: float = SPREAD_LIMIT) -> bool:
    """A ratio is unreliable when its :func:`ratio_spread` stayed above ``limit``."""
    return row_spread is not None and row_spread > limit


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


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(candidates: list[Candidate], repeats: int, warmup: int, max_call: float = math.inf,
            before_call: Callable[[Candidate, str], None] = lambda c, phase: None,
            clock: Callable[[], float] = time.perf_counter, min_sample: float = 0.0) -> None:
    """Warm every candidate up, then time ``repeats`` interleaved rounds; fills ``samples``, ``faults``,
    ``first``, ``error`` and ``note``.

    A candidate that raises while warming up is reported (``error``) and left out of the rounds; one that raises
    in a round keeps the samples it has and is left out of the rest. A call after the first that takes more than
    ``max_call`` seconds ends the candidate's timing with what it has (one warm-up call: its time is the only
    sample), so that one pathologically slow implementation cannot hold the run for hours. ``before_call(c,
    phase)`` is told of every call before it starts, outside the timed region, with phase ``'first'``,
    ``'warmup'`` or ``'round'`` (the worker's watchdog uses it to blame a crash or a hang). ``clock``: seconds,
    replaceable so that tests can script the durations.

    With ``min_sample`` > 0, one more untimed call after the warm-up sets ``calls``: a sample is then the mean of
    enough back-to-back calls to last ``min_sample`` seconds (at most :data:`MAX_CALLS`), as
    ``torch.utils.benchmark.Timer.blocked_autorange`` does, because a single call of a fraction of a millisecond
    varies with the cache and thread wake-up state the previous implementation left, by a factor of three.
    """
    for c in candidates:
        if c.run is None:
            continue
        try:
            for i in range(max(1, warmup)):
                before_call(c, "first" if i == 0 else "warmup")
                c.prepare()
                t0 = clock()
                result = c.run()
                elapsed = clock() - t0
                if i == 0 and c.output is not None:
                    c.first = np.asarray(c.output(result))
                del result
                if i >= 1 and elapsed > max_call:
                    c.samples.append(elapsed)
                    c.note = (f"timed once: a warm call took {elapsed:.1f} s, over the {max_call:g} s limit "
                              f"(--max-call)")
                    break
            if min_sample > 0 and not c.samples:
                before_call(c, "warmup")
                c.prepare()
                t0 = clock()
                c.run()
                elapsed = clock() - t0
                c.calls = max(1, min(MAX_CALLS, math.ceil(min_sample / elapsed) if elapsed > 0 else MAX_CALLS))
        except Exception as err:  # noqa: BLE001 - any failure of foreign code is a row of the report
            c.error = describe_error(err)
    alive = [c for c in candidates if c.run is not None and not c.error and not c.samples]
    _rounds(alive, repeats, max_call, before_call, clock)


def _rounds(alive: list[Candidate], repeats: int, max_call: float, before_call: Callable[[Candidate, str], None],
            clock: Callable[[], float]) -> None:
    """``repeats`` interleaved rounds of the candidates in ``alive``, the garbage collector off."""
    alive = list(alive)
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for c in list(alive):
                before_call(c, "round")
                elapsed, faults = 0.0, 0
                try:
                    for _ in range(c.calls):
                        c.prepare()
                        f0 = _minor_faults()
                        t0 = clock()
                        result = c.run()
                        elapsed += clock() - t0
                        faults += _minor_faults() - f0
                        del result
                except Exception as err:  # noqa: BLE001
                    c.error = describe_error(err)
                    alive.remove(c)
                    continue
                elapsed /= c.calls
                c.samples.append(elapsed)
                c.faults.append(faults / c.calls)
                if elapsed > max_call:
                    c.note = (f"stopped after {len(c.samples)} run(s): a call took {elapsed:.1f} s, over the "
                              f"{max_call:g} s limit (--max-call)")
                    alive.remove(c)
    finally:
        if was_enabled:
            gc.enable()


def measure_group(candidates: list[Candidate], repeats: int, warmup: int, max_call: float = math.inf,
                  before_call: Callable[[Candidate, str], None] = lambda c, phase: None,
                  limit: float = SPREAD_LIMIT, reruns: int = MAX_RERUNS,
                  clock: Callable[[], float] = time.perf_counter, min_sample: float = 0.0) -> int:
    """:func:`measure`, then, while the group's spread exceeds ``limit``, its rounds again (no new warm-up), at
    most ``reruns`` times; keeps the attempt with the smallest group spread. Returns the number of attempts.

    Only candidates that finished every round of the first attempt are timed again (one stopped by
    ``max_call`` or an error keeps what it has, in every attempt alike).
    """
    measure(candidates, repeats, warmup, max_call, before_call, clock, min_sample)
    again = [c for c in candidates if c.run is not None and not c.error and not c.note and len(c.samples) == repeats]
    attempts = [[(list(c.samples), list(c.faults)) for c in again]]
    while len(attempts) <= reruns and needs_rerun([c.samples for c in candidates], limit):
        for c in again:
            c.samples, c.faults = [], []
        _rounds([c for c in again if not c.error], repeats, max_call, before_call, clock)
        attempts.append([(list(c.samples), list(c.faults)) for c in again])
        best = best_attempt([_in_order(candidates, again, [s for s, _ in a]) for a in attempts])
        for c, (samples, faults) in zip(again, attempts[best], strict=True):
            c.samples, c.faults = list(samples), list(faults)
    return len(attempts)


def _in_order(candidates: list[Candidate], again: list[Candidate], samples: list[list[float]]) -> list[list[float]]:
    """Every candidate's samples in the group's order (the baseline first), those of ``again`` from ``samples``."""
    timed = {id(c): x for c, x in zip(again, samples, strict=True)}
    return [timed.get(id(c), c.samples) for c in candidates]
