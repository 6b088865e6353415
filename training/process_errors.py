"""An error that one process of a run finds stops every process, at the same point and with the same message.

The processes of a run meet in collectives (DDP's gradient all-reduce, the contrastive loss's gather of features,
barriers). A process that raises alone leaves the others waiting in the next one: until the timeout (30 minutes by
default), or, over gloo, until they fail on the closed connection; either way its message is lost among theirs. The
checks whose outcome can differ between processes therefore end in an agreement: each process brings its error, or
`None`, and every process raises the first one (lowest rank), or none does.

- `raise_together` at a point every process reaches once (the data set-up): the errors gathered with accelerate's
  `gather_object`.
- `main_process_first`: accelerate's, except that an error in the main process's turn (computing the spectrogram store)
  reaches the others through `broadcast_object_list` instead of leaving them at its barrier.
- `StepCheck` at every micro-batch (the store's background checksum, a non-finite crop in one process's rows): one
  integer flag reduced over a gloo group of the same processes, so that the check never waits for a GPU; the
  messages are gathered only when a flag is up.
"""

import os
import pickle
import sys
from contextlib import contextmanager

import torch
from accelerate.utils import broadcast_object_list, gather_object


def portable(error: BaseException | None) -> BaseException | None:
    """`error` as it can travel to another process: itself when it pickles back to the same message, else a
    `RuntimeError` (a `ValueError` for one) with its message."""
    if error is None:
        return None
    try:
        travels = str(pickle.loads(pickle.dumps(error))) == str(error)
    except Exception:  # noqa: BLE001  (an exception whose arguments do not rebuild it)
        travels = False
    return error if travels else (ValueError if isinstance(error, ValueError) else RuntimeError)(str(error))


def first_error(accelerator, error: BaseException | None) -> tuple[int, BaseException] | None:
    """Every process's `error` gathered (a collective: every process calls it): `(rank, error)` of the first process
    that has one, the same on every process, or `None`."""
    if accelerator.num_processes == 1:
        return None if error is None else (0, error)
    errors = gather_object([portable(error)])
    return next(((rank, found) for rank, found in enumerate(errors) if found is not None), None)


def raise_together(accelerator, error: BaseException | None) -> None:
    """Raises, on every process, the first process's error (its own, with its traceback, on that process); returns
    when no process has one. A collective: every process calls it."""
    found = first_error(accelerator, error)
    if found is None:
        return
    rank, shared = found
    raise error if rank == accelerator.process_index else shared


@contextmanager
def main_process_first(accelerator):
    """The main process runs the block first, then the others (accelerate's `main_process_first`); an error in the
    main process's turn is raised by every process without running the block, and one in another process's turn is
    raised by all once every turn is done."""
    if accelerator.num_processes == 1:
        yield
        return
    error = None
    if accelerator.is_main_process:
        try:
            yield
        except Exception as found:
            broadcast_object_list([portable(found)])
            raise
        broadcast_object_list([None])
    else:
        outcome = [None]
        broadcast_object_list(outcome)  # waits for the main process's turn
        if outcome[0] is not None:
            raise outcome[0]
        try:
            yield
        except Exception as found:  # noqa: BLE001  (raised by every process below)
            error = found
    raise_together(accelerator, error)


class StepCheck:
    """Called by every process at every micro-batch with its error (or `None`): raises the first process's on all of
    them at that micro-batch.

    The flags travel over a gloo group of the run's processes, made here (every process must make it): a CPU
    all-reduce of one integer, a few tens of microseconds between the processes of a machine, that never waits for
    a GPU's queue, whereas a flag on the device would wait for the work queued before it at every micro-batch.
    """

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.group = None
        if accelerator.num_processes > 1:
            self.group = torch.distributed.new_group(backend="gloo")

    def __call__(self, error: BaseException | None) -> None:
        if self.group is None:
            if error is not None:
                raise error
            return
        flag = torch.tensor([0 if error is None else 1], dtype=torch.int32)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX, group=self.group)
        if flag.item():
            raise_together(self.accelerator, error)


def exit_process(status: int) -> None:
    """Ends this process with `status`. After an error in a run of several processes, the process group's
    connections are left open (`accelerator.end_training` was never reached) and their background threads can
    still be running when the interpreter finalises: destroying them then aborts the process ("terminate called
    without an active exception", status -6) after the one-line message, one run in a few hundred. Such a process
    therefore ends at once, its output flushed, without finalising; it has no file left to close (every write is
    atomic). A run that ended normally, or of one process, exits as usual."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if status != 0 and distributed:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


__all__ = ["StepCheck", "exit_process", "first_error", "main_process_first", "portable", "raise_together"]
