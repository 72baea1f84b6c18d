"""An OpenVINO IR network as a trainable torch module: the graph is read once with `openvino`, then run op by op in
torch, so Open Model Zoo's pretrained re-ID networks can be fine-tuned.

Every floating-point constant becomes an `nn.Parameter` (FP16 IR weights are widened to f32), except those used
only before the first convolution (the input's channel swap, mean and scale), which stay fixed buffers. Shape
arithmetic (ShapeOf, Gather, Concat, Reshape) runs on the actual tensors, so any batch size works. Only the op
types the bundled networks use are implemented; another IR fails at construction, naming the op it lacks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Ref = tuple[int, int]  # (op index, output port)


@dataclass(frozen=True)
class _Op:
    index: int
    kind: str
    inputs: tuple[Ref, ...]
    attrs: dict


def _pair(values) -> tuple[int, int]:
    return int(values[0]), int(values[1])


def _pad_same(x: torch.Tensor, begin, end, value: float = 0.0) -> tuple[torch.Tensor, int | tuple[int, int]]:
    """Symmetric pads go to the conv/pool itself; asymmetric ones are applied here first."""
    if tuple(begin) == tuple(end):
        return x, _pair(begin)
    return F.pad(x, (int(begin[1]), int(end[1]), int(begin[0]), int(end[0])), value=value), (0, 0)


def _mvn(x, axes, attrs):
    dims = [int(a) % x.dim() for a in axes.tolist()]
    centred = x - x.mean(dim=dims, keepdim=True)
    if not attrs["normalize_variance"]:
        return centred
    var = centred.pow(2).mean(dim=dims, keepdim=True)
    if attrs["eps_mode"].upper() == "INSIDE_SQRT":
        return centred / torch.sqrt(var + attrs["eps"])
    return centred / (torch.sqrt(var) + attrs["eps"])


def _convolution(x, w, attrs, groups: int = 1):
    x, padding = _pad_same(x, attrs["pads_begin"], attrs["pads_end"])
    return F.conv2d(x, w, None, _pair(attrs["strides"]), padding, _pair(attrs["dilations"]), groups)


def _group_convolution(x, w, attrs):
    groups = w.shape[0]
    return _convolution(x, w.reshape(groups * w.shape[1], *w.shape[2:]), attrs, groups)


def _max_pool(x, attrs):
    x, padding = _pad_same(x, attrs["pads_begin"], attrs["pads_end"], value=float("-inf"))
    ceil = attrs["rounding_type"].lower() == "ceil"
    return F.max_pool2d(x, _pair(attrs["kernel"]), _pair(attrs["strides"]), padding, ceil_mode=ceil)


def _avg_pool(x, attrs):
    x, padding = _pad_same(x, attrs["pads_begin"], attrs["pads_end"])
    ceil = attrs["rounding_type"].lower() == "ceil"
    exclude = attrs.get("exclude-pad", True)
    return F.avg_pool2d(x, _pair(attrs["kernel"]), _pair(attrs["strides"]), padding, ceil, not exclude)


def _reshape(x, shape, attrs):
    target = [int(s) for s in shape.tolist()]
    if attrs.get("special_zero", False):
        target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
    return x.reshape(target)


def _gather(data, indices, axis, attrs):
    if attrs.get("batch_dims", 0):
        raise ValueError("Gather with batch_dims is not supported")
    axis = int(axis) % data.dim()
    picked = data.index_select(axis, indices.reshape(-1).long().to(data.device) % data.shape[axis])
    return picked.reshape(*data.shape[:axis], *indices.shape, *data.shape[axis + 1 :])


def _prelu(x, slope):
    if slope.numel() > 1 and x.dim() > 1:
        slope = slope.reshape(1, -1, *([1] * (x.dim() - 2)))
    return torch.where(x >= 0, x, x * slope)


def _matmul(a, b, attrs):
    if attrs.get("transpose_a"):
        a = a.transpose(-1, -2)
    if attrs.get("transpose_b"):
        b = b.transpose(-1, -2)
    return a @ b


_KERNELS: dict[str, Callable] = {
    "Add": lambda a, b, _: a + b,
    "Subtract": lambda a, b, _: a - b,
    "Multiply": lambda a, b, _: a * b,
    "Divide": lambda a, b, _: a / b,
    "Relu": lambda x, _: F.relu(x),
    "Sigmoid": lambda x, _: torch.sigmoid(x),
    "Convert": lambda x, a: x.float() if a["destination_type"].startswith("f") else x.long(),
    "MVN": _mvn,
    "Convolution": _convolution,
    "GroupConvolution": _group_convolution,
    "MaxPool": _max_pool,
    "AvgPool": _avg_pool,
    "ReduceMean": lambda x, axes, a: x.mean(dim=[int(i) for i in axes.tolist()], keepdim=a["keep_dims"]),
    "Reshape": _reshape,
    "ShapeOf": lambda x, _: torch.tensor(x.shape, dtype=torch.long),
    "Gather": _gather,
    "Concat": lambda *xs: torch.cat(xs[:-1], dim=int(xs[-1]["axis"])),
    "MatMul": _matmul,
    "PRelu": lambda x, slope, _: _prelu(x, slope),
}
_SOURCE_KINDS = {"Parameter", "Constant", "Result"}


def _key(name: str, taken: set[str]) -> str:
    key = re.sub(r"\W", "_", name)
    while key in taken:
        key += "_"
    taken.add(key)
    return key


class IRGraph(nn.Module):
    """The network of one OpenVINO IR (.xml + .bin), run in torch. forward(x) -> the first output.

    `taps` names op outputs (friendly names) whose values `forward_with_taps` also returns, e.g. feature maps.
    """

    def __init__(self, xml: str | Path, taps: tuple[str, ...] = ()) -> None:
        super().__init__()
        import openvino as ov

        self.xml = Path(xml)
        model = ov.Core().read_model(str(xml))
        ops = list(model.get_ordered_ops())
        position = {id(op): i for i, op in enumerate(ops)}  # ops are in topological order
        names = [op.get_friendly_name() for op in ops]
        unknown = sorted({op.get_type_name() for op in ops} - set(_KERNELS) - _SOURCE_KINDS)
        if unknown:
            raise ValueError(f"{Path(xml).name}: op types {unknown} have no torch kernel here")
        consumers: dict[int, list[int]] = {}
        for i, op in enumerate(ops):
            for value in op.input_values():
                consumers.setdefault(position[id(value.get_node())], []).append(i)
        first_conv = min(i for i, op in enumerate(ops) if op.get_type_name() == "Convolution")

        def last_use(i: int) -> int:  # through Converts: where a constant is finally consumed
            users = consumers.get(i, [])
            return max((last_use(u) if ops[u].get_type_name() == "Convert" else u for u in users), default=i)

        self.params = nn.ParameterDict()
        taken: set[str] = set()
        self._constants: dict[int, tuple[str, str]] = {}  # op index -> ("param" | "buffer", key)
        self._param_use: dict[str, int] = {}  # parameter key -> index of the last op that reads it
        self._program: list[_Op] = []
        for i, op in enumerate(ops):
            kind = op.get_type_name()
            if kind == "Constant":
                data = np.array(op.get_data())
                key = _key(names[i], taken)
                if np.issubdtype(data.dtype, np.floating):
                    tensor = torch.from_numpy(data.astype(np.float32))
                    if last_use(i) < first_conv:
                        self.register_buffer(f"fixed_{key}", tensor)
                        self._constants[i] = ("buffer", f"fixed_{key}")
                    else:
                        self.params[key] = nn.Parameter(tensor)
                        self._constants[i] = ("param", key)
                        self._param_use[key] = last_use(i)
                else:
                    self.register_buffer(f"shape_{key}", torch.from_numpy(data.astype(np.int64)), persistent=False)
                    self._constants[i] = ("buffer", f"shape_{key}")
                continue
            inputs = tuple((position[id(v.get_node())], v.get_index()) for v in op.input_values())
            self._program.append(_Op(i, kind, inputs, dict(op.get_attributes())))
        self.input_index = next(i for i, op in enumerate(ops) if op.get_type_name() == "Parameter")
        self.input_shape = tuple(int(d) for d in ops[self.input_index].get_output_partial_shape(0).to_shape())
        self.output_ref = next(p.inputs[0] for p in self._program if p.kind == "Result")
        missing = [t for t in taps if t not in names]
        if missing:
            raise ValueError(f"{Path(xml).name}: no op named {missing}")
        self.taps = tuple((names.index(t), 0) for t in taps)
        self.tap_modules = nn.ModuleList(nn.Identity() for _ in taps)  # hook points (Grad-CAM) on the taps
        self._names = names
        self._needed = self._live_ops()
        last_read: dict[Ref, int] = {}
        for op in self._needed:
            for ref in op.inputs:
                last_read[ref] = op.index
        kept = {self.output_ref, *self.taps}
        # after each op: the values nobody reads later, dropped so that memory stays that of a plain module
        self._release = {
            op.index: [r for r in op.inputs if last_read.get(r) == op.index and r not in kept] for op in self._needed
        }

    def _live_ops(self) -> list[_Op]:
        """The program without ops nothing reads (e.g. MaxPool's index output chains)."""
        wanted = {self.output_ref[0], *(t[0] for t in self.taps)}
        live = []
        for op in reversed(self._program):
            if op.kind in _SOURCE_KINDS or op.index not in wanted:
                continue
            live.append(op)
            wanted.update(i for i, _ in op.inputs)
        return live[::-1]

    def _constant(self, index: int) -> torch.Tensor:
        kind, key = self._constants[index]
        return self.params[key] if kind == "param" else getattr(self, key)

    def _run(self, values: dict[Ref, torch.Tensor], after: int = -1) -> dict[Ref, torch.Tensor]:
        hooks = dict(zip(self.taps, self.tap_modules))
        for op in self._needed:
            if op.index <= after:
                continue
            args = [values[r] if r in values else self._constant(r[0]) for r in op.inputs]
            out = _KERNELS[op.kind](*args, op.attrs)
            values[(op.index, 0)] = hooks[(op.index, 0)](out) if (op.index, 0) in hooks else out
            for ref in self._release[op.index]:
                values.pop(ref, None)
        return values

    def forward_with_taps(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        values = self._run({(self.input_index, 0): x})
        return values[self.output_ref], [values[t] for t in self.taps]

    def run_from(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """The network's output with op `name`'s output replaced by `value` (only later ops are run; they must not
        read any earlier non-constant value other than `name`'s)."""
        index = self._names.index(name)
        return self._run({(index, 0): value}, after=index)[self.output_ref]

    def weight(self, name: str) -> torch.Tensor:
        """The value of a constant named `name`, or of a Convert of one (FP16 weights are stored that way)."""
        index = self._names.index(name)
        if index in self._constants:
            return self._constant(index)
        op = next((p for p in self._program if p.index == index), None)
        if op is None or op.kind != "Convert" or op.inputs[0][0] not in self._constants:
            raise KeyError(f"{name!r} is not a constant")
        return self._constant(op.inputs[0][0])

    def freeze_through(self, kind: str, count: int) -> int:
        """Stop gradients to every parameter read only up to the `count`-th op of type `kind` (e.g. the first
        AvgPool: the end of a stage). Returns the number of parameters frozen."""
        ends = [op.index for op in self._program if op.kind == kind]
        if count < 1:
            return 0
        if count > len(ends):
            raise ValueError(f"the network has {len(ends)} {kind} ops; cannot freeze through number {count}")
        frozen = [p for key, p in self.params.items() if self._param_use[key] <= ends[count - 1]]
        for p in frozen:
            p.requires_grad_(False)
        return sum(p.numel() for p in frozen)

    def openvino_runner(self, threads: int):
        """This graph with its current weights, compiled by OpenVINO for inference (several times faster than the op
        by op torch run on a CPU): a function x -> (output, taps), thread-safe, without gradients. Call again after
        the weights change."""
        import openvino as ov
        from openvino import opset13

        model = ov.Core().read_model(str(self.xml))
        ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
        for index, (kind, key) in self._constants.items():
            if kind == "param":
                weights = self.params[key].detach().float().cpu().numpy()
                ops[self._names[index]].output(0).replace(opset13.constant(weights).output(0))
        for ref in self.taps:
            model.add_outputs(ops[self._names[ref[0]]].output(0))
        model.reshape({model.inputs[0].get_any_name(): ov.PartialShape([-1, *self.input_shape[1:]])})
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": max(int(threads), 1)}
        compiled = ov.Core().compile_model(model, "CPU", config)

        def run(x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
            request = compiled.create_infer_request()  # one per call: concurrent callers do not share state
            request.infer({0: x.detach().float().cpu().numpy()})
            results = [torch.from_numpy(request.get_output_tensor(i).data.copy()) for i in range(1 + len(self.taps))]
            return results[0], results[1:]

        return run

    def input_of(self, name: str, port: int) -> str:
        """The friendly name of the op feeding input `port` of op `name`."""
        index = self._names.index(name)
        op = next(p for p in self._program if p.index == index)
        return self._names[op.inputs[port][0]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_taps(x)[0]
