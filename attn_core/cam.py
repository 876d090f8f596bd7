"""Class activation maps in NumPy: the weights of CAM, Grad-CAM and Grad-CAM++, the one post-processing every
backend shares, and the float64 reference map of a registered model.

Papers: Bolei Zhou et al. "Learning Deep Features for Discriminative Localization", CVPR 2016 (CAM: the
classifier's weights over the feature map before global average pooling). Ramprasaath R. Selvaraju et al.
"Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization", ICCV 2017. Aditya Chattopadhay et
al. "Grad-CAM++: Generalized Gradient-based Visual Explanations for Deep Convolutional Networks", WACV 2018.

Conventions follow jacobgil/pytorch-grad-cam (``base_cam.py``, ``grad_cam.py``, ``grad_cam_plusplus.py``,
``utils/image.py``): the target is the raw logit of the class (the argmax when no class is given), Grad-CAM's
channel weights are the gradient's mean over H and W, the map is ReLU'd, each image's map is min-max scaled with
eps 1e-7 (``scale_cam_image``), then resized bilinearly to the input. Paddle's InterpretDL (``GradCAMInterpreter``)
differs in two places, offered as options: its target is the softmax probability of the class
(``target='softmax'``) and it does not min-max scale (``normalise=False``).

The resize only upsamples (half-pixel centres, torch's ``F.interpolate(mode='bilinear', align_corners=False)``):
JAX's ``image.resize`` antialiases when it downsamples, torch and Paddle do not, so a downsampling resize would
differ between frameworks by design. Maps are compared before ReLU and min-max (:func:`raw_map`), which amplify
the rounding where a map is near zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .autodiff import Node, backward
from .spec import AttentionConfig, ConfigError

__all__ = ["METHODS", "TARGETS", "LayerGradient", "resize_bilinear", "min_max", "postprocess", "gradcam_weights",
           "gradcampp_weights", "weighted_map", "target_cotangent", "resolve_classes", "raw_map", "cam_layer",
           "classifier_weight", "methods_for", "layer_names", "reference_layer_gradient", "reference_raw_map",
           "GATE_KINDS", "GATE_NAMES", "NO_GATE", "module_gates", "gated_modules", "gate_name", "gate_layers",
           "gate_paths", "reference_gates"]

#: the class activation methods
METHODS: tuple[str, ...] = ("cam", "gradcam", "gradcampp")
#: what is differentiated: the raw logit (pytorch-grad-cam) or its softmax probability (InterpretDL)
TARGETS: tuple[str, ...] = ("logit", "softmax")
#: pytorch-grad-cam's eps of the per-image min-max (``scale_cam_image``)
MIN_MAX_EPS = 1e-7
#: pytorch-grad-cam's eps in Grad-CAM++'s alpha denominator (``grad_cam_plusplus.py``)
GRADCAMPP_EPS = 1e-6


@dataclass(frozen=True)
class LayerGradient:
    """One eval forward and backward: the logits ``(N, classes)``, the named layer's output ``activation`` and the
    gradient of the target with respect to it ``gradient`` (both NCHW), all float64."""

    logits: np.ndarray
    activation: np.ndarray
    gradient: np.ndarray


def _resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights of torch's bilinear ``align_corners=False`` along one axis."""
    src = np.maximum((np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5, 0.0)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, size_in - 1)
    lam = src - i0
    m = np.zeros((size_out, size_in))
    np.add.at(m, (np.arange(size_out), i0), 1.0 - lam)
    np.add.at(m, (np.arange(size_out), i1), lam)
    return m


