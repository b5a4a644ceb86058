"""Placeholder module."""


class ModelFormatError(Exception):
    """A model file that cannot be verified."""


def load_model(path):
    raise NotImplementedError("load_model")
