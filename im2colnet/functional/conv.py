"""Placeholder module: implemented by the engine/layers work this session."""


def im2col(*args, **kwargs):
    raise NotImplementedError("im2col")


def col2im(*args, **kwargs):
    raise NotImplementedError("col2im")


def conv2d_forward(*args, **kwargs):
    raise NotImplementedError("conv2d_forward")


def conv2d_backward_data(*args, **kwargs):
    raise NotImplementedError("conv2d_backward_data")


def conv2d_backward_weights(*args, **kwargs):
    raise NotImplementedError("conv2d_backward_weights")
