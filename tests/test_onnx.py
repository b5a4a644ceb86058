"""ONNX export and import (im2colnet.onnx) against ONNX Runtime, the independent reference.

Every exported file is run by ONNX Runtime and must give our outputs (float32,
within 1e-5) for batches of 1 and 7; load(export(m)) must give m's outputs and
parameter count; hand-written graphs are loaded and compared with ONNX Runtime
on the same file; bad files give their clear errors. With torch installed,
torch.onnx.export of LeNet-5 and the VGG loads and predicts torch's classes.
"""
import os

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import im2colnet as inet
import im2colnet.onnx as inet_onnx
from im2colnet import models
from im2colnet.cli import main
from im2colnet.model import LAYER_TYPES
from im2colnet.serialization import ModelFormatError

from _torch_models import images, in_eval_mode, torch_lenet5, torch_vgg_small

TOL = dict(rtol=1e-5, atol=1e-5)


def run_ort(path, x):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _all_layers(layers):
    """Every layer, the sub-layers of Residual blocks included."""
    for layer in layers:
        yield layer
        yield from _all_layers(child for _, child in layer.children())


def randomize_batchnorm(model, seed=0):
    """Non-trivial running statistics and affine parameters, so the export of each is tested."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model.layers):
        if "running_var" in layer.buffers:
            for array in (layer.params["gamma"], layer.params["beta"], layer.buffers["running_mean"]):
                array[...] = rng.normal(0, 0.5, array.shape)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, layer.buffers["running_var"].shape)
    return model


def every_layer_model():
    """Every exportable non-recurrent layer, every padding form (int, pair, asymmetric pairs,
    "same" with an even kernel, "valid", anchors inside and outside the kernel, a negative pad),
    stride and dilation."""
    return inet.Sequential([
        inet.Conv2d(2, 6, 3, padding=1), inet.BatchNorm2d(6), inet.ReLU(),
        inet.Conv2d(6, 6, (3, 2), padding="same"), inet.Tanh(),
        inet.Conv2d(6, 8, 3, padding=((1, 2), (0, 3)), dilation=(2, 1)), inet.Sigmoid(),
        inet.Conv2d(8, 8, 3, anchor=(0, 2)), inet.ELU(0.7),
        inet.Conv2d(8, 8, 2, anchor=(3, -1), bias=False),          # an exclave: pads (3, -2), (-1, 2)
        inet.BatchNorm2d(8, mode="per_activation"),
        inet.Conv2d(8, 8, 3, padding=-1, stride=(1, 2)), inet.Maxout(2),
        inet.MaxPool2d(3, stride=2, padding=1), inet.Conv2d(4, 6, 1, padding="valid"),
        inet.AvgPool2d(2, stride=1, padding=((1, 0), (0, 1))),
        inet.Dropout(0.3), inet.Flatten(), inet.Linear(108, 12), inet.BatchNorm1d(12), inet.Maxout(3),
        inet.Linear(4, 5), inet.Softmax(),
    ], input_shape=(2, 16, 13), name="every_layer")


def image_softmax_model():
    """Our Softmax over all of (C, H, W), a Linear on an image (implicit flatten), a pooling
    with a negative pad."""
    return inet.Sequential([inet.Conv2d(1, 3, 3), inet.MaxPool2d(2, stride=1, padding=(0, -1)),
                            inet.Softmax(), inet.Linear(6, 4)], input_shape=(1, 5, 6), name="image_softmax")


def recurrent_model():
    """RNN (relu and tanh), a two-layer LSTM, a GRU, a per-step Linear and LastTimeStep."""
    return inet.Sequential([
        inet.RNN(6, 8, nonlinearity="relu"), inet.LSTM(8, 10, num_layers=2), inet.GRU(10, 12),
        inet.RNN(12, 7), inet.Linear(7, 9), inet.Tanh(), inet.LastTimeStep(), inet.Linear(9, 5),
    ], input_shape=(9, 6), name="recurrent")


def nested_residual_model():
    """Residual blocks with the identity shortcut, with a projection, and one inside another
    (onnx.load finds each from the fork to its Add)."""
    inner = inet.Residual([inet.Conv2d(4, 4, 3, padding=1), inet.Tanh()])
    return inet.Sequential([
        inet.Conv2d(2, 4, 3, padding=1),
        inet.Residual([inet.Conv2d(4, 4, 3, padding=1), inet.BatchNorm2d(4), inet.ReLU(), inner]),
        inet.Residual([inet.Conv2d(4, 6, 3, stride=2, padding=1), inet.ReLU()],
                      [inet.Conv2d(4, 6, 1, stride=2), inet.BatchNorm2d(6)]),
        inet.Residual([inet.Flatten(), inet.Linear(6 * 4 * 3, 6 * 4 * 3)], [inet.Flatten()]),
        inet.Linear(72, 5), inet.LogSoftmax(),
    ], input_shape=(2, 8, 6), name="nested_residual")


BUILT = {
    "lenet5-mnist": lambda: models.lenet5(pretrained=True),
    "lenet5-fashion-mnist": lambda: models.lenet5(pretrained="fashion-mnist"),
    "vgg_small-fashion-mnist": lambda: models.vgg_small(pretrained=True),
    "every_layer": lambda: randomize_batchnorm(every_layer_model().reset_parameters(1)),
    "image_softmax": lambda: image_softmax_model().reset_parameters(2),
    "recurrent": lambda: recurrent_model().reset_parameters(3),
    "resnet_small": lambda: randomize_batchnorm(models.resnet_small().reset_parameters(4)),
    "nested_residual": lambda: randomize_batchnorm(nested_residual_model().reset_parameters(5)),
}


@pytest.fixture(scope="module", params=sorted(BUILT))
def exported(request, tmp_path_factory):
    model = BUILT[request.param]()
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    assert inet_onnx.export(model, path) == str(path)
    return model, path


def samples(model, n, seed=0):
    return np.random.default_rng(seed).random((n,) + model.input_shape, dtype=np.float32)


def test_the_models_cover_every_layer():
    used = {type(layer) for build in (every_layer_model, image_softmax_model, recurrent_model,
                                      nested_residual_model) for layer in build().layers}
    # tests/test_onnx_ops.py exports these (and checks the clear errors of what has no form)
    elsewhere = {inet.LeakyReLU, inet.GlobalAvgPool2d, inet.ConvTranspose2d, inet.AdaptiveAvgPool2d}
    assert used | elsewhere == set(LAYER_TYPES.values())


@pytest.mark.parametrize("batch", [1, 7])
def test_onnx_runtime_computes_what_we_compute(exported, batch):
    model, path = exported
    x = samples(model, batch)
    ours = model.predict(x)
    theirs = run_ort(path, x)
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs, ours, **TOL)


def test_the_file_passes_the_checker_and_keeps_the_batch_symbolic(exported):
    model, path = exported
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    (inp,), (out,) = proto.graph.input, proto.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["N", *model.input_shape]
    assert out.type.tensor_type.shape.dim[0].dim_param == "N"
    assert proto.producer_name == "im2colnet"


def test_load_of_export_computes_the_same(exported):
    model, path = exported
    back = inet_onnx.load(path)
    assert back.count_params() == model.count_params()
    assert back.input_shape == model.input_shape
    x = samples(model, 7, seed=1)
    np.testing.assert_allclose(back.predict(x), model.predict(x), rtol=1e-6, atol=1e-7)


def test_the_crops_and_the_zoo_metadata_are_written(tmp_path):
    model = BUILT["every_layer"]()
    proto = inet_onnx._export.build_model_proto(model)
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count("Slice") == 2 and "Dropout" not in ops        # the two negative pads
    lenet = models.lenet5(pretrained="fashion-mnist")
    inet_onnx.export(lenet, tmp_path / "f.onnx", metadata={"classes": ["a", "b"]})
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "f.onnx")).metadata_props}
    assert props["dataset"] == "fashion-mnist"
    assert float(props["test_accuracy"]) == lenet.metadata["test_accuracy"]
    assert props["classes"] == '["a", "b"]'
    assert inet_onnx.load(tmp_path / "f.onnx").metadata["classes"] == ["a", "b"]


@pytest.mark.parametrize("opset", [13, 18, onnx.defs.onnx_opset_version()])
def test_other_opsets(tmp_path, opset):
    model = BUILT["every_layer"]()
    path = inet_onnx.export(model, tmp_path / "m.onnx", opset=opset)
    x = samples(model, 3)
    np.testing.assert_allclose(run_ort(path, x), model.predict(x), **TOL)
    np.testing.assert_allclose(inet_onnx.load(path).predict(x), model.predict(x), rtol=1e-6, atol=1e-7)


def test_float64_models_export_as_double(tmp_path):
    model = models.lenet5(pretrained=True).astype(np.float64)
    path = inet_onnx.export(model, tmp_path / "m.onnx")
    assert onnx.load(path).graph.input[0].type.tensor_type.elem_type == TensorProto.DOUBLE
    back = inet_onnx.load(path)
    x = samples(model, 2).astype(np.float64)
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def test_export_errors(tmp_path):
    with pytest.raises(ValueError, match="opset"):
        inet_onnx.export(models.lenet5(pretrained=True), tmp_path / "m.onnx", opset=12)
    with pytest.raises(ValueError, match="input shape is unknown"):
        inet_onnx.export(inet.Sequential([inet.ReLU()]), tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="Sequential"):
        inet_onnx.export(inet.ReLU(), tmp_path / "m.onnx")

    class Doubler(inet.Layer):
        def forward(self, x, training=False):
            return 2 * x
    with pytest.raises(ValueError, match=r"layer 1 \(Doubler\) has no ONNX form"):
        inet_onnx.export(inet.Sequential([inet.ReLU(), Doubler()], input_shape=(3,)), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_an_unbuilt_model_with_an_input_shape_is_built_and_a_dropout_only_model_works(tmp_path):
    model = inet.Sequential([inet.Dropout(0.5)], input_shape=(4,))
    path = inet_onnx.export(model, tmp_path / "d.onnx")
    x = samples(model, 3)
    np.testing.assert_array_equal(run_ort(path, x), x)
    lenet = models.lenet5()
    inet_onnx.export(lenet, tmp_path / "l.onnx")
    assert lenet.built


def test_the_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the previous file")

    def no_disk(fd):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", no_disk)
    with pytest.raises(OSError, match="disk full"):
        inet_onnx.export(models.lenet5(pretrained=True), path)
    assert path.read_bytes() == b"the previous file"
    assert os.listdir(tmp_path) == ["m.onnx"]


def test_cli_export(tmp_path, capsys):
    out = tmp_path / "lenet.onnx"
    assert main(["export", "lenet5:pretrained", str(out)]) == 0
    x = images(7)
    np.testing.assert_allclose(run_ort(out, x), models.lenet5(pretrained=True).predict(x), **TOL)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["classes"] == '["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]'
    saved = tmp_path / "small.h5"
    small = inet.Sequential([inet.Flatten(), inet.Linear(4, 2)], input_shape=(1, 2, 2)).reset_parameters(0)
    small.save(saved)
    assert main(["export", str(saved), str(tmp_path / "small.onnx"), "--opset", "13"]) == 0
    x = samples(small, 2)
    np.testing.assert_allclose(run_ort(tmp_path / "small.onnx", x), small.predict(x), **TOL)
    assert main(["export", "nonet", str(tmp_path / "x.onnx")]) == 2
    assert "unknown model" in capsys.readouterr().err


# ---------------------------------------------------------------- graphs written by others

def _model(nodes, inits, in_shape, out_shape, opset=17, name="g"):
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _save(proto, tmp_path, name="g.onnx"):
    path = tmp_path / name
    onnx.save(proto, str(path))
    return path


def _weights(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.5, s).astype(np.float32) for s in shapes]


def test_load_plumbing_graph_written_by_hand(tmp_path):
    """auto_pad SAME_UPPER with stride 2, a Constant shape, Reshape (0, -1), MatMul + Add,
    Identity, Gemm with alpha, beta, transB=0 and a (1, out) bias, Softmax(axis=-1)."""
    w, b, m, mb, g, gc = _weights(0, (4, 2, 3, 3), (4,), (4 * 4 * 5, 6), (6,), (6, 3), (1, 3))
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", auto_pad="SAME_UPPER", strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([0, -1], np.int64))),
        helper.make_node("Reshape", ["r", "shape"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "m"], ["mm"], name="matmul"),
        helper.make_node("Add", ["mb", "mm"], ["a"], name="add"),
        helper.make_node("Identity", ["a"], ["i"], name="id"),
        helper.make_node("Gemm", ["i", "g", "gc"], ["s"], name="gemm", alpha=0.5, beta=2.0),
        helper.make_node("Softmax", ["s"], ["y"], name="softmax"),
    ]
    path = _save(_model(nodes, dict(w=w, b=b, m=m, mb=mb, g=g, gc=gc), ["batch", 2, 7, 9], ["batch", 3]), tmp_path)
    model = inet_onnx.load(path)
    assert [type(layer).__name__ for layer in model] == ["Conv2d", "ReLU", "Flatten", "Linear", "Linear", "Softmax"]
    x = np.random.default_rng(1).random((5, 2, 7, 9), dtype=np.float32)
    np.testing.assert_allclose(model.predict(x), run_ort(path, x), **TOL)


def test_load_pooling_and_normalisation_graph_written_by_hand(tmp_path):
    """BatchNormalization, Elu, MaxPool with ceil_mode=1 where it adds no window,
    AveragePool with count_include_pad=0 and no padding, Sigmoid, Tanh, Flatten, Gemm."""
    scale, bias, mean, var, g = _weights(2, (3,), (3,), (3,), (3,), (5, 3 * 3 * 4))
    var = np.abs(var) + 0.5
    nodes = [
        helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["bn"], epsilon=1e-3),
        helper.make_node("Elu", ["bn"], ["e"], alpha=0.5),
        helper.make_node("MaxPool", ["e"], ["p"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        helper.make_node("AveragePool", ["p"], ["a"], kernel_shape=[2, 2], strides=[1, 1], count_include_pad=0),
        helper.make_node("Sigmoid", ["a"], ["s"]),
        helper.make_node("Tanh", ["s"], ["t"]),
        helper.make_node("Flatten", ["t"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "g"], ["y"], transB=1),
    ]
    inits = dict(scale=scale, bias=bias, mean=mean, var=var, g=g)
    path = _save(_model(nodes, inits, ["N", 3, 8, 10], ["N", 5]), tmp_path)
    model = inet_onnx.load(path)
    assert model[0].eps == 1e-3 and model[1].alpha == 0.5
    x = np.random.default_rng(3).random((4, 3, 8, 10), dtype=np.float32)
    np.testing.assert_allclose(model.predict(x), run_ort(path, x), **TOL)


# ---------------------------------------------------------------- bad files

def test_a_corrupt_or_truncated_file_is_a_clear_error(tmp_path):
    good = inet_onnx.export(models.lenet5(pretrained=True), tmp_path / "good.onnx")
    data = open(good, "rb").read()
    (tmp_path / "cut.onnx").write_bytes(data[:len(data) // 2])
    (tmp_path / "noise.onnx").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "text.onnx").write_text("this is not a model\n")
    for name in ("cut.onnx", "noise.onnx", "text.onnx"):
        with pytest.raises(ModelFormatError, match=rf"{name}: not (an|a valid) ONNX model"):
            inet_onnx.load(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        inet_onnx.load(tmp_path / "missing.onnx")


def test_an_unsupported_op_is_named(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="first"),
             helper.make_node("Softplus", ["r"], ["y"], name="soft")]
    path = _save(_model(nodes, {}, ["N", 4], ["N", 4]), tmp_path)
    with pytest.raises(ValueError, match=r"node 'soft' \(Softplus\): the op Softplus is not supported"):
        inet_onnx.load(path)


@pytest.mark.parametrize("op, attrs, in_shape, message", [
    ("Conv", dict(group=3), ["N", 4, 6, 6], r"node 'n' \(Conv\): groups: 3 groups must divide"),
    # the window's taps -1 and 2 miss the 2x2 image: no winner
    ("MaxPool", dict(kernel_shape=[2, 2], dilations=[3, 3], pads=[1, 1, 1, 1]),
     ["N", 2, 2, 2], r"node 'n' \(MaxPool\): padding: a window along H holds padding only"),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="VALID", ceil_mode=1),
     ["N", 2, 6, 6], r"node 'n' \(AveragePool\): ceil_mode=1 with auto_pad='VALID' is not supported"),
    ("ConvTranspose", dict(output_shape=[8, 8]), ["N", 4, 6, 6],
     r"node 'n' \(ConvTranspose\): output_shape / auto_pad='NOTSET' are not supported"),
    ("Flatten", dict(axis=2), ["N", 2, 3, 4], r"node 'n' \(Flatten\): only axis=1"),
])
def test_an_unsupported_attribute_is_named(tmp_path, op, attrs, in_shape, message):
    inits = {}
    inputs = ["x"]
    if op in ("Conv", "ConvTranspose"):
        inits["w"] = _weights(0, (4, 2, 3, 3))[0]
        inputs.append("w")
    node = helper.make_node(op, inputs, ["y"], name="n", **attrs)
    proto = _model([node], inits, in_shape, [f"d{k}" for k in range(len(in_shape))])
    with pytest.raises(ValueError, match=message):
        inet_onnx.load(_save(proto, tmp_path))


def test_a_branch_is_named(tmp_path):
    """Two paths that meet in a Mul, or a tensor read three times, are not a residual block."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Sigmoid", ["r"], ["s"], name="left"),
             helper.make_node("Tanh", ["r"], ["t"], name="right"),
             helper.make_node("Mul", ["s", "t"], ["y"], name="merge")]
    path = _save(_model(nodes, {}, ["N", 4], ["N", 4]), tmp_path)
    with pytest.raises(ValueError, match=r"node 'merge' \(Mul\): it also reads 't'.*a branch that "
                                         r"merges other than by an Add"):
        inet_onnx.load(path)
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             *[helper.make_node(op, ["r"], [op], name=op) for op in ("Sigmoid", "Tanh", "Elu")],
             helper.make_node("Sum", ["Sigmoid", "Tanh", "Elu"], ["y"], name="sum")]
    path = _save(_model(nodes, {}, ["N", 4], ["N", 4]), tmp_path, "three.onnx")
    with pytest.raises(ValueError, match=r"the tensor 'r' is read by 3 nodes .*'Sigmoid'.*'Tanh'.*: a branch"):
        inet_onnx.load(path)


