"""OSNet-x0.25 (Zhou et al., ICCV 2019) in plain torch, and the pretrained MSMT17 weights mapped onto it.

The architecture is torchreid 0.2.5's `osnet_x0_25` (OSBlock, channels [16, 64, 96, 128], layers [2, 2, 2],
feature_dim 512, fc = Linear + BatchNorm1d + ReLU, no instance norm) and its module names equal torchreid's
state-dict keys; the identity classifier is left out (the pretrained file has none). torchreid is not needed.

Input: images [B, 3, H, W], RGB scaled to 0..1 then normalised with the ImageNet mean (0.485, 0.456, 0.406) and
std (0.229, 0.224, 0.225); the pretrained weights expect H, W = 256, 128. Spatial sizes at 256x128:
conv1 128x64 -> maxpool 64x32 -> conv2 32x16 -> conv3 16x8 -> conv4 16x8 -> conv5 16x8.

Pretrained weights: `assets/pretrained/osnet_x0_25_msmt17.safetensors`, made by `state_dict_from_onnx` from the
ONNX export next to it. That export folded every conv+BatchNorm2d pair (only the fc's BatchNorm1d stays a node), so
those BN layers come back as weight 1, bias b', running mean 0, running var 1 - eps: exact in eval mode, meaningless
as batch statistics.
When fine-tuning, keep every BN layer in eval mode (`OSNet(frozen_bn=True)`, the default of
`load_pretrained_osnet`, which survives `model.train()`) or re-estimate their statistics first.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dpmpp.paths import ASSETS

logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS = ASSETS / "pretrained" / "osnet_x0_25_msmt17.safetensors"
BN_EPS = 1e-5
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class OnnxStructureError(ValueError):
    """An ONNX file whose graph or initializers do not match torchreid's osnet_x0_25."""


@dataclass
class OSNetOutput:
    """What `OSNet.forward` returns; shapes for [B, 3, 256, 128] input.

    feature: [B, 512] the fc output (Linear + BN1d + ReLU), the pre-classifier re-ID feature the ONNX returns.
    maps: [conv4 output, conv5 output], each [B, 128, 16, 8] (H/16 x W/16).
    pooled: [B, 128] conv5 averaged over space, the fc's input.
    """

    feature: torch.Tensor
    maps: list[torch.Tensor]
    pooled: torch.Tensor


class ConvBN(nn.Module):
    """Conv (no bias) + BatchNorm2d (+ ReLU): torchreid's ConvLayer, Conv1x1 and, with relu=False, Conv1x1Linear."""

    folded_pair = ("conv", "bn")  # (conv, BN) names the ONNX exporter folds into one Conv

    def __init__(self, cin: int, cout: int, kernel_size: int = 1, stride: int = 1, padding: int = 0, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, cin, H, W] -> [B, cout, H', W']."""
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class LightConv3x3(nn.Module):
    """1x1 conv (linear) then depthwise 3x3 conv + BN + ReLU. [B, cin, H, W] -> [B, cout, H, W]."""

    folded_pair = ("conv2", "bn")

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False, groups=cout)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv2(self.conv1(x))))


class ChannelGate(nn.Module):
    """Squeeze-and-excitation style gate shared by the four streams of an OSBlock. [B, C, H, W] -> same."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))  # [B, C, 1, 1]
        return x * torch.sigmoid(gate)


