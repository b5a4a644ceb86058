"""LeNet-5 training and inference throughput (images/s), next to PyTorch when installed.

LeNet-5: Conv 1->6 5x5 pad 2, ReLU, MaxPool 2, Conv 6->16 5x5, ReLU, MaxPool 2,
Flatten, Linear 400->120, ReLU, Linear 120->84, ReLU, Linear 84->10, float32.
Training step = forward, cross-entropy, backward, SGD update on one batch of 64
(im2colnet: the same step Sequential.fit runs, with its checks); inference =
forward on batches of 256. Each repeat times `--steps` consecutive steps; the
table shows the median (and best) images/s over the repeats, implementations
interleaved round by round so machine load hits them alike, and the ratio
im2colnet / PyTorch measured in this run. PyTorch runs in a child process:
loaded into the same process its OpenMP runtime and ours (two libgomp copies,
each spinning threads on the same 2 cores) slowed our training step by up to 50x.

    python benchmarks/lenet5_throughput.py               # defaults: 15 repeats of 20 steps
    python benchmarks/lenet5_throughput.py --quick       # a smoke test
    python benchmarks/lenet5_throughput.py --profile     # cProfile of im2colnet's training step
    python benchmarks/lenet5_throughput.py --busy 1      # with one busy-loop process competing
    OMP_NUM_THREADS=1 python benchmarks/lenet5_throughput.py --busy 1   # ... and serial kernels

--busy N starts N processes that spin for the whole run, as other jobs on a
shared machine do: it shows how each implementation copes when it cannot have
every core. Measured on the 2-core machine with --busy 2: im2colnet's training
fell to ~150 img/s (its 2-thread prange kernels wait at OpenMP barriers for a
descheduled thread; PyTorch kept ~3,000), with OMP_NUM_THREADS=1 it kept ~6,900.
"""
import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

# im2colnet is imported where it is used, not here: the PyTorch worker runs this
# file too, and must not load our OpenMP runtime beside PyTorch's (see TorchProcess).


def ours(batch_train, batch_infer, steps, rng):
    from im2colnet.losses import CrossEntropyLoss
    from im2colnet.models import lenet5
    from im2colnet.optim import SGD
    model = lenet5().reset_parameters(0)
    x_train = rng.random((batch_train * steps, 1, 28, 28), dtype=np.float32)
    y_train = rng.integers(0, 10, batch_train * steps)
    x_infer = rng.random((batch_infer, 1, 28, 28), dtype=np.float32)
    loss, opt = CrossEntropyLoss(), SGD(0.01, momentum=0.9)
    epoch = [0]

    def train():
        # one epoch over steps*batch images: shuffle, gather, forward, loss, backward, checks, update
        model.fit(x_train, y_train, epochs=epoch[0] + 1, initial_epoch=epoch[0], batch_size=batch_train,
                  optimizer=opt, loss=loss, verbose=0, seed=0)
        epoch[0] += 1

    def infer():
        for _ in range(steps):
            model.predict(x_infer, batch_size=batch_infer)
    return train, infer


def pytorch(torch, batch_train, batch_infer, steps, rng):
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    x_train = torch.from_numpy(rng.random((batch_train * steps, 1, 28, 28), dtype=np.float32))
    y_train = torch.from_numpy(rng.integers(0, 10, batch_train * steps))
    x_infer = torch.from_numpy(rng.random((batch_infer, 1, 28, 28), dtype=np.float32))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def train():
        model.train()
        order = torch.randperm(x_train.shape[0])
        for start in range(0, x_train.shape[0], batch_train):
            index = order[start:start + batch_train]
            opt.zero_grad()
            loss = loss_fn(model(x_train[index]), y_train[index])
            loss.backward()
            opt.step()

    def infer():
        model.eval()
        with torch.no_grad():
            for _ in range(steps):
                model(x_infer)
    return train, infer


def rate(fn, images):
    """A function that runs fn once and returns images/s."""
    def run():
        t0 = time.perf_counter()
        fn()
        return images / (time.perf_counter() - t0)
    return run


