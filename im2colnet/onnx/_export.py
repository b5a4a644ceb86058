"""im2colnet.onnx.export: a Sequential as an ONNX model (a chain of nodes; a Residual forks and adds).

Each layer becomes the ONNX node it is, in inference form:

    Conv2d        Conv (with group), every padding form as explicit pads (top, left,
                  bottom, right); a negative pad (a crop) is a Slice of the input before the Conv
    BatchNorm     BatchNormalization (spatial); per-activation: Reshape (N, C*H*W),
                  BatchNormalization, Reshape back (one statistic per activation)
    ReLU, Tanh, Sigmoid, ELU    Relu, Tanh, Sigmoid, Elu
    Maxout        Reshape (N, C/p, p, ...), ReduceMax over the p pieces
    ConvTranspose2d   ConvTranspose (pads, output_padding, dilations, group)
    MaxPool2d     MaxPool (with dilations); AvgPool2d: AveragePool with our count_include_pad;
                  ceil_mode as explicit end pads, with ceil_mode=1 where a last window hangs
                  past them; average pads as large as the kernel as a Pad of zeros first
    GlobalAvgPool2d, AdaptiveAvgPool2d   GlobalAveragePool for output size 1, else AveragePool
                  with kernel = stride = input size / output size
    LeakyReLU     LeakyRelu
    Flatten       Flatten(axis=1)
    Linear        Gemm (transB=1), after a Flatten when the input is an image;
                  on a sequence (N, T, F): MatMul + Add
    Dropout       nothing (the identity in inference)
    Softmax, LogSoftmax   Softmax / LogSoftmax (axis=1), inside Flatten ... Reshape for an
                  (N, C, H, W) input
    RNN/LSTM/GRU  RNN/LSTM/GRU, one node per stacked layer, gates in ONNX's order,
                  GRU with linear_before_reset=1; Transposes to and from ONNX's (T, N, F)
    LastTimeStep  Gather(index -1, axis 1)
    Residual      the block's nodes and the shortcut's (if any) from the same input, then Add

The batch axis is symbolic ("N"); the model's metadata goes into metadata_props.
"""
import json
import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .._version import __version__
from .._checks import conv_geometry, pair, positive_pair
from ..functional.conv_transpose import conv_transpose_geometry
from ..serialization import atomic_path
from ..layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d,
                      ConvTranspose2d, Dropout, ELU, Flatten, GlobalAvgPool2d, GRU, LSTM,
                      LastTimeStep, LeakyReLU, Linear, LogSoftmax, MaxPool2d, Maxout, ReLU, RNN,
                      Sigmoid, Softmax, Tanh)
from ..model import Residual
from ..sequential import Sequential
from ._common import MIN_OPSET, RECURRENT, to_onnx_gates

__all__ = ["export"]

INPUT, OUTPUT = "input", "output"


