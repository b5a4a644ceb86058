"""What the two zoo training scripts share: data, augmentation, the epoch loop, metadata.

Each epoch trains on a freshly augmented copy of the training images (random
shifts, optionally horizontal flips, drawn from np.random.default_rng([seed,
1000 + epoch]) so a run is reproducible), then measures the full test set and
saves the model with its metadata to --out. A checkpoint with the optimizer's
state (--checkpoint) lets an interrupted run continue with --resume.
"""
import argparse
import datetime
import os
import platform
import sys
import time

import numpy as np

import im2colnet
from im2colnet import datasets

LOADERS = {"mnist": datasets.load_mnist, "fashion-mnist": datasets.load_fashion_mnist}


def augment(x, rng, shift=0, flip=False):
    """A copy of x (N, C, H, W) with each image moved by (di, dj), both uniform in
    [-shift, shift] (the uncovered border is 0, the background colour), and with
    flip=True mirrored left-right with probability 1/2."""
    n, _, h, w = x.shape
    out = x.copy()
    if flip:
        mirrored = rng.random(n) < 0.5
        out[mirrored] = out[mirrored, :, :, ::-1]
    if shift:
        padded = np.pad(out, ((0, 0), (0, 0), (shift, shift), (shift, shift)))
        di = rng.integers(-shift, shift + 1, n)
        dj = rng.integers(-shift, shift + 1, n)
        # Images with the same offset are cut out of the padded batch together:
        # shifted[i, j] = x[i - di, j - dj].
        for a in range(-shift, shift + 1):
            for b in range(-shift, shift + 1):
                sel = np.flatnonzero((di == a) & (dj == b))
                out[sel] = padded[sel, :, shift - a:shift - a + h, shift - b:shift - b + w]
    return out


def parser(description, dataset_choices, defaults):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--dataset", choices=dataset_choices, default=defaults["dataset"])
    p.add_argument("--epochs", type=int, default=defaults["epochs"])
    p.add_argument("--batch-size", type=int, default=defaults["batch_size"])
    p.add_argument("--lr", type=float, default=defaults["lr"],
                   help="initial learning rate of SGD (Nesterov momentum 0.9), cosine decay per epoch")
    p.add_argument("--weight-decay", type=float, default=defaults["weight_decay"])
    p.add_argument("--shift", type=int, default=defaults["shift"],
                   help="random shift augmentation: up to this many pixels each way (0: off)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=defaults["flip"],
                   help="random horizontal flips (for clothes, not digits)")
    p.add_argument("--validation", type=int, default=defaults.get("validation", 0),
                   help="hold out this many training images (a seeded random choice) as the "
                        "validation set that every choice is made on; the test set is only reported")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="dataset folder (default: the loader's search path)")
    p.add_argument("--out", required=True, help="the model file to write (after every epoch)")
    p.add_argument("--checkpoint", default=None,
                   help="also write model + optimizer state here after every epoch")
    p.add_argument("--resume", default=None, help="continue from a --checkpoint file")
    p.add_argument("--restart-lr", type=float, default=None,
                   help="with --resume: a warm restart, a new cosine cycle from this learning rate "
                        "down to 0 at --epochs (SGDR)")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    return p


def load_split(args):
    """(x_train, y_train, x_val, y_val, x_test, y_test): args.validation training images (a
    choice seeded by args.seed) held out as the validation set (None, None without)."""
    load = LOADERS[args.dataset]
    x_train, y_train = load(args.data, split="train")
    x_test, y_test = load(args.data, split="test")
    x_val = y_val = None
    if args.validation:
        held = np.random.default_rng([args.seed, 999]).permutation(len(x_train))
        val, kept = np.sort(held[:args.validation]), np.sort(held[args.validation:])
        x_val, y_val, x_train, y_train = x_train[val], y_train[val], x_train[kept], y_train[kept]
    print(f"{args.dataset}: {len(x_train)} training, {args.validation} validation, "
          f"{len(x_test)} test images", flush=True)
    return x_train, y_train, x_val, y_val, x_test, y_test


def average_weights(models):
    """The mean of the parameters of models of one architecture, loaded into the last one
    (stochastic weight averaging, Izmailov et al. 2018). Buffers (batch-norm statistics)
    stay the last model's: reestimate_batchnorm gives the averaged weights their own."""
    states = [m.state_dict() for m in models]
    mean = {key: (sum(state[key] for state in states) / len(states)).astype(value.dtype)
            if key.endswith((".weight", ".bias")) else value for key, value in states[-1].items()}
    models[-1].load_state_dict(mean)
    return models[-1]


def _batchnorm_layers(layers):
    for layer in layers:
        if "running_mean" in layer.buffers:
            yield layer
        yield from _batchnorm_layers(child for _, child in layer.children())


def reestimate_batchnorm(model, x, batch_size=128):
    """Set every batch-norm layer's running statistics to the mean of its batch statistics
    over x in training mode (PyTorch's swa_utils.update_bn): averaged weights need their own."""
    layers = list(_batchnorm_layers(model.layers))
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.buffers["running_mean"][...] = 0
        layer.buffers["running_var"][...] = 1
    for k, start in enumerate(range(0, len(x), batch_size)):
        for layer in layers:
            layer.momentum = 1.0 / (k + 1)    # running = the mean of the k + 1 batches so far
        model.forward(x[start:start + batch_size], training=True)
    for layer, momentum in zip(layers, saved):
        layer.momentum = momentum
    return model


