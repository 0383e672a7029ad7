"""Claims on units of work through the file system, so that several processes (``sweep
--workers K``, or sweeps started by hand on machines that share the folder) split a grid without
a coordinator, and a process killed at any moment leaves nothing that blocks a rerun.

A claim on ``path`` is the file ``path.claim`` holding ``host pid``, created with ``O_EXCL``
(atomic: one process wins). It is removed when the work is done. A claim whose process is gone
(same host, pid not alive) is stale and is taken over; a claim of another host is trusted (it is
not ours to check). Records and checkpoints are themselves written atomically (a temporary file,
then a rename), so a kill leaves either the old file or the new one, never half of one; the
temporary files a killed process leaves are removed by :func:`remove_stale_temporaries`.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

from . import distributed

HOST = socket.gethostname()


def _claim_file(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".claim")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(claim: Path) -> bool:
    try:
        host, pid = claim.read_text().split()
    except (FileNotFoundError, ValueError):
        return False  # gone, or being written this instant: not stale
    return host == HOST and not _alive(int(pid))


def try_claim(path) -> bool:
    """Claim ``path`` for this process: True if it is now ours (taking over a stale claim)."""
    claim = _claim_file(path)
    claim.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if not _stale(claim):
                return False
            with contextlib.suppress(FileNotFoundError):
                claim.unlink()  # a dead process's claim; if two processes race here, O_EXCL
            continue            # above still lets only one of them create the new one
        with os.fdopen(fd, "w") as f:
            f.write(f"{HOST} {os.getpid()}")
        return True
    return False


def release(path) -> None:
    with contextlib.suppress(FileNotFoundError):
        _claim_file(path).unlink()


@contextlib.contextmanager
def exclusive(path, poll_s: float = 1.0):
    """Hold the claim on ``path`` for the block, waiting while a live process holds it (a shared
    phase, e.g. the dense model several runs start from: the others wait, then reuse it)."""
    while not try_claim(path):
        time.sleep(poll_s)
    try:
        yield
    finally:
        release(path)


def shared_phase(path):
    """The claim a phase that several runs share (a dense model, a sparse-learning run) is
    trained under: :func:`exclusive` on ``path``, or none under DDP, where the ranks train it
    together."""
    return exclusive(path) if distributed.world_size() == 1 else contextlib.nullcontext()


def remove_stale_temporaries(folder) -> int:
    """Delete ``*.<pid>.tmp`` files under ``folder`` whose writer (on this host) is gone; returns
    how many."""
    removed = 0
    for tmp in Path(folder).glob("**/*.tmp"):
        pid = tmp.suffixes[-2].lstrip(".") if len(tmp.suffixes) >= 2 else ""
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed += 1
    return removed
