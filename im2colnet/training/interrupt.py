"""Ctrl-C during training stops at a step boundary, never in the middle of an update.

While ``fit`` runs, SIGINT only raises a flag (when fit runs in the main
thread; elsewhere Python delivers no signals and nothing changes). The loop
checks the flag between steps, so the parameters and the optimizer state
always belong to a completed step, and then raises KeyboardInterrupt naming
where it stopped. Checkpoints written by callbacks at the end of earlier
epochs are complete files (saving is atomic). A second Ctrl-C while the
flag is up interrupts at once, as usual.
"""
import contextlib
import signal
import threading

__all__ = ["deferred_interrupt"]


class _Flag:
    requested = False


@contextlib.contextmanager
def deferred_interrupt():
    """Context manager yielding a flag whose ``requested`` turns True on the first SIGINT."""
    flag = _Flag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if flag.requested:            # the second Ctrl-C: the user insists
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        flag.requested = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
