"""Convolution: im2col/col2im and conv2d_* against the explicit matrices, the loops, the
direct kernels, finite differences and (when installed) PyTorch; the worked example; bad input."""
import numpy as np
import pytest

import im2colnet.functional as F
from im2colnet import reference
from im2colnet.functional import conv as conv_module
from _gradcheck import check_directional

# (x shape, w shape, stride, padding, dilation, anchor): every padding form,
# non-square and even kernels, strides, dilation, anchors inside and outside
# the kernel, negative padding (crop), 1x1 kernels (the pointwise path).
CASES = [
    ((2, 3, 6, 7), (4, 3, 3, 3), 1, 0, 1, None),
    ((1, 2, 7, 8), (3, 2, 5, 6), 1, 2, 1, None),             # 5x6 kernel
    ((2, 1, 6, 6), (2, 1, 2, 2), 2, 0, 1, None),             # 2x2, stride 2
    ((1, 2, 8, 7), (2, 2, 4, 3), (2, 1), (1, 2), 1, None),   # 4x3, pair stride/padding
    ((2, 2, 9, 9), (3, 2, 3, 3), 1, 2, 2, None),             # dilation 2
    ((1, 2, 9, 10), (2, 2, 3, 2), (3, 2), ((2, 0), (1, 3)), (2, 1), None),  # per side
    ((1, 1, 8, 8), (2, 1, 3, 3), 1, ((-1, 1), (2, -2)), 1, None),  # negative padding crops
    ((2, 2, 7, 6), (2, 2, 3, 3), 1, "same", 1, None),
    ((1, 2, 8, 8), (2, 2, 4, 4), 1, "same", 1, None),        # even kernel: extra at bottom/right
    ((1, 2, 9, 8), (2, 2, 3, 3), 2, "same", 1, None),
    ((1, 2, 6, 6), (2, 2, 3, 3), 1, "valid", 1, None),
    ((2, 2, 6, 7), (3, 2, 3, 3), 1, 0, 1, (1, 1)),           # anchor at the centre
    ((1, 2, 6, 6), (2, 2, 2, 3), 1, 0, 1, (0, 2)),           # anchor at a corner of an even kernel
    ((1, 1, 7, 7), (2, 1, 3, 3), 1, 0, 1, (-2, 4)),          # exclave: anchor outside the kernel
    ((1, 1, 7, 8), (1, 1, 2, 2), 1, 0, 2, (3, -1)),          # exclave with dilation
    ((2, 3, 5, 4), (4, 3, 1, 1), 1, 0, 1, None),             # 1x1: no im2col
    ((2, 3, 5, 4), (4, 3, 1, 1), 2, 1, 1, None),             # 1x1 with stride and padding
    ((4, 8, 6, 5), (3, 8, 3, 2), (1, 3), ((1, 1), (0, 2)), 1, None),  # N = 4, C = 8, stride 3
    # stride 1 and Wo == W (im2col copies whole runs, see _im2col_plane_runs) with padding
    # wider than the image on one side and cropping on the other
    ((1, 2, 4, 3), (2, 2, 3, 3), 1, ((0, 2), (4, -2)), 1, None),
    ((2, 1, 5, 5), (1, 1, 3, 3), 1, 0, 1, (7, -6)),          # exclave far outside: all padding
    # column stride 2 (its own copy loop in _im2col_plane) with dilation, crops and padding
    ((2, 2, 7, 11), (3, 2, 3, 3), (1, 2), ((0, 1), (2, 0)), (1, 2), None),
    ((1, 2, 8, 9), (2, 2, 3, 4), 2, ((1, -1), (-1, 3)), 1, None),
]
IDS = [f"case{i}" for i in range(len(CASES))]


def make(case, seed=0, dtype=np.float64):
    x_shape, w_shape, *_ = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    return x, w, b


def options(case):
    _, _, stride, padding, dilation, anchor = case
    return dict(stride=stride, padding=padding, dilation=dilation, anchor=anchor)


# ------------------------------------------------------------ worked examples

