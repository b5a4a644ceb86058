"""One rank of a distributed training run started by tests/test_distributed.py under mpiexec.

    mpiexec -n 2 python tests/_mpi_worker.py SCENARIO OUT_DIR

Every rank builds the same data and model from the scenario's recipe (tests/_mpi_cases.py),
then rank r > 0 scrambles its own weights, so the results also prove that the start
broadcasts rank 0's. Rank 0 writes OUT_DIR/result.npz: the final parameters and buffers,
the history, and what each rank saw.
"""
import os
import signal
import sys
import time

import numpy as np
from mpi4py import MPI

from im2colnet.runtime.threads import thread_count
from im2colnet.sequential import load_model
from im2colnet.training import LambdaCallback, ModelCheckpoint
from im2colnet.training.distributed import DataParallel
from _mpi_cases import CASES, model_state


def scramble(model, rank):
    rng = np.random.default_rng(1000 + rank)
    for p in model.parameters().values():
        p[...] = rng.standard_normal(p.shape)


def main(scenario, out):
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    case = CASES[scenario]
    x, y, val = case.data()
    if scenario == "mismatch" and rank == 1:
        x, y = x[1:], y[1:]
    # "bn" goes through fit's own distributed=True; the others pass the hooks object.
    parallel = True if scenario == "bn" else DataParallel(timeout=2 if scenario == "hang" else 600)
    threads = comm.gather(thread_count())
    callbacks = []
    kwargs = {}
    if scenario == "resume":   # from a checkpoint that one process wrote
        model, optimizer = load_model(os.path.join(out, "start.h5"), with_optimizer=True)
        kwargs["initial_epoch"] = case.initial_epoch
        callbacks.append(ModelCheckpoint(os.path.join(out, f"ckpt-{{epoch}}-rank{rank}.h5")))
    else:
        model, optimizer = case.model(), case.optimizer()
        if rank:
            scramble(model, rank)
    if scenario in ("fault", "kill", "hang"):
        callbacks.append(ModelCheckpoint(os.path.join(out, "ckpt-{epoch}.h5")))

        def on_batch_end(step, logs):
            if rank == 1 and model.epochs_done == 1 and step == case.fail_step:
                if scenario == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                if scenario == "hang":
                    time.sleep(600)
                raise RuntimeError(f"injected failure at step {step}")
        callbacks.append(LambdaCallback(
            on_batch_end=on_batch_end,
            on_epoch_end=lambda epoch, logs: setattr(model, "epochs_done", epoch + 1)))
        model.epochs_done = 0
    history = model.fit(x, y, epochs=case.epochs, batch_size=case.batch_size, optimizer=optimizer,
                        loss=case.loss(), validation_data=val, callbacks=callbacks, verbose=0,
                        seed=case.seed, distributed=parallel, **kwargs)
    if rank == 0:
        np.savez(os.path.join(out, "result.npz"), threads=np.array(threads),
                 allreduce_calls=getattr(parallel, "allreduce_calls", -1),
                 **model_state(model),
                 **{"history/" + k: np.array(v) for k, v in history.history.items()})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
