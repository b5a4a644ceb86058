"""PyTorch twins of the zoo's LeNet-5 and small VGG (nn.Sequential, same layer order), for the
interop tests; callers skip when torch is missing (pytest.importorskip)."""
import numpy as np


def torch_lenet5(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10))


def torch_vgg_small(torch):
    nn = torch.nn
    layers = []
    for c_in, c in ((1, 32), (32, 64), (64, 128)):
        for a in (c_in, c):
            layers += [nn.Conv2d(a, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        layers.append(nn.MaxPool2d(2))
    layers += [nn.Flatten(), nn.Dropout(0.3), nn.Linear(1152, 256), nn.ReLU(),
               nn.Dropout(0.3), nn.Linear(256, 10)]
    return nn.Sequential(*layers)


def in_eval_mode(torch, model, seed=0):
    """The model in inference mode, its batch-norm statistics made non-trivial (a test of them)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.5, generator=gen)
                module.running_var.uniform_(0.5, 2.0, generator=gen)
                module.weight.uniform_(0.5, 1.5, generator=gen)
                module.bias.normal_(0, 0.2, generator=gen)
    return model.eval()


def numpy_state(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def images(n, seed=0):
    return np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)