class _Graph:
    """The nodes and initialisers written so far, and the tensor the chain has reached."""

    def __init__(self, dtype, opset):
        self.dtype, self.opset = np.dtype(dtype), opset
        self.nodes, self.initializers = [], []
        self.tensor = INPUT

    def const(self, name, array, dtype=None):
        """An initialiser (in the model's dtype unless dtype is given); returns its name."""
        array = np.array(array, dtype=self.dtype if dtype is None else dtype, order="C")
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, name, values):
        return self.const(name, np.asarray(values, np.int64), np.int64)

    def node(self, op, name, *inputs, outputs=1, **attrs):
        """Append a node reading (the chain's tensor if inputs is empty) and moving the chain
        to its first output."""
        inputs = inputs or (self.tensor,)
        names = [name if k == 0 else f"{name}:{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), names, name=name, **attrs))
        self.tensor = names[0]
        return names[0]


def _crop_and_pads(graph, prefix, g, in_hw):
    """ONNX pads [top, left, bottom, right] >= 0 for a geometry; negative pads (crops)
    become a Slice of the input first."""
    crop = [max(-p, 0) for p in (g.pt, g.pl, g.pb, g.pr)]
    if any(crop):
        starts = graph.ints(f"{prefix}.crop_starts", crop[:2])
        ends = graph.ints(f"{prefix}.crop_ends", [in_hw[0] - crop[2], in_hw[1] - crop[3]])
        axes = graph.ints(f"{prefix}.crop_axes", [2, 3])
        graph.node("Slice", f"{prefix}/Slice", graph.tensor, starts, ends, axes)
    return [max(p, 0) for p in (g.pt, g.pl, g.pb, g.pr)]


def _conv(graph, i, layer, shape):
    g = conv_geometry(shape[1:], layer.kernel_size, layer.stride, layer.padding,
                      layer.dilation, layer.anchor)
    pads = _crop_and_pads(graph, str(i), g, shape[1:])
    inputs = [graph.tensor, graph.const(f"{i}.weight", layer.params["weight"])]
    if layer.bias:
        inputs.append(graph.const(f"{i}.bias", layer.params["bias"]))
    graph.node("Conv", f"{i}/Conv", *inputs, kernel_shape=[g.kh, g.kw], strides=[g.sh, g.sw],
               dilations=[g.dh, g.dw], pads=pads, group=layer.groups)


def _conv_transpose(graph, i, layer, shape):
    """ConvTranspose: the weight (C_in, C_out/groups, kh, kw) is ONNX's layout; our padding
    (never negative) as explicit pads, output_padding as it is. ONNX Runtime refuses an
    output_padding >= stride (ours allows it below the dilation): that one is folded into the
    end pad (the output is the full transposed convolution cropped, so a pad smaller by
    output_padding is the same crop), or is a ValueError where the end pad is too small."""
    stride = positive_pair(layer.stride, "stride")
    out_pad = list(pair(layer.output_padding, "output_padding"))
    _, ((pt, pb), (pl, pr)) = conv_transpose_geometry(
        shape[1:], (layer._kh, layer._kw), stride, layer.padding, out_pad, layer.dilation)
    ends = [pb + out_pad[0], pr + out_pad[1]]        # the layer's own bottom/right padding
    for axis in (0, 1):
        if out_pad[axis] >= stride[axis]:
            if ends[axis] < out_pad[axis]:
                raise ValueError(
                    f"model: layer {i} (ConvTranspose2d) has output_padding {layer.output_padding!r}"
                    f" >= stride {layer.stride!r} with a smaller end padding {layer.padding!r}; ONNX "
                    f"Runtime refuses output_padding >= stride and a negative pad has no ONNX form")
            ends[axis], out_pad[axis] = ends[axis] - out_pad[axis], 0
    inputs = [graph.tensor, graph.const(f"{i}.weight", layer.params["weight"])]
    if layer.bias:
        inputs.append(graph.const(f"{i}.bias", layer.params["bias"]))
    graph.node("ConvTranspose", f"{i}/ConvTranspose", *inputs, kernel_shape=[layer._kh, layer._kw],
               strides=list(stride), dilations=list(positive_pair(layer.dilation, "dilation")),
               pads=[pt, pl, *ends], output_padding=out_pad, group=layer.groups)


def _trim_end_pads(g, in_hw):
    """(g with ONNX's bottom/right pads, ONNX's ceil_mode) for a pooling geometry g.

    Per axis, pb' = (Ho-1)*s - pt + dk - H is the end padding at which the last window ends
    on the padded input's end: then ONNX's floor and ceil sizes are both Ho, and no window
    reads the padding past pb'. So pb' <= pb becomes the pads (a negative pb' crops rows no
    window reads); pb' > pb (a ceil_mode window hangs past the padding) keeps pb with
    ceil_mode=1, where ONNX's ceil size is Ho and no window starts past the input or left
    padding. So the window that ONNX's rule "a window starting in the right padding is
    ignored" drops, and that onnx's shape inference would still count, never arises.
    """
    ends, ceil = [], 0
    for size, out, s, d, k, before, after in ((in_hw[0], g.out_h, g.sh, g.dh, g.kh, g.pt, g.pb),
                                              (in_hw[1], g.out_w, g.sw, g.dw, g.kw, g.pl, g.pr)):
        end = (out - 1) * s - before + d * (k - 1) + 1 - size
        ends.append(min(end, after))
        ceil |= end > after
    return g._replace(pb=ends[0], pr=ends[1]), ceil


def _pool(graph, i, layer, shape):
    """MaxPool (with dilations) or AveragePool (count_include_pad as ours: padding counts as 0,
    in the divisor or not); ceil_mode and end pads as large as the kernel through _trim_end_pads."""
    g, ceil = layer._window(tuple(shape[1:])), 0
    if layer.ceil_mode or max(g.pt, g.pb) >= g.kh or max(g.pl, g.pr) >= g.kw:
        g, ceil = _trim_end_pads(g, shape[1:])
    if isinstance(layer, AvgPool2d) and (max(g.pt, g.pb) >= g.kh or max(g.pl, g.pr) >= g.kw):
        # ONNX Runtime takes pads smaller than the kernel only. Left after trimming: a window
        # of padding only, so (the layer checked) an average that counts its padding, which
        # counts zeros padded first as it counts padding; a negative pad crops.
        graph.node("Pad", f"{i}/Pad", graph.tensor,
                   graph.ints(f"{i}.pads", [0, 0, g.pt, g.pl, 0, 0, g.pb, g.pr]))
        pads = [0, 0, 0, 0]
    else:
        pads = _crop_and_pads(graph, str(i), g, shape[1:])
    window = dict(kernel_shape=[g.kh, g.kw], strides=[g.sh, g.sw], pads=pads, ceil_mode=ceil)
    if isinstance(layer, MaxPool2d):
        graph.node("MaxPool", f"{i}/MaxPool", dilations=[g.dh, g.dw], **window)
    else:
        graph.node("AveragePool", f"{i}/AveragePool",
                   count_include_pad=int(layer.count_include_pad), **window)


def _batchnorm(graph, i, layer, shape):
    stats = [graph.const(f"{i}.{name}", store[name].reshape(-1)) for store, name in
             ((layer.params, "gamma"), (layer.params, "beta"),
              (layer.buffers, "running_mean"), (layer.buffers, "running_var"))]
    per_activation = layer.mode == "per_activation" and len(shape) > 1
    if per_activation:    # one statistic per (c, i, j): a BN over N x (C*H*W) features
        graph.node("Reshape", f"{i}/Reshape", graph.tensor,
                   graph.ints(f"{i}.features_shape", [0, int(np.prod(shape))]))
    graph.node("BatchNormalization", f"{i}/BatchNormalization", graph.tensor, *stats,
               epsilon=layer.eps, momentum=1.0 - layer.momentum)
    if per_activation:
        graph.node("Reshape", f"{i}/Reshape_back", graph.tensor,
                   graph.ints(f"{i}.image_shape", [0, *shape]))


def _maxout(graph, i, layer, shape):
    groups = (shape[0] // layer.pieces, layer.pieces, *shape[1:])
    graph.node("Reshape", f"{i}/Reshape", graph.tensor, graph.ints(f"{i}.pieces_shape", [0, *groups]))
    if graph.opset >= 18:     # ReduceMax takes its axes as an input from opset 18
        graph.node("ReduceMax", f"{i}/ReduceMax", graph.tensor, graph.ints(f"{i}.axes", [2]),
                   keepdims=0)
    else:
        graph.node("ReduceMax", f"{i}/ReduceMax", axes=[2], keepdims=0)


def _linear(graph, i, layer, shape):
    w = layer.params["weight"]
    if layer._per_step(shape):       # (N, T, F): x W^T + b at every step
        graph.node("MatMul", f"{i}/MatMul", graph.tensor, graph.const(f"{i}.weight_t", w.T))
        if layer.bias:
            graph.node("Add", f"{i}/Add", graph.tensor, graph.const(f"{i}.bias", layer.params["bias"]))
        return
    if len(shape) > 1:
        graph.node("Flatten", f"{i}/Flatten", axis=1)
    inputs = [graph.tensor, graph.const(f"{i}.weight", w)]
    if layer.bias:
        inputs.append(graph.const(f"{i}.bias", layer.params["bias"]))
    graph.node("Gemm", f"{i}/Gemm", *inputs, transB=1)


def _softmax(graph, i, layer, shape):
    """Softmax or LogSoftmax (the ONNX ops of the same names) over axis 1."""
    op = type(layer).__name__
    if len(shape) == 1:
        graph.node(op, f"{i}/{op}", axis=1)
        return
    # Ours normalises over all non-batch axes together.
    graph.node("Flatten", f"{i}/Flatten", axis=1)
    graph.node(op, f"{i}/{op}", axis=1)
    graph.node("Reshape", f"{i}/Reshape", graph.tensor, graph.ints(f"{i}.shape", [0, *shape]))


def _recurrent(graph, i, layer, shape):
    op, order = RECURRENT[type(layer).__name__]
    H = layer.hidden_size
    graph.node("Transpose", f"{i}/Transpose", perm=[1, 0, 2])     # (N, T, F) -> (T, N, F)
    attrs = {"hidden_size": H}
    if op == "GRU":       # r multiplies (W_hn h + b_hn): PyTorch's form
        attrs["linear_before_reset"] = 1
    if op == "RNN":
        attrs["activations"] = ["Tanh" if layer.nonlinearity == "tanh" else "Relu"]
    for k in range(layer.num_layers):
        p = {name: layer.params[f"{name}_l{k}"] for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        w = graph.const(f"{i}.W_l{k}", to_onnx_gates(p["weight_ih"], order)[None])
        r = graph.const(f"{i}.R_l{k}", to_onnx_gates(p["weight_hh"], order)[None])
        b = graph.const(f"{i}.B_l{k}", np.concatenate([to_onnx_gates(p["bias_ih"], order),
                                                       to_onnx_gates(p["bias_hh"], order)])[None])
        graph.node(op, f"{i}/{op}_l{k}", graph.tensor, w, r, b, **attrs)   # Y: (T, 1, N, H)
        graph.node("Squeeze", f"{i}/Squeeze_l{k}", graph.tensor, graph.ints(f"{i}.squeeze_axes_l{k}", [1]))
    graph.node("Transpose", f"{i}/Transpose_back", perm=[1, 0, 2])


def _adaptive_avgpool(graph, i, layer, shape):
    """GlobalAveragePool for output size 1; else AveragePool with kernel = stride = the input
    size over the output size (the layer refuses sizes that do not divide)."""
    try:
        g = layer._window(tuple(shape[1:]))
    except ValueError as exc:
        raise ValueError(f"model: layer {i} ({type(layer).__name__}) has no ONNX form for "
                         f"input shape {tuple(shape)}: {exc}") from None
    if (g.out_h, g.out_w) == (1, 1):
        graph.node("GlobalAveragePool", f"{i}/GlobalAveragePool")
    else:
        graph.node("AveragePool", f"{i}/AveragePool", kernel_shape=[g.kh, g.kw],
                   strides=[g.sh, g.sw])


def _last_step(graph, i, layer, shape):
    graph.node("Gather", f"{i}/Gather", graph.tensor, graph.ints(f"{i}.last", -1), axis=1)


def _residual(graph, i, layer, shape):
    """block(x) + shortcut(x): each stack's nodes from the same input, then one Add
    (the identity shortcut adds the input itself)."""
    start, ends = graph.tensor, []
    for prefix, stack in (("block", layer.block), ("shortcut", layer.shortcut)):
        graph.tensor = start
        if stack is not None:
            shapes = [shape] + stack._shapes(shape)
            for j, sub in enumerate(stack.layers):
                _emit(graph, f"{i}.{prefix}.{j}", sub, shapes[j])
        ends.append(graph.tensor)
    graph.node("Add", f"{i}/Add", *ends)


def _emit(graph, i, layer, shape):
    emit = _EMITTERS.get(type(layer))
    if emit is None:
        raise ValueError(f"model: layer {i} ({type(layer).__name__}) has no ONNX form in "
                         f"im2colnet.onnx.export")
    emit(graph, i, layer, shape)


def _unary(op, **attrs):
    def emit(graph, i, layer, shape):
        graph.node(op, f"{i}/{op}", **{k: f(layer) for k, f in attrs.items()})
    return emit


_EMITTERS = {
    Conv2d: _conv, ConvTranspose2d: _conv_transpose, MaxPool2d: _pool, AvgPool2d: _pool,
    BatchNorm2d: _batchnorm, BatchNorm1d: _batchnorm, ReLU: _unary("Relu"), Tanh: _unary("Tanh"),
    Sigmoid: _unary("Sigmoid"), ELU: _unary("Elu", alpha=lambda layer: layer.alpha),
    LeakyReLU: _unary("LeakyRelu", alpha=lambda layer: layer.negative_slope),
    GlobalAvgPool2d: _adaptive_avgpool, AdaptiveAvgPool2d: _adaptive_avgpool,
    Maxout: _maxout, Flatten: _unary("Flatten", axis=lambda layer: 1), Linear: _linear,
    Dropout: lambda *args: None, Softmax: _softmax, LogSoftmax: _softmax, RNN: _recurrent,
    LSTM: _recurrent, GRU: _recurrent, LastTimeStep: _last_step, Residual: _residual,
}


def _metadata_props(model, metadata):
    """{key: text}: strings as they are, anything else as JSON."""
    meta = {**(getattr(model, "metadata", None) or {}), **(metadata or {})}
    out = {}
    for key, value in meta.items():
        out[str(key)] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return out


def build_model_proto(model, opset=17, metadata=None):
    """The onnx.ModelProto of a Sequential (see export), checked with onnx.checker."""
    if not isinstance(model, Sequential):
        raise TypeError(f"model: expected an im2colnet Sequential, got {type(model).__name__}")
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset: expected an int from {MIN_OPSET} to {newest} (the newest this "
                         f"onnx {onnx.__version__} knows), got {opset!r}")
    if model.input_shape is None:
        raise ValueError("model: its input shape is unknown; give Sequential(..., input_shape=...) "
                         "or build(input_shape) before exporting")
    if not model.built:       # as forward() would: fresh weights (seed 0)
        model.build()
    graph = _Graph(model.dtype, opset)
    shapes = [model.input_shape] + model._shapes(model.input_shape)
    for i, layer in enumerate(model.layers):
        _emit(graph, i, layer, shapes[i])
    if graph.tensor == INPUT:      # nothing but Dropout: the output still needs a node
        graph.node("Identity", "Identity")
    graph.nodes[-1].output[0] = OUTPUT
    elem = helper.np_dtype_to_tensor_dtype(graph.dtype)
    proto = helper.make_graph(
        graph.nodes, model.name,
        [helper.make_tensor_value_info(INPUT, elem, ["N", *model.input_shape])],
        [helper.make_tensor_value_info(OUTPUT, elem, ["N", *shapes[-1]])],
        initializer=graph.initializers)
    opsets = [helper.make_opsetid("", opset)]
    onnx_model = helper.make_model(proto, opset_imports=opsets, producer_name="im2colnet",
                                   producer_version=__version__,
                                   ir_version=helper.find_min_ir_version_for(opsets))
    onnx_model.doc_string = f"im2colnet Sequential {model.name!r}, input (N, *{model.input_shape})"
    helper.set_model_props(onnx_model, _metadata_props(model, metadata))
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def export(model, path, opset=17, metadata=None):
    """Write a Sequential to ``path`` as an ONNX model; returns the path.

    The model must know its input_shape; one that is not built yet is built first
    (fresh weights, seed 0), as forward() would. A float64 model is written in
    double precision (ONNX Runtime's CPU Conv runs float32 only).

    opset: the ONNX operator set version (from 13 to the newest the installed onnx
    knows). metadata: a dict added over model.metadata in ``metadata_props``
    (non-string values as JSON). The input is named "input", shape ("N", *input_shape);
    the output "output". The file is written to a temporary file beside ``path`` and
    renamed over it only when complete. A layer without an ONNX form is a ValueError
    naming it.
    """
    data = build_model_proto(model, opset, metadata).SerializeToString()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return os.fspath(path)
