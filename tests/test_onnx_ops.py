"""The layers and options of issue 15 through ONNX: grouped and depthwise convolution, the
transposed convolution, dilated max pooling, average pooling without the padding in the
divisor, ceil_mode, LeakyReLU, LogSoftmax, global and adaptive average pooling export to the
ONNX nodes that compute them (checked by ONNX Runtime, float32 within 1e-5) and load back with
the same predictions; what ONNX (or ONNX Runtime) cannot express is a clear error."""
import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import im2colnet as inet

onnxruntime = pytest.importorskip("onnxruntime")
inet_onnx = pytest.importorskip("im2colnet.onnx")


def run_ort(path, x):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


TOL = dict(rtol=1e-5, atol=1e-5)


def check_round_trip(model, path, batch=5, seed=0):
    """ONNX Runtime on the exported file and load(file) both give our outputs; returns the
    loaded model."""
    x = np.random.default_rng(seed).standard_normal((batch,) + model.input_shape).astype(np.float32)
    expected = model.predict(x)
    inet_onnx.export(model, path)
    theirs = run_ort(path, x)
    assert theirs.shape == expected.shape
    np.testing.assert_allclose(theirs, expected, **TOL)
    loaded = inet_onnx.load(path)
    assert loaded.count_params() == model.count_params()
    np.testing.assert_allclose(loaded.predict(x), expected, rtol=1e-6, atol=1e-6)
    return loaded


def test_new_options_export_run_and_load(tmp_path):
    model = inet.Sequential([
        inet.Conv2d(2, 4, 3, padding=1, groups=2), inet.LeakyReLU(0.1),
        inet.MaxPool2d(3, 1, 1, dilation=2), inet.Conv2d(4, 8, 3, groups=4),
        inet.AvgPool2d(3, 2, 1, count_include_pad=False), inet.MaxPool2d(2, ceil_mode=True),
        inet.GlobalAvgPool2d(), inet.Flatten(), inet.Linear(8, 3)], input_shape=(2, 12, 12)).reset_parameters(3)
    x = np.random.default_rng(0).standard_normal((5, 2, 12, 12)).astype(np.float32)
    expected = model.forward(x)
    path = tmp_path / "ops.onnx"
    inet_onnx.export(model, path)
    np.testing.assert_allclose(run_ort(path, x), expected, rtol=1e-5, atol=1e-5)
    loaded = inet_onnx.load(path)
    np.testing.assert_allclose(loaded.forward(x), expected, rtol=1e-5, atol=1e-5)
    assert loaded.layers[0].groups == 2 and loaded.layers[2].dilation in (2, (2, 2))
    assert [type(layer).__name__ for layer in loaded.layers if type(layer).__name__ in (
        "LeakyReLU", "GlobalAvgPool2d")] == ["LeakyReLU", "GlobalAvgPool2d"]
    assert not next(l for l in loaded.layers if type(l).__name__ == "AvgPool2d").count_include_pad


def test_transposed_convolution_log_softmax_and_adaptive_pooling(tmp_path):
    """ConvTranspose2d with stride, asymmetric padding, output_padding, dilation and groups,
    with output_padding >= stride (below the dilation), AdaptiveAvgPool2d(1) and (3, 2) (distinct
    types from GlobalAvgPool2d), LogSoftmax over an image and over features."""
    model = inet.Sequential([
        inet.ConvTranspose2d(2, 4, 3, stride=2, padding=((1, 0), (2, 1)), output_padding=1),
        inet.ReLU(),
        inet.ConvTranspose2d(4, 6, (2, 3), stride=(1, 2), padding=((0, 2), (1, 1)), dilation=(3, 1),
                             groups=2, output_padding=(2, 1), bias=False),      # (6, 14, 14)
        inet.LogSoftmax(), inet.AdaptiveAvgPool2d((7, 2)), inet.ConvTranspose2d(6, 6, 1, groups=6),
        inet.AdaptiveAvgPool2d(1), inet.Flatten(), inet.Linear(6, 4), inet.LogSoftmax(),
    ], input_shape=(2, 5, 4)).reset_parameters(1)
    proto = inet_onnx._export.build_model_proto(model)
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count("ConvTranspose") == 3 and ops.count("LogSoftmax") == 2
    assert ops.count("AveragePool") == 1 and ops.count("GlobalAveragePool") == 1
    folded = [node for node in proto.graph.node if node.name == "2/ConvTranspose"][0]
    attrs = {a.name: list(a.ints) or a.i for a in folded.attribute}
    # output_padding 2 >= stride 1 along H is folded into the bottom pad: 2 - 2
    assert attrs["output_padding"] == [0, 1] and attrs["pads"] == [0, 1, 0, 1] and attrs["group"] == 2
    loaded = check_round_trip(model, tmp_path / "t.onnx")
    names = [type(layer).__name__ for layer in loaded]
    assert names.count("ConvTranspose2d") == 3 and names.count("LogSoftmax") == 2
    assert loaded[0].get_config() == model[0].get_config()


