"""An LSTM reads an MNIST digit row by row (28 steps of 28 pixels) and classifies it.

    python examples/lstm_mnist_rows.py                       # 6 epochs, hidden size 128
    python examples/lstm_mnist_rows.py --epochs 2 --hidden 64 --out lstm.h5

Trains on the training images in $IM2COLNET_DATA/mnist (../shared/data holds
the official 10k test set and a 22,699-image prefix of the training set) and
prints the test accuracy after every epoch and the wall time. A task that
needs memory: the class is only known after many rows.
"""
import argparse
import time

import im2colnet as inet
from im2colnet import datasets


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="folder with the MNIST IDX files")
    parser.add_argument("--out", default=None, help="save the trained model here (.h5)")
    args = parser.parse_args()

    x, y = datasets.load_mnist(args.data, "train")
    x_test, y_test = datasets.load_mnist(args.data, "test")
    x, x_test = x[:, 0], x_test[:, 0]            # (N, 28 rows, 28 pixels): rows are the time steps
    model = inet.Sequential([inet.LSTM(28, args.hidden), inet.LastTimeStep(), inet.Linear(args.hidden, 10)],
                            input_shape=(28, 28), name="lstm_mnist_rows")
    optimizer = inet.optim.Adam(args.lr, schedule=inet.optim.CosineLR(args.epochs))
    print(f"LSTM({args.hidden}) on MNIST rows: {len(x)} training and {len(x_test)} test images")
    start = time.perf_counter()
    history = model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, optimizer=optimizer,
                        validation_data=(x_test, y_test), verbose=2, seed=args.seed)
    seconds = time.perf_counter() - start
    accuracy = history.history["val_accuracy"][-1]
    print(f"test accuracy {accuracy:.4f} after {args.epochs} epochs, {seconds:.0f} s "
          f"(validation included)")
    if args.out:
        model.save(args.out, metadata={"dataset": "mnist", "test_accuracy": float(accuracy),
                                       "epochs": args.epochs, "seed": args.seed,
                                       "train_seconds": round(seconds, 1)})
        print(f"saved {args.out}")


if __name__ == "__main__":
    main()
