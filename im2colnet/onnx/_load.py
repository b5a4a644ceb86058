"""im2colnet.onnx.load: an ONNX graph of supported nodes, as a Sequential.

The graph must have one input (N, *sizes) with fixed per-sample sizes, one
output, and every node must read the previous node's output (plus constants:
initialisers or Constant nodes), except at a residual block: a tensor read by
two paths (one may be empty: the identity) that meet in an Add of the two.
Nodes and what they become:

    Conv (2-D, any group)         Conv2d (pads, auto_pad, strides, dilations, groups)
    ConvTranspose (2-D)           ConvTranspose2d (pads, output_padding, strides, dilations,
                                  group; not output_shape or auto_pad SAME_*)
    Gemm; MatMul [+ Add]          Linear (alpha/beta/transB folded into the weight)
    BatchNormalization            BatchNorm2d / BatchNorm1d (inference statistics)
    Relu, Tanh, Sigmoid, Elu      ReLU, Tanh, Sigmoid, ELU; LeakyRelu: LeakyReLU
    GlobalAveragePool             GlobalAvgPool2d
    MaxPool, AveragePool          MaxPool2d (dilation), AvgPool2d (count_include_pad);
                                  ceil_mode=1 as ceil_mode=True (ONNX's last-window rule is ours)
    Flatten(axis=1), Reshape      Flatten (a Reshape must keep the batch and flatten)
    Softmax, LogSoftmax           Softmax, LogSoftmax over the features (or Flatten-op-Reshape)
    Transpose, RNN/LSTM/GRU, Squeeze, Transpose    RNN/LSTM/GRU (forward, batch-first; an
                                  initial state only when it is zeros, also when computed
                                  from Shape nodes as torch.onnx.export writes it)
    Gather(index -1, axis 1)      LastTimeStep
    Slice of H, W before a Conv or pool      a negative padding (a crop)
    Pad of zeros on H, W before a Conv or an AveragePool counting its padding   more padding
    Reshape-ReduceMax; Reshape-BatchNormalization-Reshape    Maxout; per-activation BN
    two paths from a tensor, Add  Residual(block, shortcut): the path the Add reads first
                                  is the block (unless it is the identity)
    Identity, Dropout             nothing

Anything else (another op, attribute or attribute value, another kind of branch,
a second input) is a ValueError naming the node, its op type and what is not
supported: the model never silently computes something else.
"""
import json
import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, ConvTranspose2d, ELU, Flatten,
                      GlobalAvgPool2d, GRU, LSTM, LastTimeStep, LeakyReLU, Linear, LogSoftmax,
                      MaxPool2d, Maxout, ReLU, RNN, Sigmoid, Softmax, Tanh)
from ..model import Residual
from ..sequential import Sequential
from ..serialization import ModelFormatError
from ._common import RECURRENT, from_onnx_gates

__all__ = ["load"]

_FLOATS = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64}
_RNN_CLASSES = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}
_ACTIVATIONS = {"Relu": ReLU, "Tanh": Tanh, "Sigmoid": Sigmoid,
                "GlobalAveragePool": GlobalAvgPool2d}


class _Unsupported(ValueError):
    pass


def _label(node):
    return f"node {node.name!r} ({node.op_type})" if node.name else f"a {node.op_type} node"


def _fail(node, what):
    raise _Unsupported(f"{_label(node)}: {what}")


def _attrs(node, known):
    """The node's attributes over the defaults in ``known``; any other attribute is an error."""
    found = {}
    for attr in node.attribute:
        if attr.name not in known:
            _fail(node, f"the attribute {attr.name} is not supported "
                        f"(known: {', '.join(sorted(known)) or 'none'})")
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list):
            value = [v.decode() if isinstance(v, bytes) else v for v in value]
        found[attr.name] = value
    return {**known, **found}


def _int_or_pair(a, b):
    return a if a == b else (a, b)


def _float(value):
    """A float attribute (stored as float32) as the shortest decimal that float32 gives: 1e-05."""
    return float(str(np.float32(value)))


def _padding(pt, pb, pl, pr):
    """Our padding argument for explicit pads, in its simplest form."""
    if pt == pb and pl == pr:
        return _int_or_pair(pt, pl)
    return ((pt, pb), (pl, pr))


class _Residual:
    """A fork in the graph: block and shortcut (lists of items; an empty shortcut is the
    identity) from one tensor, summed by the Add node ``add``."""
    op_type = "Add"

    def __init__(self, block, shortcut, add):
        self.block, self.shortcut, self.add, self.name = block, shortcut, add, add.name


def _nodes_of(items):
    """The ONNX nodes of chain items, residual blocks' nodes included."""
    for item in items:
        if isinstance(item, _Residual):
            yield from _nodes_of(item.block)
            yield from _nodes_of(item.shortcut)
            yield item.add
        else:
            yield item


