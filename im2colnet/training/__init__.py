"""Training: the fit loop, its callbacks, the progress bar and Ctrl-C between steps."""
from .callbacks import Callback, EarlyStopping, History, LambdaCallback, ModelCheckpoint
from .fit import fit
from .interrupt import deferred_interrupt
from .progress import ProgressBar

__all__ = ["fit", "Callback", "History", "LambdaCallback", "EarlyStopping", "ModelCheckpoint",
           "ProgressBar", "deferred_interrupt"]