def test_worked_example_by_hand():
    """x = 1..9 in a 3x3 image, kernel [[1, 0], [0, -1]]: y[i, j] = x[i, j] - x[i+1, j+1] = -4."""
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    w = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])
    cols = F.im2col(x, 2)
    assert np.array_equal(cols, [[1, 2, 4, 5], [2, 3, 5, 6], [4, 5, 7, 8], [5, 6, 8, 9]])
    for method in ("im2col", "direct"):
        y = F.conv2d_forward(x, w, b=[0.5], method=method)
        assert np.array_equal(y, np.full((1, 1, 2, 2), -3.5))
        # dy = 1 everywhere: dx counts how often each cell is read, times its weight.
        dx = F.conv2d_backward_data(np.ones((1, 1, 2, 2)), w, x.shape, method=method)
        assert np.array_equal(dx[0, 0], [[1, 1, 0], [1, 0, -1], [0, -1, -1]])
        dw, db = F.conv2d_backward_weights(np.ones((1, 1, 2, 2)), x, w.shape, method=method)
        assert np.array_equal(dw[0, 0], [[12, 16], [24, 28]])   # sums of the 2x2 sub-grids
        assert np.array_equal(db, [4.0])


def test_worked_example_matlab_im2col():
    """The issue's example: A (3x4), K = [[1, 0], [-1, 1]], valid, stride 1.

    MATLAB's im2col(A, [2 2]) is column-major: one column per patch, patches and
    their entries in column-major order. Ours is row-major: one row per patch.
    """
    A = np.array([[1, 3, 1, 4], [2, 8, 5, 1], [3, 2, 0, 3]], dtype=np.float64)
    K = np.array([[1, 0], [-1, 1]], dtype=np.float64)
    y = F.conv2d_forward(A[None, None], K[None, None])
    assert np.array_equal(y[0, 0], [[7, 0, -3], [1, 6, 8]])
    matlab = np.array([[1, 2, 3, 8, 1, 5], [2, 3, 8, 2, 5, 0], [3, 8, 1, 5, 4, 1], [8, 2, 5, 0, 1, 3]])
    ours = F.im2col(A[None, None], 2)                        # (6 patches, 4 entries), row-major
    patch_order = np.arange(6).reshape(2, 3).T.reshape(-1)   # patches in column-major order
    entry_order = np.arange(4).reshape(2, 2).T.reshape(-1)   # entries in column-major order
    assert np.array_equal(ours[patch_order][:, entry_order].T, matlab)
    vec_k = K.T.reshape(-1)                                  # column-major vec(K) = [1, -1, 0, 1]
    assert np.array_equal(vec_k, [1, -1, 0, 1])
    assert np.array_equal(matlab.T @ vec_k, [7, 1, 0, 6, -3, 8])
    assert np.array_equal(matlab.T @ vec_k, y[0, 0].T.reshape(-1))


def test_worked_example_padding_and_col2im_counts():
    """col2im of all-ones columns counts how many windows cover each cell (3x3, pad 1)."""
    counts = F.col2im(np.ones((9, 9)), (1, 1, 3, 3), 3, padding=1)
    assert np.array_equal(counts[0, 0], [[4, 6, 4], [6, 9, 6], [4, 6, 4]])


def test_worked_example_exclave_anchor():
    """A 1x1 kernel anchored at (1, 0), i.e. one row *above* the kernel, shifts the image up."""
    x = np.arange(12.0).reshape(1, 1, 3, 4)
    y = F.conv2d_forward(x, np.ones((1, 1, 1, 1)), anchor=(-1, 0))
    # padding ((-1, 1), (0, 0)): output row i reads input row i + 1, the last row is padding.
    assert np.array_equal(y[0, 0], [[4, 5, 6, 7], [8, 9, 10, 11], [0, 0, 0, 0]])


# -------------------------------------------------- im2col against the matrix M

@pytest.mark.parametrize("case", [c for c in CASES if c[5] is None], ids=[
    i for i, c in zip(IDS, CASES) if c[5] is None])
def test_im2col_is_the_selection_matrix(case):
    x, w, _ = make(case)
    opts = options(case)
    del opts["anchor"]
    cols = F.im2col(x, w.shape[2:], **opts)
    M, g = reference.selection_matrix(x.shape[1:], w.shape[2:], **opts)
    P = g.out_h * g.out_w
    expected = np.concatenate([(M @ x[n].reshape(-1)).reshape(P, -1) for n in range(x.shape[0])])
    assert cols.shape == expected.shape and np.array_equal(cols, expected)
    # col2im is the adjoint: it applies M^T to each sample's block.
    rng = np.random.default_rng(1)
    dcols = rng.standard_normal(cols.shape)
    dx = F.col2im(dcols, x.shape, w.shape[2:], **opts)
    for n in range(x.shape[0]):
        assert np.allclose(dx[n].reshape(-1), M.T @ dcols[n * P:(n + 1) * P].reshape(-1), atol=1e-12)


