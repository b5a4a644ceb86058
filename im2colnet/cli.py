"""The ``im2colnet`` command: im2colnet.apps.cli, also importable by this name."""
from .apps.cli import *  # noqa: F401,F403
from .apps.cli import main  # noqa: F401
