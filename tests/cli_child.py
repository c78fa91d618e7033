"""The ``matrank`` command line as the kill tests run it in a child process.

``python cli_child.py THREADS HALT_AFTER FD ARGUMENTS...`` runs ``matrank ARGUMENTS`` on
the suite's deterministic clock with ``THREADS`` torch threads. With ``HALT_AFTER`` > 0
it stops after its ``HALT_AFTER``-th checkpoint write: the file is whole and renamed into
place, one byte goes to the pipe ``FD``, and the process waits there to be killed. The
parent reads that byte and sends SIGKILL: the kill lands at the write the test chose,
whatever the speed of the machine.
"""

from __future__ import annotations

import os
import sys
import threading


def main(argv: list[str]) -> int:
    import torch

    from matrank import _checkpoint
    from matrank.cli import main as cli
    from matrank.testing import stepping_clock

    threads, halt_after, fd = (int(value) for value in argv[:3])
    torch.set_num_threads(threads)
    write = _checkpoint.Store.write
    writes = 0

    def halting_write(store: _checkpoint.Store) -> None:
        nonlocal writes
        write(store)
        writes += 1
        if writes == halt_after:
            os.write(fd, b"w")
            threading.Event().wait()  # until the parent's SIGKILL

    _checkpoint.Store.write = halting_write  # type: ignore[method-assign]
    with stepping_clock():
        return cli(argv[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
