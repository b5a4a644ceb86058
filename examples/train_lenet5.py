"""Train LeNet-5 on MNIST or Fashion-MNIST and save it as an im2colnet model file.

    python examples/train_lenet5.py --dataset mnist --out models/lenet5_mnist.h5
    python examples/train_lenet5.py --dataset fashion-mnist --epochs 30 --flip --shift 1 \\
        --out models/lenet5_fashion_mnist.h5

The data is read with im2colnet.datasets (MNIST from $IM2COLNET_DATA/mnist,
Fashion-MNIST also from the Debian package dataset-fashion-mnist). The file's
metadata records the test accuracy on the full test set, the settings, the
per-epoch history, the date and the training time.
"""
from _training import parser, train

from im2colnet.models import lenet5

if __name__ == "__main__":
    args = parser(__doc__.splitlines()[0], ["mnist", "fashion-mnist"],
                  dict(dataset="mnist", epochs=20, batch_size=64, lr=0.05, weight_decay=5e-4,
                       shift=2, flip=False)).parse_args()
    meta = train(args, lenet5, "lenet5")
    print(f"{args.out}: test accuracy {meta['test_accuracy']:.4f} after {meta['epochs_done']} "
          f"epochs, {meta['training_seconds']:.0f} s of training")