@pytest.mark.parametrize("opset", [13, 18, onnx.defs.onnx_opset_version()])
def test_the_new_layers_at_other_opsets(tmp_path, opset):
    model = inet.Sequential([
        inet.ConvTranspose2d(2, 4, 3, stride=2, output_padding=1), inet.LogSoftmax(),
        inet.AvgPool2d(2, padding=2, ceil_mode=True), inet.MaxPool2d(2, ceil_mode=True),
        inet.AdaptiveAvgPool2d(1), inet.Flatten(), inet.Linear(4, 3), inet.LogSoftmax()],
        input_shape=(2, 5, 6)).reset_parameters(6)
    path = inet_onnx.export(model, tmp_path / "m.onnx", opset=opset)
    x = np.random.default_rng(3).random((3, 2, 5, 6), dtype=np.float32)
    np.testing.assert_allclose(run_ort(path, x), model.predict(x), **TOL)
    np.testing.assert_allclose(inet_onnx.load(path).predict(x), model.predict(x), rtol=1e-6, atol=1e-6)


def test_transposed_convolution_geometries_against_onnx_runtime(tmp_path):
    """Every kernel, stride, padding form, output_padding, dilation and groups below, at once
    in ONNX Runtime; the output_padding >= stride that ONNX Runtime refuses and no end pad can
    absorb is the one clear error."""
    refused, exported = 0, {False: 0, True: 0}      # exported: output_padding folded or not
    for k, s, p, op, d, g in itertools.product((1, 3), (1, 2), (0, ((0, 2), (1, 2))), (0, 1, 2),
                                               (1, 3), (1, 2)):
        try:
            layer = inet.ConvTranspose2d(2, 4, k, stride=s, padding=p, output_padding=op,
                                         dilation=d, groups=g, rng=k + s + op)
            model = inet.Sequential([layer], input_shape=(2, 4, 5))
        except ValueError:
            continue            # output_padding >= max(stride, dilation): not a layer
        x = np.random.default_rng(d).standard_normal((2, 2, 4, 5)).astype(np.float32)
        try:
            path = inet_onnx.export(model, tmp_path / "ct.onnx")
        except ValueError as exc:
            assert op >= s and "layer 0 (ConvTranspose2d)" in str(exc) and "output_padding" in str(exc)
            refused += 1
            continue
        np.testing.assert_allclose(run_ort(path, x), model.predict(x), err_msg=f"{k, s, p, op, d, g}", **TOL)
        exported[op >= s] += 1
    assert refused > 0 and exported[True] > 0 and exported[False] > refused


def test_a_depthwise_convolution_round_trips_with_its_groups(tmp_path):
    model = inet.Sequential([inet.Conv2d(4, 4, 3, padding=1, groups=4), inet.ReLU(),
                             inet.Conv2d(4, 8, 1), inet.Conv2d(8, 8, 3, stride=2, groups=8, bias=False)],
                            input_shape=(4, 7, 6)).reset_parameters(2)
    groups = [a.i for node in inet_onnx._export.build_model_proto(model).graph.node
              for a in node.attribute if a.name == "group"]
    assert groups == [4, 1, 8]
    loaded = check_round_trip(model, tmp_path / "dw.onnx")
    assert [layer.groups for layer in loaded if isinstance(layer, inet.Conv2d)] == [4, 1, 8]


def _pool_layers():
    """Max pooling (dilation 1 and 2) and average pooling (count_include_pad both ways) with
    ceil_mode, over sizes, kernels, strides and paddings (a negative top pad crops; pads as
    large as the kernel, a Pad of zeros first where trimming leaves them)."""
    for kind, size, k, s, (pt, pb) in itertools.product(
            ("max", "max-dilated", "avg", "avg-exclude-pad"), (5, 6, 8), (2, 3), (2, 3),
            ((0, 0), (1, 0), (0, 1), (1, 2), (-1, 1))):
        padding = ((pt, pb), (pb, max(pt, 0)))
        try:
            if kind.startswith("max"):
                layer = inet.MaxPool2d(k, s, padding, dilation=2 if kind == "max-dilated" else 1,
                                       ceil_mode=True)
            else:
                layer = inet.AvgPool2d(k, s, padding, ceil_mode=True,
                                       count_include_pad=kind == "avg")
            yield inet.Sequential([layer], input_shape=(2, size, size + 1))
        except ValueError:
            continue        # windows that hold padding only, pads >= kernel: not a layer


