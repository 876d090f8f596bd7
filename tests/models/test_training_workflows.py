"""Training workflows with this project's models, one per framework, as users run them (issue item 6).

- Paddle: seed article 003's high-level workflow on our ``TowerNet``: ``paddle.Model``, ``summary``, ``prepare``
  with the article's Momentum optimiser (cosine learning rate, L2 decay), cross-entropy and accuracy, ``fit``,
  ``evaluate``, ``save`` / ``load``;
- torch: a plain loop (SGD, ``CrossEntropyLoss``) on our ``seresnet18``;
- Flax: optax and ``flax.training.train_state.TrainState`` holding ``batch_stats``, a jitted train step with the
  statistics as a mutable collection, on our ``seresnet18``.

These check that the models train (finite losses, parameters and BatchNorm statistics move, the loss falls on a
fixed batch), not their numbers: those are the float64 reference's in the model tests.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from attn_core.models import TowerNetConfig, create_model_config

from .._fw import backend

STEPS = 6
NUM_CLASSES = 2


def _fixed_batch(n: int = 8, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """An NCHW float32 batch and labels, seeded: every class present."""
    rng = np.random.default_rng(11)
    return rng.standard_normal((n, 3, size, size)).astype(np.float32), (np.arange(n) % NUM_CLASSES).astype(np.int64)


def _assert_falls(losses: list[float], what: str) -> None:
    assert all(math.isfinite(v) for v in losses), (what, losses)
    assert losses[-1] < 0.5 * losses[0], (what, losses)


# ------------------------------------------------------------------------------------------------ Paddle
def test_paddle_seed_article_workflow_on_our_towernet(tmp_path):
    """Seed article 003's section 3.3.3 / 4 with our class in place of the article's: ``paddle.Model(TowerNet(3,
    class_dim))``, ``model.summary((-1, 3, 256, 256))``, ``model.prepare(make_optimizer(...), CrossEntropyLoss(),
    Accuracy())``, ``model.fit`` on an in-memory ``paddle.io.Dataset`` (4 images 3x256x256, 2 classes, one epoch
    in batches of 2), then ``evaluate`` and ``save`` / ``load`` as its SaveBestModel callback does."""
    b = backend("paddle")
    import paddle

    class Dataset(paddle.io.Dataset):  # the article's shape of a sample: CHW float32 image, label [int64]
        def __init__(self, n: int = 4) -> None:
            super().__init__()
            rng = np.random.default_rng(3)
            self.images = rng.standard_normal((n, 3, 256, 256)).astype("float32")
            self.labels = np.array([[i % NUM_CLASSES] for i in range(n)], dtype="int64")

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            return self.images[index], self.labels[index]

        def __len__(self) -> int:
            return len(self.images)

    class Losses(paddle.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.losses: list[float] = []

        def on_train_batch_end(self, step: int, logs: dict[str, Any] | None = None) -> None:
            self.losses.append(float(np.asarray(logs["loss"]).ravel()[0]))

    paddle.seed(0)
    model = paddle.Model(b.TowerNet(3, NUM_CLASSES))
    info = model.summary((-1, 3, 256, 256))
    table = TowerNetConfig(num_classes=NUM_CLASSES).param_table()
    assert int(info["total_params"]) == sum(math.prod(p.shape) for p in table)
    assert int(info["trainable_params"]) == sum(math.prod(p.shape) for p in table if p.trainable)

    def make_optimizer(parameters: Any = None) -> paddle.optimizer.Optimizer:  # the article's, with T_max = 1 epoch
        learning_rate = paddle.optimizer.lr.CosineAnnealingDecay(learning_rate=0.01, T_max=1, verbose=False)
        return paddle.optimizer.Momentum(learning_rate=learning_rate, momentum=0.9,
                                         weight_decay=paddle.regularizer.L2Decay(0.0002), parameters=parameters)

    model.prepare(make_optimizer(model.parameters()), paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    before = b.export_weights(model.network)
    recorder = Losses()
    model.fit(Dataset(), epochs=1, batch_size=2, verbose=0, callbacks=[recorder])
    after = b.export_weights(model.network)

    assert len(recorder.losses) == 2 and all(math.isfinite(v) for v in recorder.losses), recorder.losses
    for p in table:  # every parameter and running statistic moved (weight decay moves even a zero gradient's)
        assert np.all(np.isfinite(after[p.name])), p.name
        assert not np.array_equal(after[p.name], before[p.name]), p.name
    result = model.evaluate(Dataset(), batch_size=2, verbose=0)
    assert math.isfinite(float(np.asarray(result["loss"]).ravel()[0])) and 0.0 <= float(result["acc"]) <= 1.0

    path = str(tmp_path / "best_model")
    model.save(path)
    again = paddle.Model(b.TowerNet(3, NUM_CLASSES))
    again.load(path)
    for k, v in b.export_weights(again.network).items():
        np.testing.assert_array_equal(v, after[k], err_msg=k)


# ------------------------------------------------------------------------------------------------- torch
def test_torch_training_loop_on_our_seresnet18():
    b = backend("torch")
    import torch

    torch.manual_seed(0)
    model = b.create_model("seresnet18", num_classes=NUM_CLASSES)
    x, y = (torch.from_numpy(a) for a in _fixed_batch())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss()
    stats_before = model.layer1[0].bn1.running_mean.clone()
    model.train()
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    _assert_falls(losses, "torch seresnet18")
    assert not torch.equal(model.layer1[0].bn1.running_mean, stats_before)
    assert int(model.layer1[0].bn1.num_batches_tracked) == STEPS
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


# -------------------------------------------------------------------------------------------------- Flax
@pytest.mark.slow  # compiles a whole network's training step
def test_flax_train_state_with_batch_stats_on_our_seresnet18():
    b = backend("flax")
    optax = pytest.importorskip("optax")
    import jax
    import jax.numpy as jnp
    from flax.training import train_state

    class TrainState(train_state.TrainState):
        batch_stats: Any

    model = b.create_model("seresnet18", num_classes=NUM_CLASSES)
    config = create_model_config("seresnet18", num_classes=NUM_CLASSES)
    # the project's seeded canonical weights (model.init would compile the model once more, for nothing)
    variables = b.load_weights(model, config.init_weights(np.random.default_rng(0), dtype=np.float32))
    state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                              batch_stats=variables["batch_stats"], tx=optax.sgd(0.05, momentum=0.9))
    x, y = _fixed_batch()
    x, y = jnp.asarray(np.transpose(x, (0, 2, 3, 1))), jnp.asarray(y)  # Flax is NHWC

    @jax.jit
    def train_step(state: TrainState, x: jax.Array, y: jax.Array) -> tuple[TrainState, jax.Array]:
        def loss_fn(params: Any) -> tuple[jax.Array, Any]:
            logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, x, train=True,
                                             mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return state.apply_gradients(grads=grads).replace(batch_stats=updates["batch_stats"]), loss

    start = state
    losses = []
    for _ in range(STEPS):
        state, loss = train_step(state, x, y)
        losses.append(float(loss))
    _assert_falls(losses, "flax seresnet18")
    assert int(state.step) == STEPS
    moved = jax.tree_util.tree_map(lambda a, c: bool(jnp.any(a != c)), start.batch_stats, state.batch_stats)
    assert all(jax.tree_util.tree_leaves(moved))  # every BatchNorm's mean and var were updated
    assert jax.tree_util.tree_structure(state.batch_stats) == jax.tree_util.tree_structure(start.batch_stats)
