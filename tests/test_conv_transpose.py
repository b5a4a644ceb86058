"""ConvTranspose2d (Conv_BF as a forward pass) against the scatter loops of its definition,
the adjoint identity with conv2d_forward, float64 finite differences, PyTorch where
installed; bad input."""
import numpy as np
import pytest

import im2colnet as inn
import im2colnet.functional as F
from _gradcheck import check_directional, check_layer_gradients


def scatter_loops(x, w, b, stride, padding, output_padding, dilation, groups):
    """y[n, o, i*s - p + kp*d, ...] += x[n, c, i, j] w[c, o - group offset, kp, kq], loop by loop."""
    (sh, sw), (ph, pw), (oh, ow), (dh, dw) = (
        (v, v) if isinstance(v, int) else v for v in (stride, padding, output_padding, dilation))
    N, C, H, W = x.shape
    cin_g, cout_g, kh, kw = C // groups, w.shape[1], w.shape[2], w.shape[3]
    Ho = (H - 1) * sh - 2 * ph + dh * (kh - 1) + oh + 1
    Wo = (W - 1) * sw - 2 * pw + dw * (kw - 1) + ow + 1
    y = np.zeros((N, cout_g * groups, Ho, Wo))
    for n in range(N):
        for c in range(C):
            g = c // cin_g
            for o in range(cout_g):
                for i in range(H):
                    for j in range(W):
                        for p in range(kh):
                            for q in range(kw):
                                r, s = i * sh - ph + p * dh, j * sw - pw + q * dw
                                if 0 <= r < Ho and 0 <= s < Wo:
                                    y[n, g * cout_g + o, r, s] += x[n, c, i, j] * w[c, o, p, q]
    if b is not None:
        y += b.reshape(-1, 1, 1)
    return y


# (x shape, C_out, kernel, window kwargs)
CASES = [
    ((2, 3, 4, 5), 2, 3, dict()),
    ((1, 2, 4, 4), 3, 3, dict(stride=2, padding=1, output_padding=1)),
    ((2, 2, 3, 5), 4, (2, 3), dict(stride=(2, 1), padding=(0, 1), dilation=(1, 2))),
    ((1, 4, 3, 3), 6, 3, dict(stride=3, padding=2, output_padding=2, groups=2)),
    ((1, 4, 4, 4), 4, 3, dict(groups=4, padding=1)),                       # depthwise
    ((1, 2, 4, 3), 2, 2, dict(dilation=3, output_padding=2)),              # op < dilation, stride 1
]


