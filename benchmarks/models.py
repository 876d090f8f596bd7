"""Whole-model rows (``--models``): inference and one training step per model, per backend, at batch 8, 224 x 224.

The extension point for the model rows of the performance issue: any backend whose ``backends.<fw>.models`` has
``create_model(name)`` is timed; a backend without it gets one row saying so. The models of a group (one backend,
mode and pass) are timed interleaved like the modules, and each ratio is to the first model listed (ResNet-50 by
default), so that ``seresnet50`` reads as the cost of SE inside a real network.

- inference: eval mode, no autograd, one forward of the batch;
- training step: train mode (BatchNorm on batch statistics), cross-entropy on fixed labels, backward, and an SGD
  step with momentum 0.9 (torch ``optim.SGD``, Paddle ``optimizer.Momentum``, in JAX the same update written out);
  the parameters change from step to step, as in training.

Each backend's driver (``benchmarks.frameworks``) builds the timed call. Weights are each framework's own
initialisation (timing does not depend on them). Flax runs compiled (``jax.jit``) only (op-by-op ResNet-50 is
minutes per step); ``torch.compile`` and ``to_static`` compile each model once per group, which takes minutes for
four ResNet-50s on a small machine (``--modes`` narrows it).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .plan import FormData, make_data
from .timing import Candidate, describe_error, measure

DEFAULT_MODELS = ("resnet50", "seresnet50", "ecaresnet50", "cbamresnet50")
PASSES = ("inference", "training step")
LR, MOMENTUM = 0.01, 0.9


def model_data(quick: bool, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """The batch (N, 3, H, W) float32 and labels (N,) int64: 8 x 224 x 224, or 2 x 64 x 64 with --quick."""
    n, size = (2, 64) if quick else (8, 224)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, size, size), dtype=np.float32), rng.integers(0, 1000, n).astype(np.int64)


def attention_parts(name: str, n: int, size: int) -> list[tuple[str, Any, tuple[int, int, int, int], int]]:
    """The attention modules inside model ``name`` (a ResNet of attn_core) for an input of n x 3 x size x size, by
    distinct (config, input shape): ``(registry name, config, (N, C, H, W), count)``. Empty for other models."""
    from attn_core.models import MODEL_CONFIGS
    from attn_core.registry import resolve_name

    cfg = MODEL_CONFIGS[name]()
    if not hasattr(cfg, "blocks") or getattr(cfg, "attn_layer", None) is None:
        return []
    kind = resolve_name(cfg.attn_layer)
    h = (size + 1) // 2  # the 7x7 stride-2 stem
    h = (h + 1) // 2     # the 3x3 stride-2 max pool
    found: dict[tuple[Any, tuple[int, int, int, int]], int] = {}
    for b in cfg.blocks:
        h = (h + b.stride - 1) // b.stride
        attn, channels = (b.attn, b.out_channels) if b.attn is not None else (b.simam, b.planes)
        if attn is not None:
            key = (attn, (n, channels, h, h))
            found[key] = found.get(key, 0) + 1
    return [(kind, c, shape, count) for (c, shape), count in found.items()]


def _part_record(name: str, parts: list[tuple[str, Any, Any, int]], cands: list[Candidate]) -> Candidate:
    """One row per model: the sum over its attention modules of count x median, the shapes in the note."""
    total, notes, errors = 0.0, [], []
    for (_kind, _, shape, count), c in zip(parts, cands, strict=True):
        if c.median is None:
            errors.append(f"{'x'.join(map(str, shape))}: {c.error}")
            continue
        total += count * c.median
        notes.append(f"{count} × {'x'.join(map(str, shape))} {c.median * 1e3:.2f} ms")
    out = Candidate(name, "part", None, error="; ".join(errors))
    out.samples = [total] if not errors else []
    out.note = f"{parts[0][0]}: " + ", ".join(notes)
    return out


def run_models(driver: Any, job: dict[str, Any], skip: set[str], mark: Any,
               record: Callable[..., Any]) -> Iterator[tuple[str, list[Any]]]:
    """Yield ``(group key, records)`` per mode and pass of ``driver``'s backend; ``record(...)`` builds a record
    from a candidate (see :mod:`benchmarks.worker`). Groups in ``skip`` are done already; ``job['exclude']``
    names models that killed or hung an earlier worker; ``mark`` is the worker's :class:`~benchmarks.worker.Marker`."""
    backend = driver.name
    names = list(job["models"]) or list(DEFAULT_MODELS)
    x, y = model_data(bool(job.get("quick")))
    shape = "x".join(str(s) for s in x.shape)
    try:
        create = importlib.import_module(f"backends.{backend}.models").create_model
    except (ImportError, AttributeError) as err:
        c = Candidate(names[0], "baseline", None, error=f"no backends.{backend}.models.create_model yet "
                                                          f"({describe_error(err)})")
        yield "models/none", [record(c, None, shape, job["modes"][0], "inference")]
        return
    repeats = int(job.get("model_repeats") or max(1, min(5, job["repeats"])))
    for mode in [m for m in job["modes"] if m in driver.model_modes]:
        for pass_ in PASSES:
            key = f"models/{mode}/{pass_}"
            if key in skip:
                continue
            driver.begin_group(mode)
            mark.group = key
            cands = []
            excluded = job.get("exclude", {}).get(key, {})
            for i, name in enumerate(names):
                if name in excluded:
                    cands.append(Candidate(name, "baseline" if i == 0 else "project", None, error=excluded[name]))
                    continue
                mark(name)
                try:
                    c = driver.model(create, name, x, y, mode, pass_)
                except Exception as err:  # noqa: BLE001 - a model that cannot be built is a row
                    c = Candidate(name, "", None, error=describe_error(err))
                c.kind = "baseline" if i == 0 else "project"
                cands.append(c)
            measure(cands, repeats, min(job["warmup"], 2), job.get("max_call", math.inf), before_call=mark.call)
            mark("", "done")
            base = cands[0].median
            yield key, [record(c, base, shape, mode, pass_) for c in cands]
            # the attention modules of each model alone, at the shapes they see inside it, in the same mode and pass
            key = f"models-parts/{mode}/{pass_}"
            if key in skip:
                continue
            parts_rows = []
            for name in names[1:]:
                parts = attention_parts(name, x.shape[0], x.shape[2])
                if not parts:
                    continue
                mark.group = key
                mark(name)
                module_pass = "forward" if pass_ == "inference" else "forward+backward"
                pcands = []
                driver.begin_group(mode)
                for kind, config, pshape, _ in parts:
                    rng = np.random.default_rng(0)
                    weights = {k: v.astype(np.float32) for k, v in config.init_weights(rng).items()}
                    fd = FormData("model", name, config, weights)
                    pcands.append(driver.project(kind, fd, make_data(pshape), mode, module_pass, name))
                measure(pcands, repeats, min(job["warmup"], 2), job.get("max_call", math.inf),
                        before_call=mark.call)
                parts_rows.append(_part_record(name, parts, pcands))
            mark("", "done")
            if parts_rows:
                yield key, [record(c, base, shape, mode, pass_) for c in parts_rows]
