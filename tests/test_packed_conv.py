"""The packed convolution GEMM (method="im2col" on float32) against the Kronecker
reference and the direct loops, for every micro-kernel level this CPU runs, on the
whole geometry matrix of test_conv, on sizes off the register tiles and cache blocks,
with many blocks, bands and tap chunks, and with the forward's batch-in-the-lanes
kernel forced, on 1-3 threads; determinism; level choice."""
import os
import subprocess
import sys

import numpy as np
import pytest

import im2colnet
import im2colnet.functional as F
from im2colnet import reference
from im2colnet.runtime import threads as _threads
from im2colnet._kernels import packed_conv
from test_conv import CASES, IDS, make, options

LEVELS = packed_conv.LEVELS


@pytest.fixture(params=LEVELS)
def level(request):
    """Each micro-kernel level in turn (skipped where this CPU cannot run it)."""
    if request.param not in packed_conv.supported_levels():
        pytest.skip(f"this CPU runs only {packed_conv.supported_levels()}")
    previous = im2colnet._set_kernel_level(request.param)
    yield request.param
    im2colnet._set_kernel_level(previous)


@pytest.fixture
def small_caches():
    """Plan for tiny caches: every shape runs as many blocks, bands and tap chunks."""
    packed_conv._plan_for_caches(256, 4096)
    yield
    packed_conv._plan_for_caches(0, 0)


@pytest.fixture
def batch_lanes(level):
    """The forward (and the data gradient run as one) with the batch in the vector lanes,
    for any batch size (the driver's rule takes it only for batches of whole lane groups)."""
    if not packed_conv.tiles()["bn"]:
        pytest.skip(f"the {level} level has no batch-lanes kernel")
    packed_conv._batch_rule(1)
    yield
    packed_conv._batch_rule(0)


PLANS = ["machine", "tiny caches", "batch lanes"]


def use_plan(plan, request):
    if plan == "tiny caches":
        request.getfixturevalue("small_caches")
    elif plan == "batch lanes":
        request.getfixturevalue("batch_lanes")


@pytest.fixture
def threads():
    before = _threads.thread_count()
    yield _threads.set_thread_count
    _threads.set_thread_count(before)


def close(actual, expected, what):
    """float32 results against float64 references: relative to the result's scale."""
    assert actual.dtype == np.float32 and actual.shape == expected.shape, what
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=2e-5 * scale, err_msg=what)


def passes(x, w, b, dy, **opts):
    """(y, dx, dw, db) of the three passes by the default method."""
    y = F.conv2d_forward(x, w, b, **opts)
    dx = F.conv2d_backward_data(dy, w, x.shape, **opts)
    dw, db = F.conv2d_backward_weights(dy, x, w.shape, **opts)
    return y, dx, dw, db


def check_against_direct(x, w, b, dy, **opts):
    """The packed passes (float32) against the direct loops in float64."""
    y, dx, dw, db = passes(x, w, b, dy, **opts)
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    b64 = None if b is None else b.astype(np.float64)
    close(y, F.conv2d_forward(x64, w64, b64, method="direct", **opts), "forward")
    close(dx, F.conv2d_backward_data(dy64, w64, x.shape, method="direct", **opts), "backward-data")
    dw_ref, db_ref = F.conv2d_backward_weights(dy64, x64, w.shape, method="direct", **opts)
    close(dw, dw_ref, "backward-weights")
    close(db, db_ref, "bias gradient")


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_geometry_matrix_against_kronecker(level, case, plan, request):
    """Every padding form, anchors inside and outside, strides 1-3, dilation, non-square
    and even kernels: all three passes equal the Kronecker reference (float32 rounding)."""
    use_plan(plan, request)
    x, w, b = (a.astype(np.float32) for a in make(case))
    opts = options(case)
    y_ref = reference.conv2d_kronecker(*(a.astype(np.float64) for a in (x, w, b)), **opts)
    dy = np.random.default_rng(3).standard_normal(y_ref.shape).astype(np.float32)
    dx_ref, dw_ref, db_ref = reference.conv2d_backward_kronecker(
        dy.astype(np.float64), x.astype(np.float64), w.astype(np.float64), **opts)
    y, dx, dw, db = passes(x, w, b, dy, **opts)
    close(y, y_ref, "forward")
    close(dx, dx_ref, "backward-data")
    close(dw, dw_ref, "backward-weights")
    close(db, db_ref, "bias gradient")