def _inputs(shape, cout, k, kw, rng):
    """x, w (C_in, C_out/groups, kh, kw) and b for a case."""
    kh, kwid = (k, k) if isinstance(k, int) else k
    w_shape = (shape[1], cout // kw.get("groups", 1), kh, kwid)
    return rng.standard_normal(shape), rng.standard_normal(w_shape), rng.standard_normal(cout)


@pytest.mark.parametrize("shape, cout, k, kw", CASES)
def test_forward_matches_the_scatter_loops_and_the_adjoint(shape, cout, k, kw):
    rng = np.random.default_rng(0)
    x, w, b = _inputs(shape, cout, k, kw, rng)
    y = F.conv_transpose2d_forward(x, w, b, **kw)
    full = {**dict(stride=1, padding=0, output_padding=0, dilation=1, groups=1), **kw}
    np.testing.assert_allclose(y, scatter_loops(x, w, b, **full), rtol=1e-12, atol=1e-12)
    # <T x, z> = <x, T^T z>: the backward data pass is the convolution with the same bank
    z = rng.standard_normal(y.shape)
    dx = F.conv_transpose2d_backward_data(z, w, shape, **kw)
    np.testing.assert_allclose(np.vdot(y - b.reshape(-1, 1, 1), z), np.vdot(x, dx), rtol=1e-11)
    dw, db = F.conv_transpose2d_backward_weights(z, x, w.shape, **kw)
    check_directional(lambda v: float(np.sum(z * F.conv_transpose2d_forward(x, v, b, **kw))),
                      w, dw, rng)
    np.testing.assert_allclose(db, z.sum(axis=(0, 2, 3)), rtol=1e-12)
    check_directional(lambda u: float(np.sum(z * F.conv_transpose2d_forward(u, w, b, **kw))),
                      x, dx, rng)


def test_layer_gradient_check_shapes_and_config():
    rng = np.random.default_rng(1)
    layer = inn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    assert layer.output_shape((4, 5, 5)) == (6, 10, 10)
    layer.build((4, 5, 5), rng)
    layer.astype(np.float64)
    assert layer.params["weight"].shape == (4, 3, 3, 3) and layer.params["bias"].shape == (6,)
    y = check_layer_gradients(layer, rng.standard_normal((2, 4, 5, 5)), rng)
    assert y.shape == (2, 6, 10, 10)
    again = inn.ConvTranspose2d.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    assert repr(layer) == "ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)"


def test_upsampling_model_saves_and_loads(tmp_path):
    model = inn.Sequential([inn.Conv2d(1, 2, 3, stride=2, padding=1), inn.ReLU(),
                            inn.ConvTranspose2d(2, 1, 3, stride=2, padding=1, output_padding=1,
                                                bias=False)], input_shape=(1, 8, 8)).reset_parameters(2)
    assert model.output_shape == (1, 8, 8)
    x = np.random.default_rng(3).standard_normal((2, 1, 8, 8)).astype(np.float32)
    loaded = inn.load_model(model.save(tmp_path / "t.h5"))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_bad_input_is_a_clear_error():
    x, w = np.zeros((1, 2, 4, 4)), np.zeros((2, 3, 3, 3))
    with pytest.raises(ValueError, match="output_padding: must be >= 0 and smaller than the stride"):
        F.conv_transpose2d_forward(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="output_padding"):
        inn.ConvTranspose2d(2, 3, 3, output_padding=1)              # stride 1, dilation 1
    with pytest.raises(ValueError, match=r"w: expected shape \(2, C_out/groups"):
        F.conv_transpose2d_forward(x, np.zeros((3, 3, 3, 3)))
    with pytest.raises(ValueError, match="groups: 3 groups must divide the 2 input channels"):
        F.conv_transpose2d_forward(x, w, groups=3)
    with pytest.raises(ValueError, match="groups: 2 groups must divide both in_channels=2 and out_channels=3"):
        inn.ConvTranspose2d(2, 3, 3, groups=2)
    with pytest.raises(ValueError, match="padding"):
        F.conv_transpose2d_forward(x, w, padding="same")
    with pytest.raises(ValueError, match="padding"):
        F.conv_transpose2d_forward(x, w, padding=-1)
    with pytest.raises(ValueError, match="padding.*leaves no output"):
        F.conv_transpose2d_forward(np.zeros((1, 2, 1, 1)), w, padding=2)
    with pytest.raises(ValueError, match="dy"):
        F.conv_transpose2d_backward_data(np.zeros((1, 3, 5, 5)), w, x.shape)
    with pytest.raises(ValueError, match="b"):
        F.conv_transpose2d_forward(x, w, np.zeros(2))


@pytest.mark.parametrize("shape, cout, k, kw", CASES)
def test_against_torch(shape, cout, k, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x, w, b = _inputs(shape, cout, k, kw, rng)
    xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    yt = torch.nn.functional.conv_transpose2d(xt, wt, bt, **kw)
    dy = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(F.conv_transpose2d_forward(x, w, b, **kw), yt.detach().numpy(),
                               rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(F.conv_transpose2d_backward_data(dy, w, shape, **kw),
                               xt.grad.numpy(), rtol=1e-11, atol=1e-12)
    dw, db = F.conv_transpose2d_backward_weights(dy, x, w.shape, **kw)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_direct_method_dtype_and_memory_layout(dtype):
    rng = np.random.default_rng(5)
    shape, cout, k, kw = CASES[3]
    x, w, b = _inputs(shape, cout, k, kw, rng)
    x, w, b = x.astype(dtype), w.astype(dtype), b.astype(dtype)
    y = F.conv_transpose2d_forward(x, w, b, **kw)
    assert y.dtype == dtype
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(F.conv_transpose2d_forward(x, w, b, method="direct", **kw), y,
                               rtol=tol, atol=tol)
    np.testing.assert_allclose(F.conv_transpose2d_forward(np.asfortranarray(x), w[..., ::-1][..., ::-1],
                                                          b, **kw), y, rtol=tol, atol=tol)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = F.conv_transpose2d_backward_data(dy, w, shape, **kw)
    dw, db = F.conv_transpose2d_backward_weights(dy, x, w.shape, **kw)
    assert dx.dtype == dw.dtype == db.dtype == dtype
    np.testing.assert_allclose(F.conv_transpose2d_backward_data(dy, w, shape, method="direct", **kw),
                               dx, rtol=tol, atol=tol)
    np.testing.assert_allclose(F.conv_transpose2d_backward_weights(dy, x, w.shape, method="direct",
                                                                   **kw)[0], dw, rtol=tol, atol=tol)
