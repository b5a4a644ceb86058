"""Data-parallel training over MPI: ``model.fit(..., distributed=True)`` under ``mpiexec``.

    mpiexec -n 4 python train.py        # train.py calls model.fit(..., distributed=True)

Needs mpi4py and an MPI (``pip install "im2colnet[mpi]"``); only this module imports
mpi4py, and only code that asks for distribution imports this module.

Every rank runs the same script on the same data. ``fit`` then behaves as one process
training with ``batch_size`` samples per step (the global batch):
- rank 0's parameters, buffers and optimizer state, and its seed, go to every rank at the start;
- epoch e visits ``default_rng([seed, e]).permutation(N)`` on every rank; each global batch of
  B samples is cut into ``size`` consecutive pieces whose lengths differ by at most one
  (np.array_split), rank r takes piece r; a short last batch is cut the same way (a rank may
  get none), so each sample is used exactly once per epoch whatever the number of ranks;
- rank r's gradient is the mean over its n_r samples; the step's gradient
  g = sum_r (n_r / B) g_r, the mean over the whole global batch, is one MPI Allreduce (sum)
  of a preallocated flat buffer that also carries the loss and the number of correct answers;
- batch norm normalises each rank's piece with that piece's statistics (as Horovod and
  PyTorch's DistributedDataParallel do without SyncBatchNorm), every rank keeps its own
  running statistics during the epoch, and they are averaged over the ranks at its end;
- metrics are over the global batch (and validation is split over the ranks, then summed);
- progress bars and callbacks marked ``root_only`` (ModelCheckpoint) run on rank 0 alone.
Because the batch is global and the order depends only on the seed, a checkpoint written by
N ranks resumes on M ranks (or in one process) and trains the same.

A rank that raises stops every rank: it prints "rank R of P failed at epoch E, step S" and
calls MPI_Abort, which ends the whole job (mpiexec exits non-zero). A rank that waits longer
than ``timeout`` seconds for the others in any collective of the loop (one died without
MPI noticing, or hangs) raises, and so stops the job the same way.
"""
import os
import sys
import time

import numpy as np
from mpi4py import MPI

from ..runtime.blas import set_blas_threads
from ..runtime.threads import set_thread_count

__all__ = ["DataParallel", "shard", "threads_per_rank"]