# (N, C, H, W, K, kh, kw, stride, padding, dilation): sizes off the tiles (MR 4/8, NR
# 16/24/32, dot tiles 4x2/4x4, pixel-outer tiles 6x16/24x16) and the blocks; single-pixel
# outputs.  K = 16 and 47 fill the pixel-outer kernel's 16 lanes (its route for the
# weight gradient), the other K take the dot route.
SIZES = [
    (1, 1, 1, 1, 1, 1, 1, 1, 0, 1),            # one pixel, one tap
    (3, 7, 5, 5, 13, 5, 5, 1, 0, 1),           # single-pixel outputs, several samples
    (37, 2, 3, 3, 5, 3, 3, 1, 0, 1),           # 37 single-pixel samples in one block
    (1, 13, 17, 33, 7, 3, 3, 1, 1, 1),
    (5, 17, 7, 13, 33, 3, 2, (2, 1), (1, 0), 1),
    (2, 33, 9, 7, 17, 2, 3, 1, ((0, 1), (2, 0)), (2, 1)),
    (1, 3, 40, 45, 9, 3, 3, 1, 1, 1),          # N = 1, several bands on the machine's caches
    (19, 5, 11, 11, 16, 3, 3, 2, 1, 1),
    (6, 5, 9, 8, 47, 3, 3, 1, 1, 1),           # 45 taps, 47 kernels: partial pixel-outer tiles
    (4, 64, 6, 6, 65, 1, 1, 1, 0, 1),          # 1x1
]


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("size", SIZES, ids=[f"size{i}" for i in range(len(SIZES))])
def test_sizes_off_the_tiles_against_direct(level, size, plan, request):
    use_plan(plan, request)
    N, C, H, W, K, kh, kw, stride, padding, dilation = size
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, kh, kw)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    opts = dict(stride=stride, padding=padding, dilation=dilation)
    y = F.conv2d_forward(x, w, b, **opts)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    check_against_direct(x, w, b, dy, **opts)
    check_against_direct(x, w, None, dy, **opts)


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 2, 9])
def test_thread_counts_agree_and_repeat_exactly(level, threads, small_caches, count, n):
    """1-3 threads (the batch split, or N=1 split into bands and channel ranges): right
    results, and bit-identical results from run to run at a fixed thread count."""
    threads(count)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((n, 6, 12, 11)).astype(np.float32)
    w = rng.standard_normal((10, 6, 3, 3)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    dy = rng.standard_normal((n, 10, 12, 11)).astype(np.float32)
    first = passes(x, w, b, dy, padding=1)
    for again in (passes(x, w, b, dy, padding=1), passes(x, w, b, dy, padding=1)):
        for a, b_ in zip(first, again):
            assert np.array_equal(a, b_)
    check_against_direct(x, w, b, dy, padding=1)


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 33, 64, 70])
def test_batch_lanes_threads_agree_and_repeat_exactly(level, threads, batch_lanes, count, n):
    """The batch-lanes forward on 1-3 threads: groups gathered by a team of threads (a
    share of the channels each: n = 1, 33 and 64 on 3 threads, the third group of 70 on 2)
    or by one, their units of pixels x kernels taken by whichever thread comes first, a
    partial last group (33, 70) and whole groups (64): right results, and bit-identical
    from run to run; the same as one thread (a sum's order does not depend on the split)."""
    threads(count)
    rng = np.random.default_rng(13)
    x = rng.standard_normal((n, 5, 9, 10)).astype(np.float32)
    w = rng.standard_normal((7, 5, 3, 2)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    opts = dict(padding=((1, 0), (2, 1)), dilation=(1, 2))
    first = F.conv2d_forward(x, w, b, **opts)
    assert np.array_equal(first, F.conv2d_forward(x, w, b, **opts))
    threads(1)
    assert np.array_equal(first, F.conv2d_forward(x, w, b, **opts))
    expected = F.conv2d_forward(*(a.astype(np.float64) for a in (x, w, b)), method="direct", **opts)
    close(first, expected, "forward")


def batch_route(N, C, H, W, K, k=3, stride=1, pad=1):
    Ho, Wo = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
    return packed_conv._batch_route((N, C, H, W), K, (k, k, stride, stride, 1, 1, pad, pad), Ho, Wo)


def test_batch_route_rule(level):
    """The driver's rule for the batch-lanes forward: whole lane groups (on any thread
    count), 4 taps per kernel or more, the gathered group within 8 MiB (and, without the
    vector transpose, small outputs or few taps)."""
    t = packed_conv.tiles()
    if not t["bn"]:
        assert not batch_route(64, 128, 7, 7, 128)
        return
    assert batch_route(64, 128, 7, 7, 128)                       # vgg-7
    assert batch_route(64, 6, 14, 14, 16, k=5, pad=0)            # LeNet-5 conv2
    assert not batch_route(31, 128, 7, 7, 128)                   # fewer samples than lanes
    assert not batch_route(40, 128, 7, 7, 128)                   # 24 of 64 lanes idle
    assert batch_route(32, 128, 7, 7, 128)                       # one group (shared by the threads)
    assert not batch_route(64, 3, 32, 32, 64)                    # 27 taps for 64 kernels
    assert not batch_route(64, 128, 14, 14, 1024)                # 1152 taps for 1024 kernels
    assert not batch_route(64, 64, 224, 224, 64)                 # a group of 411 MB
    assert not batch_route(64, 1024, 14, 14, 64)                 # a group of 26 MB
    assert batch_route(64, 32, 28, 28, 32) == (level == "avx512")   # vgg-28: with the transpose


def test_levels_agree_to_float32_rounding(threads):
    """What a machine without AVX-512 (or AVX2) runs gives the same results to rounding."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 20, 15, 14)).astype(np.float32)
    w = rng.standard_normal((24, 20, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((3, 24, 15, 14)).astype(np.float32)
    results = {}
    previous = packed_conv.level()
    try:
        for name in packed_conv.supported_levels():
            im2colnet._set_kernel_level(name)
            results[name] = passes(x, w, None, dy, padding=1)
    finally:
        im2colnet._set_kernel_level(previous)
    base = results["portable"]
    for name, got in results.items():
        for a, ref, what in zip(got, base, ("y", "dx", "dw", "db")):
            close(a, ref.astype(np.float64), f"{name} {what}")


def test_methods_im2col_blas_direct_agree():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((4, 5, 9, 8)).astype(np.float32)
    w = rng.standard_normal((6, 5, 3, 2)).astype(np.float32)
    dy = rng.standard_normal((4, 6, 5, 9)).astype(np.float32)
    opts = dict(stride=(2, 1), padding=((1, 1), (2, 0)))
    got = {m: (F.conv2d_forward(x, w, None, method=m, **opts),
               F.conv2d_backward_data(dy, w, x.shape, method=m, **opts),
               F.conv2d_backward_weights(dy, x, w.shape, method=m, **opts)[0])
           for m in ("im2col", "blas", "direct")}
    for m in ("im2col", "blas"):
        for a, ref in zip(got[m], got["direct"]):
            close(a, ref.astype(np.float64), m)


def test_float64_takes_the_blas_route_exactly():
    """float64 is not the packed kernel's: method="im2col" gives what "blas" gives."""
    x, w, b = make(CASES[5])
    opts = options(CASES[5])
    assert np.array_equal(F.conv2d_forward(x, w, b, **opts),
                          F.conv2d_forward(x, w, b, method="blas", **opts))


def test_non_contiguous_inputs_and_bias():
    rng = np.random.default_rng(15)
    base = rng.standard_normal((2, 9, 8, 6)).astype(np.float32)
    x = base.transpose(0, 3, 1, 2)[:, :, :, ::2]          # (2, 6, 9, 4), strided
    w = np.asfortranarray(rng.standard_normal((3, 6, 2, 2)).astype(np.float32))
    b = rng.standard_normal(6).astype(np.float32)[::2]    # a strided bias
    y = F.conv2d_forward(x, w, b, padding=1)
    close(y, F.conv2d_forward(np.ascontiguousarray(x), np.ascontiguousarray(w),
                              np.ascontiguousarray(b), padding=1, method="direct")
          .astype(np.float64), "forward")


@pytest.mark.parametrize("call, error, words", [
    (lambda x, w: F.conv2d_forward(x, w, method="packed"), ValueError, ["method", "blas"]),
    (lambda x, w: F.conv2d_forward(x, w[:, :2]), ValueError, ["w", "channels"]),
    (lambda x, w: F.conv2d_forward(x, w, b=np.ones(5, np.float32)), ValueError, ["b", "(4,)"]),
    (lambda x, w: F.conv2d_backward_data(np.ones((2, 4, 3, 3), np.float32), w, x.shape),
     ValueError, ["dy"]),
    (lambda x, w: F.conv2d_backward_weights(np.ones((2, 4, 4, 4), np.float32), x, (4, 2, 3, 3)),
     ValueError, ["w_shape"]),
    (lambda x, w: F.conv2d_forward(x, w, padding=-3), ValueError, ["kernel_size"]),
])
def test_bad_input_is_refused_before_the_kernel(call, error, words):
    x = np.ones((2, 3, 6, 6), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    with pytest.raises(error) as info:
        call(x, w)
    for word in words:
        assert word in str(info.value)


def test_level_setter_refuses_unknown_levels():
    with pytest.raises(ValueError, match="kernel level"):
        im2colnet._set_kernel_level("sse9")
    assert im2colnet.build_info()["kernel"] in packed_conv.supported_levels()


def test_environment_forces_a_level():
    """IM2COLNET_KERNEL=portable forces the portable micro-kernels; an unknown or
    unsupported level is ignored with a warning (the best level runs)."""
    code = ("import warnings, im2colnet; print(im2colnet.build_info()['kernel'], "
            "im2colnet.build_info()['kernels_supported'][-1])")
    env = dict(os.environ, IM2COLNET_KERNEL="portable")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, cwd=os.path.dirname(__file__))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "portable"
    env["IM2COLNET_KERNEL"] = "sse9"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, cwd=os.path.dirname(__file__))
    assert out.returncode == 0, out.stderr
    chosen, best = out.stdout.split()
    assert chosen == best and "IM2COLNET_KERNEL" in out.stderr


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_kernel_data_gradient_on_every_case(level, case):
    """The packed data gradient itself, also where the dispatcher prefers the BLAS route
    (column stride > 1, see functional.conv._packed_wins)."""
    from im2colnet._checks import conv_geometry
    x, w, _ = (a.astype(np.float32) for a in make(case))
    opts = options(case)
    g = conv_geometry(x.shape[2:], w.shape[2:], opts["stride"], opts["padding"],
                      opts["dilation"], opts["anchor"])
    dy = np.random.default_rng(3).standard_normal(
        (x.shape[0], w.shape[0], g.out_h, g.out_w)).astype(np.float32)
    dx = np.full(x.shape, np.nan, np.float32)
    packed_conv.backward_data(dy, w.reshape(w.shape[0], -1), dx,
                              (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl), 2)
    close(dx, F.conv2d_backward_data(dy.astype(np.float64), w.astype(np.float64), x.shape,
                                     method="direct", **opts), "backward-data")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_data_gradient_as_forward_pass_on_every_case(level, case, monkeypatch):
    """Conv_BF at stride 1 runs as the forward pass of dY with the kernel turned 180 degrees
    and its channel axes swapped (functional.conv._adjoint_window; the driver reads the
    forward's weights that way as it packs them): on every case (the channel rule lowered
    so that it applies), against the Kronecker reference; a layer with a stride above 1
    keeps col2im."""
    from im2colnet.functional import conv as conv_module
    monkeypatch.setattr(conv_module, "DATA_AS_FORWARD_MIN_CHANNELS", 1)
    routes = []
    for name in ("forward_adjoint", "backward_data"):
        kernel = getattr(conv_module._packed, name)
        monkeypatch.setattr(conv_module._packed, name,
                            lambda *args, _k=kernel, _n=name: routes.append(_n) or _k(*args))
    x, w, _ = (a.astype(np.float32) for a in make(case))
    opts = options(case)
    strides = np.broadcast_to(opts["stride"], 2)
    dy = np.random.default_rng(3).standard_normal(
        F.conv2d_forward(x, w, **opts).shape).astype(np.float32)
    routes.clear()
    dx = F.conv2d_backward_data(dy, w, x.shape, **opts)
    dx_ref, _, _ = reference.conv2d_backward_kronecker(
        dy.astype(np.float64), x.astype(np.float64), w.astype(np.float64), **opts)
    close(dx, dx_ref, "backward-data")
    if (strides == 1).all():
        assert routes == ["forward_adjoint"]
    else:
        assert "forward_adjoint" not in routes