def train(args, build_model, model_name):
    """Train build_model() as args say; returns the final metadata."""
    from im2colnet.optim import SGD, CosineLR
    im2colnet.runtime.tune()   # this script owns its process: malloc and OpenBLAS settings for training
    if args.restart_lr is not None and not args.resume:
        sys.exit("--restart-lr: a warm restart continues a run; give --resume too")
    x_train, y_train, x_val, y_val, x_test, y_test = load_split(args)

    if args.resume:
        model, optimizer = im2colnet.load_model(args.resume, with_optimizer=True)
        meta = dict(model.metadata)
        history, start_epoch, elapsed = meta["history"], meta["epochs_done"], meta["training_seconds"]
        recorded = {**meta["settings"], "epochs": args.epochs}
        if recorded != {**settings(args), "schedule": recorded["schedule"]}:
            sys.exit(f"--resume: {args.resume} was trained with {meta['settings']}, not {settings(args)}")
        if args.restart_lr is not None:
            if args.epochs <= start_epoch:
                sys.exit(f"--restart-lr: --epochs {args.epochs} must exceed the {start_epoch} done")
            optimizer.base_lr = args.restart_lr
            optimizer.schedule = CosineLR(T_max=args.epochs - start_epoch, start=start_epoch)
            meta["settings"]["schedule"] += (f"; from epoch {start_epoch + 1} a warm restart: "
                                             f"cosine from lr {args.restart_lr} to 0 at epoch {args.epochs}")
        elif args.epochs != meta["epochs"]:
            # A run cut short (or extended) keeps its cosine decay ending at the new last epoch.
            optimizer.schedule = CosineLR(T_max=args.epochs)
            meta["settings"]["schedule"] += f"; from epoch {start_epoch + 1} cosine over {args.epochs}"
    else:
        model = build_model().reset_parameters(args.seed)
        optimizer = SGD(args.lr, momentum=0.9, nesterov=True, weight_decay=args.weight_decay,
                        schedule=CosineLR(T_max=args.epochs))
        history, start_epoch, elapsed = [], 0, 0.0
        meta = {"settings": settings(args)}
    run_settings = {**meta["settings"], "epochs": args.epochs}

    for epoch in range(start_epoch, args.epochs):
        began = time.perf_counter()
        rng = np.random.default_rng([args.seed, 1000 + epoch])
        x_epoch = augment(x_train, rng, args.shift, args.flip) if (args.shift or args.flip) else x_train
        logs = model.fit(x_epoch, y_train, epochs=epoch + 1, initial_epoch=epoch,
                         batch_size=args.batch_size, optimizer=optimizer, seed=args.seed,
                         verbose=args.verbose).history
        elapsed += time.perf_counter() - began
        test = model.evaluate(x_test, y_test)
        record = {"epoch": epoch + 1, "lr": logs["lr"][-1], "loss": logs["loss"][-1],
                  "accuracy": logs["accuracy"][-1]}
        if x_val is not None:
            val = model.evaluate(x_val, y_val)
            record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        record.update(test_loss=test["loss"], test_accuracy=test["accuracy"], seconds=round(elapsed, 1))
        history.append(record)
        shown = f", val acc {record['val_accuracy']:.4f}" if x_val is not None else ""
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {logs['loss'][-1]:.4f} "
              f"acc {logs['accuracy'][-1]:.4f}{shown}, test loss {test['loss']:.4f} "
              f"acc {test['accuracy']:.4f}, {elapsed:.0f} s", flush=True)
        meta = {
            "model": model_name,
            "dataset": args.dataset,
            "train_samples": int(len(x_train)),
            "validation_samples": int(args.validation),
            "test_samples": int(len(x_test)),
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            **({"val_accuracy": record["val_accuracy"]} if x_val is not None else {}),
            "epochs_done": epoch + 1,
            "epochs": args.epochs,
            "seed": args.seed,
            "settings": run_settings,
            "optimizer": {"type": type(optimizer).__name__, **optimizer.get_config()},
            "history": history,
            "training_seconds": round(elapsed, 1),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "script": f"examples/train_{model_name}.py",
        }
        model.metadata = {}
        model.save(args.out, metadata=meta)
        if args.checkpoint:
            model.save(args.checkpoint, metadata=meta, optimizer=optimizer)
    return model.metadata


def settings(args):
    """The options that define a training run (JSON-able), recorded in the metadata."""
    return {"dataset": args.dataset, "epochs": args.epochs, "batch_size": args.batch_size,
            "lr": args.lr, "momentum": 0.9, "nesterov": True, "weight_decay": args.weight_decay,
            "schedule": f"cosine over {args.epochs} epochs (per epoch)",
            "augmentation": {"shift": args.shift, "flip": bool(args.flip)}, "seed": args.seed,
            **({"validation": args.validation} if args.validation else {})}