def resize_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``maps`` (..., h, w) resized to ``size`` (H, W) as torch's ``F.interpolate(mode='bilinear',
    align_corners=False)``; a ValueError for a size smaller than the map (upsampling only, see the module's doc)."""
    maps = np.asarray(maps, dtype=np.float64)
    h, w = maps.shape[-2:]
    if size[0] < h or size[1] < w:
        raise ValueError(f"resize_bilinear only upsamples: a {h}x{w} map to {size[0]}x{size[1]}")
    out: np.ndarray = _resize_matrix(h, size[0]) @ maps @ _resize_matrix(w, size[1]).T
    return out


def min_max(maps: np.ndarray, eps: float = MIN_MAX_EPS) -> np.ndarray:
    """Each image's map ``(N, H, W)`` shifted to minimum 0 and divided by ``eps +`` its maximum
    (pytorch-grad-cam's ``scale_cam_image``)."""
    maps = np.asarray(maps, dtype=np.float64)
    shifted = maps - maps.min(axis=(-2, -1), keepdims=True)
    out: np.ndarray = shifted / (eps + shifted.max(axis=(-2, -1), keepdims=True))
    return out


def postprocess(raw: np.ndarray, size: tuple[int, int] | None = None, normalise: bool = True) -> np.ndarray:
    """The shared post-processing of raw maps ``(N, h, w)``: ReLU, per-image min-max (unless ``normalise`` is False,
    InterpretDL's way), then the bilinear upsampling to ``size`` (the input's H, W) when given."""
    maps = np.maximum(np.asarray(raw, dtype=np.float64), 0.0)
    if normalise:
        maps = min_max(maps)
    return maps if size is None else resize_bilinear(maps, size)


def gradcam_weights(gradient: np.ndarray) -> np.ndarray:
    """Grad-CAM's channel weights ``(N, C)``: the gradient ``(N, C, H, W)`` averaged over H and W."""
    out: np.ndarray = np.asarray(gradient, dtype=np.float64).mean(axis=(2, 3))
    return out


def gradcampp_weights(activation: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """Grad-CAM++'s channel weights ``(N, C)`` as pytorch-grad-cam computes them: ``alpha = g^2 / (2 g^2 +
    sum_ij(A) g^3 + 1e-6)`` where ``g != 0`` (else 0), weights ``sum_ij(alpha * relu(g))``."""
    a, g = np.asarray(activation, dtype=np.float64), np.asarray(gradient, dtype=np.float64)
    g2 = g ** 2
    alpha = g2 / (2 * g2 + a.sum(axis=(2, 3), keepdims=True) * g2 * g + GRADCAMPP_EPS)
    alpha = np.where(g != 0, alpha, 0.0)
    out: np.ndarray = (np.maximum(g, 0.0) * alpha).sum(axis=(2, 3))
    return out


def weighted_map(activation: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The raw map ``(N, H, W)``: ``sum_c weights[n, c] * activation[n, c]``; a ValueError when the shapes do not
    fit (an activation in another layout than NCHW)."""
    a, w = np.asarray(activation, np.float64), np.asarray(weights, np.float64)
    if a.ndim != 4 or w.shape != a.shape[:2]:
        raise ValueError(f"channel weights of shape {w.shape} do not fit an NCHW activation of shape {a.shape}")
    out: np.ndarray = np.einsum("nc,nchw->nhw", w, a)
    return out


def target_cotangent(logits: np.ndarray, classes: Sequence[int], target: str = "logit") -> np.ndarray:
    """The cotangent on the logits ``(N, K)`` that backpropagates the target of each image's class: one-hot for
    the raw logit; ``p_k (e_k - p)`` (the gradient of the softmax probability ``p_k``) for ``'softmax'``."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    logits = np.asarray(logits, dtype=np.float64)
    onehot = np.zeros_like(logits)
    onehot[np.arange(len(logits)), list(classes)] = 1.0
    if target == "logit":
        return onehot
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    pk = (p * onehot).sum(axis=1, keepdims=True)
    out: np.ndarray = pk * (onehot - p)
    return out


def resolve_classes(logits: np.ndarray, classes: int | Sequence[int] | None) -> list[int]:
    """One class per image: the given one(s), or each image's top logit (pytorch-grad-cam's default)."""
    n, k = np.shape(logits)
    if classes is None:
        return [int(c) for c in np.argmax(logits, axis=1)]
    chosen = [int(classes)] * n if isinstance(classes, (int, np.integer)) else [int(c) for c in classes]
    if len(chosen) != n or any(not 0 <= c < k for c in chosen):
        raise ValueError(f"classes must be one class or one per image ({n}) in [0, {k}), got {classes!r}")
    return chosen


def raw_map(method: str, grad: LayerGradient, classes: Sequence[int], fc_weight: np.ndarray | None = None
            ) -> np.ndarray:
    """The map ``(N, H, W)`` of ``method`` before ReLU and min-max, from a layer's activation and gradient (CAM
    needs the classifier's weight ``(K, C)`` instead of the gradient, and the layer that feeds its pooling)."""
    if method == "cam":
        if fc_weight is None:
            raise ValueError("cam needs the classifier's weight (fc_weight)")
        return weighted_map(grad.activation, np.asarray(fc_weight, np.float64)[list(classes)])
    if method == "gradcam":
        return weighted_map(grad.activation, gradcam_weights(grad.gradient))
    if method == "gradcampp":
        return weighted_map(grad.activation, gradcampp_weights(grad.activation, grad.gradient))
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


# ------------------------------------------------------------------------------ the registered models' facts
def _head(config: AttentionConfig) -> tuple[str, str | None]:
    """(the default layer, the classifier's weight name when the classifier global-average-pools that layer's
    output, else None: CAM is defined there only)."""
    from .models.densenet import SEDenseNetConfig
    from .models.mobilenetv2 import ECAMobileNetV2Config
    from .models.resnet import ResNetConfig
    from .models.towernet import TowerNetConfig

    if isinstance(config, ResNetConfig):
        return config.blocks[-1].name, "fc.weight"
    if isinstance(config, ECAMobileNetV2Config):
        return next(iter(config.last())).rpartition(".")[0], "classifier.1.weight"
    if isinstance(config, SEDenseNetConfig):  # pytorch-grad-cam's model.features[-1]: the last BatchNorm
        return "features.norm_final", None
    if isinstance(config, TowerNetConfig):
        return list(config.stages())[-1], None
    raise ConfigError(f"class activation maps: no layer known for {type(config).__name__}")


#: why CAM has no layer in the models whose classifier does not global-average-pool a layer's output
_NO_CAM = {"SEDenseNetConfig": "its classifier pools relu(features.norm_final), an output of no layer",
           "TowerNetConfig": "its classifier reads a 2 x 2 average pooling of b5 flattened, which drops b5's last row "
                             "and column where b5 is 3 positions a side"}


def cam_layer(config: AttentionConfig) -> str:
    """The canonical name of the default layer: the layer whose output the classifier pools, CAM's layer and
    Grad-CAM's default (pytorch-grad-cam's ``model.layer4[-1]`` in a ResNet); SE-DenseNet's last BatchNorm
    (``features.norm_final``, pytorch-grad-cam's ``model.features[-1]``) and TowerNet's last stage ``b5``, where
    only Grad-CAM and Grad-CAM++ are defined (:func:`methods_for`)."""
    return _head(config)[0]


def methods_for(config: AttentionConfig) -> tuple[str, ...]:
    """The class activation methods defined for the model ``config``: CAM only where the classifier
    global-average-pools :func:`cam_layer`'s output."""
    return METHODS if _head(config)[1] is not None else tuple(m for m in METHODS if m != "cam")


def classifier_weight(config: AttentionConfig, weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """The classifier's weight ``(K, C)`` (torch layout) among canonical ``weights``; a ConfigError for a model
    without CAM (:func:`methods_for`)."""
    name = _head(config)[1]
    if name is None:
        raise ConfigError(f"cam is not defined for {type(config).__name__}: {_NO_CAM[type(config).__name__]}; "
                          f"use gradcam or gradcampp")
    return np.asarray(weights[name], dtype=np.float64)


def _reference_taps(config: AttentionConfig, weights: Mapping[str, np.ndarray], x: np.ndarray
                    ) -> tuple[Node, dict[str, Node]]:
    config.check_weights(weights)
    params = {k: Node(np.asarray(v, dtype=np.float64)) for k, v in weights.items()}
    taps: dict[str, Node] = {}
    y = config.reference_forward(Node(np.asarray(x, dtype=np.float64)), params, training=False, taps=taps)
    return y, taps


def layer_names(config: AttentionConfig, weights: Mapping[str, np.ndarray], x: np.ndarray) -> list[str]:
    """The canonical layer names the reference can explain (its 4-D taps), in data-flow order."""
    return [k for k, v in _reference_taps(config, weights, x)[1].items() if v.value.ndim == 4]


def reference_layer_gradient(config: AttentionConfig, weights: Mapping[str, np.ndarray], x: np.ndarray,
                             layer: str, classes: int | Sequence[int] | None = None, target: str = "logit"
                             ) -> tuple[LayerGradient, list[int]]:
    """The float64 eval forward of ``config`` on the NCHW ``x``, the output of ``layer`` and the gradient of each
    image's target (the class's logit, or its softmax probability) with respect to it; and the classes used."""
    y, taps = _reference_taps(config, weights, x)
    if layer not in taps:
        raise ValueError(f"unknown layer {layer!r} of {config.module_name}; available: "
                         f"{', '.join(k for k, v in taps.items() if v.value.ndim == 4)}")
    chosen = resolve_classes(y.value, classes)
    (grad,) = backward(y, target_cotangent(y.value, chosen, target), [taps[layer]])
    return LayerGradient(y.value, taps[layer].value, grad), chosen


def reference_raw_map(config: AttentionConfig, weights: Mapping[str, np.ndarray], x: np.ndarray, method: str,
                      layer: str | None = None, classes: int | Sequence[int] | None = None, target: str = "logit"
                      ) -> np.ndarray:
    """The float64 reference map ``(N, H', W')`` of ``method`` before ReLU and min-max; ``layer`` defaults to
    :func:`cam_layer` (the only layer CAM is defined at)."""
    default = cam_layer(config)
    layer = default if layer is None else layer
    if method == "cam" and layer != default:
        raise ValueError(f"cam is defined at the pooled layer {default!r} only, got {layer!r}")
    grad, chosen = reference_layer_gradient(config, weights, x, layer, classes, target)
    fc = classifier_weight(config, weights) if method == "cam" else None
    return raw_map(method, grad, chosen, fc)


# ------------------------------------------------------------------------------------------ attention gates
#: what a gate multiplies: 'channel' (N, C, 1, 1), 'spatial' (N, 1, H, W), 'full' (N, C, H, W), 'height'
#: (N, C, H, 1), 'width' (N, C, 1, W), or 'branch': the softmax weights that mix B branches of C_out channels
#: (SelectiveKernel's paths, SplitAttn's radix splits), (N, B * C_out, 1, 1), branch-major
GATE_KINDS: tuple[str, ...] = ("channel", "spatial", "full", "height", "width", "branch")
#: the names a gate goes by in a module (:func:`module_gates`, the last part of a :func:`gate_paths` path)
GATE_NAMES: tuple[str, ...] = ("gate", "gate_h", "gate_w", "channel_gate", "spatial_gate", "bam_gate",
                               "sa_channel_gate", "sa_spatial_gate", "gam_channel_gate", "gam_spatial_gate",
                               "psa_channel_gate", "psa_spatial_gate", "gate_cw", "gate_hc", "gate_hw", "path_attn",
                               "radix_attn")


def _module_gate_table() -> tuple[tuple[type[AttentionConfig], tuple[tuple[str, str], ...]], ...]:
    """(config class, ((gate name, kind), ...)) of the registered modules with gates, the name being both the
    reference tap and the backends' identity submodule (torch, Paddle) or sown ``intermediates`` (Flax)."""
    from .bam import BAMConfig
    from .cbam import ChannelAttentionConfig, SpatialAttentionConfig
    from .cbam_variants import LightCBAMConfig
    from .coord_attn import CoordAttnConfig, EfficientLocalAttnConfig, SimpleCoordAttnConfig, StripAttnConfig
    from .eca import ECAConfig
    from .eca_variants import CECAConfig, ECAMConfig
    from .gam import GAMConfig
    from .gct import GCTConfig
    from .psa import PSAConfig
    from .se import SEConfig
    from .se_variants import EffectiveSEConfig
    from .selective_kernel import SelectiveKernelConfig
    from .shuffle import ShuffleAttentionConfig
    from .simam import SimAMConfig
    from .split_attn import SplitAttnConfig
    from .srm import SRMConfig

    channel, spatial, full = (("gate", "channel"),), (("gate", "spatial"),), (("gate", "full"),)
    return ((SEConfig, channel), (ECAConfig, channel), (ChannelAttentionConfig, channel),
            (EffectiveSEConfig, channel), (ECAMConfig, channel), (CECAConfig, channel), (SRMConfig, channel),
            (GCTConfig, channel), (SpatialAttentionConfig, spatial), (SimAMConfig, full),
            (SimpleCoordAttnConfig, full), (StripAttnConfig, full),
            (CoordAttnConfig, (("gate_h", "height"), ("gate_w", "width"))),
            (EfficientLocalAttnConfig, (("gate_h", "height"), ("gate_w", "width"))),
            (LightCBAMConfig, (("channel_gate", "channel"), ("spatial_gate", "spatial"))),
            (BAMConfig, (("bam_gate", "full"),)),
            (ShuffleAttentionConfig, (("sa_channel_gate", "channel"), ("sa_spatial_gate", "full"))),
            (GAMConfig, (("gam_channel_gate", "full"), ("gam_spatial_gate", "full"))),
            (PSAConfig, (("psa_channel_gate", "channel"), ("psa_spatial_gate", "spatial"))),
            (SelectiveKernelConfig, (("path_attn", "branch"),)), (SplitAttnConfig, (("radix_attn", "branch"),)))


#: the registered modules without a gate, and why (docs/conformance.md lists them)
NO_GATE: dict[str, str] = {
    "gca": "GlobalContext with fuse_add only (timm's GlobalContextAdd): the context is added to the input, "
           "nothing multiplies it",
    "nl": "NonLocalAttn adds an attention-weighted sum over positions to the input: an (HW x HW) attention "
          "matrix, no factor of the input",
    "bat": "BatNonLocalAttn adds a bilinear transform P u Q of a reduced embedding to the input: no factor of "
           "the input",
}


def module_gates(config: AttentionConfig) -> dict[str, str]:
    """``{gate name: kind}`` of one registered attention module (not a model): the tensors the module multiplies
    its input by, each recorded under that name in the reference's taps and exposed by the backends under that
    name; CBAM's are its ``channel`` and ``spatial`` halves' ``gate`` (``'channel.gate'``, ``'spatial.gate'``)."""
    from .cbam import CBAMConfig
    from .gather_excite import GatherExciteConfig
    from .global_context import GlobalContextConfig
    from .triplet import TripletAttentionConfig

    if isinstance(config, TripletAttentionConfig):  # each branch's gate turned back to the input's axes
        kinds = {"gate_cw": "width", "gate_hc": "height", "gate_hw": "spatial"}
        return {tap: kinds[tap] for _, tap, _ in config.branches}
    if isinstance(config, CBAMConfig):
        return {"channel.gate": "channel", "spatial.gate": "spatial"}
    if isinstance(config, GatherExciteConfig):  # a global gather gates channels, an extent every position
        return {"gate": "channel" if config.extent == 0 else "full"}
    if isinstance(config, GlobalContextConfig):
        return {"gate": "channel"} if config.fuse_scale else {}
    for cls, gates in _module_gate_table():
        if type(config) is cls:
            return dict(gates)
    return {}


def gate_name(prefix: str, gate: str) -> str:
    """The canonical name of gate ``gate`` of the module at ``prefix``: a module's single ``gate`` goes by the
    module's name (a lone module's by ``'gate'``), any other gate by its own path."""
    head, _, last = gate.rpartition(".")
    if last == "gate":
        return ".".join(p for p in (prefix, head) if p) or "gate"
    return f"{prefix}.{gate}" if prefix else gate


def gated_modules(config: AttentionConfig) -> list[tuple[str, AttentionConfig]]:
    """(canonical path, config) of the attention modules of a registered model in data-flow order (a ResNet's
    SelectiveKernel or SplitAttn convolutions, SimAM, its block attention; SE-DenseNet's SE modules, TowerNet's SimAMs),
    or ``[('', config)]`` for an attention module itself."""
    from .models.densenet import SEDenseNetConfig
    from .models.mobilenetv2 import ECAMobileNetV2Config
    from .models.resnet import ResNetConfig
    from .models.towernet import TowerNetConfig

    if isinstance(config, ResNetConfig):
        found: list[tuple[str, AttentionConfig]] = []
        for b in config.blocks:
            found += [(f"{b.name}.{name}", layer) for name, layer in b.layers(config.bn_eps, config.bn_momentum).items()
                      if isinstance(layer, AttentionConfig)]
            found += [(f"{b.name}.simam", b.simam)] if b.simam is not None else []
            found += [(f"{b.name}.se", b.attn)] if b.attn is not None else []
        return found
    if isinstance(config, ECAMobileNetV2Config):
        return [(b.eca_name, b.eca) for b in config.blocks]
    if isinstance(config, SEDenseNetConfig):
        return [(f"{d.name}.se", d.se) for d in config.dense_layers]
    if isinstance(config, TowerNetConfig):
        return [(f"{stage}.{rel}", config.simam) for stage, items in config.stages().items() for rel, spec in items
                if spec == "simam"]
    return [("", config)]


def gate_paths(config: AttentionConfig) -> dict[str, str]:
    """``{canonical gate name: the path of the submodule it passes through}`` of a registered model or
    attention module, in data-flow order: a module's single ``gate`` goes by the module's name (``'layer1.0.se'``,
    CBAM's ``'layer1.0.se.channel'``), a module with named gates by their paths (``'layer1.0.se.gate_h'``)."""
    return {gate_name(name, gate): f"{name}.{gate}" if name else gate
            for name, attn in gated_modules(config) for gate in module_gates(attn)}


def gate_layers(config: AttentionConfig) -> dict[str, str]:
    """``{canonical gate name: gate kind}`` of every gate of a registered model or attention module, in
    data-flow order (:func:`gate_paths`; :func:`module_gates` the gates of each module)."""
    return {gate_name(name, gate): kind
            for name, attn in gated_modules(config) for gate, kind in module_gates(attn).items()}


def reference_gates(config: AttentionConfig, weights: Mapping[str, np.ndarray], x: np.ndarray
                    ) -> dict[str, np.ndarray]:
    """The float64 gates of one registered attention module on the NCHW ``x`` in eval mode, under the names of
    :func:`gate_layers`, read from its reference taps (CBAM's ``channel_gate`` and ``spatial_gate``)."""
    from .triplet import TripletAttentionConfig

    taps = _reference_taps(config, weights, x)[1]
    renamed = {"channel.gate": "channel_gate", "spatial.gate": "spatial_gate"}  # CBAM's taps of its halves
    out = {gate_name("", g): taps[renamed.get(g, g)].value for g in module_gates(config)}
    if isinstance(config, TripletAttentionConfig):  # the taps are in each branch's rotation, its own inverse
        out = {tap: np.transpose(out[tap], perm) for _, tap, perm in config.branches}
    if "path_attn" in out:  # SK's (N, P, C, 1, 1) weights as one NCHW gate, path-major
        out["path_attn"] = out["path_attn"].reshape(len(x), -1, 1, 1)
    return out