def test_paths_meeting_in_an_add_load_as_a_residual(tmp_path):
    """sigmoid(r) + tanh(r), written by hand, with the Add reading the Tanh path first; and
    r + conv(r) (the identity shortcut): Residual layers computing what ONNX Runtime computes."""
    w, = _weights(6, (2, 2, 3, 3))
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Sigmoid", ["r"], ["s"], name="left"),
             helper.make_node("Tanh", ["r"], ["t"], name="right"),
             helper.make_node("Add", ["t", "s"], ["a"], name="merge"),
             helper.make_node("Conv", ["a", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a", "c"], ["y"], name="skip")]
    path = _save(_model(nodes, dict(w=w), ["N", 2, 5, 4], ["N", 2, 5, 4]), tmp_path)
    model = inet_onnx.load(path)
    assert [type(layer).__name__ for layer in model] == ["ReLU", "Residual", "Residual"]
    first, second = model[1], model[2]
    assert [type(layer).__name__ for layer in first.block] == ["Tanh"]
    assert [type(layer).__name__ for layer in first.shortcut] == ["Sigmoid"]
    assert [type(layer).__name__ for layer in second.block] == ["Conv2d"] and second.shortcut is None
    x = np.random.default_rng(7).standard_normal((3, 2, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), run_ort(path, x), **TOL)


def test_a_merge_with_the_input_and_a_second_input_are_named(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "x"], ["y"], name="mm")]
    with pytest.raises(ValueError, match="branch"):
        inet_onnx.load(_save(_model(nodes, {}, ["N", 4], ["N", 4]), tmp_path))
    proto = _model([helper.make_node("Relu", ["x"], ["y"])], {}, ["N", 4], ["N", 4])
    proto.graph.input.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4]))
    with pytest.raises(ValueError, match="2 inputs"):
        inet_onnx.load(_save(proto, tmp_path, "two.onnx"))
    proto = _model([helper.make_node("Relu", ["x"], ["y"])], {}, ["N", "F"], ["N", "F"])
    with pytest.raises(ValueError, match="fixed per-sample sizes"):
        inet_onnx.load(_save(proto, tmp_path, "free.onnx"))


