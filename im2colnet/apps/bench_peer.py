"""PyTorch, the peer: its version, and its figures from ``_torch_peer.py`` run in a child
process with the same Python (its own threads and allocator, never imported here)."""
import importlib.metadata
import json
import os
import subprocess
import sys

__all__ = ["torch_version", "PeerUnavailable", "run_torch_peer"]


def torch_version():
    """The installed PyTorch's version (without importing it), or None."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


class PeerUnavailable(Exception):
    """A method that cannot run here (PyTorch not installed, or its process failed)."""


def run_torch_peer(request, threads, timeout=1800):
    """PyTorch's figures for a request (see ``_torch_peer.py``), from a child process
    running on `threads` threads.

    Raises PeerUnavailable with the reason when PyTorch is not installed or the
    child fails.
    """
    if torch_version() is None:
        raise PeerUnavailable("PyTorch is not installed")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_torch_peer.py")
    request = dict(request, threads=threads)  # as many cores as ours use
    try:
        child = subprocess.run([sys.executable, script], input=json.dumps(request),
                               capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PeerUnavailable(f"the PyTorch process did not run ({exc})") from None
    if child.returncode != 0:
        last = (child.stderr.strip().splitlines() or ["no message"])[-1]
        raise PeerUnavailable(f"the PyTorch process failed: {last}")
    return json.loads(child.stdout)
