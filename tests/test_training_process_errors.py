"""Tests of myna_training.process_errors's end of a process: after an error in a run of several processes, the
process ends with its status and its output, without finalising the process group's threads (which could abort it
with status -6, as one CI run did)."""

import subprocess
import sys
import textwrap

import pytest


PROGRAM = textwrap.dedent(
    """
    import sys, tempfile, torch
    from myna_training.process_errors import exit_process

    if sys.argv[1] == "distributed":
        store = tempfile.mktemp()
        torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
        torch.distributed.new_group(backend="gloo")  # as StepCheck's
    print("train.py: error: a message", end="", file=sys.stderr)  # no newline: still written
    print("partial output", end="")
    exit_process(int(sys.argv[2]))
    """
)


@pytest.mark.parametrize("kind", ["distributed", "single"])
@pytest.mark.parametrize("status", [0, 1])
def test_exit_process_keeps_the_status_and_the_output(kind, status):
    done = subprocess.run([sys.executable, "-c", PROGRAM, kind, str(status)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == status, done.stderr
    assert done.stdout == "partial output"
    assert done.stderr.startswith("train.py: error: a message")
