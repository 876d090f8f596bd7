"""Data-parallel rows on CPU: two replicas of a registered model, each on its shard of one global batch.

A global batch of :data:`GLOBAL_BATCH` is split in :data:`WORLD` shards; each replica starts from the same
canonical weights, computes the mean softmax cross-entropy of its shard in training mode
(``attn_core.training.softmax_cross_entropy`` in the reference) and backpropagates, and
the framework's data parallelism averages the gradients. The float64 reference (``config.reference_vjp`` and
``config.reference_state`` of attn_core):

- per-replica BatchNorm (each replica normalises with its own shard's statistics): the averaged gradient is the
  mean of the shards' gradients, and each replica's running statistics are the reference on its own shard;
- synchronised BatchNorm (the statistics of the whole global batch): the gradient is that of the whole batch's
  mean loss in one forward, and every replica's running statistics are the reference on the whole batch.

Each framework runs in its own subprocesses, bounded by :data:`TIMEOUT_S` and killed (their process groups) on a
timeout or any failure: torch as :data:`WORLD` processes with ``torch.distributed`` (gloo, a file store) and
``DistributedDataParallel``; Paddle as :data:`WORLD` processes with ``paddle.distributed.init_parallel_env`` on
its gloo process group and ``paddle.DataParallel``; JAX as one process with :data:`WORLD` XLA host devices
(``--xla_force_host_platform_device_count``, which must be set before jax is imported) under ``jax.pmap`` with the
gradients ``pmean``-ed. Synchronised BatchNorm is ``SyncBatchNorm.convert_sync_batchnorm`` in torch and Paddle
and, in Flax, the project's BatchNorm with its batch statistics ``pmean``-ed over the mapped axis, as
``flax.linen.BatchNorm(axis_name=...)`` does (the project's layer keeps torch's unbiased running variance, so
Flax's own layer cannot stand in). A framework whose synchronised BatchNorm cannot run on CPU gives an 'n/a' row
with the framework's own error, never a pass.

Workers return NumPy arrays in canonical names through ``.npz`` files in a temporary directory; the parent
compares them with the reference at the float64 bound of :mod:`conformance.tolerances`, on each quantity's scale
as the model cases are (:class:`conformance.model_cases.ModelCase`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attn_core.training import softmax_cross_entropy

from .model_cases import CLASSES, model_config
from .runners import RUNNERS, Handle, get_runner
from .suite import Comparison, Row, compare
from .tolerances import tolerance_for

__all__ = ["DP_MODELS", "WORLD", "GLOBAL_BATCH", "SHAPE", "VARIANTS", "TIMEOUT_S", "DataParallelReference",
           "dp_data", "dp_reference", "run_data_parallel"]

#: the models the data-parallel rows run by default
DP_MODELS: tuple[str, ...] = ("resnet18", "seresnet18")
#: replicas (processes in torch and Paddle, XLA host devices in JAX)
WORLD = 2
#: the global batch, split in :data:`WORLD` equal shards
GLOBAL_BATCH = 8
SHAPE = (GLOBAL_BATCH, 3, 32, 32)
PER_REPLICA, SYNC = "per-replica-bn", "sync-bn"
VARIANTS: tuple[str, ...] = (PER_REPLICA, SYNC)
#: the wall-clock bound of one framework's processes (start-up, collective initialisation, every variant)
TIMEOUT_S = 300.0
#: the dtype of every row: each framework's CPU collective runs float64 here
DTYPE = "float64"
_MODES = {"torch": "DDP gloo x2 processes", "paddle": "DataParallel gloo x2 processes",
          "flax": "pmap x2 XLA host devices"}
_AXIS = "replicas"
_REPO = Path(__file__).resolve().parents[1]


def dp_data(model: str) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Seeded canonical weights, the NCHW global batch :data:`SHAPE` and its integer labels, from the model's name
    (drawn as the suite's cases draw theirs: a non-zero mean and unit-ish spread per channel)."""
    rng = np.random.default_rng(zlib.crc32(f"{model}/data-parallel".encode()))
    weights = model_config(model).init_weights(rng)
    x = rng.standard_normal(SHAPE) * 1.5 + rng.uniform(-1.0, 1.0, (1, SHAPE[1], 1, 1))
    labels = rng.integers(0, CLASSES, GLOBAL_BATCH)
    return weights, x, labels


@dataclass(frozen=True)
class DataParallelReference:
    """The float64 reference of one variant: each replica's loss, the averaged gradient, each replica's running
    statistics after the step."""

    losses: tuple[float, ...]
    grads: dict[str, np.ndarray]
    states: tuple[dict[str, np.ndarray], ...]


