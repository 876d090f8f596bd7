"""Whole-model rows (``--models``): inference and one training step per model, per backend, at batch 8, 224 x 224.

The extension point for the model rows of the performance issue: any backend whose ``backends.<fw>.models`` has
``create_model(name)`` is timed; a backend without it gets one row saying so. The models of a group (one backend,
mode and pass) are timed interleaved like the modules, and each ratio is to the first model listed (ResNet-50 by
default), so that ``seresnet50`` reads as the cost of SE inside a real network.

- inference: eval mode, no autograd, one forward of the batch;
- training step: train mode (BatchNorm on batch statistics), cross-entropy on fixed labels, backward, and an SGD
  step with momentum 0.9 (torch ``optim.SGD``, Paddle ``optimizer.Momentum``, in JAX the same update written out);
  the parameters change from step to step, as in training.

Weights are each framework's own initialisation (timing does not depend on them). Flax runs under ``jax.jit`` only
(op-by-op ResNet-50 is minutes per step); ``torch.compile`` and ``to_static`` compile each model once per group,
which takes minutes for four ResNet-50s on a small machine (``--modes`` narrows it).
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Callable, Iterator

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


# ------------------------------------------------------------------------------------------------- torch
def _torch(create: Callable[..., Any], name: str, x_np: np.ndarray, y_np: np.ndarray, mode: str,
           pass_: str) -> Candidate:
    import torch
    import torch.nn.functional as F

    model = create(name)
    fn = torch.compile(model, dynamic=False) if mode == "compile" else model
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    if pass_ == "inference":
        model.eval()

        def infer() -> Any:
            with torch.no_grad():
                return fn(x)
        return Candidate(name, "", infer, compiles=mode == "compile")
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    def step() -> Any:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(fn(x), y)
        loss.backward()
        opt.step()
        return loss
    return Candidate(name, "", step, compiles=mode == "compile")


# ------------------------------------------------------------------------------------------------ Paddle
def _paddle(create: Callable[..., Any], name: str, x_np: np.ndarray, y_np: np.ndarray, mode: str,
            pass_: str) -> Candidate:
    import paddle
    import paddle.nn.functional as F

    model = create(name)
    if pass_ == "inference":
        model.eval()
    else:
        model.train()
    fn = paddle.jit.to_static(model, full_graph=True) if mode == "to_static" else model
    x, y = paddle.to_tensor(x_np), paddle.to_tensor(y_np)
    if pass_ == "inference":
        def infer() -> Any:
            with paddle.no_grad():
                return fn(x)
        return Candidate(name, "", infer, compiles=mode == "to_static")
    opt = paddle.optimizer.Momentum(learning_rate=LR, momentum=MOMENTUM, parameters=model.parameters())

    def step() -> Any:
        loss = F.cross_entropy(fn(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad(set_to_zero=False)
        return loss
    return Candidate(name, "", step, compiles=mode == "to_static")


# -------------------------------------------------------------------------------------------------- Flax
def _flax(create: Callable[..., Any], name: str, x_np: np.ndarray, y_np: np.ndarray, mode: str,
          pass_: str) -> Candidate:
    import jax
    import jax.numpy as jnp

    model = create(name)
    x, y = jnp.asarray(np.ascontiguousarray(x_np.transpose(0, 2, 3, 1))), jnp.asarray(y_np)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    params, stats = variables["params"], variables.get("batch_stats", {})
    if pass_ == "inference":
        infer = jax.jit(lambda v, x: model.apply(v, x))
        return Candidate(name, "", lambda: infer(variables, x).block_until_ready(), compiles=True)

    def loss_fn(p: Any, stats: Any) -> tuple[jax.Array, Any]:
        logits, updates = model.apply({"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1)), updates["batch_stats"]

    @jax.jit
    def step(p: Any, stats: Any, velocity: Any) -> tuple[Any, Any, Any, jax.Array]:
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, stats)
        velocity = jax.tree_util.tree_map(lambda v, g: MOMENTUM * v + g, velocity, grads)
        p = jax.tree_util.tree_map(lambda w, v: w - LR * v, p, velocity)
        return p, stats, velocity, loss

    state = [params, stats, jax.tree_util.tree_map(jnp.zeros_like, params)]

    def run() -> Any:
        state[0], state[1], state[2], loss = step(*state)
        return jax.block_until_ready(loss)
    return Candidate(name, "", run, compiles=True)


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
    for (kind, _, shape, count), c in zip(parts, cands):
        if c.median is None:
            errors.append(f"{'x'.join(map(str, shape))}: {c.error}")
            continue
        total += count * c.median
        notes.append(f"{count} × {'x'.join(map(str, shape))} {c.median * 1e3:.2f} ms")
    out = Candidate(name, "part", None, error="; ".join(errors))
    out.samples = [total] if not errors else []
    out.note = f"{parts[0][0]}: " + ", ".join(notes)
    return out


BUILDERS: dict[str, Callable[..., Candidate]] = {"torch": _torch, "paddle": _paddle, "flax": _flax}
#: backend -> the modes whole models run in, where not all of the backend's
MODEL_MODES: dict[str, tuple[str, ...]] = {"flax": ("jit",)}


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
    for mode in [m for m in job["modes"] if m in MODEL_MODES.get(backend, (m,))]:
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
                    c = BUILDERS[backend](create, name, x, y, mode, pass_)
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