class _Importer:
    """Walks the chain from the graph's input to its output and turns nodes into layers."""

    def __init__(self, proto):
        self.graph = graph = proto.graph
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.nodes = []
        for node in graph.node:
            if node.domain not in ("", "ai.onnx"):
                _fail(node, f"ops of the domain {node.domain!r} are not supported")
            if node.op_type == "Constant":
                self.consts[node.output[0]] = self._constant_value(node)
            elif node.op_type == "Identity" and node.input[0] in self.consts:
                self.consts[node.output[0]] = self.consts[node.input[0]]
            else:
                self.nodes.append(node)
        self.zeros = self._zero_states()
        self.layers, self.weights = [], []      # weights[i]: {(store, key): array} of layers[i]
        self.crop = None                        # a Slice waiting for its Conv or pool

    def _zero_states(self):
        """Names of tensors that are zeros of a run-time shape (an Expand of a zero constant,
        a ConstantOfShape of 0) whose shape is computed from Shape nodes only, as
        torch.onnx.export writes an RNN's initial state. Those nodes leave self.nodes, so the
        Shape nodes do not look like branches; a recurrent node may take such a state (our
        initial state is zeros)."""
        producer = {name: node for node in self.nodes for name in node.output}
        readers = {}
        for node in self.nodes:
            for name in node.input:
                readers.setdefault(name, []).append(node)
        zeros, dropped = set(), []
        for node in self.nodes:
            if node.op_type == "Expand" and node.input[0] in self.consts:
                value, shape_input = self.consts[node.input[0]], node.input[1]
            elif node.op_type == "ConstantOfShape":
                attr = next((a for a in node.attribute if a.name == "value"), None)
                value = np.zeros(1) if attr is None else numpy_helper.to_array(attr.t)
                shape_input = node.input[0]
            else:
                continue
            plumbing = self._shape_plumbing(shape_input, producer)
            if plumbing is None or np.any(value != 0):
                continue
            inside = {id(n) for n in plumbing} | {id(node)}
            outputs = {name for n in plumbing for name in n.output}
            if all(id(r) in inside for name in outputs for r in readers.get(name, [])):
                zeros.add(node.output[0])
                dropped += plumbing + [node]
        # A piece of zeros is zeros (torch slices one layer's state out of a stacked one).
        growing = True
        while growing:
            growing = False
            for node in self.nodes:
                if (node.op_type in ("Slice", "Gather", "Squeeze", "Unsqueeze", "Reshape")
                        and node.input[0] in zeros and node.output[0] not in zeros
                        and all(n in self.consts or n == "" for n in node.input[1:])):
                    zeros.add(node.output[0])
                    dropped.append(node)
                    growing = True
        ids = {id(n) for n in dropped}
        self.nodes = [n for n in self.nodes if id(n) not in ids]
        return zeros

    def _shape_plumbing(self, name, producer, ops=("Shape", "Gather", "Unsqueeze", "Squeeze",
                                                   "Concat", "Slice", "Cast", "Reshape")):
        """The nodes computing tensor ``name`` from constants and Shape nodes only, else None."""
        found, todo = [], [name]
        while todo:
            name = todo.pop()
            if name in self.consts or name == "":
                continue
            node = producer.get(name)
            if node is None or node.op_type not in ops:
                return None
            if not any(node is n for n in found):
                found.append(node)
                if node.op_type != "Shape":
                    todo.extend(node.input)
        return found

    # -- constants ------------------------------------------------------------------------
    def _constant_value(self, node):
        attrs = _attrs(node, {"value": None, "value_float": None, "value_floats": None,
                              "value_int": None, "value_ints": None})
        for key, dtype in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                           ("value_int", np.int64), ("value_ints", np.int64)):
            if attrs[key] is not None:
                value = attrs[key]
                return numpy_helper.to_array(value) if dtype is None else np.asarray(value, dtype)
        _fail(node, "a Constant without a value (value, value_float(s), value_int(s))")

    def const(self, node, k, what, required=True):
        """The constant at input k of node (None when absent and not required)."""
        name = node.input[k] if k < len(node.input) else ""
        if name == "":
            if required:
                _fail(node, f"the input {what} is missing")
            return None
        if name not in self.consts:
            _fail(node, f"the input {what} ({name!r}) must be a constant (an initialiser or a "
                        f"Constant node); it is computed at run time")
        return self.consts[name]

    # -- the chain ----------------------------------------------------------------------
    def input_info(self):
        inputs = [v for v in self.graph.input if v.name not in self.consts]
        if len(inputs) != 1:
            raise _Unsupported(f"the graph has {len(inputs)} inputs ({', '.join(v.name for v in inputs)}); "
                               f"im2colnet.onnx.load reads graphs with one input")
        value = inputs[0]
        ttype = value.type.tensor_type
        if ttype.elem_type not in _FLOATS:
            raise _Unsupported(f"the input {value.name!r} has element type "
                               f"{onnx.TensorProto.DataType.Name(ttype.elem_type)}; expected FLOAT or DOUBLE")
        dims = list(ttype.shape.dim)
        sizes = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
        if len(dims) < 2 or None in sizes or min(sizes) < 1:
            shown = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
            raise _Unsupported(f"the input {value.name!r} has shape {shown}; im2colnet needs (N, ...) "
                               f"with fixed per-sample sizes")
        batch = dims[0].dim_value if dims[0].HasField("dim_value") else None
        return value.name, tuple(sizes), _FLOATS[ttype.elem_type], batch

    def chain(self, start):
        """The items from the input to the single output: nodes, each reading the one
        before, and _Residual items where the chain forks and the two paths meet in an Add."""
        outputs = [v.name for v in self.graph.output]
        if len(outputs) != 1:
            raise _Unsupported(f"the graph has {len(outputs)} outputs ({', '.join(outputs)}); "
                               f"im2colnet.onnx.load reads graphs with one output")
        self.output = outputs[0]
        self.readers = {}
        for node in self.nodes:
            for name in set(node.input):
                self.readers.setdefault(name, []).append(node)
        chain, _, merge = self._segment(start)
        if merge is not None:
            _fail(merge, "it adds a tensor computed on the chain to itself or to a tensor that "
                         "does not branch from the chain")
        used = {id(node) for node in _nodes_of(chain)}
        rest = [n for n in self.nodes if id(n) not in used]
        if rest:
            _fail(rest[0], "it is not on the chain from the graph's input to its output")
        return chain

    def _merges(self, node):
        """Is node an Add of two tensors computed in the graph (the end of a residual block)?"""
        return node.op_type == "Add" and len(node.input) == 2 and not any(
            name in self.consts or name in self.zeros or name == "" for name in node.input)

    def _segment(self, tensor, after=None):
        """The items from ``tensor`` on (read by the nodes ``after``, else by all its readers)
        up to the graph output or to an Add that merges it with another path.
        Returns (items, the last tensor, that Add or None)."""
        items = []
        while True:
            if after is None:
                after = self.readers.get(tensor, [])
                if tensor == self.output:
                    if after:
                        raise _Unsupported(f"the graph output {tensor!r} is also read by "
                                           f"{_label(after[0])}: a branch")
                    return items, tensor, None
            if len(after) == 1 and self._merges(after[0]):
                return items, tensor, after[0]
            if len(after) == 2:
                items.append(self._fork(tensor, after))
                tensor, after = items[-1].add.output[0], None
                continue
            if len(after) != 1:
                if not after:
                    raise _Unsupported(f"the tensor {tensor!r} is read by no node and is not the "
                                       f"graph output {self.output!r}")
                raise _Unsupported(f"the tensor {tensor!r} is read by {len(after)} nodes "
                                   f"({', '.join(_label(n) for n in after)}): a branch; "
                                   f"im2colnet.onnx.load reads chains of nodes and residual blocks")
            node = after[0]
            for name in node.input:
                if name not in ("", tensor) and name not in self.consts and name not in self.zeros:
                    _fail(node, f"it also reads {name!r}, computed elsewhere in the graph: a branch "
                                f"that merges other than by an Add of two paths from one tensor")
            for name in node.output[1:]:
                if name and (name in self.readers or name == self.output):
                    _fail(node, f"its output {name!r} (not the first) is used; only the first "
                                f"output of a node is supported")
            items.append(node)
            tensor, after = node.output[0], None

    def _fork(self, tensor, readers):
        """The _Residual of a tensor read by two paths that meet in one Add: the path whose
        end the Add reads first is the block (export's order), unless it is the identity."""
        paths = [([], tensor, r) if self._merges(r) else self._segment(tensor, [r]) for r in readers]
        (items_a, end_a, add), (items_b, end_b, add_b) = paths
        if add is None or add is not add_b or sorted(add.input) != sorted([end_a, end_b]) \
                or not (items_a or items_b):
            raise _Unsupported(f"the tensor {tensor!r} is read by 2 nodes "
                               f"({', '.join(_label(n) for n in readers)}): a branch whose paths do "
                               f"not meet in one Add; im2colnet.onnx.load reads chains of nodes "
                               f"and residual blocks, block(x) + shortcut(x)")
        block, shortcut = (items_a, items_b) if add.input[0] == end_a else (items_b, items_a)
        if not block:
            block, shortcut = shortcut, block
        return _Residual(block, shortcut, add)

    # -- layers -----------------------------------------------------------------------------
    def add(self, node, layer, shape, **arrays):
        """Append a layer; arrays: params/buffers by our name. Returns the new per-sample shape."""
        try:
            out = tuple(layer.output_shape(shape))
        except ValueError as exc:
            _fail(node, f"it does not fit its input of per-sample shape {shape}: {exc}")
        self.layers.append(layer)
        self.weights.append((node, arrays))
        return out

    def take_crop(self, node, shape):
        crop, self.crop = self.crop, None
        if crop is not None and len(shape) != 3:
            _fail(node, "a Slice before it crops an input that is not an image")
        return crop or (0, 0, 0, 0)