def test_ceil_mode_pooling_against_onnx_runtime(tmp_path):
    """ONNX (and ONNX Runtime) ignore a last window that starts in the right padding, as we do;
    onnx's shape inference does not. The export trims the end pads to where the last window
    ends (ceil_mode=1 only when it hangs past them), so both agree: every case runs in ONNX
    Runtime with our outputs and passes the full checker."""
    counts = {0: 0, 1: 0, "Pad": 0}
    for model in _pool_layers():
        x = np.random.default_rng(1).standard_normal((2,) + model.input_shape).astype(np.float32)
        proto = inet_onnx._export.build_model_proto(model)      # check_model(full_check=True)
        ceil = [a.i for a in proto.graph.node[-1].attribute if a.name == "ceil_mode"][0]
        counts[ceil] += 1
        counts["Pad"] += proto.graph.node[0].op_type == "Pad"
        path = tmp_path / "pool.onnx"
        path.write_bytes(proto.SerializeToString())
        np.testing.assert_allclose(run_ort(path, x), model.predict(x), **TOL,
                                   err_msg=str(model[0].get_config()))
        np.testing.assert_allclose(inet_onnx.load(path).predict(x), model.predict(x), rtol=1e-6, atol=1e-6)
    assert counts[0] > 50 and counts[1] > 50 and counts["Pad"] > 5


def test_average_pooling_with_pads_as_large_as_the_kernel(tmp_path):
    """ONNX Runtime takes AveragePool pads smaller than the kernel only: larger ones are a Pad of
    zeros first (counted as the padding is), and onnx.load folds the Pad back into the padding."""
    model = inet.Sequential([inet.AvgPool2d(2, stride=1, padding=((2, 1), (0, 3))), inet.Conv2d(2, 3, 2),
                             inet.AvgPool2d(3, stride=2, padding=3, ceil_mode=True)],
                            input_shape=(2, 5, 6)).reset_parameters(4)
    proto = inet_onnx._export.build_model_proto(model)
    assert [node.op_type for node in proto.graph.node].count("Pad") == 2
    loaded = check_round_trip(model, tmp_path / "pad.onnx")
    assert [type(layer).__name__ for layer in loaded] == ["AvgPool2d", "Conv2d", "AvgPool2d"]


def test_a_pad_before_a_conv_or_an_average_loads_and_other_pads_are_named(tmp_path):
    """Pad (opset 17: pads as an input) of zeros before a Conv and before an AveragePool with
    count_include_pad=1 become their padding; before a MaxPool (zeros are not -inf) it is named."""
    w = np.random.default_rng(8).normal(0, 0.5, (3, 2, 3, 3)).astype(np.float32)

    def graph(pool, name):
        nodes = [helper.make_node("Pad", ["x", "p1"], ["a"], name="pad1"),
                 helper.make_node("Conv", ["a", "w"], ["c"], name="conv", strides=[2, 1]),
                 helper.make_node("Pad", ["c", "p2", "zero"], ["d"], name="pad2"),
                 helper.make_node(pool, ["d"], ["y"], name="pool", kernel_shape=[2, 2], pads=[1, 0, 0, 1],
                                  **({"count_include_pad": 1} if pool == "AveragePool" else {}))]
        inits = [numpy_helper.from_array(np.array(v, dtype), n) for n, v, dtype in (
            ("p1", [0, 0, 1, 2, 0, 0, 3, 0], np.int64), ("p2", [0, 0, 0, 1, 0, 0, 2, 0], np.int64),
            ("zero", 0.0, np.float32), ("w", w, np.float32))]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 7, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "h", "w"])],
                              initializer=inits)
        path = tmp_path / name
        path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)],
                                           ir_version=8).SerializeToString())
        return path

    path = graph("AveragePool", "avg.onnx")
    model = inet_onnx.load(path)
    assert [type(layer).__name__ for layer in model] == ["Conv2d", "AvgPool2d"]
    x = np.random.default_rng(9).standard_normal((3, 2, 7, 6)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), run_ort(path, x), **TOL)
    with pytest.raises(ValueError, match=r"node 'pad2' \(Pad\): a Pad is supported only as zeros on H "
                                         r"and W right before a Conv or an AveragePool"):
        inet_onnx.load(graph("MaxPool", "max.onnx"))


