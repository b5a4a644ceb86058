"""The one config round trip of layers, losses, optimizers and schedules.

``get_config()`` returns the keyword arguments of ``__init__`` (JSON-able);
``from_config(config)`` checks the keys against ``__init__`` (_checks.check_config)
and calls the class. Model files store these configs (docs/model-format.md).
"""
from ._checks import check_config

__all__ = ["Configurable"]


class Configurable:
    def get_config(self):
        """The keyword arguments of __init__ as a JSON-able dict."""
        return {}

    @classmethod
    def from_config(cls, config):
        """A new object from get_config()'s dict; unknown keys are a ValueError."""
        return cls(**check_config(cls, {} if config is None else config))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