def _window(imp, node, shape, attrs, kernel):
    """(stride, padding, dilation) of a Conv/pool node over an image of per-sample shape."""
    if len(shape) != 3 or len(kernel) != 2:
        _fail(node, f"only 2-D windows over images (N, C, H, W) are supported; kernel {list(kernel)}, "
                    f"input per-sample shape {shape}")
    strides = attrs["strides"] or [1, 1]
    dilations = attrs.get("dilations") or [1, 1]
    ct, cb, cl, cr = imp.take_crop(node, shape)
    h, w = shape[1] - ct - cb, shape[2] - cl - cr
    auto = attrs["auto_pad"]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for size, k, s, d in zip((h, w), kernel, strides, dilations):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            pads.append((big, small) if auto == "SAME_LOWER" else (small, big))
        (pt, pb), (pl, pr) = pads
    elif auto == "VALID":
        pt = pb = pl = pr = 0
    elif auto == "NOTSET":
        pt, pl, pb, pr = attrs["pads"] or [0, 0, 0, 0]
    else:
        _fail(node, f"auto_pad={auto!r} is not supported")
    padding = _padding(pt - ct, pb - cb, pl - cl, pr - cr)
    return _int_or_pair(*strides), padding, _int_or_pair(*dilations)


_WINDOW_ATTRS = {"kernel_shape": None, "strides": None, "pads": None, "auto_pad": "NOTSET"}


def _conv_weights(imp, node, attrs, ok, what):
    """(W, B or None, kernel size) of a Conv or ConvTranspose node: 4-D weights (and `ok`,
    the caller's own condition) or a ValueError naming `what` is supported."""
    w = imp.const(node, 1, "W (the weights)")
    b = imp.const(node, 2, "B (the bias)", required=False)
    if w.ndim != 4 or not ok:
        _fail(node, f"only 2-D {what} are supported (weights of shape {w.shape})")
    kernel = tuple(int(k) for k in w.shape[2:])
    if attrs["kernel_shape"] is not None and tuple(attrs["kernel_shape"]) != kernel:
        _fail(node, f"kernel_shape {attrs['kernel_shape']} disagrees with the weights' shape {w.shape}")
    return w, b, kernel


