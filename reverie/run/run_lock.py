"""One training process per logdir: a second `reverie train` on a folder that a live run is
writing would interleave its checkpoints and replay chunks with the first one's.

`hold_run_lock(logdir)` takes an exclusive `flock` on `logdir/.lock` for the life of the run (the
kernel drops it when the process ends, even after `kill -9`, so a crashed run never leaves a stale
lock). The file stays empty, so a resume that has nothing to do leaves every byte of the logdir as
it was. Evaluation only reads and takes no lock.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import UserError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def hold_run_lock(logdir: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    path = Path(logdir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{logdir} is being trained by another process; wait for it to finish or stop "
                            "it, or use another logdir") from None
        yield
    finally:
        os.close(fd)  # closing drops the lock
