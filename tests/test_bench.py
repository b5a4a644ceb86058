"""The benchmark's own checks: its baseline is right, its figures are well formed.

Timing is never pass/fail here: budgets are zero and shapes tiny.
"""
import json
import os
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest

import im2colnet.functional as F
from im2colnet import models as zoo
from im2colnet.apps import _timing, bench, bench_peer, bench_runs
from im2colnet import numpy_im2col as baseline

# (x shape, w shape, stride, padding, dilation): square and non-square, strided, dilated, cropped.
GEOMETRIES = [
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, 1, 1),
    ((2, 2, 9, 8), (3, 2, 3, 2), (2, 1), (1, 0), 1),
    ((1, 3, 10, 9), (2, 3, 3, 3), 2, 2, (2, 1)),
    ((2, 1, 6, 6), (2, 1, 5, 5), 1, 2, 1),
    ((1, 2, 8, 8), (2, 2, 3, 3), 1, -1, 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation", GEOMETRIES)
def test_numpy_baseline_matches_the_library(dtype, x_shape, w_shape, stride, padding, dilation):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    geo = dict(stride=stride, padding=padding, dilation=dilation)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)

    cols = baseline.im2col(x, w_shape[2:], **geo)
    np.testing.assert_array_equal(cols, F.im2col(x, w_shape[2:], **geo))
    y = baseline.conv2d_forward(x, w, b, **geo)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, F.conv2d_forward(x, w, b, **geo, method="direct"), **tol)

    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = baseline.conv2d_backward_data(dy, w, x.shape, **geo)
    np.testing.assert_allclose(dx, F.conv2d_backward_data(dy, w, x.shape, **geo, method="direct"),
                               **tol)
    dw, db = baseline.conv2d_backward_weights(dy, x, w.shape, **geo)
    dw_ref, db_ref = F.conv2d_backward_weights(dy, x, w.shape, **geo, method="direct")
    np.testing.assert_allclose(dw, dw_ref, **tol)
    np.testing.assert_allclose(db, db_ref, **tol)


def test_numpy_col2im_is_the_adjoint_of_im2col():
    # <im2col(x), c> == <x, col2im(c)> for every x and c.
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 9, 7))
    geo = dict(kernel_size=(3, 2), stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2))
    cols = baseline.im2col(x, **geo)
    c = rng.standard_normal(cols.shape)
    assert np.isclose(np.vdot(cols, c), np.vdot(x, baseline.col2im(c, x.shape, **geo)), rtol=1e-12)


def test_parse_shape_reads_the_optional_fields():
    s = bench.parse_shape("2, 3, 8, 9, 4, 3, 5")
    assert (s.n, s.c, s.h, s.w, s.k, s.kh, s.kw, s.stride, s.padding, s.dilation) == \
        (2, 3, 8, 9, 4, 3, 5, 1, 0, 1)
    s = bench.parse_shape("1,1,28,28,6,5,5,2,2,3")
    assert (s.stride, s.padding, s.dilation, s.groups) == (2, 2, 3, 1)
    s = bench.parse_shape("1,4,8,8,8,3,3,1,1,1,4")
    assert s.groups == 4 and s.flops() == 2 * 64 * 8 * 1 * 9 and "groups 4" in s.describe()


@pytest.mark.parametrize("text, words", [
    ("1,2,3", "7 to 11 integers"),
    ("1,2,3,4,5,6,7,8,9,10,11,12", "7 to 11 integers"),
    ("1,4,8,8,6,3,3,1,1,1,4", "groups must divide C and K"),
    ("1,4,8,8,8,3,3,1,1,1,0", ">= 1"),
    ("1,2,8,8,4,3,x", "must be an integer"),
    ("0,2,8,8,4,3,3", ">= 1"),
    ("1,2,8,8,4,3,3,0", ">= 1"),
    ("1,2,8,8,4,3,3,1,-1", "padding >= 0"),
    ("1,2,4,4,4,7,7", "does not fit"),
])
def test_parse_shape_rejects_with_the_reason(text, words):
    with pytest.raises(ValueError, match="--shape") as info:
        bench.parse_shape(text)
    assert words in str(info.value)


