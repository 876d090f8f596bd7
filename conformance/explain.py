"""``python -m conformance.explain MODEL IMAGE --out DIR``: where a registered model looks, in every framework.

Writes, under DIR, one PNG per framework with the image and that framework's class activation map overlaid
(``<model>-<method>-<framework>.png``), a side-by-side panel of the frameworks' maps with the largest difference
between them printed on it (``<model>-<method>-panel.png``), and, for a model with attention gates, the gates of the
first framework (``<model>-gates.png``: each channel or branch gate as a curve, any other averaged over channels as
an image: docs/attention-maps.md). The maps are :mod:`attn_core.cam`'s: one NumPy post-processing shared by the
frameworks (ReLU, per-image min-max, bilinear upsampling to the image), so the pictures differ only by what each
framework computed.

The model always runs in eval mode (BatchNorm on running statistics, no dropout): a class activation map of a
training-mode forward would depend on the batch, and the command says so. Without ``--checkpoint`` the weights are
drawn at random (seed 0): the maps then show that the ports agree, not what a trained model attends to. Bad input
(an unknown model, layer or method, a class out of range, an image that cannot be read, an input size the model
refuses, a checkpoint that does not fit) is an error naming the problem, exit status 2, and nothing is written.
Needs matplotlib (the ``plots`` extra).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from attn_core import cam
from attn_core.checkpoint import CheckpointError, load_canonical
from attn_core.models import MODEL_CONFIGS, create_model_config
from attn_core.spec import ConfigError

from ._quiet import quiet
from .cam import backend_raw_maps
from .runners import RUNNERS, get_runner

__all__ = ["main", "read_image", "explain"]

#: ImageNet's channel means and standard deviations (torchvision's and timm's defaults)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def read_image(path: str | Path) -> np.ndarray:
    """The image at ``path`` as a float64 ``(H, W, 3)`` array in [0, 1] (grey repeated, alpha dropped); a
    ValueError naming the file when it cannot be read as an image."""
    import matplotlib.image

    try:
        img = np.asarray(matplotlib.image.imread(str(path)), dtype=np.float64)
    except (OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None
    if img.dtype.kind != "f" or img.max() > 1.0:  # 8-bit images (JPEG) come back as 0..255
        img = img / 255.0
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"{path}: expected an RGB, RGBA or grey image, got an array of shape {img.shape}")
    return img[:, :, :3]


def explain(model: str, image: np.ndarray, method: str = "gradcam", layer: str | None = None,
            classes: int | None = None, weights: dict[str, np.ndarray] | None = None,
            backends: Sequence[str] = tuple(RUNNERS)) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """``({framework: map (H, W) in [0, 1]}, {gate name: gate of the first framework}, class)`` of ``model`` on
    ``image`` ``(H, W, 3)`` in [0, 1]; ValueError / ConfigError for bad input."""
    if method not in cam.METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(cam.METHODS)}")
    config = create_model_config(model)
    rng = np.random.default_rng(0)
    weights = config.init_weights(rng) if weights is None else weights
    config.check_weights(weights)
    x = ((image - np.asarray(MEAN)) / np.asarray(STD)).transpose(2, 0, 1)[None].astype(np.float32)
    config.check_input(x.shape, "float32", True, training=False)
    if method == "cam" and layer not in (None, cam.cam_layer(config)):
        raise ValueError(f"cam is defined at the pooled layer {cam.cam_layer(config)!r} only, got {layer!r}")
    maps: dict[str, np.ndarray] = {}
    gates: dict[str, np.ndarray] = {}
    chosen: list[int] | None = None
    for fw in backends:
        runner = get_runner(fw)
        module, variables = runner.build_model(config, weights, "float32")
        if chosen is None:  # every framework explains the first one's top class (or the one asked for)
            chosen = cam.resolve_classes(runner.forward(module, variables, x), classes)
        raw = backend_raw_maps(runner, module, variables, config, x, [method], chosen, layer)[method]
        maps[fw] = cam.postprocess(raw, image.shape[:2])[0]
        if not gates:
            gates = {k: v[0] for k, v in runner.attention_maps(module, variables, x, config).items()}
    return maps, gates, -1 if chosen is None else chosen[0]


def _write(out: Path, model: str, method: str, image: np.ndarray, maps: dict[str, np.ndarray],
           gates: dict[str, np.ndarray], k: int) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for fw, m in maps.items():
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(image)
        ax.imshow(m, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(f"{model} {method} class {k} ({fw})")
        ax.axis("off")
        written.append(out / f"{model}-{method}-{fw}.png")
        fig.savefig(written[-1], bbox_inches="tight")
        plt.close(fig)
    names = list(maps)
    diff = max((float(np.abs(maps[a] - maps[b]).max()) for a in names for b in names if a < b), default=0.0)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4), squeeze=False)
    for ax, fw in zip(axes[0], names, strict=True):
        ax.imshow(maps[fw], cmap="jet", vmin=0, vmax=1)
        ax.set_title(fw)
        ax.axis("off")
    fig.suptitle(f"{model} {method} class {k}: max |difference| between frameworks {diff:.2e}")
    written.append(out / f"{model}-{method}-panel.png")
    fig.savefig(written[-1], bbox_inches="tight")
    plt.close(fig)
    if gates:
        cols = min(4, len(gates))
        rows = -(-len(gates) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.5 * rows), squeeze=False)
        for ax, (name, g) in zip(axes.flat, gates.items(), strict=False):
            top = max(1.0, float(np.nanmax(g)))  # GCT's and BAM's gates (1 + tanh, 1 + sigmoid) run to 2
            if g.shape[1:] == (1, 1):
                ax.plot(g[:, 0, 0])
                ax.set_ylim(0, top)
            else:
                ax.imshow(np.nanmean(g, axis=0), cmap="viridis", vmin=0, vmax=top)
                ax.axis("off")
            ax.set_title(name, fontsize=8)
        for ax in list(axes.flat)[len(gates):]:
            ax.axis("off")
        written.append(out / f"{model}-gates.png")
        fig.savefig(written[-1], bbox_inches="tight")
        plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m conformance.explain", description=(
        "Write PNGs of a registered model's class activation map in every framework, side by side with their "
        "largest difference, and its attention gates. The model runs in eval mode."))
    p.add_argument("model", help=f"a registered model: {', '.join(MODEL_CONFIGS)}")
    p.add_argument("image", type=Path, help="an image file (PNG; JPEG through Pillow)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where the PNGs are written")
    p.add_argument("--method", default="gradcam", choices=cam.METHODS, help="default: gradcam")
    p.add_argument("--layer", default=None, metavar="NAME",
                   help="the canonical layer name (default: the layer the classifier pools)")
    p.add_argument("--class", dest="cls", type=int, default=None, metavar="K",
                   help="the class to explain (default: the top logit)")
    p.add_argument("--checkpoint", type=Path, default=None, metavar="FILE",
                   help="the project's canonical checkpoint of the model (default: random weights, seed 0)")
    p.add_argument("--backends", default=",".join(RUNNERS), metavar="LIST",
                   help=f"comma-separated subset of {','.join(RUNNERS)} (default: all)")
    args = p.parse_args(argv)
    quiet(False)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    try:
        for b in backends:
            if b not in RUNNERS:
                raise ValueError(f"unknown backend {b!r}; known: {', '.join(RUNNERS)}")
            ok, why = get_runner(b).available()
            if not ok:
                raise ValueError(why)
        image = read_image(args.image)
        weights = None if args.checkpoint is None else load_canonical(args.checkpoint)[0]
        print(f"{args.model}: eval mode (BatchNorm on running statistics)"
              + ("" if weights is not None else "; random weights (seed 0), no --checkpoint"), file=sys.stderr)
        maps, gates, k = explain(args.model, image, args.method, args.layer, args.cls, weights, backends)
    except (ValueError, ConfigError, CheckpointError) as err:
        p.error(str(err))
    for path in _write(args.out, args.model, args.method, image, maps, gates, k):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
