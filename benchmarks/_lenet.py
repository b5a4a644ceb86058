"""What the LeNet-5 benchmark scripts share: the network, and the loss/optimizer to train it."""
import im2colnet as inet


def lenet5():
    """Conv 1->6 5x5 pad 2, ReLU, MaxPool 2, Conv 6->16 5x5, ReLU, MaxPool 2, Flatten,
    Linear 400->120, ReLU, Linear 120->84, ReLU, Linear 84->10 (61,706 parameters)."""
    return inet.Sequential([
        inet.Conv2d(1, 6, 5, padding=2), inet.ReLU(), inet.MaxPool2d(2),
        inet.Conv2d(6, 16, 5), inet.ReLU(), inet.MaxPool2d(2), inet.Flatten(),
        inet.Linear(400, 120), inet.ReLU(), inet.Linear(120, 84), inet.ReLU(), inet.Linear(84, 10),
    ], input_shape=(1, 28, 28), name="lenet5")


def cross_entropy_and_sgd(lr, momentum):
    """(loss, optimizer) for the LeNet-5 scripts: CrossEntropyLoss and SGD with momentum."""
    from im2colnet.losses import CrossEntropyLoss
    from im2colnet.optim import SGD
    return CrossEntropyLoss(), SGD(lr, momentum=momentum)