def test_ceil_mode_pooling_written_by_others_loads(tmp_path):
    """MaxPool with dilations and AveragePool with count_include_pad=1 and pads, each with
    ceil_mode=1 adding a partial last window, as PyTorch exports them."""
    nodes = [helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[3, 2], strides=[2, 2],
                              pads=[1, 0, 1, 1], dilations=[1, 2], ceil_mode=1),
             helper.make_node("AveragePool", ["m"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1], count_include_pad=1, ceil_mode=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 9, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "h", "w"])])
    path = tmp_path / "ceil.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                       ir_version=8).SerializeToString())
    model = inet_onnx.load(path)
    assert [layer.ceil_mode for layer in model] == [True, True]
    x = np.random.default_rng(2).standard_normal((3, 2, 9, 10)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), run_ort(path, x), **TOL)


@pytest.mark.parametrize("layer, shape, message", [
    # ONNX Runtime refuses output_padding >= stride; no end padding here can absorb it
    (inet.ConvTranspose2d(1, 1, 3, stride=1, dilation=3, output_padding=2, padding=1), (1, 7, 7),
     r"layer 0 \(ConvTranspose2d\) has output_padding 2 >= stride 1"),
])
def test_what_onnx_cannot_express_is_a_clear_error(tmp_path, layer, shape, message):
    model = inet.Sequential([layer], input_shape=shape).reset_parameters(0)
    with pytest.raises(ValueError, match=message):
        inet_onnx.export(model, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_adaptive_pooling_that_does_not_divide_is_refused_before_export():
    """AdaptiveAvgPool2d((3, 2)) of a 7x4 input has windows of varying size: no model holds it."""
    with pytest.raises(ValueError, match=r"layer 0 \(AdaptiveAvgPool2d\).*output_size: \[3, 2\] must divide"):
        inet.Sequential([inet.AdaptiveAvgPool2d((3, 2))], input_shape=(1, 7, 4))


def test_a_crop_before_a_ceil_mode_pooling_that_reads_the_cropped_row_is_named(tmp_path):
    """Slice off the last of 6 rows, then 2x2 windows with stride 2 and ceil_mode=1: the last
    window starts on row 4 and hangs past the 5 rows left; our ceil_mode pooling of the
    whole input would read row 5, so it is not what the graph computes."""
    nodes = [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["c"], name="crop"),
             helper.make_node("MaxPool", ["c"], ["y"], name="pool", kernel_shape=[2, 2],
                              strides=[2, 2], ceil_mode=1)]
    inits = [numpy_helper.from_array(np.array(v, np.int64), name) for name, v in
             (("starts", [0]), ("ends", [5]), ("axes", [2]))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 3, 3])],
                              initializer=inits)
    path = tmp_path / "crop.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                       ir_version=8).SerializeToString())
    with pytest.raises(ValueError, match=r"node 'pool' \(MaxPool\): a Slice of the bottom/right before "
                                         r"a ceil_mode=1 pooling is supported only where no window"):
        inet_onnx.load(path)


@pytest.mark.filterwarnings("ignore")      # the TorchScript exporter's deprecation and tracer warnings
def test_torch_export_of_these_layers_and_residual_blocks_loads(tmp_path):
    """torch.onnx.export of ConvTranspose2d (output_padding, groups), ceil_mode max (dilated)
    and average pooling (count_include_pad both ways), basic residual blocks (identity and
    projection; torch folds each eval-mode BatchNorm into its Conv), AdaptiveAvgPool2d(1) and
    LogSoftmax: load gives torch's outputs."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self, c_in, c, stride):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(c_in, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c),
                                      nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
            self.short = None if stride == 1 and c_in == c else \
                nn.Sequential(nn.Conv2d(c_in, c, 1, stride, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            return torch.relu(self.body(x) + (x if self.short is None else self.short(x)))

    net = nn.Sequential(
        nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
        nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True), Block(4, 4, 1), Block(4, 8, 2),
        nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
        nn.AvgPool2d(2, 1, 1, ceil_mode=True), nn.ConvTranspose2d(8, 8, 2, groups=8),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5), nn.LogSoftmax(dim=1)).eval()
    x = torch.randn(3, 2, 9, 11)
    path = tmp_path / "torch.onnx"
    with torch.no_grad():
        expected = net(x).numpy()
        torch.onnx.export(net, (x[:1],), str(path), input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, opset_version=17,
                          dynamo=False)
    model = inet_onnx.load(path)
    assert [type(layer).__name__ for layer in model].count("Residual") == 2
    np.testing.assert_allclose(model.predict(x.numpy()), expected, **TOL)