def test_col2im_adjoint_identity():
    """<im2col(x), Y> = <x, col2im(Y)> for random x, Y (float32 too)."""
    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((3, 2, 9, 7)).astype(dtype)
        cols = F.im2col(x, (3, 2), stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2))
        Y = rng.standard_normal(cols.shape).astype(dtype)
        back = F.col2im(Y, x.shape, (3, 2), stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2))
        assert back.dtype == dtype
        lhs, rhs = float(np.sum(cols * Y, dtype=np.float64)), float(np.sum(x * back, dtype=np.float64))
        assert abs(lhs - rhs) <= 1e-4 * max(1.0, abs(lhs))


# ----------------------------------------- forward and backward, every method

@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_kronecker_and_loops(case):
    x, w, b = make(case)
    expected = reference.conv2d_kronecker(x, w, b, **options(case))
    assert np.allclose(reference.conv2d_loops(x, w, b, **options(case)), expected, atol=1e-12)
    for method in ("im2col", "direct"):
        y = F.conv2d_forward(x, w, b, method=method, **options(case))
        assert y.shape == expected.shape
        assert np.allclose(y, expected, rtol=1e-12, atol=1e-12), method


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward_matches_kronecker(case):
    x, w, b = make(case)
    y = F.conv2d_forward(x, w, b, **options(case))
    dy = np.random.default_rng(3).standard_normal(y.shape)
    dx_ref, dw_ref, db_ref = reference.conv2d_backward_kronecker(dy, x, w, **options(case))
    for method in ("im2col", "direct"):
        dx = F.conv2d_backward_data(dy, w, x.shape, method=method, **options(case))
        dw, db = F.conv2d_backward_weights(dy, x, w.shape, method=method, **options(case))
        assert np.allclose(dx, dx_ref, rtol=1e-12, atol=1e-12), method
        assert np.allclose(dw, dw_ref, rtol=1e-12, atol=1e-12), method
        assert np.allclose(db, db_ref, rtol=1e-12, atol=1e-12), method


@pytest.mark.parametrize("case", CASES[::2] + [CASES[13]], ids=IDS[::2] + [IDS[13]])
def test_gradients_by_finite_differences(case):
    """The loss <y, g> has gradients conv2d_backward_data(g) and conv2d_backward_weights(g)."""
    x, w, b = make(case)
    opts = options(case)
    rng = np.random.default_rng(4)
    g = rng.standard_normal(F.conv2d_forward(x, w, b, **opts).shape)
    dx = F.conv2d_backward_data(g, w, x.shape, **opts)
    dw, db = F.conv2d_backward_weights(g, x, w.shape, **opts)
    check_directional(lambda v: np.sum(F.conv2d_forward(v, w, b, **opts) * g), x, dx, rng)
    check_directional(lambda v: np.sum(F.conv2d_forward(x, v, b, **opts) * g), w, dw, rng)
    check_directional(lambda v: np.sum(F.conv2d_forward(x, w, v, **opts) * g), b, db, rng)


def test_float32_matches_float64_and_keeps_dtype():
    x, w, b = make(CASES[4], dtype=np.float32)
    for method in ("im2col", "direct"):
        y32 = F.conv2d_forward(x, w, b, stride=1, padding=2, dilation=2, method=method)
        y64 = F.conv2d_forward(x.astype(np.float64), w, b, stride=1, padding=2, dilation=2, method=method)
        assert y32.dtype == np.float32 and y64.dtype == np.float64
        assert np.allclose(y32, y64, rtol=1e-5, atol=1e-5)
        dx = F.conv2d_backward_data(y32, w, x.shape, padding=2, dilation=2, method=method)
        dw, db = F.conv2d_backward_weights(y32, x, w.shape, padding=2, dilation=2, method=method)
        assert dx.dtype == dw.dtype == db.dtype == np.float32


