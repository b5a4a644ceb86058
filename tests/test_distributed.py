"""Data-parallel fit over MPI (im2colnet.training.distributed).

Each run starts `mpiexec -n 2` on tests/_mpi_worker.py in a subprocess with a timeout and
compares what rank 0 wrote with a one-process run computed here: plain fit for models without
batch norm; with batch norm, an explicit simulation of the two ranks (each half-batch
normalised by its own statistics, per-rank running statistics averaged at each epoch's end).
"""
import glob
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

mpi4py = pytest.importorskip("mpi4py", reason="mpi4py is not installed: pip install 'im2colnet[mpi]'")

import im2colnet as inet  # noqa: E402
from im2colnet.runtime.threads import thread_count  # noqa: E402
from im2colnet.training.distributed import shard  # noqa: E402
from _mpi_cases import CASES, model_state  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RANKS = 2
TIMEOUT = 120


def mpiexec():
    """The mpiexec of this environment's MPI (the mpich wheel puts it beside python)."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = beside if os.path.exists(beside) else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec: pip install 'im2colnet[mpi]' (mpich)")
    return found


def run_ranks(args, tmp_path, timeout=TIMEOUT):
    """mpiexec -n 2 ARGS in tmp_path -> (CompletedProcess, seconds)."""
    start = time.monotonic()
    result = subprocess.run([mpiexec(), "-n", str(RANKS), *args], cwd=tmp_path,
                            capture_output=True, text=True, timeout=timeout)
    return result, time.monotonic() - start


def run_case(name, tmp_path):
    """Rank 0's result.npz of scenario ``name`` (it must succeed)."""
    result, _ = run_ranks([sys.executable, os.path.join(HERE, "_mpi_worker.py"), name,
                           str(tmp_path)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(tmp_path / "result.npz") as f:
        return dict(f)


def one_process(case, model=None, optimizer=None, **kwargs):
    """(model, history) of the case trained in this process."""
    x, y, val = case.data()
    model = case.model() if model is None else model
    history = model.fit(x, y, epochs=case.epochs, batch_size=case.batch_size,
                        optimizer=case.optimizer() if optimizer is None else optimizer,
                        loss=case.loss(), validation_data=val, verbose=0, seed=case.seed, **kwargs)
    return model, history


def assert_close_states(got, model, rtol):
    want = model_state(model)
    assert sorted(k for k in got if k.startswith(("param/", "buffer/"))) == sorted(want)
    for key, value in want.items():
        scale = np.abs(value).max()
        np.testing.assert_allclose(got[key], value, rtol=0, atol=rtol * scale, err_msg=key)


# -- the shards, without MPI -------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 5, 63, 64, 65, 100])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_shards_cover_a_batch_once_and_differ_by_at_most_one(n, size):
    index = np.arange(n) * 3 + 11
    pieces = [shard(index, r, size) for r in range(size)]
    np.testing.assert_array_equal(np.concatenate(pieces), index)     # in order, each once
    lengths = [len(p) for p in pieces]
    assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)


def test_only_code_that_asks_for_distribution_imports_mpi4py(tmp_path):
    code = ("import sys, numpy as np, im2colnet, im2colnet.apps.cli\n"
            "m = im2colnet.Sequential([im2colnet.Linear(2, 2)], input_shape=(2,))\n"
            "m.fit(np.zeros((4, 2)), np.zeros(4, int), epochs=1, verbose=0)\n"
            "print('mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)     # the installed package, not the source
    assert out.stdout.split() == ["False"], out.stderr


def test_distributed_true_without_mpi4py_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "im2colnet.training.distributed", None)  # as if missing
    monkeypatch.delattr(inet.training, "distributed", raising=False)
    model = inet.Sequential([inet.Linear(2, 2)], input_shape=(2,))
    with pytest.raises(ImportError, match=r"pip install \"im2colnet\[mpi\]\""):
        model.fit(np.zeros((4, 2)), np.zeros(4, int), epochs=1, distributed=True, verbose=0)


def test_distributed_must_be_a_flag_or_the_hooks():
    model = inet.Sequential([inet.Linear(2, 2)], input_shape=(2,))
    with pytest.raises(TypeError, match="distributed"):
        model.fit(np.zeros((4, 2)), np.zeros(4, int), epochs=1, distributed="yes", verbose=0)


# -- equivalence with one process ---------------------------------------------------------
def test_lenet5_on_two_ranks_equals_one_process(tmp_path):
    """20 steps of global batch 64 in float64: the same parameters within 1e-5 (relative to
    each array's largest entry), the same per-epoch loss; each rank runs on half the cores."""
    case = CASES["lenet"]
    got = run_case("lenet", tmp_path)
    model, history = one_process(case)
    assert_close_states(got, model, 1e-5)
    np.testing.assert_allclose(got["history/loss"], history.history["loss"], rtol=1e-9)
    np.testing.assert_array_equal(got["history/accuracy"], history.history["accuracy"])
    assert int(got["allreduce_calls"]) == 20                      # one call per step
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert list(got["threads"]) == [max(1, cores // RANKS)] * RANKS


def simulate_two_ranks_with_batch_norm(case):
    """The batch-norm rule written out in one process: each rank's piece of a global batch is
    normalised by its own statistics and updates that rank's running statistics; the step's
    gradient is sum_r (n_r / B) grad_r; the running statistics are averaged at each epoch's end."""
    x, y, val = case.data()
    model, optimizer, loss = case.model(), case.optimizer(), case.loss()
    bns = [layer for layer in model.layers if layer.buffers]
    running = [[{k: v.copy() for k, v in layer.buffers.items()} for layer in bns]
               for _ in range(RANKS)]
    losses = []
    for epoch in range(case.epochs):
        order = np.random.default_rng([case.seed, epoch]).permutation(len(x))
        total = 0.0
        for start in range(0, len(x), case.batch_size):
            index = order[start:start + case.batch_size]
            grads = {k: np.zeros_like(v) for k, v in model.parameters().items()}
            for rank in range(RANKS):
                mine = shard(index, rank, RANKS)
                if not mine.size:
                    continue
                for layer, saved in zip(bns, running[rank]):
                    for k, v in saved.items():
                        layer.buffers[k][...] = v
                scores = model.forward(x[mine], training=True)
                value, dscores = loss(scores, y[mine])
                model.backward(dscores, need_dx=False)
                for k, g in model.gradients().items():
                    grads[k] += g * (len(mine) / len(index))
                total += float(value) * len(mine)
                for layer, saved in zip(bns, running[rank]):
                    for k in saved:
                        saved[k] = layer.buffers[k].copy()
            optimizer.step(model.parameters(), grads)
        for i, layer in enumerate(bns):
            for k in layer.buffers:
                layer.buffers[k][...] = np.mean([running[r][i][k] for r in range(RANKS)], axis=0)
                for r in range(RANKS):
                    running[r][i][k] = layer.buffers[k].copy()
        losses.append(total / len(x))
    return model, losses, model.evaluate(*val, loss=loss)


def test_batch_norm_on_two_ranks_follows_its_rule(tmp_path):
    """Per-rank batch statistics, running statistics averaged at each epoch's end: rank 0's
    parameters and buffers equal the explicit simulation within 1e-9 (relative to each
    array's largest entry); metrics are those of the whole batch and validation set."""
    case = CASES["bn"]
    got = run_case("bn", tmp_path)
    model, losses, val = simulate_two_ranks_with_batch_norm(case)
    assert_close_states(got, model, 1e-9)
    np.testing.assert_allclose(got["history/loss"], losses, rtol=1e-9)
    assert got["history/val_loss"][-1] == pytest.approx(val["loss"], rel=1e-9)
    assert got["history/val_accuracy"][-1] == pytest.approx(val["accuracy"], rel=1e-12)


def test_a_checkpoint_resumes_on_another_number_of_ranks(tmp_path):
    """Epoch 0 in one process, epoch 1 on two ranks (from its checkpoint), epoch 2 in one
    process again (from theirs): the same as three epochs in one process. Only rank 0 writes."""
    case = CASES["resume"]
    model, _ = one_process(epochs_override(case, 1))
    model.save(tmp_path / "start.h5", optimizer=model.optimizer)
    run_case("resume", tmp_path)
    assert [os.path.basename(p) for p in glob.glob(str(tmp_path / "ckpt-*.h5"))] == ["ckpt-2-rank0.h5"]
    resumed, optimizer = inet.load_model(tmp_path / "ckpt-2-rank0.h5", with_optimizer=True)
    x, y, _ = case.data()
    resumed.fit(x, y, epochs=3, initial_epoch=2, batch_size=case.batch_size, optimizer=optimizer,
                loss=case.loss(), verbose=0, seed=case.seed)
    straight, _ = one_process(epochs_override(case, 3))
    assert_close_states(model_state(resumed), straight, 1e-5)


def epochs_override(case, epochs):
    copy = type(case).__new__(type(case))
    copy.__dict__.update(vars(case), epochs=epochs)
    return copy


# -- failure ---------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["fault", "kill", "hang"])
def test_a_failing_rank_stops_every_rank(tmp_path, how):
    """Rank 1 raises, is killed, or hangs at the end of step 5 of epoch 1: mpiexec exits
    non-zero within 60 s; a raise is reported with its rank and step, a hang by rank 0 when
    its 2 s timeout runs out; the epoch-1 checkpoint loads."""
    result, seconds = run_ranks([sys.executable, os.path.join(HERE, "_mpi_worker.py"), how,
                                 str(tmp_path)], tmp_path, timeout=60)
    assert result.returncode != 0 and seconds < 60
    assert not (tmp_path / "result.npz").exists()
    if how == "fault":
        assert "rank 1 of 2 failed at epoch 1, step 5" in result.stderr
        assert "RuntimeError: injected failure at step 5" in result.stderr
    if how == "hang":   # rank 1 hangs after step 5's average: rank 0 waits in step 6's
        assert "rank 0 of 2 failed at epoch 1, step 6" in result.stderr
        assert "did not join the gradient average of epoch 1, step 6 within 2 s" in result.stderr
    model = inet.load_model(tmp_path / "ckpt-1.h5")
    assert model.count_params() == 61706
    assert not (tmp_path / "ckpt-2.h5").exists()


def test_ranks_with_different_data_refuse_to_start(tmp_path):
    result, seconds = run_ranks([sys.executable, os.path.join(HERE, "_mpi_worker.py"),
                                 "mismatch", str(tmp_path)], tmp_path, timeout=60)
    assert result.returncode != 0
    assert "failed before the first step: ValueError: x: every rank must train on the same " \
           "samples; the ranks hold [64, 63] samples" in result.stderr


# -- the command line ------------------------------------------------------------------------
def test_the_command_trains_on_two_ranks_and_rank_0_saves(tmp_path):
    data = os.environ.get("IM2COLNET_DATA")
    if not data or not os.path.isdir(os.path.join(data, "mnist")):
        pytest.skip("MNIST not found: set IM2COLNET_DATA")
    command = os.path.join(os.path.dirname(sys.executable), "im2colnet")
    result, _ = run_ranks([command, "train", "lenet5", "--dataset", "mnist", "--distributed",
                           "--limit", "256", "--out", "m.h5"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("test accuracy") == 1 and "on 2 ranks" in result.stdout
    assert result.stdout.count("saved m.h5") == 1
    assert result.stderr.count("val_accuracy") == 1      # one progress bar's epoch line
    assert inet.load_model(tmp_path / "m.h5").metadata["epochs"] == 1
