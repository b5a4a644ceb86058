"""A small progress bar for training epochs, written to stderr (no dependency).

verbose=1: one line redrawn in place (at most every 0.1 s) with the bar,
loss, accuracy, images/s and ETA; verbose=2: one line per epoch; 0: silent.
"""
import sys
import time

__all__ = ["ProgressBar"]


def _duration(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


class ProgressBar:
    """Progress of one epoch of ``total`` samples.

    update(done, loss, accuracy) after each step; close(logs) at the end of the
    epoch prints the final line with the epoch's metrics (e.g. val_loss).
    """
    WIDTH = 24
    INTERVAL = 0.1      # seconds between redraws: drawing every step would cost time

    def __init__(self, total, epoch, epochs, verbose=1, stream=None):
        self.total, self.epoch, self.epochs = total, epoch, epochs
        self.verbose = verbose
        self.stream = sys.stderr if stream is None else stream
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._done = 0
        self._loss = self._accuracy = float("nan")
        self._width = 0     # length of the last line drawn: a shorter one must cover it

    def _rate(self, elapsed):
        return self._done / elapsed if elapsed > 0 else 0.0

    def update(self, done, loss, accuracy):
        self._done, self._loss, self._accuracy = done, loss, accuracy
        if self.verbose != 1:
            return
        now = time.perf_counter()
        if now - self._last_draw < self.INTERVAL and done < self.total:
            return
        self._last_draw = now
        elapsed = now - self.start
        rate = self._rate(elapsed)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        filled = int(self.WIDTH * done / max(self.total, 1))
        bar = "=" * filled + (">" if filled < self.WIDTH else "") + "." * (self.WIDTH - filled - 1)
        line = (f"Epoch {self.epoch + 1}/{self.epochs} [{bar[:self.WIDTH]}] "
                f"{done}/{self.total} loss {loss:.4f} acc {accuracy:.4f} "
                f"{rate:,.0f} img/s ETA {_duration(eta)}")
        self.stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        self.stream.flush()

    def close(self, logs):
        """The epoch's summary line: time, images/s and every metric in logs."""
        if self.verbose == 0:
            return
        elapsed = time.perf_counter() - self.start
        metrics = " ".join(f"{k} {v:.4f}" for k, v in logs.items()
                           if k not in ("time", "lr") and isinstance(v, float))
        line = (f"Epoch {self.epoch + 1}/{self.epochs} {self.total}/{self.total} "
                f"{_duration(elapsed)} {self._rate(elapsed):,.0f} img/s {metrics}")
        prefix = "\r" if self.verbose == 1 else ""
        self.stream.write(prefix + line.ljust(self._width) + "\n")
        self.stream.flush()
