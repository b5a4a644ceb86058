"""Train the small VGG on Fashion-MNIST (or MNIST) and save it as an im2colnet model file.

    python examples/train_vgg_small.py --out models/vgg_small_fashion_mnist.h5 \\
        --checkpoint /tmp/vgg_small.ckpt.h5
    python examples/train_vgg_small.py --out models/vgg_small_fashion_mnist.h5 \\
        --checkpoint /tmp/vgg_small.ckpt.h5 --resume /tmp/vgg_small.ckpt.h5   # continue

An epoch over the 60,000 images takes minutes on a laptop-class CPU; the model
file is rewritten after every epoch, so an interrupted run still leaves the
last finished epoch (its metadata says how many epochs it had).
"""
from _training import parser, train

from im2colnet.models import vgg_small

if __name__ == "__main__":
    args = parser(__doc__.splitlines()[0], ["fashion-mnist", "mnist"],
                  dict(dataset="fashion-mnist", epochs=5, batch_size=64, lr=0.05,
                       weight_decay=5e-4, shift=1, flip=True)).parse_args()
    meta = train(args, vgg_small, "vgg_small")
    print(f"{args.out}: test accuracy {meta['test_accuracy']:.4f} after {meta['epochs_done']} "
          f"epochs, {meta['training_seconds']:.0f} s of training")
