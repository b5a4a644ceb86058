"""Placeholder module: implemented by the engine/layers work this session."""


def maxpool2d_forward(*args, **kwargs):
    raise NotImplementedError("maxpool2d_forward")


def maxpool2d_backward(*args, **kwargs):
    raise NotImplementedError("maxpool2d_backward")


def avgpool2d_forward(*args, **kwargs):
    raise NotImplementedError("avgpool2d_forward")


def avgpool2d_backward(*args, **kwargs):
    raise NotImplementedError("avgpool2d_backward")
