"""What the commands print or draw: accuracy and the confusion matrix, training curves,
a model file's metadata."""
import sys
import time

import numpy as np

from ..functional import softmax_cross_entropy
from .inputs import load_dataset

__all__ = ["confusion_matrix", "format_confusion", "history_dict", "plot_curves", "evaluate_model",
           "class_label", "format_metadata"]


def confusion_matrix(y_true, y_pred, num_classes):
    """counts[i, j]: how many samples of class i were predicted as j."""
    return np.bincount(y_true * num_classes + y_pred,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def format_confusion(counts):
    """Rows: true class, columns: predicted class."""
    k = counts.shape[0]
    width = max(len(str(counts.max())), len(str(k - 1))) + 1
    lines = ["true\\pred" + "".join(str(j).rjust(width) for j in range(k))]
    for i in range(k):
        lines.append(str(i).rjust(9) + "".join(str(c).rjust(width) for c in counts[i]))
    return "\n".join(lines)


def history_dict(history):
    """History -> {name: [per-epoch values]} (a History object or a plain dict)."""
    data = getattr(history, "history", history)
    return dict(data) if isinstance(data, dict) else {}


def plot_curves(history, path):
    """Loss and accuracy per epoch, train and validation (needs matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        # `train` validates on the test split after each epoch: val_* are test-set figures.
        for key, label in ((metric, "train"), (f"val_{metric}", "test set")):
            values = history.get(key)
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(metric)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate_model(model, dataset, data=None, limit=None, out=sys.stdout, confusion=True,
                   prefix=""):
    """Print accuracy, loss, images/s (and the confusion matrix) of model on dataset's test set;
    returns the accuracy. prefix starts the summary line."""
    x, y = load_dataset(dataset, "test", data, limit)
    t0 = time.perf_counter()
    scores = model.predict(x, batch_size=256)
    seconds = time.perf_counter() - t0
    loss, _ = softmax_cross_entropy(scores.astype(np.float64), y)
    predicted = scores.argmax(axis=1)
    accuracy = float(np.mean(predicted == y))
    print(f"{prefix}{dataset} test set: accuracy {accuracy:.4f}, loss {loss:.4f}, {len(x)} images, "
          f"{len(x) / seconds:.0f} images/s", file=out)
    if confusion:
        print("confusion matrix (rows: true class, columns: predicted):", file=out)
        print(format_confusion(confusion_matrix(y, predicted, scores.shape[1])), file=out)
    return accuracy


def class_label(k, names):
    """'3', or '3 (Dress)' when the dataset's classes have names other than their numbers."""
    if names and k < len(names) and names[k] != str(k):
        return f"{k} ({names[k]})"
    return str(k)


def _cell(value):
    return format(value, ".4g") if isinstance(value, float) else str(value)


def format_metadata(meta, indent="  "):
    """A model file's metadata as text lines: nested dicts indented, a list of records
    (e.g. the per-epoch training history) as a table, everything else as key: value."""
    lines = []
    for key in sorted(meta):
        value = meta[key]
        if isinstance(value, dict) and value:
            lines.append(f"{indent}{key}:")
            lines += format_metadata(value, indent + "  ")
        elif (isinstance(value, list) and value
              and all(isinstance(v, dict) for v in value)):
            columns = list(dict.fromkeys(k for record in value for k in record))
            rows = [columns] + [[_cell(record.get(c, "")) for c in columns] for record in value]
            widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
            lines.append(f"{indent}{key}:")
            lines += [indent + "  " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths))
                      for row in rows]
        else:
            lines.append(f"{indent}{key}: {_cell(value)}")
    return lines