class OSBlock(nn.Module):
    """Omni-scale residual block: four streams of 1..4 LightConv3x3, gated and summed.

    [B, cin, H, W] -> [B, cout, H, W].
    """

    def __init__(self, cin: int, cout: int, bottleneck_reduction: int = 4):
        super().__init__()
        mid = cout // bottleneck_reduction
        self.conv1 = ConvBN(cin, mid)
        self.conv2a = LightConv3x3(mid, mid)
        self.conv2b = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(2)))
        self.conv2c = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(3)))
        self.conv2d = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(4)))
        self.gate = ChannelGate(mid)
        self.conv3 = ConvBN(mid, cout, relu=False)
        self.downsample = ConvBN(cin, cout, relu=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        # Same call order as torchreid (all streams, then the gates): the ONNX graph is in this order.
        streams = [self.conv2a(x1), self.conv2b(x1), self.conv2c(x1), self.conv2d(x1)]
        x2 = sum(self.gate(stream) for stream in streams)
        x3 = self.conv3(x2)
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(x3 + identity)


def _stage(cin: int, cout: int, blocks: int, reduce_spatial_size: bool) -> nn.Sequential:
    layers: list[nn.Module] = [OSBlock(cin, cout)] + [OSBlock(cout, cout) for _ in range(1, blocks)]
    if reduce_spatial_size:
        layers.append(nn.Sequential(ConvBN(cout, cout), nn.AvgPool2d(2, stride=2)))
    return nn.Sequential(*layers)


def freeze_batchnorm_stats(module: nn.Module) -> int:
    """Put every BatchNorm layer inside `module` in eval mode (running stats used, not updated); returns how many.

    Their affine weight and bias still train. A later `module.train()` undoes this unless the module re-applies it,
    as `OSNet(frozen_bn=True)` does.
    """
    count = 0
    for layer in module.modules():
        if isinstance(layer, _BATCHNORMS):
            layer.eval()
            count += 1
    return count


class OSNet(nn.Module):
    """torchreid's osnet_x0_25 without the classifier. forward: [B, 3, H, W] normalised RGB -> OSNetOutput.

    frozen_bn: keep all BatchNorm layers in eval mode even after `train()` (needed with the pretrained weights,
    whose folded BN layers carry no real statistics); settable at any time.
    """

    def __init__(
        self,
        channels: tuple[int, int, int, int] = (16, 64, 96, 128),
        layers: tuple[int, int, int] = (2, 2, 2),
        feature_dim: int = 512,
        frozen_bn: bool = False,
    ):
        super().__init__()
        self.frozen_bn = frozen_bn
        self.feature_dim = feature_dim
        self.conv1 = ConvBN(3, channels[0], 7, stride=2, padding=3)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = _stage(channels[0], channels[1], layers[0], reduce_spatial_size=True)
        self.conv3 = _stage(channels[1], channels[2], layers[1], reduce_spatial_size=True)
        self.conv4 = _stage(channels[2], channels[3], layers[2], reduce_spatial_size=False)
        self.conv5 = ConvBN(channels[3], channels[3])
        self.fc = nn.Sequential(nn.Linear(channels[3], feature_dim), nn.BatchNorm1d(feature_dim, eps=BN_EPS), nn.ReLU())
        self._init_params()

    def _init_params(self) -> None:
        """torchreid's initialisation (for training from scratch)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def train(self, mode: bool = True) -> OSNet:
        """nn.Module.train, then BN layers back to eval mode when `frozen_bn`."""
        super().train(mode)
        if mode and self.frozen_bn:
            freeze_batchnorm_stats(self)
        return self

    def forward(self, images: torch.Tensor) -> OSNetOutput:
        """images [B, 3, H, W] -> feature [B, 512], maps [[B, 128, H/16, W/16]] * 2, pooled [B, 128]."""
        x = self.conv3(self.conv2(self.maxpool(self.conv1(images))))
        conv4 = self.conv4(x)
        conv5 = self.conv5(conv4)
        pooled = F.adaptive_avg_pool2d(conv5, 1).flatten(1)
        return OSNetOutput(feature=self.fc(pooled), maps=[conv4, conv5], pooled=pooled)

    def fc_per_location(self, conv5_map: torch.Tensor) -> torch.Tensor:
        """The fc (Linear + BN1d + ReLU) at every location of a conv5 map: [B, 128, h, w] -> [B, h*w, 512].

        Locations are in row-major order (index = row * w + column). In eval mode (or with frozen BN) the fc is
        affine up to its ReLU, so ReLU(mean of the pre-ReLU tokens) equals `feature`; the mean of these (post-ReLU)
        tokens is >= `feature` elementwise. With BN in training mode its statistics come from all B*h*w locations.
        """
        batch, channels, height, width = conv5_map.shape
        tokens = conv5_map.flatten(2).transpose(1, 2).reshape(batch * height * width, channels)
        return self.fc(tokens).reshape(batch, height * width, -1)


def _folded_pairs(model: nn.Module) -> dict[str, str]:
    """Conv module name -> name of the BatchNorm2d right after it (the pairs an ONNX exporter folds)."""
    pairs = {}
    for name, module in model.named_modules():
        if hasattr(module, "folded_pair"):
            conv, bn = module.folded_pair
            pairs[f"{name}.{conv}"] = f"{name}.{bn}"
    return pairs


def _call_order(model: OSNet) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Conv2d, Linear and BatchNorm1d in the order a forward pass calls them (repeats kept)."""
    calls: list[tuple[str, nn.Module]] = []
    hooks = [
        module.register_forward_hook(lambda module, _args, _out, name=name: calls.append((name, module)))
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm1d))
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, 64, 32))
    finally:
        for hook in hooks:
            hook.remove()
    return calls


