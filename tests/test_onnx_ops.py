"""The options of issue 15 through ONNX: grouped convolution, dilated max pooling, average
pooling without the padding in the divisor, LeakyReLU and global average pooling export to
the ONNX nodes that compute them (checked by ONNX Runtime) and load back; what ONNX cannot
express exactly is a clear error."""
import numpy as np
import pytest

import im2colnet as inet

onnxruntime = pytest.importorskip("onnxruntime")
inet_onnx = pytest.importorskip("im2colnet.onnx")


def run_ort(path, x):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


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


@pytest.mark.parametrize("layer, shape", [
    (inet.MaxPool2d(2, ceil_mode=True), (1, 7, 7)),                      # a partial window
    (inet.ConvTranspose2d(1, 1, 3), (1, 7, 7)),
    (inet.LogSoftmax(), (5,)),
])
def test_what_onnx_cannot_express_is_a_clear_error(tmp_path, layer, shape):
    model = inet.Sequential([layer], input_shape=shape).reset_parameters(0)
    with pytest.raises(ValueError, match="layer 0"):
        inet_onnx.export(model, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