def shard(index, rank, size):
    """Rank ``rank``'s piece of a global batch ``index``: the ``rank``-th of ``size``
    consecutive pieces whose lengths differ by at most one (the first ones are longer)."""
    n = len(index)
    start = rank * (n // size) + min(rank, n % size)
    return index[start:start + n // size + (rank < n % size)]


def threads_per_rank(comm):
    """Threads for this rank: the CPUs it may run on, shared with the ranks on the same node
    whose CPU sets overlap its own (one whole set each when mpiexec binds ranks to cores)."""
    mine = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else frozenset(range(os.cpu_count() or 1))
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        sets = node.allgather(mine)
    finally:
        node.Free()
    sharing = sum(1 for other in sets if other & mine)
    return max(1, len(mine) // sharing)


class DataParallel:
    """fit's hooks for synchronous data-parallel training over an MPI communicator
    (fit calls agree, start, shard, reduce_step, end_epoch, evaluate, fail; sets ``where``).

    comm: default MPI.COMM_WORLD. threads: threads of this rank's kernels and products;
    default: OMP_NUM_THREADS when set, else threads_per_rank(comm) (cores per node divided
    by the ranks on it). timeout: seconds one rank waits for the others in any collective of
    fit (a gradient average, an epoch's end) before it gives up and stops the job.
    """

    def __init__(self, comm=None, threads=None, timeout=600.0):
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.is_root = self.rank == 0
        self.timeout = float(timeout)
        if threads is None and not os.environ.get("OMP_NUM_THREADS"):
            threads = threads_per_rank(self.comm)
        if threads is not None:
            set_thread_count(threads)
            set_blas_threads(threads)
        self.where = None             # (epoch, step) of fit, for the failure message
        self._flat = None             # the gradient buffer (allocated at start)
        self._views = None
        self.allreduce_seconds = 0.0  # time spent in the step's Allreduce (waiting included)
        self.allreduce_calls = 0

    # -- waiting for the others -------------------------------------------------------
    def _wait(self, request, what):
        """Wait for a non-blocking collective: seconds waited; a TimeoutError naming ``what``
        after self.timeout seconds (a rank died without MPI noticing, or hangs)."""
        t0 = time.perf_counter()
        polls = 0
        while not request.Test():
            polls += 1
            if polls % 4096 == 0 and time.perf_counter() - t0 > self.timeout:
                raise TimeoutError(f"the other ranks did not join {what} within "
                                   f"{self.timeout:g} s (a rank died or hangs)")
        return time.perf_counter() - t0

    def _sum(self, array, what):
        """Sum ``array`` over the ranks, in place."""
        return self._wait(self.comm.Iallreduce(MPI.IN_PLACE, array, op=MPI.SUM), what)

    # -- the start ---------------------------------------------------------------------
    def agree(self, value):
        """Rank 0's value of an integer (the seed, the stop flag), on every rank."""
        box = np.array([value], dtype=np.int64)
        self._wait(self.comm.Ibcast(box, root=0), "the start" if self.where is None else
                   f"the end of epoch {self.where[0]}")
        return int(box[0])

    def start(self, model, optimizer, samples):
        """Every rank starts from rank 0's parameters, buffers and optimizer state; the flat
        gradient buffer is allocated: every parameter, then the loss and the correct count."""
        counts = np.zeros(self.size, dtype=np.int64)
        self._wait(self.comm.Iallgather(np.array([samples], dtype=np.int64), counts), "the start")
        if len(set(counts.tolist())) > 1:
            raise ValueError(f"x: every rank must train on the same samples; the ranks hold "
                             f"{counts.tolist()} samples")
        for layer in model.layers:
            for store in (layer.params, layer.buffers):
                for array in store.values():
                    self._wait(self.comm.Ibcast(array, root=0), "the start")
        state = self.comm.bcast(optimizer.state_dict() if self.is_root else None, root=0)
        if not self.is_root:
            optimizer.load_state_dict(state)
        params = model.parameters()
        self._flat = np.zeros(sum(p.size for p in params.values()) + 2, dtype=model.dtype)
        self._views, offset = {}, 0
        for name, p in params.items():
            self._views[name] = self._flat[offset:offset + p.size].reshape(p.shape)
            offset += p.size

    def shard(self, index):
        return shard(index, self.rank, self.size)

    # -- each step ---------------------------------------------------------------------
    def reduce_step(self, grads, loss, hits, count, total):
        """The global batch's (gradients, mean loss, correct answers) from this rank's
        (grads: name -> mean gradient over its ``count`` samples or None, loss, hits)."""
        weight = count / total
        for name, view in self._views.items():
            if grads is None:
                view.fill(0)
            else:
                np.multiply(grads[name], weight, out=view)
        self._flat[-2] = loss * weight
        self._flat[-1] = hits
        epoch, step = self.where
        self.allreduce_seconds += self._sum(
            self._flat, f"the gradient average of epoch {epoch}, step {step}")
        self.allreduce_calls += 1
        return self._views, float(self._flat[-2]), int(round(float(self._flat[-1])))

    # -- the end of an epoch -------------------------------------------------------------
    def end_epoch(self, model):
        """Average the batch-norm running statistics (every buffer) over the ranks."""
        buffers = [b for layer in model.layers for b in layer.buffers.values()]
        if not buffers:
            return
        flat = np.concatenate([b.ravel() for b in buffers]).astype(np.float64)
        self._sum(flat, f"the running statistics' average of epoch {self.where[0]}")
        flat /= self.size
        offset = 0
        for b in buffers:
            b[...] = flat[offset:offset + b.size].reshape(b.shape)
            offset += b.size

    def evaluate(self, model, x, y, loss):
        """model.evaluate over all of (x, y), each rank scoring its piece."""
        mine = shard(np.arange(x.shape[0]), self.rank, self.size)
        sums = np.zeros(3)
        if mine.size:
            scores = model.evaluate(x[mine], y[mine], loss=loss)
            sums[:] = scores["loss"] * mine.size, scores["accuracy"] * mine.size, mine.size
        self._sum(sums, f"the validation of epoch {self.where[0]}")
        return {"loss": sums[0] / sums[2], "accuracy": sums[1] / sums[2]}

    # -- failure -------------------------------------------------------------------------
    def fail(self, exc):
        """Stop every rank after this one raised ``exc``: say where, then MPI_Abort.
        Alone (one rank) it returns, and fit raises ``exc`` as usual."""
        if self.size == 1:
            return
        epoch, step = self.where or (None, None)
        place = ("before the first step" if epoch is None else
                 f"at the end of epoch {epoch} (0-based)" if step is None else
                 f"at epoch {epoch}, step {step} (0-based)")
        sys.stderr.write(f"im2colnet: rank {self.rank} of {self.size} failed {place}: "
                         f"{type(exc).__name__}: {exc}; stopping all ranks\n")
        sys.stderr.flush()
        # MPI_Abort tears the job down at once; mpiexec forwards our stderr through its
        # proxy, which may not have passed the message on yet (it was lost in ~1 run in 3)
        time.sleep(0.5)
        self.comm.Abort(1)
