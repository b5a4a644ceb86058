"""The bench's chart: median time per shape and method, one panel per pass (matplotlib)."""
import numpy as np

from .bench_runs import METHODS, PASSES

__all__ = ["plot_layers"]


def plot_layers(results, path, methods=METHODS):
    """Bar chart, one panel per pass: median time per shape for each method (log scale)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(dict.fromkeys(r["shape"]["name"] for r in results))
    fig, axes = plt.subplots(len(PASSES), 1, figsize=(max(6, 1.2 * len(names) + 2), 9),
                             sharex=True)
    width = 0.8 / len(methods)
    for ax, pass_ in zip(axes, PASSES):
        by_name = {r["shape"]["name"]: r for r in results if r["pass"] == pass_}
        for i, m in enumerate(methods):
            values = [by_name[n]["methods"].get(m, {}).get("median_ms", np.nan) for n in names]
            ax.bar(np.arange(len(names)) + i * width, values, width, label=m)
        ax.set_yscale("log")
        ax.set_ylabel("ms (median)")
        ax.set_title(pass_)
    axes[-1].set_xticks(np.arange(len(names)) + 0.4 - width / 2)
    axes[-1].set_xticklabels(names, rotation=30, ha="right")
    axes[0].legend(ncol=len(methods), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