def _shards(a: np.ndarray) -> list[np.ndarray]:
    return list(np.split(a, WORLD))


def dp_reference(model: str, variant: str) -> DataParallelReference:
    """The float64 reference of ``variant`` (:data:`VARIANTS`) for ``model`` on :func:`dp_data` (module docstring)."""
    config = model_config(model)
    weights, x, labels = dp_data(model)
    if variant == PER_REPLICA:
        shard_losses, shard_grads, shard_states = [], [], []
        for xs, ls in zip(_shards(x), _shards(labels), strict=True):
            loss, dlogits = softmax_cross_entropy(config.reference(weights, xs, training=True), ls)
            shard_losses.append(loss)
            shard_grads.append(config.reference_vjp(weights, xs, dlogits, training=True)[2])
            shard_states.append(config.reference_state(weights, xs))
        mean = {k: np.mean([g[k] for g in shard_grads], axis=0) for k in shard_grads[0]}
        return DataParallelReference(tuple(shard_losses), mean, tuple(shard_states))
    if variant == SYNC:
        logits = config.reference(weights, x, training=True)
        # each replica's loss is its shard's mean; their average is the whole batch's mean, whose gradient this is
        _, dlogits = softmax_cross_entropy(logits, labels)
        grads = config.reference_vjp(weights, x, dlogits, training=True)[2]
        losses = tuple(softmax_cross_entropy(y, ls)[0] for y, ls in zip(_shards(logits), _shards(labels),
                                                                         strict=True))
        state = config.reference_state(weights, x)
        return DataParallelReference(losses, grads, (state,) * WORLD)
    raise ValueError(f"unknown data-parallel variant {variant!r}; known: {', '.join(VARIANTS)}")


# ----------------------------------------------------------------------------------------------- the parent
def run_data_parallel(models: Iterable[str] | None = None, backends: Iterable[str] | None = None,
                      timeout_s: float = TIMEOUT_S, variants: Sequence[str] = VARIANTS) -> list[Row]:
    """One row per model x backend x variant (:data:`VARIANTS`): the framework's data-parallel training step on
    :data:`WORLD` replicas against the float64 reference (module docstring). ``models`` default to
    :data:`DP_MODELS`, ``backends`` to every runner's framework; each framework's processes are bounded by
    ``timeout_s`` seconds, after which they are killed and the rows are errors."""
    models = list(DP_MODELS if models is None else models)
    backends = list(RUNNERS if backends is None else backends)
    bad = [b for b in backends if b not in RUNNERS]
    if bad:
        raise ValueError(f"unknown backend(s) {', '.join(bad)}; known: {', '.join(RUNNERS)}")
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown data-parallel variant(s) {', '.join(bad)}; known: {', '.join(VARIANTS)}")
    rows = []
    for model in models:
        model_config(model)  # an unknown model is an error naming the known ones, before anything runs
        references = {v: dp_reference(model, v) for v in variants}
        for fw in backends:
            rows.extend(_framework_rows(model, fw, references, timeout_s))
    return rows


def _case_id(variant: str) -> str:
    n, c, h, w = SHAPE
    return f"dp{WORLD}-n{n}-{h}x{w}-{variant}"


def _framework_rows(model: str, fw: str, references: Mapping[str, DataParallelReference],
                    timeout_s: float) -> list[Row]:
    rows = {v: Row(model, _case_id(v), fw, DTYPE, _MODES[fw], "pass") for v in references}
    ok, why = get_runner(fw).available()
    if not ok:
        for row in rows.values():
            row.status, row.message = "skip", why
        return list(rows.values())
    weights, x, labels = dp_data(model)
    with tempfile.TemporaryDirectory(prefix=f"dp-{fw}-") as tmp:
        job = Path(tmp)
        arrays: dict[str, Any] = {"x": x, "labels": labels, **{f"w:{k}": v for k, v in weights.items()}}
        np.savez(job / "job.npz", **arrays)
        (job / "job.json").write_text(json.dumps({"model": model, "dtype": DTYPE, "variants": list(references)}))
        start = time.perf_counter()
        failure = _launch(fw, job, timeout_s)
        seconds = time.perf_counter() - start
        for variant, row in rows.items():
            row.seconds = seconds  # the whole launch: processes, collectives and every variant
            na = job / f"na-{variant}.txt"
            outs = sorted(job.glob(f"out-{variant}-*.npz"))
            if na.exists():
                row.status, row.message = "n/a", na.read_text()
            elif not outs:  # a variant that wrote results is judged on them even when a later one failed
                row.status = "error"
                row.message = failure or f"{fw}: the workers wrote no result for {variant}"
            else:
                got: dict[str, np.ndarray] = {}
                for path in outs:
                    with np.load(path) as data:
                        got.update({k: data[k] for k in data.files})
                row.comparisons = _compare(got, references[variant])
                if not all(c.passed for c in row.comparisons):
                    row.status = "fail"
    return list(rows.values())


