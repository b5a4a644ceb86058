"""Timing for the benchmarks: median and minimum over repeats after a warm-up.

Standard library only, and no imports from the package: the PyTorch peer
(``_torch_peer.py``) runs as a plain script in a process of its own and loads
this file by path, so both sides time the same way.
"""
import statistics
import time


def timed(fn):
    """Seconds of one call of fn."""
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
    """{name: fn} -> {name: (median s, min s, repeats)}.

    Each function is called once to warm up (unless `first` already holds the
    seconds of a warm-up call per name); then, round by round, every function
    that still owes repeats runs once. Interleaving makes a burst of load on the
    shared machine hit all methods alike, so the ratios of one run stay fair.
    """
    first = dict(first or {})
    for name, fn in fns.items():
        if name not in first:
            first[name] = timed(fn)
    owed = {name: repeats_for(first[name], budget, max_repeats) for name in fns}
    times = {name: [] for name in fns}
    for round_ in range(max(owed.values(), default=0)):
        for name, fn in fns.items():
            if round_ < owed[name]:
                times[name].append(timed(fn))
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
