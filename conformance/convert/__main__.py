"""``python -m conformance.convert SRC DST [--model NAME]``: convert a checkpoint between frameworks, or export it
to ONNX (``DST`` ending in ``.onnx``), verified.

Exit status: 0 converted and verified (or ``--no-verify``); 1 the weights read back from the written file, or
the converted model's logits, differ from the source's (beyond float32's tolerance on the logits' scale); 2 nothing
was converted, with one line of reason on stderr (usage, an unknown format, model or ``--model-kwargs`` key, a
source that is missing, a directory, unreadable, truncated or another model's weights, a source holding NaN or inf
without ``--allow-nonfinite``, a DST that exists without ``--force``, a DST that is a directory, a folder that
cannot be written, a framework or an ONNX exporter that is not installed, an ONNX source). Only 0 writes DST.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from attn_core import ConfigError, InputShapeError, WeightLoadError
from attn_core.checkpoint import CheckpointError

from .._quiet import quiet
from . import ConvertError, VerificationError, convert
from .formats import EXTENSIONS, FORMATS
from .verify import BACKENDS


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_model_kwargs(text: str) -> dict[str, Any]:
    """``'{"num_classes": 10}'`` or ``'num_classes=10,eca_kernel=eq9'`` (values read as JSON when they parse)."""
    text = text.strip()
    if text.startswith("{"):
        try:
            out = json.loads(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"--model-kwargs: not a JSON object: {err}") from None
        if not isinstance(out, dict):
            raise argparse.ArgumentTypeError("--model-kwargs: expected a JSON object")
        return out
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"--model-kwargs: expected key=value, got {item!r}")
        out[key.strip()] = _value(value.strip())
    return out


def main(argv: list[str] | None = None) -> int:
    exts = ", ".join(f"{k} {v}" for k, v in EXTENSIONS.items())
    p = argparse.ArgumentParser(prog="python -m conformance.convert", description=(
        "Convert a checkpoint between torch, Paddle, Flax and the canonical safetensors file, or export it to ONNX "
        "through the source framework's exporter; verify it by running the model in both frameworks (ONNX: in "
        "onnxruntime) on a fixed seeded input. Nothing is written unless it passes."),
        epilog=f"formats by extension: {exts}. Exit status: 0 written, 1 weights or logits differ, 2 cannot convert.")
    p.add_argument("src", help="the checkpoint to convert")
    p.add_argument("dst", help="the file to write")
    p.add_argument("--from", dest="src_format", choices=FORMATS, help="format of SRC (default: by extension)")
    p.add_argument("--to", dest="dst_format", choices=FORMATS, help="format of DST (default: by extension)")
    p.add_argument("--model", help="registered model name (required unless SRC is a canonical checkpoint)")
    p.add_argument("--model-kwargs", type=parse_model_kwargs, default=None,
                   help="config overrides: JSON object or key=value,... (e.g. num_classes=10)")
    p.add_argument("--no-verify", action="store_true", help="do not run the model to compare logits")
    p.add_argument("--verify-with", choices=list(BACKENDS), default="torch",
                   help="framework that runs the canonical checkpoint's side of the comparison (default: torch)")
    p.add_argument("--input-size", type=int, default=None, help="H = W of the verification input")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="convert a checkpoint holding NaN or inf weights (refused by default: a diverged run?)")
    p.add_argument("--verbose", action="store_true", help="let the frameworks print their own warnings and logs")
    args = p.parse_args(argv)
    quiet(args.verbose)  # before convert() imports a framework
    try:
        result = convert(args.src, args.dst, src_format=args.src_format, dst_format=args.dst_format,
                         model=args.model, model_kwargs=args.model_kwargs, verify_outputs=not args.no_verify,
                         verify_with=args.verify_with, input_size=args.input_size, overwrite=args.force,
                         allow_nonfinite=args.allow_nonfinite)
    except VerificationError as err:
        print(err.result.verification())
        print(f"error: {err.result.dst} not written: the weights read back or the logits differ", file=sys.stderr)
        return 1
    except (ConvertError, CheckpointError, WeightLoadError, ConfigError, InputShapeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a file the checks above could not foresee (permissions, a full disk)
        print(f"error: {err.filename or args.src}: {err.strerror or err}", file=sys.stderr)
        return 2
    print(result.summary())
    print(result.verification())
    return 0


if __name__ == "__main__":
    sys.exit(main())
