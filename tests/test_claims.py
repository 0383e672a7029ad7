"""Claims under concurrency (dpm_lab/training/claims.py): of several processes racing for one claim
exactly one wins, a holder's death frees its claim at once (before anyone reaps the process, and
whatever its claim file says), another process's claim is never deleted, and temporary files are
removed only when no writer holds them, whichever host wrote them."""
import fcntl
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from dpm_lab.training import claims

fork = multiprocessing.get_context("fork")  # children only touch files: no torch, fast start
ROUNDS, RACERS = 1000, 6  # about 1 % of rounds gives two winners on 4c9a40c


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _racer(target, start, tried, released, wins):
    for _ in range(ROUNDS):
        start.wait()
        won = claims.try_claim(target)
        wins.put(won)
        tried.wait()  # every racer has tried while the winner still holds the claim
        if won:
            claims.release(target)
        released.wait()


def test_of_six_processes_racing_for_a_dead_process_claim_exactly_one_wins(tmp_path):
    target = tmp_path / "run.json"
    dead = _dead_pid()
    start, tried, released = (fork.Barrier(RACERS + 1) for _ in range(3))
    wins = fork.Queue()
    racers = [fork.Process(target=_racer, args=(target, start, tried, released, wins))
              for _ in range(RACERS)]
    for r in racers:
        r.start()
    try:
        for _ in range(ROUNDS):
            # a claim left by a process that died on this host, as a killed sweep leaves it
            (tmp_path / "run.json.claim").write_text(f"{claims.HOST} {dead}")
            start.wait(timeout=30)
            tried.wait(timeout=30)
            assert sum(wins.get(timeout=30) for _ in range(RACERS)) == 1
            released.wait(timeout=30)
    finally:
        for r in racers:
            r.kill()
            r.join()


def _hold(target, holding):
    assert claims.try_claim(target)
    holding.set()
    time.sleep(600)


def _start_holder(target):
    holding = fork.Event()
    holder = fork.Process(target=_hold, args=(target, holding))
    holder.start()
    assert holding.wait(timeout=30)
    return holder


def test_a_holder_killed_with_sigkill_frees_its_claim_before_it_is_reaped(tmp_path):
    target = tmp_path / "run.json"
    holder = _start_holder(target)
    assert not claims.try_claim(target)
    os.kill(holder.pid, signal.SIGKILL)
    os.waitid(os.P_PID, holder.pid, os.WEXITED | os.WNOWAIT)  # dead, left unreaped (a zombie)
    assert claims.try_claim(target)
    holder.join()
    claims.release(target)
    assert not (tmp_path / "run.json.claim").exists()


def _enter(target, entered):
    with claims.exclusive(target):
        entered.set()


def test_exclusive_waits_for_a_live_holder_and_enters_when_it_is_killed(tmp_path):
    target = tmp_path / "dense.json"
    holder = _start_holder(target)
    entered = fork.Event()
    waiter = fork.Process(target=_enter, args=(target, entered))
    waiter.start()
    try:
        assert not entered.wait(timeout=1)       # the holder lives: the waiter waits
        os.kill(holder.pid, signal.SIGKILL)      # not reaped: its pid stays in use
        assert entered.wait(timeout=10)
        waiter.join(timeout=10)
        assert waiter.exitcode == 0
    finally:
        for p in (holder, waiter):
            p.kill()
            p.join()


@pytest.mark.parametrize("left_by", ["another host", "a reused pid"])
def test_a_claim_file_nobody_holds_is_taken(tmp_path, left_by):
    target = tmp_path / "dense.json"
    owner = ("node17", 4242) if left_by == "another host" else (claims.HOST, os.getppid())
    (tmp_path / "dense.json.claim").write_text(f"{owner[0]} {owner[1]}")
    entered = fork.Event()
    waiter = fork.Process(target=_enter, args=(target, entered))
    waiter.start()
    try:
        assert entered.wait(timeout=10)          # does not wait for a process that is not there
    finally:
        waiter.kill()
        waiter.join()
    assert claims.try_claim(target)
    claims.release(target)