# ---------------------------------------------------------------- from PyTorch

@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # the TorchScript exporter (dynamo=False)
@pytest.mark.parametrize("build", [torch_lenet5, torch_vgg_small])
def test_torch_onnx_export_loads_and_predicts_torchs_classes(tmp_path, build):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = in_eval_mode(torch, build(torch))
    path = tmp_path / "torch.onnx"
    x = images(7)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
        torch.onnx.export(net, (torch.from_numpy(x[:1]),), str(path), input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "N"}, "output": {0: "N"}},
                          opset_version=17, dynamo=False)
    model = inet_onnx.load(path)      # torch folds each eval-mode BatchNorm into its Conv
    scores = model.predict(x)
    np.testing.assert_array_equal(scores.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(scores, expected, **TOL)


def test_onnx_is_imported_only_by_im2colnet_onnx_and_its_absence_says_what_to_install(tmp_path):
    import subprocess
    import sys
    code = ("import sys\n"
            "import im2colnet, im2colnet.cli, im2colnet.state_dict\n"
            "assert 'onnx' not in sys.modules, 'onnx imported'\n"
            "sys.modules['onnx'] = None\n"
            "try:\n    import im2colnet.onnx\nexcept ImportError as exc:\n    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pip install 'im2colnet[onnx]'" in result.stdout


@pytest.mark.filterwarnings("ignore")      # the TorchScript exporter's deprecation and tracer warnings
@pytest.mark.parametrize("kind", ["GRU", "RNN", "LSTM"])
def test_torch_recurrent_export_loads_with_its_zero_initial_state(tmp_path, kind):
    """torch writes the zero initial state as Expand(0, shape computed from Shape(x)) and
    slices it per stacked layer: that is our initial state, not a branch."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    nn = torch.nn
    options = {"nonlinearity": "relu"} if kind == "RNN" else {"num_layers": 2} if kind == "LSTM" else {}

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = getattr(nn, kind)(4, 6, batch_first=True, **options)
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(self.cell(x)[0][:, -1])
    net = Classifier().eval()
    path = tmp_path / "rec.onnx"
    torch.onnx.export(net, (torch.zeros(1, 5, 4),), str(path), input_names=["input"],
                      dynamic_axes={"input": {0: "N"}}, opset_version=17, dynamo=False)
    model = inet_onnx.load(path)
    assert [type(layer).__name__ for layer in model] == [kind, "LastTimeStep", "Linear"]
    x = np.random.default_rng(0).standard_normal((3, 5, 4)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x), expected, **TOL)


def test_a_non_zero_initial_state_is_named(tmp_path):
    w, r = _weights(4, (1, 5, 3), (1, 5, 5))
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
             helper.make_node("RNN", ["t", "w", "r", "", "", "h0"], ["y4"], name="rnn", hidden_size=5),
             helper.make_node("Squeeze", ["y4", "axis"], ["s"]),
             helper.make_node("Transpose", ["s"], ["y"], perm=[1, 0, 2])]
    inits = dict(w=w, r=r, h0=np.ones((1, 2, 5), np.float32), axis=np.array([1], np.int64))
    path = _save(_model(nodes, inits, [2, 4, 3], [2, 4, 5]), tmp_path)
    with pytest.raises(ValueError, match=r"node 'rnn' \(RNN\): the input initial_h is not supported"):
        inet_onnx.load(path)
    inits["h0"] = np.zeros((1, 2, 5), np.float32)         # zeros: our own initial state
    path = _save(_model(nodes, inits, [2, 4, 3], [2, 4, 5]), tmp_path, "zeros.onnx")
    x = np.random.default_rng(5).random((2, 4, 3), dtype=np.float32)
    np.testing.assert_allclose(inet_onnx.load(path).predict(x), run_ort(path, x), **TOL)