def test_flops_worked_example():
    # LeNet-5 conv1: 64 * 28*28 outputs * 6 filters * 1*5*5 taps, two flops each.
    assert bench.SHAPES["lenet5-conv1"].flops() == 2 * 64 * 28 * 28 * 6 * 25
    # Stride 2 with padding 1 on 28x28, 3x3: 14x14 outputs.
    assert bench.SHAPES["strided"].flops() == 2 * 64 * 14 * 14 * 64 * 32 * 9


def test_named_shapes_cover_the_issue():
    assert {"lenet5-conv1", "lenet5-conv2", "vgg-28", "vgg-14", "vgg-7", "wide", "strided",
            "dilated", "depthwise"} <= set(bench.SHAPES)
    assert bench.SHAPES["depthwise"].groups == bench.SHAPES["depthwise"].c
    assert set(bench.QUICK_SHAPES) <= set(bench.SHAPES)
    for shape in bench.SHAPES.values():
        shape.geometry()  # every named shape is a valid convolution


def test_interleaved_timing_calls_each_function_warmup_plus_repeats():
    calls = {"a": 0, "b": 0}

    def counter(name):
        def fn():
            calls[name] += 1
        return fn

    result = _timing.time_interleaved({"a": counter("a"), "b": counter("b")}, budget=0,
                                      max_repeats=3)
    assert calls == {"a": 4, "b": 4}  # one warm-up each, then 3 rounds
    for median, minimum, repeats in result.values():
        assert repeats == 3 and 0 <= minimum <= median


def test_self_timed_entry_takes_its_turns_and_reports_its_own_seconds():
    order, warmups = [], []

    def ours():
        order.append("a")

    def theirs(warmup):
        order.append("b")
        warmups.append(warmup)
        return 0.05   # as if timed elsewhere

    result = _timing.time_interleaved({"a": ours, "b": _timing.SelfTimed(theirs)}, budget=0,
                                      max_repeats=3)
    turns = [name for i, name in enumerate(order) if i == 0 or order[i - 1] != name]
    assert turns == ["a", "b"] * 4   # warm-ups, then round by round
    # Each turn passes between processes, so it opens with untimed calls: ours many (each
    # is quick), theirs told how long.
    assert order.count("a") > 4 and warmups == [0.0] + [_timing.HANDOFF_S] * 3
    assert result["b"] == (0.05, 0.05, 3)
    assert _timing.timed(_timing.SelfTimed(lambda warmup: 0.25)) == 0.25


def test_timed_warmup_calls_before_the_timed_call():
    calls = []
    _timing.timed(lambda: calls.append(1), warmup=1e-9)
    assert len(calls) == 2   # at least one untimed call, then the timed one


class RecordingPeer:
    """Stands in for bench_peer.TorchPeer: logs its calls; each takes `seconds`."""

    def __init__(self, log, seconds):
        self.log, self.time, self.threads = log, seconds, 3

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.log.append("closed")

    def setup(self, id, request):
        self.log.append(("setup", id, request.get("pass", request.get("call"))))

    def seconds(self, id, warmup=0.0):
        self.log.append(("torch", id, warmup))
        return self.time


def test_run_layers_takes_turns_with_the_torch_peer(monkeypatch):
    log = []
    monkeypatch.setattr(bench_runs, "TorchPeer", lambda threads: RecordingPeer(log, 0.002))
    monkeypatch.setattr(bench_runs, "_method_calls", lambda method, shape, t, rng: {
        p: (lambda p=p: log.append(("ours", p))) for p in bench.PASSES})
    handoff = 1e-9   # each turn opens with just one untimed call
    monkeypatch.setattr(_timing, "HANDOFF_S", handoff)
    results = bench.run_layers([bench.parse_shape("1,1,5,5,1,3,3")], methods=("ours", "torch"),
                               budget=0, max_repeats=3)
    expected = []
    for p in bench.PASSES:   # set-up; warm-ups; 3 rounds taking turns; our memory call
        expected += ([("setup", p, p), ("ours", p), ("torch", p, 0.0)]
                     + [("ours", p), ("ours", p), ("torch", p, handoff)] * 3 + [("ours", p)])
    assert log == expected + ["closed"]   # one peer for the run
    for r in results:
        assert r["methods"]["torch"]["median_ms"] == pytest.approx(2.0)
        assert r["methods"]["torch"]["repeats"] == 3 and r["torch_threads"] == 3
        assert r["ratios"]["ours/torch"] == pytest.approx(r["methods"]["ours"]["median_ms"] / 2.0)


