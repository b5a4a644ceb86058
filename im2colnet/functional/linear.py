"""Placeholder module: implemented by the engine/layers work this session."""


def linear_forward(*args, **kwargs):
    raise NotImplementedError("linear_forward")


def linear_backward_data(*args, **kwargs):
    raise NotImplementedError("linear_backward_data")


def linear_backward_weights(*args, **kwargs):
    raise NotImplementedError("linear_backward_weights")