def torch_worker(args):
    """Child process: answer "train"/"infer" lines on stdin with one repeat's images/s."""
    import torch
    train, infer = pytorch(torch, args.batch_train, args.batch_infer, args.steps, np.random.default_rng(0))
    passes = {"train": rate(train, args.batch_train * args.steps),
              "infer": rate(infer, args.batch_infer * args.steps)}
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads)", flush=True)
    for line in sys.stdin:
        print(passes[line.strip()](), flush=True)


class TorchProcess:
    """The torch side of the benchmark, in a child process (see the module docstring)."""

    def __init__(self, args):
        cmd = [sys.executable, os.path.abspath(__file__), "--torch-worker",
               "--steps", str(args.steps), "--batch-train", str(args.batch_train),
               "--batch-infer", str(args.batch_infer)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.version = self.proc.stdout.readline().strip()

    def rate_fn(self, which):
        def run():
            self.proc.stdin.write(which + "\n")
            self.proc.stdin.flush()
            return float(self.proc.stdout.readline())
        return run

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def measure(impls, repeats):
    """{name: function returning images/s} -> {name: (median, best)}, run round-robin."""
    for fn in impls.values():
        fn()                                       # warm-up (allocations, BLAS threads)
    rates = {name: [] for name in impls}
    for _ in range(repeats):
        for name, fn in impls.items():
            rates[name].append(fn())
    return {name: (statistics.median(r), max(r)) for name, r in rates.items()}


def profile(batch, steps):
    import cProfile
    import pstats
    train, _ = ours(batch, 256, steps, np.random.default_rng(0))
    train()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(5):
        train()
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20, help="batches per timed repeat")
    parser.add_argument("--batch-train", type=int, default=64)
    parser.add_argument("--batch-infer", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="3 repeats of 3 steps")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--busy", type=int, default=0, help="busy-loop processes competing for the CPUs")
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.steps = 3, 3
    if args.torch_worker:
        torch_worker(args)
        return
    if args.profile:
        profile(args.batch_train, args.steps)
        return
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        run(args)
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()


def run(args):
    import im2colnet as inet
    inet.runtime.tune()   # the settings the im2colnet command uses (malloc, OpenBLAS's idle threads)
    torch = None
    if not args.no_torch:
        try:
            import importlib.util
            if importlib.util.find_spec("torch") is not None:
                torch = TorchProcess(args)
        except OSError:
            torch = None
    train, infer = ours(args.batch_train, args.batch_infer, args.steps, np.random.default_rng(0))
    impls_train = {"im2colnet": rate(train, args.batch_train * args.steps)}
    impls_infer = {"im2colnet": rate(infer, args.batch_infer * args.steps)}
    if torch is not None:
        impls_train["torch"] = torch.rate_fn("train")
        impls_infer["torch"] = torch.rate_fn("infer")
    print(f"LeNet-5 float32 throughput, {args.repeats} repeats x {args.steps} batches; "
          f"python {platform.python_version()}, numpy {np.__version__}, im2colnet {inet.__version__} "
          f"{inet.build_info()}, {os.cpu_count()} CPUs, "
          + (f"{torch.version} in a child process" if torch else "torch not installed")
          + f"; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {args.busy} busy process(es)")
    print(f"{'pass':<22}{'implementation':<14}{'median img/s':>14}{'best img/s':>12}{'ours/torch':>12}")
    for label, impls in ((f"train, batch {args.batch_train}", impls_train),
                         (f"inference, batch {args.batch_infer}", impls_infer)):
        result = measure(impls, args.repeats)
        for name, (median, best) in result.items():
            ratio = ""
            if name == "im2colnet" and "torch" in result:
                ratio = f"{median / result['torch'][0]:.2f}x"
            print(f"{label:<22}{name:<14}{median:>14,.0f}{best:>12,.0f}{ratio:>12}", flush=True)
    if torch is not None:
        torch.close()


if __name__ == "__main__":
    main()