def test_run_models_takes_turns_with_the_torch_peer(monkeypatch):
    log = []
    monkeypatch.setattr(bench_runs, "TorchPeer", lambda threads: RecordingPeer(log, 0.5))
    [r] = bench.run_models(("lenet5",), budget=0, max_repeats=1, train_images=64)
    assert log == [item for call in ("train", "infer", "latency") for item in [
        ("setup", call, call), ("torch", call, 0.0), ("torch", call, _timing.HANDOFF_S)]] + ["closed"]
    assert r["torch"]["train"]["images_per_s"] == pytest.approx(64 / 0.5)
    assert r["torch"]["infer"]["images_per_s"] == pytest.approx(256 / 0.5)
    assert r["torch"]["latency_ms"] == pytest.approx(500)
    assert r["ratios"]["train ours/torch"] == pytest.approx(
        r["ours"]["train"]["images_per_s"] / 128)
    assert "lenet5" in bench.format_model_table([r])


def test_run_layers_figures_are_consistent():
    shape = bench.parse_shape("2,3,8,8,4,3,3,1,1")
    methods = ("direct", "ours", "blas", "gemm", "numpy")
    results = bench.run_layers([shape], methods=methods, budget=0, max_repeats=1)
    assert [r["pass"] for r in results] == list(bench.PASSES)
    for r in results:
        assert r["flops"] == shape.flops() == 2 * 2 * 64 * 4 * 27
        for m in methods:
            t = r["methods"][m]
            assert t["repeats"] == 1 and 0 < t["min_ms"] <= t["median_ms"]
            assert t["gflops"] == pytest.approx(r["flops"] / (t["median_ms"] * 1e-3) / 1e9)
        med = {m: r["methods"][m]["median_ms"] for m in methods}
        assert r["ratios"]["ours/gemm"] == pytest.approx(med["ours"] / med["gemm"])
        assert r["ratios"]["direct/ours"] == pytest.approx(med["direct"] / med["ours"])
        assert r["ratios"]["numpy/ours"] == pytest.approx(med["numpy"] / med["ours"])
        assert r["ratios"]["blas/ours"] == pytest.approx(med["blas"] / med["ours"])
        assert r["ratios"]["ours/torch"] is None
        mem = r["memory_mib"]
        assert mem["full_cols"] == pytest.approx(2 * 64 * 27 * 4 / 2**20)
        if r["pass"] != "backward-data":  # these passes hold the whole batch's phi(x)^T
            assert mem["blas_workspace"] >= mem["full_cols"]
        assert mem["ours_peak"] > 0 and mem["numpy_peak"] > 0
    text = bench.format_layer_table(results, methods, peak=100.0)
    assert shape.name in text and "bwd-weights" in text and "ours %peak" in text
    json.dumps(results)  # plain data, ready for --json


def test_measured_peak_is_the_better_of_ours_and_the_blas():
    peak = bench.measure_peak(size=256, repeats=1)
    assert peak["ours"] > 0 and peak["blas"] > 0
    assert peak["gflops"] == max(peak["ours"], peak["blas"])
    header = bench.format_header(dict(bench.machine_info(), peak=peak), np.float32)
    assert "one-core peak (measured)" in header


