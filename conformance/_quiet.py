"""The command-line entry points' switch for the frameworks' own chatter.

``python -m conformance``, ``python -m conformance.convert`` and ``python -m benchmarks`` call :func:`quiet` before
any framework is imported, unless ``--verbose`` is given. It silences only what a user of the command cannot act
on, each by its exact source:

- Paddle's ``UserWarning: No ccache found ...`` (its C++ extension utilities, at import), ``Tensor do not have
  'place' interface for pir graph mode`` (under ``paddle.jit.to_static``) and ``no variable in your model ...``
  (``paddle.jit.save`` of a module without parameters, such as SimAM, in ``--export``): a warnings filter on those
  messages;
- Paddle's glog lines (``I1202 ... pir_interpreter.cc] New Executor is Running ...``): ``GLOG_minloglevel=2``;
- XLA's C++ log lines: ``TF_CPP_MIN_LOG_LEVEL=2``;
- JAX's ``INFO ... Unable to initialize backend 'tpu'``: the ``jax._src.xla_bridge`` logger at WARNING (the
  backend search itself is unchanged, so a machine with an accelerator still uses it);
- the ONNX optimizer passes that torch's exporter runs (``INFO ... unused_removal.py ... Removed 9 unused nodes``,
  constant folding, initializer deduplication), shown once Paddle, imported beside torch, has set the root logger
  to INFO: the ``onnxscript`` and ``onnx_ir`` loggers at WARNING; and torch's ``FutureWarning: `isinstance(treespec,
  LeafSpec)` is deprecated`` from inside that exporter: a warnings filter;
- Paddle's ``WARNING: OMP_NUM_THREADS set to N, not 1 ...`` printed at import (the benchmarks set that variable on
  purpose): :func:`drop_stderr_lines` around the import.

An environment variable the user has set is left as it is. Importing this module, or the library, changes
nothing: only the entry points call these functions.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator

#: (message prefix, category) of each framework warning silenced
WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    ("No ccache found", UserWarning),
    ("Tensor do not have 'place' interface for pir graph mode", UserWarning),
    ("no variable in your model", UserWarning),
    ("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning),
)
#: environment variables read by the frameworks' C++ loggers when they load
ENV: dict[str, str] = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
#: Python loggers whose INFO lines say nothing a user can act on
LOGGERS: tuple[str, ...] = ("jax._src.xla_bridge", "onnxscript", "onnx_ir")
#: whole lines a framework prints to stderr itself, at import
STDERR_LINES: tuple[str, ...] = (r"WARNING: OMP_NUM_THREADS set to \d+, not 1\. .*",
                                 r"PLEASE USE OMP_NUM_THREADS WISELY\.")


def quiet(verbose: bool = False) -> None:
    """Silence the frameworks' messages listed in this module's docstring, for this process and the ones it starts
    (through the environment); with ``verbose``, do nothing."""
    if verbose:
        return
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    for message, category in WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def drop_stderr_lines(verbose: bool = False, patterns: tuple[str, ...] = STDERR_LINES) -> Iterator[None]:
    """Hold what Python code writes to ``sys.stderr`` inside the block and write it back at the end, less the lines
    that match one of ``patterns`` in full; with ``verbose``, hold nothing."""
    if verbose:
        yield
        return
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            yield
    finally:
        kept = [line for line in held.getvalue().splitlines(keepends=True)
                if not any(re.fullmatch(p, line.rstrip("\n")) for p in patterns)]
        sys.stderr.write("".join(kept))