def _nest(target, refused):
    assert claims.try_claim(target) and not claims.try_claim(target)  # ours; a second one fails
    try:
        with claims.exclusive(target):
            pass
    except RuntimeError as e:
        if "already claimed by this process" in str(e):
            refused.set()


def test_a_claim_is_refused_twice_and_release_leaves_another_process_claim_alone(tmp_path):
    target = tmp_path / "run.json"
    refused = fork.Event()
    nested = fork.Process(target=_nest, args=(target, refused))
    nested.start()
    try:
        assert refused.wait(timeout=10)          # an error, not a wait for itself
    finally:
        nested.kill()
        nested.join()
    holder = _start_holder(target)
    try:
        claims.release(target)                   # not ours: nothing happens
        assert (tmp_path / "run.json.claim").exists() and not claims.try_claim(target)
    finally:
        holder.kill()
        holder.join()


def _lock_and_wait(path, holding):
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    holding.set()
    time.sleep(600)


def _write_and_hang(target, holding):
    with claims.writing(target) as tmp:
        tmp.write_text("{half")
        holding.set()
        time.sleep(600)


def test_a_temporary_its_writer_holds_is_kept_whatever_pid_its_name_carries(tmp_path):
    # a writer on another host: its pid means nothing here (no such process), its lock does
    remote = tmp_path / f"a.json.{_dead_pid()}.tmp"
    holding = fork.Event()
    remote_writer = fork.Process(target=_lock_and_wait, args=(remote, holding))
    remote_writer.start()
    try:
        assert holding.wait(timeout=30)
        assert claims.remove_stale_temporaries(tmp_path) == 0 and remote.exists()
    finally:
        remote_writer.kill()
        remote_writer.join()
    assert claims.remove_stale_temporaries(tmp_path) == 1 and not remote.exists()  # it died


def test_temporaries_of_dead_writers_go_and_those_being_written_stay(tmp_path):
    holding = fork.Event()
    killed = fork.Process(target=_write_and_hang, args=(tmp_path / "b.json", holding))
    killed.start()
    assert holding.wait(timeout=30)
    os.kill(killed.pid, signal.SIGKILL)      # killed in the middle of its temporary file
    killed.join()
    (tmp_path / f"c.json.{os.getpid()}.tmp").write_text("{half")  # unlocked: an older version's
    with claims.writing(tmp_path / "d.json") as own:               # this process, writing now
        own.write_text("{}")
        assert claims.remove_stale_temporaries(tmp_path) == 2
        assert [p.name for p in tmp_path.glob("*.tmp")] == [own.name]
    assert (tmp_path / "d.json").read_text() == "{}" and list(tmp_path.glob("*.tmp")) == []


def _write_twice(target, refused):
    with claims.writing(target) as tmp:
        tmp.write_text("outer")
        try:
            with claims.writing(target):
                pass
        except RuntimeError as e:
            if "already being written by this process" in str(e):
                refused.set()


def test_a_second_write_of_one_path_in_one_process_is_an_error_not_a_wait(tmp_path):
    """Both would lock the same temporary, and two locks of one process conflict: the second
    is refused, and the first completes."""
    target = tmp_path / "w.json"
    refused = fork.Event()
    writer = fork.Process(target=_write_twice, args=(target, refused))
    writer.start()
    try:
        assert refused.wait(timeout=10)
        writer.join(timeout=10)
        assert writer.exitcode == 0
    finally:
        writer.kill()
        writer.join()
    assert target.read_text() == "outer" and list(tmp_path.glob("*.tmp")) == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(ZeroDivisionError):
        with claims.writing(target) as tmp:
            tmp.write_text("new")
            1 / 0
    assert target.read_text() == "old" and list(tmp_path.glob("*.tmp")) == []