def _add_weighted(imp, node, layer, shape, w, b):
    """imp.add of a layer whose parameters are the node's weight and optional bias."""
    arrays = {"weight": w} if b is None else {"weight": w, "bias": b}
    return imp.add(node, layer, shape, **arrays)


def _conv(imp, chain, i, shape):
    node = chain[i]
    attrs = _attrs(node, {**_WINDOW_ATTRS, "dilations": None, "group": 1})
    w, b, kernel = _conv_weights(imp, node, attrs, ok=True, what="convolutions")
    stride, padding, dilation = _window(imp, node, shape, attrs, kernel)
    try:
        layer = Conv2d(int(w.shape[1]) * attrs["group"], int(w.shape[0]), _int_or_pair(*kernel),
                       stride=stride, padding=padding, dilation=dilation, bias=b is not None,
                       groups=attrs["group"])
    except ValueError as exc:
        _fail(node, str(exc))
    return i + 1, _add_weighted(imp, node, layer, shape, w, b)


def _conv_transpose(imp, chain, i, shape):
    node = chain[i]
    attrs = _attrs(node, {**_WINDOW_ATTRS, "dilations": None, "group": 1, "output_padding": None,
                          "output_shape": None})
    if attrs["output_shape"] is not None or attrs["auto_pad"] not in ("NOTSET", "VALID"):
        _fail(node, f"output_shape / auto_pad={attrs['auto_pad']!r} are not supported (explicit "
                    f"pads and output_padding are)")
    w, b, kernel = _conv_weights(imp, node, attrs, ok=len(shape) == 3,
                                 what=f"transposed convolutions of images (input per-sample shape "
                                      f"{shape})")
    pt, pl, pb, pr = attrs["pads"] if attrs["auto_pad"] == "NOTSET" and attrs["pads"] else [0] * 4
    try:
        layer = ConvTranspose2d(
            int(w.shape[0]), int(w.shape[1]) * attrs["group"], _int_or_pair(*kernel),
            stride=_int_or_pair(*(attrs["strides"] or [1, 1])), padding=_padding(pt, pb, pl, pr),
            output_padding=_int_or_pair(*(attrs["output_padding"] or [0, 0])),
            groups=attrs["group"], bias=b is not None,
            dilation=_int_or_pair(*(attrs["dilations"] or [1, 1])))
    except ValueError as exc:
        _fail(node, str(exc))
    return i + 1, _add_weighted(imp, node, layer, shape, w, b)


def _pool(imp, chain, i, shape):
    node = chain[i]
    is_max = node.op_type == "MaxPool"
    extra = {"storage_order": 0} if is_max else {"count_include_pad": 0}
    attrs = _attrs(node, {**_WINDOW_ATTRS, "dilations": None, "ceil_mode": 0, **extra})
    kernel = tuple(attrs["kernel_shape"] or ())
    if not is_max and any(d != 1 for d in attrs["dilations"] or [1]):
        _fail(node, f"dilations={attrs['dilations']} in average pooling are not supported")
    if is_max and attrs["storage_order"] != 0:
        _fail(node, "storage_order=1 is not supported")
    if attrs["ceil_mode"] not in (0, 1) or (attrs["ceil_mode"] and attrs["auto_pad"] == "VALID"):
        _fail(node, f"ceil_mode={attrs['ceil_mode']} with auto_pad={attrs['auto_pad']!r} is not "
                    f"supported (ceil_mode=1 is, with explicit pads)")
    # ONNX's ceil_mode rule is PyTorch's and ours: a last window that starts in the right
    # padding is ignored. Our ceil_mode takes no crop at the end; a Slice there (export's form
    # of rows past the last window) is taken as the same pooling of the whole input, checked below.
    ceil, crop = bool(attrs["ceil_mode"]), imp.crop
    end_crop = ceil and crop is not None and max(crop[1], crop[3]) > 0
    if end_crop:
        imp.crop = (crop[0], 0, crop[2], 0)
    stride, padding, dilation = _window(imp, node, shape, attrs, kernel)
    try:
        kernel = _int_or_pair(*kernel)
        stride = None if stride == kernel else stride
        layer = MaxPool2d(kernel, stride, padding, dilation=dilation, ceil_mode=ceil) if is_max else \
            AvgPool2d(kernel, stride, padding, ceil_mode=ceil,
                      count_include_pad=bool(attrs["count_include_pad"]))
        g = layer._window(tuple(shape[1:]))
        inner = layer._window((shape[1] - crop[1], shape[2] - crop[3])) if end_crop else g
    except ValueError as exc:
        _fail(node, str(exc))
    last_ends = ((g.out_h - 1) * g.sh - g.pt + g.dh * (g.kh - 1) + 1,
                 (g.out_w - 1) * g.sw - g.pl + g.dw * (g.kw - 1) + 1)
    if end_crop and ((inner.out_h, inner.out_w) != (g.out_h, g.out_w) or any(
            cut and end > size - cut for cut, end, size in zip(crop[1::2], last_ends, shape[1:]))):
        _fail(node, "a Slice of the bottom/right before a ceil_mode=1 pooling is supported only "
                    "where no window reads the cropped cells")
    return i + 1, imp.add(node, layer, shape)


def _gemm(imp, chain, i, shape):
    node = chain[i]
    attrs = _attrs(node, {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})
    if attrs["transA"]:
        _fail(node, "transA=1 is not supported")
    if len(shape) != 1:
        _fail(node, f"its input must be (N, features); per-sample shape {shape}")
    w = imp.const(node, 1, "B (the weights)")
    if w.ndim != 2:
        _fail(node, f"the weights must be a matrix, got shape {w.shape}")
    w = (w if attrs["transB"] else w.T) * attrs["alpha"]          # (out, in)
    c = imp.const(node, 2, "C (the bias)", required=False)
    arrays = {"weight": w}
    if c is not None:
        arrays["bias"] = _bias(node, c * attrs["beta"], w.shape[0])
    layer = Linear(int(w.shape[1]), int(w.shape[0]), bias=c is not None)
    return i + 1, imp.add(node, layer, shape, **arrays)