def test_unavailable_method_is_reported_not_fatal(monkeypatch):
    monkeypatch.setattr(bench_peer, "torch_version", lambda: None)
    results = bench.run_layers([bench.parse_shape("1,1,5,5,1,3,3")], methods=("ours", "torch"),
                               budget=0, max_repeats=1)
    assert results[0]["methods"]["torch"] == {"error": "PyTorch is not installed"}
    assert results[0]["ratios"]["ours/torch"] is None
    text = bench.format_layer_table(results, ("ours", "torch"))
    assert "n/a  torch: PyTorch is not installed" in text


def test_unavailable_torch_leaves_the_models_their_figures(monkeypatch):
    monkeypatch.setattr(bench_peer, "torch_version", lambda: None)
    with pytest.raises(bench_peer.PeerUnavailable, match="^PyTorch is not installed$"):
        bench_peer.TorchPeer().setup("x", {})
    [r] = bench.run_models(("lenet5",), budget=0, max_repeats=1, train_images=64)
    assert r["torch"] == {"error": "PyTorch is not installed"} and "ratios" not in r
    assert r["ours"]["train"]["images_per_s"] > 0
    assert "n/a  lenet5 torch: PyTorch is not installed" in bench.format_model_table([r])


def test_repeats_fit_the_budget():
    assert _timing.repeats_for(0.01, budget=1.0, max_repeats=20) == 20
    assert _timing.repeats_for(0.01, budget=0.2, max_repeats=100) == 20
    assert _timing.repeats_for(0.01, budget=0, max_repeats=20) == 5   # fast: at least 5
    assert _timing.repeats_for(2.0, budget=0, max_repeats=20) == 1    # slow: at least 1
    assert _timing.repeats_for(0.01, budget=0, max_repeats=1) == 1


def test_torch_figures_come_from_a_child_process():
    if bench.torch_version() is None:
        pytest.skip("PyTorch is not installed")
    results = bench.run_layers([bench.parse_shape("2,2,6,6,3,3,3,2,1,1")],
                               methods=("ours", "torch"), budget=0, max_repeats=1)
    for r in results:
        assert r["methods"]["torch"]["median_ms"] > 0 and r["ratios"]["ours/torch"] > 0
        assert r["methods"]["torch"]["gflops"] == pytest.approx(
            r["flops"] / (r["methods"]["torch"]["median_ms"] * 1e-3) / 1e9)


def test_torch_peer_serves_several_set_ups_in_one_process():
    if bench.torch_version() is None:
        pytest.skip("PyTorch is not installed")
    shapes = [bench.parse_shape("2,2,6,6,3,3,3,2,1,1"), bench.parse_shape("1,4,7,5,4,3,1,1,1,1,2")]
    with bench_peer.TorchPeer(threads=1) as peer:
        for shape in shapes:
            for p in bench.PASSES:
                peer.setup(f"{shape.name} {p}", {"layer": asdict(shape), "pass": p,
                                                 "dtype": "float32", "seed": 0})
        for shape in shapes:
            for p in bench.PASSES:
                assert peer.seconds(f"{shape.name} {p}", warmup=0.001) > 0
        peer.setup("latency", {"model": zoo.lenet5().get_config(), "call": "latency",
                               "dtype": "float32", "train_images": 64, "seed": 0})
        assert peer.seconds("latency") > 0
        assert peer.threads == 1 and peer.version
        # What PyTorch cannot set up is reported, and the process serves on.
        with pytest.raises(bench_peer.PeerUnavailable, match="no PyTorch layer for Foo"):
            peer.setup("foo", {"model": {"input_shape": [1, 4, 4], "layers": [{"type": "Foo"}]},
                               "call": "infer", "dtype": "float32", "train_images": 64, "seed": 0})
        with pytest.raises(bench_peer.PeerUnavailable, match="no set-up 'foo'"):
            peer.seconds("foo")
        assert peer.seconds("latency") > 0


