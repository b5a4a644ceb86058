"""Hardening of training: memory stays flat, Ctrl-C stops between steps, a killed
checkpoint write keeps the previous file, float32 tracks float64.

Run alone with ``bash test.sh -m hardening``.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import im2colnet as inet
from im2colnet.models import lenet5
from im2colnet.functional import conv as conv_module
from im2colnet import load_model

pytestmark = pytest.mark.hardening


def digits_like(n, seed):
    """Images with a learnable label: the class decides where a bright square sits."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.random((n, 1, 28, 28), dtype=np.float32) * 0.3
    for k in range(10):
        r, c = 2 + 8 * (k // 4), 2 + 6 * (k % 4)
        x[y == k, 0, r:r + 6, c:c + 5] += 0.7
    return x, y


def rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux) to read the RSS")
def test_memory_is_flat_over_2000_training_steps():
    """2,000 LeNet-5 steps: the resident memory after step 2,000 is within 25 MiB of
    step 200, and the im2col workspace buffers are the same arrays throughout."""
    model = lenet5().reset_parameters(0)
    x, y = digits_like(1600, 0)
    marks, buffers = {}, {}

    class Probe(inet.Callback):
        steps = 0

        def on_batch_end(self, step, logs):
            Probe.steps += 1
            if Probe.steps in (200, 2000):
                marks[Probe.steps] = rss_bytes()
                buffers[Probe.steps] = {k: v.__array_interface__["data"][0]
                                        for k, v in conv_module._workspace.buffers.items()}

    model.fit(x, y, epochs=20, batch_size=16, optimizer=inet.optim.SGD(0.01, momentum=0.9),
              callbacks=[Probe()], verbose=0, seed=0)
    assert Probe.steps == 2000
    growth = marks[2000] - marks[200]
    print(f"RSS at step 200: {marks[200] / 2**20:.1f} MiB, at step 2000: {marks[2000] / 2**20:.1f} MiB")
    assert growth < 25 * 2 ** 20, f"resident memory grew by {growth / 2**20:.1f} MiB"
    assert buffers[200] == buffers[2000]


def test_float32_training_tracks_float64():
    """100 SGD steps of LeNet-5 from the same weights: the losses agree to 1e-3."""
    x, y = digits_like(3200, 1)
    m64 = lenet5().astype(np.float64).reset_parameters(3)
    m32 = lenet5().reset_parameters(3)
    for a, b in zip(m32.layers, m64.layers):
        for key in a.params:
            a.params[key][...] = b.params[key]
    for model in (m32, m64):
        model.fit(x, y, epochs=1, batch_size=32, optimizer=inet.optim.SGD(0.02, momentum=0.9),
                  verbose=0, seed=5)
    loss32 = m32.evaluate(x[:512], y[:512])["loss"]
    loss64 = m64.evaluate(x[:512], y[:512])["loss"]
    assert loss64 < 1.0                       # it learned something
    assert abs(loss32 - loss64) < 1e-3, (loss32, loss64)


CHILD_FIT = textwrap.dedent("""
    import sys, numpy as np, im2colnet as inet
    rng = np.random.default_rng(0)
    x = rng.random((20000, 64), dtype=np.float32); y = rng.integers(0, 4, 20000)
    model = inet.Sequential([inet.Linear(64, 256), inet.ReLU(), inet.Linear(256, 4)], input_shape=(64,))
    ckpt = inet.ModelCheckpoint(sys.argv[1])
    class Ready(inet.Callback):
        def on_batch_end(self, step, logs):
            if step == 5 and not getattr(self, "said", False) and self.model_epoch == 1:
                print("ready", flush=True); self.said = True
        def on_epoch_begin(self, epoch, logs):
            self.model_epoch = epoch
    try:
        model.fit(x, y, epochs=100, batch_size=8, callbacks=[ckpt, Ready()], verbose=0, seed=0)
    except KeyboardInterrupt as exc:
        print("interrupted:", exc, flush=True)
        # the model is usable: every parameter is finite and it predicts
        assert all(np.isfinite(p).all() for p in model.parameters().values())
        print("predict", model.predict(x[:3]).shape, flush=True)
        sys.exit(0)
    sys.exit(1)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_stops_at_a_step_boundary_and_the_checkpoint_is_intact(tmp_path):
    ckpt = tmp_path / "ckpt.h5"
    # cwd: `python -c` puts the working folder first on sys.path; from a checkout's root the
    # child would import the uncompiled source tree instead of the installed build.
    proc = subprocess.Popen([sys.executable, "-c", CHILD_FIT, str(ckpt)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stdout.readline().strip() == "ready"     # epoch 0 done and checkpointed
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "interrupted: training interrupted by the user at epoch 1" in out
    assert "predict (3, 4)" in out
    model = load_model(ckpt)
    assert model.metadata["epoch"] >= 1


CHILD_SAVE = textwrap.dedent("""
    import sys, im2colnet as inet
    model = inet.Sequential([inet.Linear(1500, 1500), inet.ReLU(), inet.Linear(1500, 10)],
                            input_shape=(1500,)).reset_parameters(0)
    model.save(sys.argv[1], metadata={"round": 0})
    print("saved", flush=True)
    i = 0
    while True:          # save over and over until killed, most likely in the middle of a write
        i += 1
        model.layers[0].params["bias"][0] = i
        model.save(sys.argv[1], metadata={"round": i})
""")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigkill_during_checkpoint_writes_leaves_a_loadable_file(tmp_path):
    """Kill a process that keeps overwriting its checkpoint (9 MB each) at random
    moments: the file on disk is always a complete, verified model."""
    path = tmp_path / "ckpt.h5"
    rng = np.random.default_rng(0)
    rounds = []
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-c", CHILD_SAVE, str(path)],
                                stdout=subprocess.PIPE, text=True, cwd=tmp_path)
        assert proc.stdout.readline().strip() == "saved"
        time.sleep(rng.uniform(0.05, 0.5))
        proc.kill()
        proc.wait()
        model = load_model(path)                     # verifies structure and checksum
        assert model.layers[0].params["bias"][0] == model.metadata["round"]
        rounds.append(model.metadata["round"])
    assert max(rounds) > 0   # it was killed while saving repeatedly, not before the loop


def test_concurrent_inference_on_one_shared_model():
    """predict/evaluate from several threads on one model give the sequential results
    (inference keeps no per-call state in the layers; training does: one model per thread)."""
    import threading
    model = inet.Sequential([inet.Conv2d(1, 4, 3, padding=1), inet.BatchNorm2d(4), inet.ReLU(),
                             inet.MaxPool2d(2), inet.Flatten(), inet.Linear(4 * 14 * 14, 10)],
                            input_shape=(1, 28, 28)).reset_parameters(0)
    batches = [digits_like(64, seed)[0] for seed in range(6)]
    expected = [model.predict(x) for x in batches]
    got = [None] * len(batches)

    def run(i):
        for _ in range(5):
            got[i] = model.predict(batches[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(got, expected):
        assert np.array_equal(a, b)