def test_non_contiguous_and_integer_inputs():
    rng = np.random.default_rng(5)
    base = rng.standard_normal((2, 6, 8, 3))
    x = base.transpose(0, 3, 1, 2)[:, :, ::1, ::2]   # (2, 3, 6, 4), strided
    w = np.asfortranarray(rng.standard_normal((2, 3, 3, 3)))
    expected = reference.conv2d_loops(np.ascontiguousarray(x), w, None, padding=1)
    assert np.allclose(F.conv2d_forward(x, w, padding=1), expected, atol=1e-12)
    xi = np.arange(32).reshape(1, 2, 4, 4)
    y = F.conv2d_forward(xi, np.ones((1, 2, 2, 2), dtype=np.float32))
    assert y.dtype == np.float32 and y[0, 0, 0, 0] == 0 + 1 + 4 + 5 + 16 + 17 + 20 + 21


def test_read_only_and_fortran_inputs_give_the_contiguous_result():
    x, w, b = make(CASES[3])
    expected = F.conv2d_forward(x, w, b, stride=(2, 1), padding=(1, 2))
    x_ro, w_ro = np.asfortranarray(x), w.copy()
    x_ro.flags.writeable = False
    w_ro.flags.writeable = False
    y = F.conv2d_forward(x_ro, w_ro, b, stride=(2, 1), padding=(1, 2))
    assert np.array_equal(y, expected) and y.flags.c_contiguous
    dy = np.ones_like(y)
    dy.flags.writeable = False
    assert np.array_equal(F.conv2d_backward_data(dy, w_ro, x.shape, stride=(2, 1), padding=(1, 2)),
                          F.conv2d_backward_data(np.ones_like(y), w, x.shape, stride=(2, 1), padding=(1, 2)))
    assert np.array_equal(F.conv2d_backward_weights(dy, x_ro, w.shape, stride=(2, 1), padding=(1, 2))[0],
                          F.conv2d_backward_weights(np.ones_like(y), x, w.shape, stride=(2, 1),
                                                    padding=(1, 2))[0])


@pytest.mark.parametrize("per_sample", [True, False])
@pytest.mark.parametrize("threaded", [True, False])
def test_blocks_of_samples_give_the_same_result(monkeypatch, per_sample, threaded):
    """A workspace smaller than one batch's (or one sample's) columns runs in blocks: same
    numbers, with one product per sample or one per block, on our threads or through
    np.matmul, in all three passes."""
    from im2colnet.runtime import gemm as _gemm
    if threaded and not _gemm.threaded_gemm():
        pytest.skip("products run through np.matmul on this BLAS")
    if not threaded:
        monkeypatch.setattr(_gemm, "_gemm_kernel", None)
    monkeypatch.setattr(conv_module, "_per_sample", lambda *args, **kwargs: per_sample)
    x, w, b = make(((7, 3, 9, 9), (4, 3, 3, 3), 1, 1, 1, None))
    # the direct loops as the reference: independent of blocks and products
    whole = F.conv2d_forward(x, w, b, padding=1, method="direct")
    dy = np.random.default_rng(6).standard_normal(whole.shape)
    dx_whole = F.conv2d_backward_data(dy, w, x.shape, padding=1, method="direct")
    dw_whole, _ = F.conv2d_backward_weights(dy, x, w.shape, padding=1, method="direct")
    assert np.allclose(F.conv2d_forward(x, w, b, padding=1), whole, atol=1e-12)
    one_row = 27 * 9 * 8
    # blocks of 2, 2, 2, 1 samples; then 3 rows (3, 3, 3) and 4 rows (4, 4, 1) of one sample
    for limit in (2 * 9 * one_row + 8, 3 * one_row, 4 * one_row + 7):
        monkeypatch.setattr(conv_module, "WORKSPACE_BYTES", limit)
        assert np.allclose(F.conv2d_forward(x, w, b, padding=1), whole, atol=1e-12)
        assert np.allclose(F.conv2d_backward_data(dy, w, x.shape, padding=1), dx_whole, atol=1e-12)
        assert np.allclose(F.conv2d_backward_weights(dy, x, w.shape, padding=1)[0], dw_whole, atol=1e-12)


def test_workspace_is_reused():
    x, w, b = make(((4, 3, 10, 10), (5, 3, 3, 3), 1, 1, 1, None), dtype=np.float32)
    F.conv2d_forward(x, w, b, padding=1)
    before = {k: v.__array_interface__["data"][0] for k, v in conv_module._workspace.buffers.items()}
    F.conv2d_forward(x, w, b, padding=1)
    after = {k: v.__array_interface__["data"][0] for k, v in conv_module._workspace.buffers.items()}
    assert before and before == after
    assert conv_module.workspace_bytes() >= 27 * 100 * 4 * 4


