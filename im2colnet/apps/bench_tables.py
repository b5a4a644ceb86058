"""The bench's text output: the header line, the layer table and the model table."""
import numpy as np

from .bench_runs import METHODS
from .bench_shapes import ConvShape

__all__ = ["format_header", "format_layer_table", "format_model_table", "UNSTEADY"]


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def _table(header, rows):
    """Left-align the first column, right-align the rest, two spaces between columns."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for row in [header] + rows:
        cells = [str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i])
                 for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


# A median this many times the minimum means calls were stalled (a busy machine).
UNSTEADY = 2.0

UNSTEADY_NOTE = (f"*  median > {UNSTEADY:g} x min: calls were stalled (a busy machine; with several "
                 "BLAS threads on shared cores, --threads 1 steadies the figures)")


def _ms(value):
    """Milliseconds with about three significant digits, without exponents."""
    return format(value, ".0f" if value >= 100 else ".1f" if value >= 10
                  else ".2f" if value >= 1 else ".3f")


def _time_cell(timing):
    """'median/min' in ms; '-' when the method did not run, 'n/a' when it could not."""
    if timing is None:
        return "-"
    if "error" in timing:
        return "n/a"
    unsteady = timing["median_ms"] > UNSTEADY * timing["min_ms"]
    return f"{_ms(timing['median_ms'])}/{_ms(timing['min_ms'])}{'*' if unsteady else ''}"


def format_header(info, dtype):
    """One line: what ran where."""
    threads = "" if info["blas_threads"] is None else f", {info['blas_threads']} threads"
    torch = ("torch not installed" if info["torch"] is None
             else f"torch {info['torch']} (in a child process, as many threads)")
    line = (f"im2colnet bench: {np.dtype(dtype).name}, numpy {info['numpy']} ({info['blas']}"
            f"{threads}), {torch}, {info['cpus']} CPUs, "
            f"OpenMP {'on' if info['im2colnet_build']['openmp'] else 'off'}, products on "
            f"{'our OpenMP threads' if info.get('products_on_our_threads') else 'the BLAS threads'}"
            f", packed kernel {info['im2colnet_build'].get('kernel', '?')}")
    peak = info.get("peak")
    if peak:
        line += (f"\none-core peak (measured): {peak['gflops']:.1f} GFLOP/s (our micro-kernel "
                 f"{peak['ours']:.1f}, NumPy's BLAS {peak['blas']:.1f}, 1024^3 product, 1 thread)")
    return line


def format_layer_table(results, methods=METHODS, peak=None):
    """The layer results as a text table: one block of three passes per shape; peak: the
    one-core peak in GFLOP/s (for the "ours %peak" column), or None."""
    header = (["shape / pass"] + [f"{m} ms" for m in methods]
              + ["ours GF/s", "ours %peak", "blas/ours", "ours/gemm", "direct/ours", "numpy/ours",
                 "ours/torch", "ws MiB", "ours MiB", "numpy MiB"])
    rows, last = [], None
    short = {"forward": "  forward", "backward-data": "  bwd-data", "backward-weights": "  bwd-weights"}
    for r in results:
        s = r["shape"]
        if s["name"] != last:
            rows.append([f"{s['name']}  ({ConvShape(**s).describe()})"] + [""] * (len(header) - 1))
            last = s["name"]
        ours, ratios, mem = r["methods"].get("ours", {}), r["ratios"], r["memory_mib"]
        rows.append([short[r["pass"]]]
                    + [_time_cell(r["methods"].get(m)) for m in methods]
                    + [_fmt(ours.get("gflops"), ".1f"),
                       _fmt(None if not (peak and ours.get("gflops")) else
                            100 * ours["gflops"] / peak, ".0f"),
                       _fmt(ratios.get("blas/ours"), ".2f"),
                       _fmt(ratios["ours/gemm"], ".2f"), _fmt(ratios["direct/ours"], ".1f"),
                       _fmt(ratios["numpy/ours"], ".2f"), _fmt(ratios["ours/torch"], ".2f"),
                       _fmt(mem.get("blas_workspace"), ".1f"), _fmt(mem.get("ours_peak"), ".1f"),
                       _fmt(mem.get("numpy_peak"), ".1f")])
    notes = sorted({f"n/a  {m}: {t['error']}" for r in results for m, t in r["methods"].items()
                    if "error" in t})
    if any(cell.endswith("*") for row in rows for cell in row):
        notes.append(UNSTEADY_NOTE)
    return "\n".join([_table(header, rows)] + notes)


def format_model_table(results):
    header = ["model", "train img/s (b=64)", "torch", "infer img/s (b=256)", "torch",
              "latency ms (b=1)", "torch", "train ours/torch", "infer ours/torch"]
    rows, notes = [], []
    for r in results:
        ours, theirs, ratios = r["ours"], r.get("torch", {}), r.get("ratios", {})
        if "error" in theirs:
            notes.append(f"{r['model']} torch: {theirs['error']}")
        rows.append([r["model"],
                     _fmt(ours["train"]["images_per_s"], ".0f"),
                     _fmt(theirs.get("train", {}).get("images_per_s"), ".0f"),
                     _fmt(ours["infer"]["images_per_s"], ".0f"),
                     _fmt(theirs.get("infer", {}).get("images_per_s"), ".0f"),
                     _fmt(ours["latency_ms"], ".2f"), _fmt(theirs.get("latency_ms"), ".2f"),
                     _fmt(ratios.get("train ours/torch"), ".2f"),
                     _fmt(ratios.get("infer ours/torch"), ".2f")])
    text = _table(header, rows) if rows else ""
    return "\n".join([text] + [f"n/a  {n}" for n in notes]).strip("\n")