_ONNX_OP = {nn.Conv2d: "Conv", nn.Linear: "Gemm", nn.BatchNorm1d: "BatchNormalization"}


def state_dict_from_onnx(path: str | Path) -> dict[str, torch.Tensor]:
    """OSNet's full state dict (float32, plus int64 BN counters) from an ONNX export of torchreid's osnet_x0_25.

    Walks the graph's Conv / Gemm / BatchNormalization nodes in order alongside the order in which OSNet calls its
    layers. A Conv that stands for a folded conv+BN pair (bias input b') becomes conv weight = W', BN weight 1,
    bias b', running mean 0, running var 1 - eps (eps of our BN layer), which is exact in eval mode. Raises
    OnnxStructureError when node counts, layer attributes or tensor shapes differ; needs the `onnx` package.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as error:
        raise RuntimeError("reading ONNX weights needs the onnx package: `pip install onnx`") from error

    graph = onnx.load(str(path)).graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    model = OSNet()
    calls = _call_order(model)
    folded = _folded_pairs(model)
    nodes = [node for node in graph.node if node.op_type in _ONNX_OP.values()]
    expected_ops = Counter(_ONNX_OP[type(module)] for _, module in calls)
    if Counter(node.op_type for node in nodes) != expected_ops:
        raise OnnxStructureError(
            f"{path} is not torchreid's osnet_x0_25: expected nodes {dict(expected_ops)}, "
            f"found {dict(Counter(node.op_type for node in nodes))}"
        )

    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def tensor(node: Any, index: int, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if index >= len(node.input) or node.input[index] not in initializers:
            raise OnnxStructureError(f"{path}: input {index} of node {node.name!r} (for {name}) is not an initializer")
        used.add(node.input[index])
        value = torch.from_numpy(numpy_helper.to_array(initializers[node.input[index]]).copy())
        if tuple(value.shape) != tuple(shape) or value.dtype != torch.float32:
            raise OnnxStructureError(
                f"{path}: {node.input[index]!r} of node {node.name!r} is {value.dtype} {tuple(value.shape)}, "
                f"but {name} needs float32 {tuple(shape)}"
            )
        return value

    def put(key: str, value: torch.Tensor) -> None:
        if key in state and not torch.equal(state[key], value):
            raise OnnxStructureError(f"{path}: the shared layer {key} has different weights at different calls")
        state[key] = value

    for node, (name, module) in zip(nodes, calls):
        attributes = {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}
        if node.op_type != _ONNX_OP[type(module)]:
            raise OnnxStructureError(f"{path}: node {node.name!r} is {node.op_type}, expected one for {name}")
        if isinstance(module, nn.Conv2d):
            _check_conv_attributes(path, node.name, name, module, attributes)
            weight = tensor(node, 1, f"{name}.weight", module.weight.shape)
            put(f"{name}.weight", weight)
            if name in folded:
                bn = model.get_submodule(folded[name])
                put(f"{folded[name]}.weight", torch.ones(bn.num_features))
                put(f"{folded[name]}.bias", tensor(node, 2, f"{folded[name]}.bias", (bn.num_features,)))
                put(f"{folded[name]}.running_mean", torch.zeros(bn.num_features))
                put(f"{folded[name]}.running_var", torch.full((bn.num_features,), 1.0 - bn.eps))
                put(f"{folded[name]}.num_batches_tracked", torch.tensor(0))
            elif module.bias is not None:
                put(f"{name}.bias", tensor(node, 2, f"{name}.bias", module.bias.shape))
            elif len(node.input) > 2:
                raise OnnxStructureError(f"{path}: Conv {node.name!r} has a bias, but {name} has neither bias nor BN")
        elif isinstance(module, nn.Linear):
            if attributes.get("transB") != 1 or attributes.get("transA", 0) != 0:
                raise OnnxStructureError(f"{path}: Gemm {node.name!r} is not x @ W.T + b")
            put(f"{name}.weight", tensor(node, 1, f"{name}.weight", module.weight.shape))
            put(f"{name}.bias", tensor(node, 2, f"{name}.bias", module.bias.shape))
        else:
            if not math.isclose(attributes.get("epsilon", 1e-5), module.eps, rel_tol=1e-5):
                raise OnnxStructureError(f"{path}: {node.name!r} has epsilon {attributes.get('epsilon')}")
            for index, key in enumerate(("weight", "bias", "running_mean", "running_var"), start=1):
                put(f"{name}.{key}", tensor(node, index, f"{name}.{key}", (module.num_features,)))
            put(f"{name}.num_batches_tracked", torch.tensor(0))

    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unused = sorted(name for name, value in initializers.items() if name not in used and value.data_type == 1)
    if missing or unused:
        raise OnnxStructureError(
            f"{path}: state-dict keys not found {missing[:5]}, float initializers unused {unused[:5]}"
        )
    logger.info("mapped %d ONNX initializers onto %d OSNet state-dict tensors", len(used), len(expected))
    return {key: state[key].contiguous() for key in expected}


def _check_conv_attributes(path: str | Path, node: str, name: str, conv: nn.Conv2d, attributes: dict) -> None:
    wanted = {
        "kernel_shape": list(conv.kernel_size),
        "strides": list(conv.stride),
        "pads": list(conv.padding) * 2,
        "dilations": list(conv.dilation),
        "group": conv.groups,
    }
    defaults = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1}
    for key, value in wanted.items():
        found = attributes.get(key, defaults.get(key))
        if found is not None and found != value:  # a missing kernel_shape is implied by the weight's shape
            raise OnnxStructureError(f"{path}: Conv {node!r} has {key}={found}, but {name} needs {value}")


def save_safetensors_from_onnx(onnx_path: str | Path, out_path: str | Path = DEFAULT_WEIGHTS) -> Path:
    """Convert an ONNX export to the safetensors `load_pretrained_osnet` reads; returns `out_path`."""
    from safetensors.torch import save_file

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state_dict_from_onnx(onnx_path), str(out_path), metadata={"architecture": "torchreid osnet_x0_25"})
    return out_path


def load_pretrained_osnet(path: str | Path | None = None, frozen_bn: bool = True) -> OSNet:
    """OSNet-x0.25 with the MSMT17 weights (default: the shipped safetensors), in eval mode.

    frozen_bn (default True) keeps BN layers in eval mode through `train()`: the folded ones carry no statistics.
    """
    from safetensors.torch import load_file

    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"OSNet weights {path} not found (made by dpmpp.model.osnet.save_safetensors_from_onnx)"
        )
    model = OSNet(frozen_bn=frozen_bn)
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()