def test_torch_peer_reports_why_its_process_died():
    if bench.torch_version() is None:
        pytest.skip("PyTorch is not installed")
    # 3 input channels, 2 groups: PyTorch raises, and the serving process ends.
    bad = dict(name="bad", n=1, c=3, h=5, w=5, k=4, kh=3, kw=3, stride=1, padding=0, dilation=1,
               groups=2)
    with bench_peer.TorchPeer(threads=1) as peer:
        for _ in range(2):   # and it stays unavailable
            with pytest.raises(bench_peer.PeerUnavailable,
                               match="^the PyTorch process failed: RuntimeError: "):
                peer.setup("bad", {"layer": bad, "pass": "forward", "dtype": "float32", "seed": 0})


def test_torch_peer_still_answers_one_request_at_once():
    if bench.torch_version() is None:
        pytest.skip("PyTorch is not installed")
    script = os.path.join(os.path.dirname(bench.__file__), "_torch_peer.py")
    requests = [
        {"kind": "layers", "shapes": [asdict(bench.parse_shape("2,2,6,6,3,3,3"))]},
        {"kind": "models", "models": [{"name": "lenet5", "config": zoo.lenet5().get_config()}],
         "train_images": 64},
    ]
    answers = [json.loads(subprocess.run(
        [sys.executable, script], input=json.dumps(dict(request, dtype="float32", budget=0,
                                                        max_repeats=1, seed=0, threads=1)),
        capture_output=True, text=True, check=True).stdout) for request in requests]
    [layer] = answers[0]["layers"].values()
    assert set(layer) == set(bench.PASSES) and all(t["median_ms"] > 0 for t in layer.values())
    lenet5 = answers[1]["models"]["lenet5"]
    assert lenet5["train"]["images_per_s"] > 0 and lenet5["latency_ms"] > 0
    assert answers[0]["threads"] == answers[1]["threads"] == 1


def test_torch_twin_is_the_same_network():
    """The whole-model comparison is fair only if PyTorch runs the same architecture:
    with our weights copied in, its scores equal ours."""
    torch = pytest.importorskip("torch")
    import importlib.util
    import os
    spec = importlib.util.spec_from_file_location(
        "_torch_peer", os.path.join(os.path.dirname(bench.__file__), "_torch_peer.py"))
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    import im2colnet as inet
    model = inet.Sequential([
        inet.Conv2d(1, 4, 5, padding=2), inet.ReLU(), inet.MaxPool2d(2),
        inet.Conv2d(4, 6, 3, stride=2, dilation=1), inet.ReLU(), inet.AvgPool2d(2), inet.Flatten(),
        inet.Linear(6 * 3 * 3, 10)], input_shape=(1, 28, 28))
    model.reset_parameters(4)
    net = peer.twin(model.get_config()).double()
    ours = [layer for layer in model.layers if layer.params]
    theirs = [m for m in net if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(ours) == len(theirs) == 3
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            b.weight.copy_(torch.from_numpy(a.params["weight"]))
            b.bias.copy_(torch.from_numpy(a.params["bias"]))
    x = np.random.default_rng(0).random((3, 1, 28, 28))
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.astype(np.float64).predict(x), expected, rtol=1e-10, atol=1e-12)


def test_whole_model_rows():
    results = bench.run_models(("lenet5",), budget=0, max_repeats=1, train_images=64,
                               with_torch=False)
    assert len(results) == 1 and results[0]["model"] == "lenet5"
    r = results[0]
    assert r["ours"]["train"]["images_per_s"] > 0 and r["ours"]["infer"]["images_per_s"] > 0
    assert r["ours"]["latency_ms"] > 0
    assert "lenet5" in bench.format_model_table(results)


def test_run_layers_times_a_grouped_layer():
    shape = bench.parse_shape("2,4,8,8,4,3,3,1,1,1,4")     # depthwise
    methods = ("direct", "ours", "gemm", "numpy")
    results = bench.run_layers([shape], methods=methods, budget=0, max_repeats=1)
    for r in results:
        assert r["flops"] == 2 * 2 * 64 * 4 * 9
        for m in ("direct", "ours", "gemm"):
            assert r["methods"][m]["median_ms"] > 0
        assert r["methods"]["numpy"] == {"error": "numpy has no grouped convolution"}
        assert r["ratios"]["numpy/ours"] is None