def test_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, 11, 10))
    w = rng.standard_normal((5, 4, 3, 4))
    b = rng.standard_normal(5)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, torch.tensor(b), stride=(2, 1), padding=(2, 1), dilation=(1, 2))
    dy = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.tensor(dy))
    opts = dict(stride=(2, 1), padding=(2, 1), dilation=(1, 2))
    assert np.allclose(F.conv2d_forward(x, w, b, **opts), yt.detach().numpy(), atol=1e-12)
    assert np.allclose(F.conv2d_backward_data(dy, w, x.shape, **opts), xt.grad.numpy(), atol=1e-12)
    dw, db = F.conv2d_backward_weights(dy, x, w.shape, **opts)
    assert np.allclose(dw, wt.grad.numpy(), atol=1e-10)
    assert np.allclose(db, dy.sum(axis=(0, 2, 3)), atol=1e-12)


# ----------------------------------------------------------------- bad input

@pytest.mark.parametrize("call, error, words", [
    (lambda x, w: F.conv2d_forward(x, w[:, :2]), ValueError, ["w", "channels"]),
    (lambda x, w: F.conv2d_forward(x[0], w), ValueError, ["x", "4-D"]),
    (lambda x, w: F.conv2d_forward(x, w, method="fft"), ValueError, ["method"]),
    (lambda x, w: F.conv2d_forward(x, w, b=np.ones(3)), ValueError, ["b", "(4,)"]),
    (lambda x, w: F.conv2d_forward(x, np.ones((4, 3, 9, 3))), ValueError, ["kernel_size"]),
    (lambda x, w: F.conv2d_forward(x, w, stride=0), ValueError, ["stride"]),
    (lambda x, w: F.conv2d_forward(x, w, dilation=(1, 0)), ValueError, ["dilation"]),
    (lambda x, w: F.conv2d_forward(x, w, padding="full"), ValueError, ["padding"]),
    (lambda x, w: F.conv2d_forward(x, w, padding=1, anchor=(1, 1)), ValueError, ["anchor"]),
    (lambda x, w: F.conv2d_forward(x.astype(complex), w), TypeError, ["x", "complex"]),
    (lambda x, w: F.conv2d_forward(x[:0], w), ValueError, ["x", "empty"]),
    (lambda x, w: F.conv2d_forward(x.astype(object), w), TypeError, ["x", "object"]),
    (lambda x, w: F.conv2d_forward(x.astype(str), w), TypeError, ["x"]),
    (lambda x, w: F.conv2d_forward(x, w.astype(complex)), TypeError, ["w", "complex"]),
    (lambda x, w: F.conv2d_forward(x, w[0]), ValueError, ["w", "4-D"]),
    (lambda x, w: F.conv2d_forward(x, w, stride=-1), ValueError, ["stride"]),
    (lambda x, w: F.conv2d_forward(x, w, padding=-2), ValueError, ["kernel_size"]),
    (lambda x, w: F.im2col(x, 7), ValueError, ["kernel_size"]),
    (lambda x, w: F.conv2d_backward_data(np.ones((2, 4, 3, 3)), w, x.shape), ValueError, ["dy", "(2, 4, 4, 4)"]),
    (lambda x, w: F.conv2d_backward_data(np.ones((2, 4, 4, 4)), w, (2, 3, 6)), ValueError, ["x_shape"]),
    (lambda x, w: F.conv2d_backward_weights(np.ones((2, 4, 4, 4)), x, (4, 2, 3, 3)), ValueError, ["w_shape"]),
    (lambda x, w: F.conv2d_backward_weights(np.ones((2, 5, 4, 4)), x, (5, 3, 3, 3), padding=1),
     ValueError, ["dy"]),
    (lambda x, w: F.col2im(np.ones((10, 27)), x.shape, 3), ValueError, ["cols"]),
])
def test_bad_input_is_a_clear_error(call, error, words):
    x = np.ones((2, 3, 6, 6))
    w = np.ones((4, 3, 3, 3))
    with pytest.raises(error) as info:
        call(x, w)
    for word in words:
        assert word in str(info.value)
