"""PyTorch, the peer: its version, and its calls served by ``_torch_peer.py --serve`` in a
child process with the same Python (its own threads and allocator, never imported here)."""
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile

__all__ = ["torch_version", "PeerUnavailable", "TorchPeer"]

_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_torch_peer.py")


def torch_version():
    """The installed PyTorch's version (without importing it), or None."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


class PeerUnavailable(Exception):
    """A method that cannot run here (PyTorch not installed, its process failed, or it
    lacks a layer of the model)."""


class TorchPeer:
    """PyTorch's calls, set up and timed one at a time in a child process on `threads`
    threads (None: PyTorch's default; after the first request, the number it uses), so
    that they can take turns with ours::

        with TorchPeer(threads) as peer:
            peer.setup("fwd", {"layer": shape, "pass": "forward", "dtype": "float32", "seed": 0})
            seconds = peer.seconds("fwd", warmup=0.02)

    The child starts at the first request. Every request raises PeerUnavailable with
    the reason when PyTorch is not installed, when the child has failed (its last
    line on stderr), or when PyTorch cannot set up the measurement.
    """

    def __init__(self, threads=None):
        self.threads = threads
        self.version = None
        self._child = self._stderr = self._failure = None

    def setup(self, id, request):
        """Set up a measurement under id (a string), as request says (a set-up request of
        ``_torch_peer.py``)."""
        self._ask(dict(request, setup=id))

    def seconds(self, id, warmup=0.0):
        """Seconds of one call of the set-up under id, timed in the child after untimed
        calls of it for `warmup` seconds (see _timing.timed)."""
        return self._ask({"seconds": id, "warmup": warmup})["seconds"]

    def close(self):
        """End the child (it exits when its stdin closes)."""
        if self._child is None:
            return
        try:
            self._child.stdin.close()
        except OSError:   # the child is gone already
            pass
        try:
            self._child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
        self._child.stdout.close()
        self._stderr.close()
        self._child = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _start(self):
        """Start the child; its first line gives PyTorch's version and threads."""
        if torch_version() is None:
            raise PeerUnavailable("PyTorch is not installed")
        command = [sys.executable, _SCRIPT, "--serve"]
        if self.threads:
            command += ["--threads", str(self.threads)]  # as many cores as ours use
        self._stderr = tempfile.TemporaryFile("w+")   # a file: a chatty child never blocks
        try:
            self._child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=self._stderr, text=True)
        except OSError as exc:
            self._stderr.close()
            raise PeerUnavailable(f"the PyTorch process did not run ({exc})") from None
        hello = self._answer()
        self.version, self.threads = hello["version"], hello["threads"]

    def _ask(self, request):
        if self._failure is not None:
            raise self._failure
        try:
            if self._child is None:
                self._start()
            try:
                self._child.stdin.write(json.dumps(request) + "\n")
                self._child.stdin.flush()
            except OSError:   # the child is gone: _answer reads why
                pass
            return self._answer()
        except PeerUnavailable as exc:
            if self._child is None or self._child.poll() is not None:
                self._failure = exc   # no child left to ask
            raise

    def _answer(self):
        line = self._child.stdout.readline()
        if not line:
            self._child.wait()
            self._stderr.seek(0)
            last = (self._stderr.read().strip().splitlines()
                    or [f"exit code {self._child.returncode}"])[-1]
            raise PeerUnavailable(f"the PyTorch process failed: {last}")
        answer = json.loads(line)
        if "error" in answer:
            raise PeerUnavailable(answer["error"])
        return answer