def _compare(got: Mapping[str, np.ndarray], ref: DataParallelReference) -> list[Comparison]:
    """``loss[r]``, ``grad:<name>`` (the averaged gradient rank 0 holds) and ``state[r]:<name>`` comparisons."""
    tol = tolerance_for(DTYPE)
    out = [compare(f"loss[{r}]", got.get(f"loss{r}"), np.asarray(v), tol, True) for r, v in enumerate(ref.losses)]
    out += [compare(f"grad:{k}", got.get(f"grad:{k}"), v, tol, True) for k, v in ref.grads.items()]
    for r, state in enumerate(ref.states):
        out += [compare(f"state[{r}]:{k}", got.get(f"state{r}:{k}"), v, tol, True) for k, v in state.items()]
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _environments(fw: str, job: Path) -> list[dict[str, str]]:
    """The environment of each worker process of ``fw``: one per rank (torch, Paddle) or one with the host
    devices (JAX); one thread each, since the replicas share the machine's cores."""
    base = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(_REPO), os.environ.get("PYTHONPATH", "")]))}
    if fw == "flax":
        flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={WORLD}".strip()
        return [{**base, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu", "DP_RANK": "0"}]
    if fw == "torch":
        return [{**base, "DP_RANK": str(r)} for r in range(WORLD)]
    ports = [_free_port() for _ in range(WORLD)]
    endpoints = [f"127.0.0.1:{p}" for p in ports]
    return [{**base, "DP_RANK": str(r), "PADDLE_DISTRI_BACKEND": "gloo", "PADDLE_TRAINER_ID": str(r),
             "PADDLE_TRAINERS_NUM": str(WORLD), "PADDLE_CURRENT_ENDPOINT": endpoints[r],
             "PADDLE_TRAINER_ENDPOINTS": ",".join(endpoints), "PADDLE_MASTER": endpoints[0],
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(ports[0]), "CUDA_VISIBLE_DEVICES": ""}
            for r in range(WORLD)]


def _launch(fw: str, job: Path, timeout_s: float) -> str:
    """Run ``fw``'s workers on ``job`` until they exit or ``timeout_s`` passes; every process group they made is
    killed before returning. '' when all exited with 0, else what went wrong with the tail of their output."""
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for env in _environments(fw, job):
            log = job / f"log-{fw}-{env['DP_RANK']}.txt"
            logs.append(log)
            with log.open("wb") as sink:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "conformance.data_parallel", "--worker", fw, "--job", str(job)],
                    cwd=_REPO, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + timeout_s
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                return f"{fw}: the workers did not finish within {timeout_s:g} s and were killed" + _tails(logs)
            if any(p.returncode not in (None, 0) for p in procs):
                break  # a rank that failed leaves the others waiting in a collective
            time.sleep(0.2)
        codes = [p.returncode for p in procs]
        if any(c != 0 for c in codes):
            return f"{fw}: worker exit codes {codes}" + _tails(logs)
        return ""
    finally:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)  # what a worker started (Paddle's store server) dies with it


def _tails(logs: Sequence[Path], lines: int = 12) -> str:
    out = []
    for log in logs:
        text = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        out.append(f"\n--- {log.name} (last {lines} lines)\n" + "\n".join(text[-lines:]))
    return "".join(out)


# ----------------------------------------------------------------------------------------------- the workers
@dataclass(frozen=True)
class _Job:
    path: Path
    model: str
    dtype: str
    variants: tuple[str, ...]
    weights: dict[str, np.ndarray]
    x: np.ndarray
    labels: np.ndarray

    @classmethod
    def read(cls, path: Path) -> _Job:
        meta = json.loads((path / "job.json").read_text())
        with np.load(path / "job.npz") as data:
            weights = {k[2:]: data[k] for k in data.files if k.startswith("w:")}
            x, labels = data["x"], data["labels"]
        return cls(path, meta["model"], meta["dtype"], tuple(meta["variants"]), weights, x, labels)

    def handle(self, fw: str) -> Handle:
        return get_runner(fw).build_handle(self.model, model_config(self.model))

    def write(self, variant: str, rank: int, arrays: Mapping[str, Any]) -> None:
        out: dict[str, Any] = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
        np.savez(self.path / f"out-{variant}-{rank}.npz", **out)

    def not_applicable(self, variant: str, why: str) -> None:
        (self.path / f"na-{variant}.txt").write_text(why)


