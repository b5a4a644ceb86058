"""The distributed training runs of tests/test_distributed.py: data, model and settings,
shared by the ranks (tests/_mpi_worker.py) and by the one-process references in the tests."""
import numpy as np

import im2colnet as inet
from im2colnet import models
from im2colnet.losses import CrossEntropyLoss
from im2colnet.optim import SGD, Adam


def images(n, seed=0, classes=10, shape=(1, 28, 28)):
    """n random float64 images and labels (the same on every rank)."""
    rng = np.random.default_rng(seed)
    return rng.random((n,) + shape), rng.integers(0, classes, n)


def lenet():
    return models.lenet5().astype(np.float64).reset_parameters(0)


def small_bn_net():
    """Conv, batch norm (spatial), ReLU, pooling, then a linear layer with 1-D batch norm."""
    return inet.Sequential([
        inet.Conv2d(1, 4, 3, padding=1, bias=False), inet.BatchNorm2d(4), inet.ReLU(),
        inet.MaxPool2d(2), inet.Flatten(), inet.Linear(4 * 6 * 6, 16, bias=False), inet.BatchNorm1d(16),
        inet.ReLU(), inet.Linear(16, 5),
    ], input_shape=(1, 12, 12)).astype(np.float64).reset_parameters(1)


class Case:
    """One run: ``samples`` training images, ``epochs`` epochs of global batch ``batch_size``."""

    def __init__(self, model, samples, epochs, optimizer, batch_size=64, seed=3, validation=0,
                 shape=(1, 28, 28), classes=10, fail_step=None, initial_epoch=0):
        self.model, self.samples, self.epochs = model, samples, epochs
        self.optimizer, self.batch_size, self.seed = optimizer, batch_size, seed
        self.validation, self.shape, self.classes = validation, shape, classes
        self.fail_step, self.initial_epoch = fail_step, initial_epoch

    def loss(self):
        return CrossEntropyLoss()

    def data(self):
        """(x, y, validation_data or None)."""
        x, y = images(self.samples, 0, self.classes, self.shape)
        if not self.validation:
            return x, y, None
        return x, y, images(self.validation, 1, self.classes, self.shape)


CASES = {
    # The case: LeNet-5, 20 steps of global batch 64, float64.
    "lenet": Case(lenet, 64 * 20, 1, lambda: SGD(0.05, momentum=0.9)),
    # Batch norm; 4 full steps and a last one of 5 samples (3 + 2), two epochs (running
    # statistics averaged at each epoch's end), validation split over the ranks.
    "bn": Case(small_bn_net, 64 * 4 + 5, 2, lambda: Adam(1e-2), shape=(1, 12, 12), classes=5,
               validation=37),
    # Epoch 1 (of 0, 1, 2) on two ranks, from a one-process checkpoint of epoch 0; the last
    # step has one sample (rank 1 has none).
    "resume": Case(lenet, 4 * 48 + 1, 2, lambda: SGD(0.05, momentum=0.9), batch_size=48,
                   initial_epoch=1),
    # Rank 1 raises (or is killed) at step 5 of epoch 1 (0-based); checkpoints each epoch.
    "fault": Case(lenet, 64 * 8, 3, lambda: SGD(0.05), fail_step=5),
    "kill": Case(lenet, 64 * 8, 3, lambda: SGD(0.05), fail_step=5),
    # Rank 1 holds one sample fewer than rank 0: both refuse to start.
    "mismatch": Case(lenet, 64, 1, lambda: SGD(0.05)),
    # Rank 1 hangs at step 5 of epoch 1; rank 0 gives up after its 2 s timeout.
    "hang": Case(lenet, 64 * 8, 3, lambda: SGD(0.05), fail_step=5),
}


def model_state(model):
    """name -> copy of every parameter ("param/<i>/<name>") and buffer ("buffer/<i>/<name>")."""
    out = {f"param/{k}": v.copy() for k, v in model.parameters().items()}
    for i, layer in enumerate(model.layers):
        out.update({f"buffer/{i}/{k}": v.copy() for k, v in layer.buffers.items()})
    return out
