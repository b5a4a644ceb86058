"""Timing for the benchmarks: median and minimum over repeats after a warm-up.

Standard library only, and no imports from the package: the PyTorch peer
(``_torch_peer.py``) runs as a plain script in a process of its own and loads
this file by path, so both sides time the same way.
"""
import statistics
import time

# Seconds of untimed calls that open a turn passing from one process to another. After a
# parallel region, idle OpenMP threads spin for up to ~15 ms (libgomp: 300,000 pause
# instructions); the other process's spinning threads took the cores from the next call,
# which ran up to 2x slower (20x for a 0.2 ms call). Waiting for them is no better: on a
# virtual machine, a call after 40 ms of idle cores ran 50x slower. Calling the function
# itself keeps the cores busy until the other side's threads sleep, as in a loop of it.
HANDOFF_S = 0.02


class SelfTimed:
    """A function that times itself: fn(warmup) calls it untimed for `warmup` seconds
    (at least once when > 0), then returns the seconds of one more call. For a call made
    elsewhere (PyTorch's, in its own process), timed there so the cost of asking for it
    is not counted; it takes its turns in time_interleaved like any other function."""

    def __init__(self, fn):
        self.fn = fn


def timed(fn, warmup=0.0):
    """Seconds of one call of fn, after untimed calls of it for `warmup` seconds (at
    least one when > 0); a SelfTimed reports its own."""
    if isinstance(fn, SelfTimed):
        return fn.fn(warmup)
    if warmup > 0:
        end = time.perf_counter() + warmup
        fn()
        while time.perf_counter() < end:
            fn()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def repeats_for(first, budget, max_repeats):
    """How many timed calls fit the budget after a warm-up call that took `first` seconds.

    A call under 0.1 s gets at least 5 (one stall of a busy machine then cannot be
    the median), a slower one at least 1 (a 2 s direct convolution); never more
    than max_repeats.
    """
    floor = 5 if first < 0.1 else 1
    return max(1, min(max_repeats, max(floor, int(budget / max(first, 1e-9)))))


def time_interleaved(fns, budget, max_repeats, first=None):
    """{name: fn or SelfTimed(fn)} -> {name: (median s, min s, repeats)}.

    Each function is called once to warm up (unless `first` already holds the
    seconds of a warm-up call per name, called in this order); then, round by
    round, every function that still owes repeats runs once. Interleaving makes a
    burst of load on the shared machine hit all methods alike, so the ratios of
    one run stay fair. A call that takes the turn from another process (a SelfTimed
    after one of ours, or one of ours after a SelfTimed) opens it with HANDOFF_S of
    untimed calls.
    """
    first = dict(first or {})
    for name, fn in fns.items():
        if name not in first:
            first[name] = timed(fn)
    owed = {name: repeats_for(first[name], budget, max_repeats) for name in fns}
    times = {name: [] for name in fns}
    last = next(reversed(fns.values()), None)   # the warm-ups end with the last function
    for round_ in range(max(owed.values(), default=0)):
        for name, fn in fns.items():
            if round_ < owed[name]:
                handoff = isinstance(fn, SelfTimed) != isinstance(last, SelfTimed)
                times[name].append(timed(fn, HANDOFF_S if handoff else 0.0))
                last = fn
    return {name: (statistics.median(t), min(t), len(t)) for name, t in times.items()}


def time_calls(fn, budget, max_repeats):
    """(median s, min s, repeats) of fn over repeats after one warm-up call."""
    return time_interleaved({"fn": fn}, budget, max_repeats)["fn"]


def timing_dict(seconds, flops=None):
    """(median s, min s, repeats) -> the JSON-able figures of one measurement (ms, GFLOP/s)."""
    median, minimum, repeats = seconds
    result = {"median_ms": median * 1e3, "min_ms": minimum * 1e3, "repeats": repeats}
    if flops is not None:
        result["gflops"] = flops / median / 1e9
    return result


def images_per_second(seconds, images):
    """(median s, min s, repeats) of a call that processes `images` -> throughput figures."""
    median, minimum, repeats = seconds
    return {"images_per_s": images / median, "best_images_per_s": images / minimum,
            "median_ms": median * 1e3, "repeats": repeats}


def model_figures(seconds, train_images, infer_images):
    """A model's figures from {"train", "infer", "latency"}: (median s, min s, repeats) of
    an epoch over train_images, a batch of infer_images and one image's inference."""
    return {"train": images_per_second(seconds["train"], train_images),
            "infer": images_per_second(seconds["infer"], infer_images),
            "latency_ms": seconds["latency"][0] * 1e3}