def _bias(node, c, size):
    if c.size not in (1, size) or (c.ndim > 1 and c.shape[:-1] != (1,) * (c.ndim - 1)):
        _fail(node, f"the bias of shape {c.shape} does not broadcast to ({size},)")
    return np.broadcast_to(c.reshape(-1), (size,))


def _matmul(imp, chain, i, shape):
    node = chain[i]
    _attrs(node, {})
    if node.input[1] not in imp.consts:
        _fail(node, "only a product with a constant matrix (x W) is supported")
    w = imp.const(node, 1, "B (the weights)")
    if w.ndim != 2 or shape[-1] != w.shape[0] or not (len(shape) == 1 or (len(shape) == 2 and shape[0] > 1)):
        _fail(node, f"x (N, {', '.join(map(str, shape))}) times weights {w.shape} is not a Linear layer")
    arrays, nxt = {"weight": w.T}, i + 1
    if nxt < len(chain) and chain[nxt].op_type == "Add":
        add = chain[nxt]
        _attrs(add, {})
        k = 1 if add.input[0] == node.output[0] else 0
        arrays["bias"] = _bias(add, imp.const(add, k, "the bias"), w.shape[1])
        nxt += 1
    layer = Linear(int(w.shape[0]), int(w.shape[1]), bias="bias" in arrays)
    return nxt, imp.add(node, layer, shape, **arrays)


def _unary(imp, chain, i, shape):
    node = chain[i]
    if node.op_type == "Elu":
        layer = ELU(_float(_attrs(node, {"alpha": 1.0})["alpha"]))
    elif node.op_type == "LeakyRelu":
        layer = LeakyReLU(_float(_attrs(node, {"alpha": 0.01})["alpha"]))
    else:
        _attrs(node, {})
        layer = _ACTIVATIONS[node.op_type]()
    return i + 1, imp.add(node, layer, shape)


def _skip(imp, chain, i, shape):
    node = chain[i]
    _attrs(node, {"ratio": 0.5, "seed": 0, "is_test": 0} if node.op_type == "Dropout" else {})
    if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
        mode = imp.const(node, 2, "training_mode")
        if bool(np.asarray(mode)):
            _fail(node, "training_mode=True is not supported (an exported model runs in inference)")
    return i + 1, shape


def _batchnorm_arrays(imp, node):
    attrs = _attrs(node, {"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0, "spatial": 1,
                          "is_test": 0, "consumed_inputs": None})
    if attrs["training_mode"]:
        _fail(node, "training_mode=1 is not supported (an exported model runs in inference)")
    if attrs["spatial"] != 1:
        _fail(node, "spatial=0 is not supported")
    stats = [imp.const(node, k, what) for k, what in
             ((1, "scale"), (2, "B"), (3, "input_mean"), (4, "input_var"))]
    arrays = dict(zip(("gamma", "beta", "running_mean", "running_var"), stats))
    momentum = min(max(_float(1.0 - _float(attrs["momentum"])), 0.0), 1.0)
    return arrays, _float(attrs["epsilon"]), momentum


def _batchnorm(imp, chain, i, shape):
    node = chain[i]
    arrays, eps, momentum = _batchnorm_arrays(imp, node)
    if len(shape) == 3:
        layer = BatchNorm2d(shape[0], eps=eps, momentum=momentum)
    elif len(shape) == 1:
        layer = BatchNorm1d(shape[0], eps=eps, momentum=momentum)
    else:
        _fail(node, f"only (N, C, H, W) and (N, C) inputs are supported, per-sample shape {shape}")
    return i + 1, imp.add(node, layer, shape, **arrays)


def _softmax(imp, chain, i, shape):
    node = chain[i]
    axis = _attrs(node, {"axis": -1 if imp.opset >= 13 else 1})["axis"]
    if imp.opset >= 13 and (len(shape) != 1 or axis not in (1, -1)):
        _fail(node, f"Softmax over axis {axis} of a (N, {', '.join(map(str, shape))}) input is not "
                    f"supported (im2colnet's Softmax normalises over all non-batch axes)")
    if imp.opset < 13 and axis != 1:
        _fail(node, f"axis={axis} is not supported (im2colnet's Softmax normalises over all "
                    f"non-batch axes: axis=1)")
    return i + 1, imp.add(node, Softmax() if node.op_type == "Softmax" else LogSoftmax(), shape)


