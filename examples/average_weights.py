"""Average saved models of one run (stochastic weight averaging) and save the result.

    python examples/average_weights.py --dataset fashion-mnist --validation 5000 \\
        --out models/resnet_small_fashion_mnist.h5 epoch15.h5 epoch25.h5

The parameters are averaged, and the batch-norm statistics are re-estimated on the
training images (the validation images, chosen as examples/_training.py chooses
them, are held out). The script prints the validation and test accuracy of every
input and of the average; the choice between them is made on validation only. The
output keeps the last model's metadata, and records the averaging and the new
accuracies.
"""
import argparse
import datetime
import os
import time

import im2colnet
from _training import LOADERS, average_weights, load_split, reestimate_batchnorm


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="model files of one architecture (two or more)")
    p.add_argument("--dataset", choices=sorted(LOADERS), required=True)
    p.add_argument("--validation", type=int, default=0,
                   help="the held-out validation images of the training run (not used for statistics)")
    p.add_argument("--seed", type=int, default=0, help="the training run's seed (it chose the validation set)")
    p.add_argument("--data", default=None, help="dataset folder (default: the loader's search path)")
    p.add_argument("--batch-size", type=int, default=128, help="batch of the statistics pass")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if len(args.models) < 2:
        p.error("give two or more model files")
    im2colnet.runtime.tune()
    x_train, _, x_val, y_val, x_test, y_test = load_split(args)
    models = [im2colnet.load_model(path) for path in args.models]

    def scores(model):
        val = model.evaluate(x_val, y_val)["accuracy"] if x_val is not None else None
        return val, model.evaluate(x_test, y_test)

    for path, model in zip(args.models, models):
        val, test = scores(model)
        shown = f"validation {val:.4f}, " if val is not None else ""
        print(f"{path}: {shown}test {test['accuracy']:.4f}", flush=True)
    epochs = [m.metadata.get("epochs_done") for m in models]
    meta = dict(models[-1].metadata)
    began = time.perf_counter()
    averaged = reestimate_batchnorm(average_weights(models), x_train, args.batch_size)
    seconds = time.perf_counter() - began
    val, test = scores(averaged)
    print(f"average: {f'validation {val:.4f}, ' if val is not None else ''}test {test['accuracy']:.4f}")

    meta.update(test_accuracy=test["accuracy"], test_loss=test["loss"],
                training_seconds=round(meta.get("training_seconds", 0.0) + seconds, 1),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                averaged={"files": [os.path.basename(path) for path in args.models], "epochs": epochs,
                          "batchnorm": f"re-estimated on the {len(x_train)} training images",
                          "script": "examples/average_weights.py"})
    if val is not None:
        meta["val_accuracy"] = val
    settings = dict(meta.get("settings", {}))
    settings["schedule"] = (settings.get("schedule", "") + f"; then the weights of epochs "
                            f"{', '.join(map(str, epochs))} averaged, batch-norm statistics re-estimated")
    meta["settings"] = settings
    averaged.metadata = {}
    averaged.save(args.out, metadata=meta)
    print(f"{args.out}: the average of {len(models)} models")


if __name__ == "__main__":
    main()
