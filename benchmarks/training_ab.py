"""Training images/s of LeNet-5 and VGG-small under several set-ups, measured in one run.

Each set-up is a Python interpreter (e.g. the venvs of two builds) plus environment
variables and, optionally, a call of ``im2colnet.runtime.tune()`` before training.
Every measurement runs in a fresh child process, and the set-ups take turns round
by round, so a burst of machine load hits them alike. A child trains the zoo's
model with ``Sequential.fit`` (SGD with momentum, cross-entropy, batch 64, random
data): one warm-up epoch, then ``--repeats`` timed epochs; it reports the median.
The table shows, per set-up, the median over rounds of those medians.

    python benchmarks/training_ab.py \\
        --setup old=/path/to/old/venv/bin/python \\
        --setup new=.venv/bin/python \\
        --setup "new+tune=.venv/bin/python:tune" --rounds 5

A set-up is NAME=PYTHON[:tune][:VAR=VALUE,...].
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, statistics, sys, time
import numpy as np
import im2colnet
from im2colnet import models
from im2colnet.losses import CrossEntropyLoss
from im2colnet.optim import SGD
name, steps, repeats, tune = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
if tune:
    im2colnet.runtime.tune()
rng = np.random.default_rng(0)
x = rng.random((64 * steps, 1, 28, 28), dtype=np.float32)
y = rng.integers(0, 10, 64 * steps)
model = getattr(models, name)()
if hasattr(model, "reset_parameters"):
    model.reset_parameters(0)
else:   # builds from before parameters were made at construction
    model.build(model.input_shape, seed=0)
opt, loss = SGD(0.01, momentum=0.9), CrossEntropyLoss()
model.fit(x, y, epochs=1, optimizer=opt, loss=loss, verbose=0, seed=0)
rates = []
for epoch in range(1, repeats + 1):
    t0 = time.perf_counter()
    model.fit(x, y, epochs=epoch + 1, initial_epoch=epoch, optimizer=opt, loss=loss, verbose=0, seed=0)
    rates.append(x.shape[0] / (time.perf_counter() - t0))
print(json.dumps(statistics.median(rates)))
"""

MODELS = {"lenet5": (20, 5), "vgg_small": (4, 3)}   # steps per epoch, timed epochs


def parse_setup(text):
    name, _, rest = text.partition("=")
    parts = rest.split(":")
    python, tune, env = parts[0], False, {}
    for part in parts[1:]:
        if part == "tune":
            tune = True
        elif part:
            for item in part.split(","):
                key, _, value = item.partition("=")
                env[key] = value
    return {"name": name, "python": python, "tune": tune, "env": env}


def measure(setup, model, folder):
    steps, repeats = MODELS[model]
    env = dict(os.environ, **setup["env"])
    out = subprocess.run([setup["python"], "-c", CHILD, model, str(steps), str(repeats),
                          "1" if setup["tune"] else "0"],
                         capture_output=True, text=True, cwd=folder, env=env, check=True)
    return json.loads(out.stdout.split()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="append", required=True, type=parse_setup,
                        help="NAME=PYTHON[:tune][:VAR=VALUE,...] (give two or more)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="lenet5,vgg_small")
    args = parser.parse_args(argv)
    models = args.models.split(",")
    results = {(s["name"], m): [] for s in args.setup for m in models}
    with tempfile.TemporaryDirectory() as folder:   # not the source folder: the installed builds
        for r in range(args.rounds):
            for model in models:
                for setup in args.setup:
                    rate = measure(setup, model, folder)
                    results[setup["name"], model].append(rate)
                    print(f"round {r + 1} {model:9s} {setup['name']:12s} {rate:8.0f} img/s",
                          file=sys.stderr, flush=True)
    print(f"{'set-up':14s}" + "".join(f"{m + ' img/s':>22s}" for m in models))
    for setup in args.setup:
        cells = []
        for model in models:
            rates = results[setup["name"], model]
            cells.append(f"{statistics.median(rates):8.0f} ({min(rates):.0f}-{max(rates):.0f})")
        print(f"{setup['name']:14s}" + "".join(f"{c:>22s}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