def _reshape_target(imp, node, shape, batch):
    """The per-sample shape a Reshape (or Flatten) produces; its batch must stay the batch."""
    if node.op_type == "Flatten":
        if _attrs(node, {"axis": 1})["axis"] != 1:
            _fail(node, "only axis=1 (keep the batch, flatten the rest) is supported")
        return (int(np.prod(shape)),)
    allowzero = _attrs(node, {"allowzero": 0})["allowzero"]
    target = [int(v) for v in np.asarray(imp.const(node, 1, "shape")).reshape(-1)]
    if allowzero and 0 in target:
        _fail(node, "allowzero=1 with a 0 in the shape is not supported")
    size = int(np.prod(shape))
    dims = [shape[k - 1] if (v == 0 and 1 <= k <= len(shape)) else v for k, v in enumerate(target)]
    first, rest = dims[0], dims[1:]
    ok = bool(rest) and first in (0, -1) + ((batch,) if batch else ())
    if ok and first == -1:
        ok = -1 not in rest and int(np.prod(rest)) == size
    elif ok and rest.count(-1) == 1:
        known = int(np.prod([v for v in rest if v != -1]))
        ok = known > 0 and size % known == 0
        rest = [size // known if v == -1 else v for v in rest]
    if not ok or min(rest) < 1 or int(np.prod(rest)) != size:
        _fail(node, f"a reshape of (N, {', '.join(map(str, shape))}) to {target} is not supported "
                    f"(the batch must stay the first axis)")
    return tuple(rest)


def _is_reshape_back(imp, chain, k, shape, batch):
    """chain[k] is a Reshape (or Flatten-free) restoring per-sample ``shape``."""
    if k >= len(chain) or chain[k].op_type != "Reshape":
        return False
    return _reshape_target(imp, chain[k], (int(np.prod(shape)),), batch) == tuple(shape)


def _reshape(imp, chain, i, shape):
    """Flatten or Reshape: a flatten, or the first node of Softmax/Maxout/per-activation BN."""
    node, batch = chain[i], imp.batch
    target = _reshape_target(imp, node, shape, batch)
    nxt = chain[i + 1] if i + 1 < len(chain) else None
    flat = target == (int(np.prod(shape)),)
    if flat and len(shape) > 1 and nxt is not None and _is_reshape_back(imp, chain, i + 2, shape, batch):
        if nxt.op_type in ("Softmax", "LogSoftmax"):
            _softmax(imp, chain, i + 1, target)
            return i + 3, shape
        if nxt.op_type == "BatchNormalization" and len(shape) == 3:
            arrays, eps, momentum = _batchnorm_arrays(imp, nxt)
            arrays = {k: v.reshape(shape) for k, v in arrays.items()}
            layer = BatchNorm2d(shape[0], mode="per_activation", eps=eps, momentum=momentum)
            return i + 3, imp.add(nxt, layer, shape, **arrays)
    if nxt is not None and nxt.op_type == "ReduceMax" and node.op_type == "Reshape":
        pieces = _maxout_pieces(imp, nxt, shape, target)
        return i + 2, imp.add(nxt, Maxout(pieces), shape)
    if flat:
        return i + 1, imp.add(node, Flatten(), shape)
    if target == tuple(shape):
        return i + 1, shape
    _fail(node, f"a reshape of per-sample shape {shape} to {target} is not supported "
                f"(only flattening: (N, ...) -> (N, features))")


def _maxout_pieces(imp, node, shape, grouped):
    """ReduceMax over axis 2 of (N, C/p, p, ...) after a Reshape of (N, C, ...): Maxout(p)."""
    attrs = _attrs(node, {"axes": None, "keepdims": 1, "noop_with_empty_axes": 0})
    axes = attrs["axes"]
    if len(node.input) > 1 and node.input[1]:
        axes = [int(a) for a in np.asarray(imp.const(node, 1, "axes")).reshape(-1)]
    rank = len(grouped) + 1
    axes = [a + rank if a < 0 else a for a in axes or []]
    if (axes != [2] or attrs["keepdims"] != 0 or len(grouped) < 2
            or grouped[0] * grouped[1] != shape[0] or tuple(grouped[2:]) != tuple(shape[1:])):
        _fail(node, f"ReduceMax over axes {axes} (keepdims={attrs['keepdims']}) after a reshape of "
                    f"{shape} to {grouped} is not a maxout (supported: the max over the pieces axis 2)")
    return grouped[1]


def _slice(imp, chain, i, shape):
    node = chain[i]
    _attrs(node, {})
    nxt = chain[i + 1] if i + 1 < len(chain) else None
    if len(shape) != 3 or nxt is None or nxt.op_type not in ("Conv", "MaxPool", "AveragePool"):
        _fail(node, "a Slice is supported only as a crop of H and W right before a Conv or a pooling")
    starts, ends = (np.asarray(imp.const(node, k, what)).reshape(-1) for k, what in ((1, "starts"), (2, "ends")))
    axes = imp.const(node, 3, "axes", required=False)
    axes = np.arange(len(starts)) if axes is None else np.asarray(axes).reshape(-1)
    steps = imp.const(node, 4, "steps", required=False)
    if steps is not None and np.any(np.asarray(steps) != 1):
        _fail(node, f"steps {list(np.asarray(steps).reshape(-1))} are not supported (only 1)")
    crop = [0, 0, 0, 0]     # top, bottom, left, right
    for axis, start, end in zip(axes, starts, ends):
        axis = int(axis) + 4 if axis < 0 else int(axis)
        if axis not in (2, 3):
            _fail(node, f"slicing axis {axis} is not supported (only H and W: axes 2, 3)")
        size = shape[axis - 1]
        start, end = (int(v) + size if v < 0 else min(int(v), size) for v in (start, end))
        if not 0 <= start < end <= size:
            _fail(node, f"the slice [{start}:{end}] of axis {axis} (size {size}) is not supported")
        crop[2 * (axis - 2)], crop[2 * (axis - 2) + 1] = start, size - end
    imp.crop = tuple(crop)
    return i + 1, shape


def _pad(imp, chain, i, shape):
    """Zeros padded on H and W right before a Conv, or an AveragePool that counts its padding:
    more padding of that layer (a negative pad crops, as a Slice does)."""
    node = chain[i]
    attrs = _attrs(node, {"mode": "constant", "pads": None, "value": 0.0})
    nxt = chain[i + 1] if i + 1 < len(chain) else None
    counts_padding = nxt is not None and (nxt.op_type == "Conv" or (
        nxt.op_type == "AveragePool" and any(a.name == "count_include_pad" and a.i == 1
                                             for a in nxt.attribute)))
    if attrs["mode"] != "constant" or len(shape) != 3 or not counts_padding:
        _fail(node, "a Pad is supported only as zeros on H and W right before a Conv or an "
                    "AveragePool with count_include_pad=1")
    pads = attrs["pads"] if len(node.input) < 2 or not node.input[1] else \
        [int(v) for v in np.asarray(imp.const(node, 1, "pads")).reshape(-1)]
    if not pads:
        _fail(node, "the pads are missing")
    value = imp.const(node, 2, "constant_value", required=False)
    axes = imp.const(node, 3, "axes", required=False)
    axes = range(4) if axes is None else [int(a) % 4 for a in np.asarray(axes).reshape(-1)]
    per_axis = dict.fromkeys(range(4), (0, 0))
    per_axis.update(zip(axes, zip(pads[:len(axes)], pads[len(axes):])))
    if np.any(np.asarray(value if value is not None else attrs["value"]) != 0) \
            or per_axis[0] != (0, 0) or per_axis[1] != (0, 0):
        _fail(node, f"only zeros padded on H and W (axes 2, 3) are supported; got pads {pads}, "
                    f"axes {list(axes)}")
    (pt, pb), (pl, pr) = per_axis[2], per_axis[3]
    imp.crop = (-pt, -pb, -pl, -pr)
    return i + 1, shape


def _squeeze_axes(imp, node):
    axes = _attrs(node, {"axes": None})["axes"]
    if len(node.input) > 1 and node.input[1]:
        axes = [int(a) for a in np.asarray(imp.const(node, 1, "axes")).reshape(-1)]
    return axes


def _recurrent(imp, chain, i, shape):
    """Transpose(1, 0, 2), then [RNN/LSTM/GRU, Squeeze(1)] per stacked layer, Transpose(1, 0, 2)."""
    node = chain[i]
    perm = _attrs(node, {"perm": None})["perm"]
    if perm != [1, 0, 2] or len(shape) != 2:
        _fail(node, f"a Transpose (perm={perm}) of per-sample shape {shape} is not supported "
                    f"(only (N, T, F) <-> (T, N, F) around RNN, LSTM and GRU nodes)")
    k, cells = i + 1, []
    while k + 1 < len(chain) and chain[k].op_type in RECURRENT and chain[k + 1].op_type == "Squeeze":
        if _squeeze_axes(imp, chain[k + 1]) not in ([1], [-3]):
            _fail(chain[k + 1], "only the num_directions axis 1 of a recurrent output may be squeezed")
        cells.append(chain[k])
        k += 2
    if not cells or k >= len(chain) or chain[k].op_type != "Transpose" \
            or _attrs(chain[k], {"perm": None})["perm"] != [1, 0, 2]:
        _fail(node, "a Transpose is supported only around RNN/LSTM/GRU nodes (each followed by "
                    "Squeeze of axis 1), closed by Transpose(perm=[1, 0, 2])")
    k += 1
    # Consecutive cells of one kind and size form one stacked layer.
    groups = []
    for cell in cells:
        op, hidden, extra, arrays = _cell(imp, cell)
        if groups and groups[-1][0] == (op, hidden, extra):
            groups[-1][1].append(arrays)
        else:
            groups.append(((op, hidden, extra), [arrays], cell))
    for (op, hidden, extra), stack, cell in groups:
        layer = _RNN_CLASSES[op](shape[1], hidden, num_layers=len(stack), **dict(extra))
        arrays = {f"{name}_l{n}": a[name] for n, a in enumerate(stack) for name in a}
        shape = imp.add(cell, layer, shape, **arrays)
    return k, shape


def _cell(imp, node):
    """(op, hidden size, extra layer options, {weight_ih, weight_hh, bias_ih, bias_hh}) of one node."""
    op = node.op_type
    known = {"hidden_size": None, "direction": "forward", "activations": None, "activation_alpha": None,
             "activation_beta": None, "clip": None, "layout": 0}
    if op == "LSTM":
        known["input_forget"] = 0
    if op == "GRU":
        known["linear_before_reset"] = 0
    attrs = _attrs(node, known)
    defaults = {"RNN": [["Tanh"], ["Relu"]], "LSTM": [["Sigmoid", "Tanh", "Tanh"]],
                "GRU": [["Sigmoid", "Tanh"]]}[op]
    for key, bad in (("direction", attrs["direction"] != "forward"), ("layout", attrs["layout"] != 0),
                     ("clip", attrs["clip"] is not None), ("activation_alpha", attrs["activation_alpha"]),
                     ("activation_beta", attrs["activation_beta"]),
                     ("activations", attrs["activations"] not in [None] + defaults),
                     ("input_forget", attrs.get("input_forget", 0) != 0),
                     ("linear_before_reset", op == "GRU" and attrs["linear_before_reset"] != 1)):
        if bad:
            _fail(node, f"{key}={attrs[key]!r} is not supported (im2colnet's {op} is PyTorch's: "
                        f"forward, batch-first through Transposes, default activations"
                        f"{', linear_before_reset=1' if op == 'GRU' else ''})")
    for k, what in ((4, "sequence_lens"), (5, "initial_h"), (6, "initial_c"), (7, "P (peepholes)")):
        name = node.input[k] if k < len(node.input) else ""
        if name and not (k in (5, 6) and (name in imp.zeros or _all_zero(imp.consts.get(name)))):
            _fail(node, f"the input {what} is not supported (an initial state only when it is zeros)")
    order = RECURRENT[op][1]
    hidden = int(attrs["hidden_size"] or 0)
    w, r = imp.const(node, 1, "W"), imp.const(node, 2, "R")
    b = imp.const(node, 3, "B", required=False)
    gh = len(order) * hidden
    if w.ndim != 3 or w.shape[:2] != (1, gh) or r.shape != (1, gh, hidden):
        _fail(node, f"weights W {w.shape} and R {r.shape} do not fit hidden_size={hidden}")
    b = np.zeros((1, 2 * gh), w.dtype) if b is None else b
    if b.shape != (1, 2 * gh):
        _fail(node, f"the bias B {b.shape} does not fit hidden_size={hidden}")
    extra = {}
    if op == "RNN":
        extra["nonlinearity"] = (attrs["activations"] or ["Tanh"])[0].lower()
    arrays = {"weight_ih": from_onnx_gates(w[0], order), "weight_hh": from_onnx_gates(r[0], order),
              "bias_ih": from_onnx_gates(b[0, :gh], order), "bias_hh": from_onnx_gates(b[0, gh:], order)}
    return op, hidden, tuple(extra.items()), arrays


def _all_zero(value):
    return value is not None and not np.any(value)


def _gather(imp, chain, i, shape):
    node = chain[i]
    axis = _attrs(node, {"axis": 0})["axis"]
    index = np.asarray(imp.const(node, 1, "indices"))
    if len(shape) != 2 or axis != 1 or index.ndim != 0 or int(index) not in (-1, shape[0] - 1):
        _fail(node, f"only the last time step is supported: Gather(axis=1) of a scalar index -1 "
                    f"on (N, T, F); got axis={axis}, indices {index.tolist()}, per-sample shape {shape}")
    return i + 1, imp.add(node, LastTimeStep(), shape)


def _residual(imp, chain, i, shape):
    """block(x) + shortcut(x): each path's items become a stack of layers."""
    item = chain[i]
    if not isinstance(item, _Residual):
        _fail(item, "an Add is supported after a MatMul (a Linear's bias) or as the sum of two "
                    "paths from one tensor (a residual block)")
    outer, stacks, arrays = (imp.layers, imp.weights), [], {}
    for prefix, items in (("block", item.block), ("shortcut", item.shortcut)):
        imp.layers, imp.weights = [], []
        _convert(imp, items, shape)
        stacks.append(imp.layers or None)
        arrays.update({f"{prefix}/{j}/{key}": value for j, (_, found) in enumerate(imp.weights)
                       for key, value in found.items()})
    imp.layers, imp.weights = outer
    return i + 1, imp.add(item.add, Residual(*stacks), shape, **arrays)


def _convert(imp, chain, shape):
    """Append the layers of chain items to imp.layers; returns the per-sample output shape."""
    i = 0
    while i < len(chain):
        node = chain[i]
        handler = _HANDLERS.get(node.op_type)
        if handler is None:
            _fail(node, f"the op {node.op_type} is not supported by im2colnet.onnx.load "
                        f"(supported: {', '.join(sorted(_HANDLERS))} and Constant)")
        i, shape = handler(imp, chain, i, shape)
    if imp.crop is not None:
        raise _Unsupported("a Slice at the end of the graph or of a residual path is not supported")
    return shape


_HANDLERS = {
    "Conv": _conv, "ConvTranspose": _conv_transpose, "MaxPool": _pool, "AveragePool": _pool,
    "Gemm": _gemm, "MatMul": _matmul, "Add": _residual,
    "Relu": _unary, "Tanh": _unary, "Sigmoid": _unary, "Elu": _unary, "LeakyRelu": _unary,
    "GlobalAveragePool": _unary,
    "Identity": _skip, "Dropout": _skip, "BatchNormalization": _batchnorm, "Softmax": _softmax,
    "LogSoftmax": _softmax, "Flatten": _reshape, "Reshape": _reshape, "Slice": _slice, "Pad": _pad,
    "Transpose": _recurrent,
    "Gather": _gather,
}


def _read(path):
    """The ModelProto of a file, checked; a file that is not (a whole) ONNX model is a ModelFormatError."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(path)
    except Exception as exc:  # noqa: BLE001 -- protobuf's DecodeError and friends
        raise ModelFormatError(f"{path}: not an ONNX model, or a truncated one "
                               f"({type(exc).__name__}: {exc})") from None
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001 -- onnx's ValidationError and inference errors
        raise ModelFormatError(f"{path}: not a valid ONNX model ({type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc})") from None
    if not proto.graph.node:
        raise ModelFormatError(f"{path}: not an ONNX model with a graph (no nodes)")
    return proto


def load(path):
    """A Sequential computing what the ONNX model at ``path`` computes.

    The graph must be a chain of the supported nodes (see this module's docstring);
    anything else is a ValueError naming the node, its op type and what is not
    supported. A file that is not a readable ONNX model is an
    im2colnet.ModelFormatError. The model's metadata_props become ``model.metadata``
    (JSON values decoded).
    """
    path = os.fspath(path)
    proto = _read(path)
    try:
        imp = _Importer(proto)
        name, shape, dtype, imp.batch = imp.input_info()
        _convert(imp, imp.chain(name), shape)
    except _Unsupported as exc:
        raise ValueError(f"{path}: {exc}") from None
    model = Sequential(imp.layers, input_shape=shape, name=proto.graph.name or "onnx_model")
    model.astype(dtype)
    model.build(seed=0)
    for layer, (node, arrays) in zip(model.layers, imp.weights):
        for key, value in arrays.items():
            store = layer.params if key in layer.params else layer.buffers
            if np.shape(value) != store[key].shape:
                raise ValueError(f"{path}: {_label(node)}: {key} has shape {np.shape(value)}, the "
                                 f"layer needs {store[key].shape}")
            np.copyto(store[key], value, casting="unsafe")
    model.metadata = {p.key: _decode(p.value) for p in proto.metadata_props}
    return model


def _decode(text):
    try:
        return json.loads(text)
    except ValueError:
        return text