def _results(handle: Handle, rank: int, loss: float, grads: Mapping[str, np.ndarray | None] | None,
             state: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """One replica's loss, state and (rank 0) averaged gradients by canonical name, from native names."""
    out: dict[str, Any] = {f"loss{rank}": loss}
    out.update({f"state{rank}:{k}": v for k, v in handle.canonical_state(state).items()})
    if grads is not None:
        out.update({f"grad:{k}": v for k, v in handle.canonical_grads(grads).items()})
    return out


def _torch_worker(job: _Job, rank: int) -> None:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    runner = get_runner("torch")
    handle = job.handle("torch")
    dist.init_process_group("gloo", init_method=f"file://{job.path / 'torch-store'}", rank=rank,
                            world_size=WORLD)
    try:
        x = torch.from_numpy(_shards(job.x)[rank]).to(getattr(torch, job.dtype))
        labels = torch.from_numpy(_shards(job.labels)[rank]).long()
        for variant in job.variants:
            module = runner.load(copy.deepcopy(handle.module), job.weights, job.dtype)[0]
            if variant == SYNC:
                module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
            try:  # DDP refuses SyncBatchNorm on CPU modules when wrapping them, before any collective
                ddp = DistributedDataParallel(module)
                ddp.train()
                y = ddp(x)
            except ValueError as err:
                if variant != SYNC:
                    raise
                if rank == 0:
                    job.not_applicable(variant, f"torch.nn.SyncBatchNorm does not run on CPU in DDP: {err}")
                continue
            loss = F.cross_entropy(y, labels)
            loss.backward()  # DDP averages the gradients over the replicas during the backward
            grads = {k: None if p.grad is None else p.grad.double().numpy()
                     for k, p in module.named_parameters()} if rank == 0 else None
            buffers = module.state_dict()
            state = {b.native: buffers[b.native].double().numpy() for b in handle.state_bindings}
            job.write(variant, rank, _results(handle, rank, float(loss), grads, state))
            dist.barrier()
    finally:
        dist.destroy_process_group()


def _paddle_worker(job: _Job, rank: int) -> None:
    import paddle
    import paddle.distributed as dist
    import paddle.nn.functional as F

    paddle.set_device("cpu")
    runner = get_runner("paddle")
    handle = job.handle("paddle")
    dist.init_parallel_env()
    x = paddle.to_tensor(_shards(job.x)[rank]).astype(job.dtype)
    labels = paddle.to_tensor(_shards(job.labels)[rank]).astype("int64")
    for variant in job.variants:
        module = runner.load(copy.deepcopy(handle.module), job.weights, job.dtype)[0]
        if variant == SYNC:
            module = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        dp = paddle.DataParallel(module)
        dp.train()
        try:
            y = dp(x)
        except (RuntimeError, ValueError, NotImplementedError, OSError) as err:
            if variant != SYNC:
                raise
            if rank == 0:  # the framework's own words, first line
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                job.not_applicable(variant, f"paddle.nn.SyncBatchNorm does not run on CPU: {first}")
            continue
        loss = F.cross_entropy(y, labels)
        loss.backward()  # DataParallel's reducer averages the gradients over the replicas
        grads = {k: None if p.grad is None else p.grad.astype("float64").numpy()
                 for k, p in module.named_parameters()} if rank == 0 else None
        buffers = module.state_dict()
        state = {b.native: buffers[b.native].astype("float64").numpy() for b in handle.state_bindings}
        job.write(variant, rank, _results(handle, rank, float(loss), grads, state))
        dist.barrier()


def _synced_batch_norm(world: int) -> Callable[..., Any]:
    """A ``flax.linen.intercept_methods`` interceptor that runs every training call of the project's Flax
    BatchNorm with its batch statistics averaged over :data:`_AXIS` (``flax.linen.BatchNorm(axis_name=...)``'s
    rule) and its running variance made unbiased over the values of all ``world`` replicas."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from backends.flax._norm import BatchNorm

    def interceptor(next_fun: Callable[..., Any], args: Any, kwargs: Any, context: Any) -> Any:
        bn = context.module
        if not isinstance(bn, BatchNorm) or context.method_name != "__call__" or bn.momentum is None \
                or bn.epsilon is None:  # the layer's own call raises its error for a missing momentum or epsilon
            return next_fun(*args, **kwargs)
        x = args[0]
        if nn.merge_param("use_running_average", bn.use_running_average, kwargs.get("use_running_average")):
            return next_fun(*args, **kwargs)
        features = (x.shape[-1],)
        axes = tuple(range(x.ndim - 1))
        ra_mean = bn.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), features)
        ra_var = bn.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
        xs = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        mean = jax.lax.pmean(xs.mean(axes), _AXIS)
        var = jax.lax.pmean(jnp.square(xs - mean).mean(axes), _AXIS)
        if not bn.is_initializing():
            count = world * int(np.prod(x.shape[:-1]))
            k = bn.momentum
            ra_mean.value = k * ra_mean.value + (1 - k) * mean
            ra_var.value = k * ra_var.value + (1 - k) * (var * (count / (count - 1)))
        scale = bn.param("scale", nn.initializers.ones, features, jnp.float32)
        bias = bn.param("bias", nn.initializers.zeros, features, jnp.float32)
        return (x - mean) * (jax.lax.rsqrt(var + bn.epsilon) * scale) + bias

    return interceptor


def _flax_worker(job: _Job, rank: int) -> None:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from attn_core.native_state import flatten_variables

    devices = jax.local_devices(backend="cpu")
    if len(devices) < WORLD:
        raise RuntimeError(f"{len(devices)} XLA host device(s); XLA_FLAGS must hold "
                           f"--xla_force_host_platform_device_count={WORLD} before jax is imported")
    runner = get_runner("flax")
    handle = job.handle("flax")
    module = handle.module
    train = {"train": True} if handle.options["train_arg"] else {}
    with runner.dtype_scope(job.dtype):
        variables = runner.load(module, job.weights, job.dtype)[1]
        mutable = [k for k in variables if k != "params"]
        xs = jnp.stack([jnp.asarray(runner.nchw_to_native(s), job.dtype) for s in _shards(job.x)])
        labels = jnp.stack([jnp.asarray(s) for s in _shards(job.labels)])

        for variant in job.variants:
            # a new function per variant: jax caches a traced program by function, and the interceptor that
            # synchronises BatchNorm acts only while tracing
            def step(variables: Any, x: Any, y_true: Any) -> tuple[Any, Any, Any]:
                def loss_fn(params: Any) -> tuple[Any, Any]:
                    y, updates = module.apply({**variables, "params": params}, x, mutable=mutable, **train)
                    log_p = jax.nn.log_softmax(y)
                    return -jnp.mean(jnp.take_along_axis(log_p, y_true[:, None], axis=1)), updates

                (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
                return loss, jax.lax.pmean(grads, _AXIS), updates

            mapped = jax.pmap(step, axis_name=_AXIS, in_axes=(None, 0, 0), devices=devices[:WORLD])
            scope = nn.intercept_methods(_synced_batch_norm(WORLD)) if variant == SYNC else contextlib.nullcontext()
            with scope:
                loss, grads, updates = mapped(variables, xs, labels)
            out: dict[str, Any] = {}
            for r in range(WORLD):
                grads_r = jax.tree_util.tree_map(lambda a, r=r: a[r], grads) if r == 0 else None
                flat_grads = None if grads_r is None else flatten_variables({"params": grads_r})
                state = flatten_variables(jax.tree_util.tree_map(lambda a, r=r: np.asarray(a[r]), updates))
                out.update(_results(handle, r, float(loss[r]), flat_grads, state))
            job.write(variant, 0, out)


_WORKERS: Mapping[str, Callable[[_Job, int], None]] = {"torch": _torch_worker, "paddle": _paddle_worker,
                                                        "flax": _flax_worker}


def _worker_main(argv: Sequence[str] | None = None) -> int:
    """A worker process: ``python -m conformance.data_parallel --worker FW --job DIR`` (rank in ``DP_RANK``)."""
    p = argparse.ArgumentParser(prog="python -m conformance.data_parallel")
    p.add_argument("--worker", choices=sorted(_WORKERS), required=True)
    p.add_argument("--job", type=Path, required=True)
    args = p.parse_args(argv)
    from ._quiet import quiet

    quiet()
    _WORKERS[args.worker](_Job.read(args.job), int(os.environ.get("DP_RANK", "0")))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
