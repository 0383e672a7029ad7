"""Claims on units of work through the file system, so that several processes (``sweep
--workers K``, or sweeps started by hand on machines that share the folder) split a grid without
a coordinator, and a process killed at any moment leaves nothing that blocks a rerun.

A claim on ``path`` is an exclusive ``fcntl.flock`` lock on the file ``path.claim``, held by an
open file descriptor for as long as the claim lasts. The operating system drops the lock when the
process ends in any way, SIGKILL included, so a dead process's claim is free at once. Nothing is
judged from a pid: no window in which two processes both find one claim stale and one deletes
the other's fresh claim, no reused pid that keeps a claim alive, no claim of a process that died
on another host that makes :func:`exclusive` wait forever. A killed holder leaves its file
behind (it says ``host pid`` for a person who looks); the next claimant simply locks it.
:func:`release` unlinks the file before it unlocks it, and a claimant that locked a file which
meanwhile was unlinked or replaced opens the path again, so one name never has two holders.

Records and checkpoints are written through :func:`writing`: a temporary file beside the target,
locked the same way while it is written, then renamed over it (atomic), so a kill leaves the old
file or the new one, never half of one. :func:`remove_stale_temporaries` deletes the temporaries
that no process holds, whichever host wrote them.

Limits. The locks are advisory: they bind only the processes that take them (this module). They
belong to the open file description, so a child forked while a claim is held holds it too
until it exits: sweep workers are spawned, not forked, but DataLoader workers started (forked)
inside a claimed phase or a :func:`writing` block inherit its lock, so a claim whose process
died stays held until they exit too. Across hosts they
work only where the shared file system implements them. On NFS, Linux emulates ``flock`` with
the server's byte-range locks: that needs NFSv4, or NFSv3 with lockd running (a ``nolock`` mount
keeps locks local to each host, and then two hosts can hold one claim), and a host that crashes
keeps its locks until the server's lease expires (about 90 s on NFSv4). Byte-range locks do not
conflict within one process, so this module also refuses a second claim on a file the process
already holds. On other shared file systems (SMB, FUSE mounts) the locks may be local to each
host: check before sharing a results folder between machines there.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path

from . import distributed

HOST = socket.gethostname()
_held: dict[Path, int] = {}  # lock file -> the descriptor holding its lock, in this process


def _claim_file(path) -> Path:
    path = Path(path).absolute()
    return path.with_name(path.name + ".claim")


def _is_current(fd: int, file: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(file))
    except FileNotFoundError:
        return False


def _lock(file: Path, *, wait: bool, create: bool = True) -> int | None:
    """A descriptor holding the exclusive lock on ``file``, or None if another one holds it and
    ``wait`` is false (or, with ``create`` false, the file is gone). A file unlinked or replaced
    between our open and our lock was released by its holder: open the path again."""
    flags = os.O_RDWR | (os.O_CREAT if create else 0)
    while True:
        try:
            fd = os.open(file, flags, 0o644)
        except FileNotFoundError:
            if create:
                raise
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if _is_current(fd, file):
            return fd
        os.close(fd)


def _unlock(file: Path, unlink: bool) -> None:
    """Give up this process's lock on ``file``, unlinking it first if asked (while still locked,
    so nobody locks the old file and takes it for the current one)."""
    fd = _held.pop(file, None)
    if fd is None:
        return
    if unlink:
        with contextlib.suppress(FileNotFoundError):
            file.unlink()
    os.close(fd)


def _hold(file: Path, fd: int) -> None:
    _held[file] = fd
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{HOST} {os.getpid()}\n".encode(), 0)


def try_claim(path) -> bool:
    """Claim ``path`` for this process: True if it is now ours, False while a live process (this
    one included) holds it. A claim whose process died is free: its lock went with it."""
    claim = _claim_file(path)
    if claim in _held:
        return False
    claim.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock(claim, wait=False)
    if fd is None:
        return False
    _hold(claim, fd)
    return True


def release(path) -> None:
    """Give up this process's claim on ``path`` and delete its file; nothing if this process does
    not hold it (another process's claim is never touched)."""
    _unlock(_claim_file(path), unlink=True)


class PhaseBusy(Exception):
    """A shared phase that another live process is training, met inside
    :func:`phases_wait` ``(False)``: the caller has other work to take meanwhile."""


_phases_wait = True  # what shared_phase does when another process holds the phase


@contextlib.contextmanager
def exclusive(path, wait: bool = True):
    """Hold the claim on ``path`` for the block, waiting while a live process holds it (a shared
    phase, e.g. the dense model several runs start from: the others wait, then reuse it), or,
    with ``wait`` false, raising :class:`PhaseBusy` at once. The wait is the kernel's: it ends
    the moment the holder releases the claim or dies."""
    claim = _claim_file(path)
    if claim in _held:  # a second lock of our own would wait for ourselves forever
        raise RuntimeError(f"{path} is already claimed by this process; exclusive() does not nest")
    claim.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock(claim, wait=wait)
    if fd is None:
        raise PhaseBusy(path)
    _hold(claim, fd)
    try:
        yield
    finally:
        release(path)


@contextlib.contextmanager
def phases_wait(wait: bool):
    """Within the block, :func:`shared_phase` waits for a phase another live process holds
    (``wait`` true, the default everywhere) or raises :class:`PhaseBusy` (a sweep worker, which
    takes another grid point instead of idling while a dense model it needs is trained)."""
    global _phases_wait
    before, _phases_wait = _phases_wait, wait
    try:
        yield
    finally:
        _phases_wait = before


def shared_phase(path):
    """The claim a phase that several runs share (a dense model, a sparse-learning run) is
    trained under: :func:`exclusive` on ``path`` (waiting, unless inside
    :func:`phases_wait` ``(False)``), or none under DDP, where the ranks train it together."""
    if distributed.world_size() > 1:
        return contextlib.nullcontext()
    return exclusive(path, wait=_phases_wait)


@contextlib.contextmanager
def writing(path):
    """Write ``path`` atomically: yields the temporary file ``path.<pid>.tmp``, locked while the
    block writes it (so that :func:`remove_stale_temporaries`, on any host, leaves it alone),
    then renamed over ``path``. If the block raises, the temporary is deleted and ``path`` is
    left as it was."""
    path = Path(path).absolute()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    if tmp in _held:  # the same temporary: a second lock of our own would wait forever
        raise RuntimeError(f"{path} is already being written by this process; writing() of one "
                           "path does not nest")
    _held[tmp] = _lock(tmp, wait=True)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        _unlock(tmp, unlink=False)


def remove_stale_temporaries(folder) -> int:
    """Delete the ``*.<pid>.tmp`` files under ``folder`` that no process is writing (their lock
    is free: the writer died, on whatever host); returns how many."""
    removed = 0
    for tmp in Path(folder).absolute().glob("**/*.tmp"):
        pid = tmp.suffixes[-2].lstrip(".") if len(tmp.suffixes) >= 2 else ""
        if not pid.isdigit() or tmp in _held:
            continue
        fd = _lock(tmp, wait=False, create=False)
        if fd is None:
            continue
        try:
            tmp.unlink()  # still locked by us, so it is the file we found free
            removed += 1
        finally:
            os.close(fd)
    return removed
