"""Train the small ResNet on Fashion-MNIST and save it as an im2colnet model file.

    python examples/train_resnet_small.py --out models/resnet_small_fashion_mnist.h5 \\
        --checkpoint /tmp/resnet_small.ckpt.h5

5,000 training images (a seeded random choice) are held out as the validation
set on which every setting was chosen; the model trains on the other 55,000
and the test set is only reported. The model file is rewritten after every
epoch (with its metadata), --checkpoint adds the optimizer's state for --resume.
"""
from _training import parser, train

from im2colnet.models import resnet_small

if __name__ == "__main__":
    args = parser(__doc__.splitlines()[0], ["fashion-mnist"],
                  dict(dataset="fashion-mnist", epochs=15, batch_size=128, lr=0.1,
                       weight_decay=5e-4, shift=2, flip=True, validation=5000)).parse_args()
    meta = train(args, resnet_small, "resnet_small")
    print(f"{args.out}: test accuracy {meta['test_accuracy']:.4f} (validation "
          f"{meta['val_accuracy']:.4f}) after {meta['epochs_done']} epochs, "
          f"{meta['training_seconds']:.0f} s of training")
