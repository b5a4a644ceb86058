"""Quickstart: load the pretrained LeNet-5, predict, fine-tune for one epoch, save, load back.

    python examples/quickstart.py [OUT.h5]

MNIST is read from $IM2COLNET_DATA/mnist (see the README for where to get it).
"""
import sys

import numpy as np

import im2colnet as inet
from im2colnet import datasets, models
from im2colnet.optim import SGD

out = sys.argv[1] if len(sys.argv) > 1 else "lenet5_finetuned.h5"

model = models.lenet5(pretrained=True)             # the MNIST weights shipped with im2colnet
print(model.summary())
x_test, y_test = datasets.load_mnist(split="test")    # x: (10000, 1, 28, 28) float32 in [0, 1]
print("predicted:", model.predict(x_test[:10]).argmax(axis=1), " true:", y_test[:10])
print("test accuracy:", model.evaluate(x_test, y_test)["accuracy"])

x_train, y_train = datasets.load_mnist(split="train")
model.fit(x_train, y_train, epochs=1, batch_size=64, optimizer=SGD(0.01, momentum=0.9), seed=0)
print("test accuracy after one more epoch:", model.evaluate(x_test, y_test)["accuracy"])

model.save(out, metadata={"dataset": "mnist", "note": "LeNet-5 fine-tuned for one epoch"})
again = inet.load_model(out)                          # architecture, weights and metadata
assert np.array_equal(again.predict(x_test[:100]), model.predict(x_test[:100]))
print("saved and reloaded", out)
