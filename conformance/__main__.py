"""``python -m conformance``: every module x case x installed backend against the float64 reference; with
``--models``, every registered model too (``--modules none`` for the models alone); with ``--training``, models
trained step by step in every backend against the float64 reference trajectory (:mod:`conformance.training`); with
``--export``, every eval case exported to each framework's deployment formats (:mod:`conformance.export`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ._quiet import quiet
from .cases import MODULES, select_cases
from .model_cases import MODEL_NAMES, TRAIN_STEPS, select_model_cases
from .runners import MODES, RUNNERS, get_runner
from .suite import Report, Row, run_suite
from .tolerances import TOLERANCES


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m conformance", description=(
        "Compare every backend's forward pass and gradients (w.r.t. the input and every parameter) with the "
        "float64 NumPy reference of attn_core, one row per module x case x backend."))
    p.add_argument("--backends", type=_csv, default=list(RUNNERS),
                   help=f"comma-separated subset of {','.join(RUNNERS)} (default: all)")
    p.add_argument("--modules", type=_csv, default=list(MODULES),
                   help=f"comma-separated subset of {','.join(MODULES)}, or 'none' (default: all)")
    p.add_argument("--models", type=_csv, nargs="?", const=list(MODEL_NAMES), default=[], metavar="LIST",
                   help="also run the model cases (conformance.model_cases): eval, and training with the running "
                        f"statistics after {TRAIN_STEPS} steps, of the comma-separated registered models, every "
                        "model when LIST is left out. Default: no models. '--models --modules none' runs the "
                        f"models alone. Known: {', '.join(MODEL_NAMES)}")
    p.add_argument("--training", type=_csv, nargs="?", const=[], default=None, metavar="LIST",
                   help="instead of the cases, train the comma-separated registered models (default: resnet18, "
                        "seresnet18, ecaresnet18, cbamresnet18, simamresnet18, eca_mobilenetv2) for --steps steps "
                        "in every backend from the same weights with each --optimizers preset, and compare the "
                        "loss, lr, parameters, optimizer state and BatchNorm running statistics with the float64 "
                        "reference after every step (conformance.training); then the data-parallel rows of the "
                        "listed models among conformance.training.DATA_PARALLEL_MODELS (resnet18) unless "
                        "--no-data-parallel")
    p.add_argument("--optimizers", type=_csv, default=None, metavar="LIST",
                   help="with --training: the comma-separated presets of conformance.training.PRESETS (default: "
                        "all: sgd (momentum, weight decay, step schedule), nesterov (cosine with warm-up), adam, "
                        "adamw)")
    p.add_argument("--steps", type=int, default=None, metavar="K",
                   help="with --training: optimizer steps per trajectory (default: 10)")
    p.add_argument("--plots", type=Path, default=None, metavar="DIR",
                   help="with --training: write a PNG per model x preset to DIR, the loss per step of each "
                        "backend and of the reference, and the largest parameter difference per step (needs "
                        "matplotlib: the 'plots' extra)")
    p.add_argument("--no-data-parallel", action="store_true",
                   help="with --training: leave out its data-parallel rows (see --data-parallel)")
    p.add_argument("--data-parallel", type=_csv, nargs="?", const=[], default=None, metavar="LIST",
                   help="instead of the cases, one data-parallel training step of the comma-separated registered "
                        "models (default: resnet18, seresnet18) on 2 replicas in each backend on CPU (torch DDP and "
                        "Paddle DataParallel on gloo, JAX pmap on 2 host devices), per-replica and synchronised "
                        "BatchNorm, against the float64 reference (conformance.data_parallel)")
    p.add_argument("--cam", type=_csv, nargs="?", const=[], default=None, metavar="LIST",
                   help="instead of the cases, each backend's CAM and Grad-CAM maps of the comma-separated "
                        "registered models (default: resnet18, seresnet50, cbamresnet18, eca_mobilenetv2) in eval "
                        "mode against the float64 reference map, before ReLU and min-max (conformance.cam)")
    p.add_argument("--export", action="store_true",
                   help="instead of the cases, export each eval case of --modules (default: all) and --models "
                        "(default: none; opt-in, e.g. seresnet50,eca_mobilenetv2,cbamresnet18) to every deployment "
                        "format of each backend (torch.onnx; Paddle jit.save and paddle2onnx; Flax jax.export and "
                        "jax2onnx), run it in its runtime at another batch size than exported, and compare with the "
                        "float64 reference in float32; the JSON report holds each exported graph's operator counts "
                        "(conformance.export; needs the 'export' extra, n/a rows say what is missing)")
    p.add_argument("--dtypes", type=_csv, default=None,
                   help=f"comma-separated subset of {','.join(TOLERANCES)} (default: float32; float64 with "
                        "--training, whose float32 rows are a report of where the trajectory leaves the bound)")
    p.add_argument("--modes", type=_csv, default=["default"],
                   help=f"comma-separated subset of default,{','.join(MODES)} (default: default, each framework's "
                        "own default path: torch and Paddle eager, Flax under jax.jit). 'compiled' runs every case "
                        "again, as its own row, under each framework's compiler: torch.compile (CPU inductor: "
                        "seconds of compilation per case on a cold cache), paddle.jit.to_static (one static program "
                        "per case) or jax.jit. 'eager' is torch and Paddle dygraph, and Flax under jax.disable_jit "
                        "(op by op, slower than jax.jit). A case a mode cannot run is an ERROR row.")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the report as JSON to PATH")
    p.add_argument("--html", type=Path, metavar="PATH",
                   help="also write a page with the module x backend x mode x dtype matrix, coloured by the worst "
                        "error relative to tolerance, and every case behind it")
    p.add_argument("--no-grad", action="store_true", help="compare forward outputs only")
    p.add_argument("--require-all", action="store_true",
                   help="exit non-zero when a backend is skipped because it is not installed")
    p.add_argument("-q", "--quiet", action="store_true", help="print only failures and the summary")
    p.add_argument("--verbose", action="store_true",
                   help="let the frameworks print their own warnings and log lines (Paddle's ccache and glog "
                        "messages, JAX's backend search), which are silenced by default")
    args = p.parse_args(argv)
    quiet(args.verbose)  # before any runner imports its framework

    for b in args.backends:
        if b not in RUNNERS:
            p.error(f"unknown backend {b!r}; known: {', '.join(RUNNERS)}")
    if args.dtypes is None:
        args.dtypes = ["float64"] if args.training is not None or args.data_parallel is not None else ["float32"]
    for d in args.dtypes:
        if d not in TOLERANCES:
            p.error(f"unknown dtype {d!r}; known: {', '.join(TOLERANCES)}")
    if args.training is not None:
        return _training(p, args, argv)
    if args.no_data_parallel:
        p.error("--no-data-parallel applies to --training only")
    if args.data_parallel is not None:
        return _data_parallel(p, args, argv)
    if args.cam is not None:
        return _cam(p, args, argv)
    if args.export:
        return _export(p, args, argv)
    for flag in ("optimizers", "steps", "plots"):
        if getattr(args, flag) is not None:
            p.error(f"--{flag} applies to --training only")
    if args.modules == ["none"]:
        args.modules = []
    for m in args.modules:
        if m not in MODULES:
            p.error(f"unknown module {m!r}; known: {', '.join(MODULES)}, or none")
    for m in args.models:
        if m not in MODEL_NAMES:
            p.error(f"unknown model {m!r}; known: {', '.join(MODEL_NAMES)}")
    if not args.modules and not args.models:
        p.error("nothing to run: --modules none without --models")
    for m in args.modes:
        if m not in ("default", *MODES):
            p.error(f"unknown mode {m!r}; known: default, {', '.join(MODES)}")

    modes_per_backend = {b: len(dict.fromkeys(get_runner(b).default_mode if m == "default" else m
                                              for m in args.modes)) for b in args.backends}
    cases = len(select_cases(args.modules)) + len(select_model_cases(args.models))
    total = cases * len(args.dtypes) * sum(modes_per_backend.values())
    progress = _progress(total, args.quiet)
    report = run_suite(args.backends, args.modules, args.dtypes, grads=not args.no_grad, progress=progress,
                       modes=args.modes, models=args.models)
    return _finish(report, args, argv)


def _progress(total: int, quiet: bool) -> Callable[[Row], None]:
    """A callback printing each finished row, ``[done/total]``, on stderr (nothing when ``quiet``)."""
    done = 0

    def progress(row: Row) -> None:
        nonlocal done
        done += 1
        if not quiet:
            print(f"  [{done:>{len(str(total))}}/{total}] {row.status.upper():5} {row.module}/{row.case} "
                  f"[{row.backend}, {row.dtype}, {row.mode}]", file=sys.stderr, flush=True)

    return progress


def _training(p: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None) -> int:
    """``--training``: the rows of :func:`conformance.training.run_training` and, unless ``--no-data-parallel``,
    the float64 data-parallel rows of its models among :data:`~conformance.training.DATA_PARALLEL_MODELS`
    (:func:`conformance.data_parallel.run_data_parallel`), then the report as for the cases."""
    from .training import DATA_PARALLEL_MODELS, PRESETS, STEPS, TRAINING_MODELS, run_training, write_plots

    models = args.training or list(TRAINING_MODELS)
    for m in models:
        if m not in MODEL_NAMES:
            p.error(f"unknown model {m!r}; known: {', '.join(MODEL_NAMES)}")
    presets = args.optimizers or list(PRESETS)
    for o in presets:
        if o not in PRESETS:
            p.error(f"unknown optimizer preset {o!r}; known: {', '.join(PRESETS)}")
    steps = STEPS if args.steps is None else args.steps
    if steps < 1:
        p.error(f"--steps must be at least 1, got {steps}")
    total = len(models) * len(presets) * len(args.backends) * len(args.dtypes)
    run = run_training(models, presets, args.backends, args.dtypes, steps, _progress(total, args.quiet))
    report = run.report
    dp_models = [m for m in models if m in DATA_PARALLEL_MODELS]
    if dp_models and "float64" in args.dtypes and not args.no_data_parallel:
        from .data_parallel import run_data_parallel

        report = Report([*report.rows, *run_data_parallel(dp_models, args.backends)])
    if args.plots is not None:
        written = write_plots(args.plots, run.curves)
        print(written if isinstance(written, str) else f"wrote {len(written)} plot(s) to {args.plots}")
    if not args.quiet:  # the float32 rows' report of where they leave the bound is their note
        for r in report.rows:
            if r.note:
                print(f"NOTE {r.module}/{r.case} [{r.backend}, {r.dtype}]: {r.note}")
    return _finish(report, args, argv)


def _data_parallel(p: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None) -> int:
    """``--data-parallel``: the rows of :func:`conformance.data_parallel.run_data_parallel` (float64 only)."""
    from .data_parallel import DP_MODELS, run_data_parallel

    models = args.data_parallel or list(DP_MODELS)
    for m in models:
        if m not in MODEL_NAMES:
            p.error(f"unknown model {m!r}; known: {', '.join(MODEL_NAMES)}")
    if args.dtypes != ["float64"]:
        p.error("--data-parallel runs float64 only (each framework's CPU collective runs it)")
    return _finish(Report(run_data_parallel(models, args.backends)), args, argv)


def _cam(p: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None) -> int:
    """``--cam``: the map rows of :func:`conformance.cam.run_cam` (float32 and float64)."""
    from attn_core import cam
    from attn_core.spec import ConfigError

    from .cam import CAM_MODELS, run_cam
    from .model_cases import model_config

    models = args.cam or list(CAM_MODELS)
    for m in models:
        if m not in MODEL_NAMES:
            p.error(f"unknown model {m!r}; known: {', '.join(MODEL_NAMES)}")
        try:
            cam.cam_layer(model_config(m))
        except ConfigError as err:
            p.error(str(err))
    bad = [d for d in args.dtypes if d not in ("float32", "float64")]
    if bad:
        p.error(f"--cam runs float32 and float64, got {', '.join(bad)}")
    progress = _progress(len(models) * len(args.backends) * len(args.dtypes), args.quiet)
    return _finish(Report(run_cam(models, args.backends, args.dtypes, progress=progress)), args, argv)


def _export(p: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None) -> int:
    """``--export``: the rows of :func:`conformance.export.run_export` (float32 only, default mode only)."""
    from .export import export_cases, run_export
    from .exporters import exporters

    if args.dtypes != ["float32"]:
        p.error("--export runs float32 only (the dtype deployment runtimes are given)")
    if args.modes != ["default"] or args.no_grad:
        p.error("--export compares eval-mode forward outputs of the exported program: no --modes, no --no-grad")
    modules = [] if args.modules == ["none"] else args.modules
    for m in modules:
        if m not in MODULES:
            p.error(f"unknown module {m!r}; known: {', '.join(MODULES)}, or none")
    for m in args.models:
        if m not in MODEL_NAMES:
            p.error(f"unknown model {m!r}; known: {', '.join(MODEL_NAMES)}")
    if not modules and not args.models:
        p.error("nothing to export: --modules none without --models")
    total = len(export_cases(modules, args.models)) * sum(len(exporters(b)) for b in args.backends)
    rows = run_export(modules, args.models, args.backends, progress=_progress(total, args.quiet))
    return _finish(Report(rows), args, argv)


def _finish(report: Report, args: argparse.Namespace, argv: list[str] | None) -> int:
    """Print the table, failures and summary, write the JSON and HTML asked for, and return the exit status."""
    if not args.quiet:
        print(report.table())
    details = report.failure_details()
    if details:
        print("\n" + details)
    if report.not_applicable:  # printed, never a failure, --require-all or not
        print("\n" + report.not_applicable_details())
    print("\ntolerances: " + "; ".join(f"{k} atol {v.atol:g} rtol {v.rtol:g} ({v.source})"
                                       for k, v in TOLERANCES.items() if k in args.dtypes))
    print(report.summary())
    if args.json:
        args.json.write_text(report.to_json(indent=2))
        print(f"wrote {args.json}")
    if args.html:
        from .html import render_html
        command = "python -m conformance " + " ".join(argv if argv is not None else sys.argv[1:])
        args.html.write_text(render_html(report, command=command.strip()))
        print(f"wrote {args.html}")
    if report.failed:
        return 1
    if args.require_all and report.skipped:
        print("some backends were skipped (not installed) and --require-all was given", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
