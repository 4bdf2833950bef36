"""hubtune.locking: one run per output folder (an O_EXCL lock file naming the holder; stale locks taken over)."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys

import pytest

from hubtune.errors import OutputDirError
from hubtune.locking import LOCK_NAME, OutputDirLock, output_dir_lock


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def live_process():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process
    process.kill()
    process.wait()


def write_lock(folder, pid, host=None, started="2026-01-01T10:00:00+00:00", command="hubtune finetune"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                                "started": started, "command": command}))


def test_the_lock_names_its_run_and_is_removed_on_exit_even_on_an_error(tmp_path):
    out = tmp_path / "out"
    with OutputDirLock(out, "finetune"):
        record = json.loads((out / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert record["command"] == "hubtune finetune" and record["started"]
        with pytest.raises(OutputDirError) as info:  # a second run, here the same process
            OutputDirLock(out, "gan").acquire()
        message = str(info.value)
        assert f"pid {os.getpid()}" in message and socket.gethostname() in message and record["started"] in message
        assert "in use by hubtune finetune" in message and "\n" not in message
    assert not (out / LOCK_NAME).exists()
    assert not out.exists(), "a folder the lock created and the run left empty is removed"
    with OutputDirLock(tmp_path / "new" / "deeper" / "out", "gan"):
        assert (tmp_path / "new" / "deeper" / "out" / LOCK_NAME).is_file()
    assert not (tmp_path / "new").exists()
    (out / "keep").mkdir(parents=True)
    for error in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(error):
            with output_dir_lock(out, "gan"):
                raise error
        assert not (out / LOCK_NAME).exists() and (out / "keep").is_dir()


def test_a_lock_of_a_live_process_blocks_and_is_left_alone(tmp_path, live_process):
    out = tmp_path / "out"
    write_lock(out, live_process.pid, started="2026-12-03T18:00:00+00:00")
    before = (out / LOCK_NAME).read_bytes()
    with pytest.raises(OutputDirError, match=rf"pid {live_process.pid} on {socket.gethostname()}, started 2026-12-03"):
        OutputDirLock(out, "finetune").acquire()
    assert (out / LOCK_NAME).read_bytes() == before


def test_a_lock_from_another_host_blocks_and_says_how_to_clear_it(tmp_path):
    out = tmp_path / "out"
    write_lock(out, dead_pid(), host="some-other-node")
    with pytest.raises(OutputDirError, match=rf"on some-other-node.*delete {LOCK_NAME}|delete .*{LOCK_NAME}"):
        OutputDirLock(out, "gan").acquire()


def test_a_stale_lock_of_a_killed_run_is_taken_over_with_a_note(tmp_path, capsys):
    out = tmp_path / "out"
    pid = dead_pid()
    write_lock(out, pid)
    with OutputDirLock(out, "gan"):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    note = capsys.readouterr().out
    assert f"pid {pid}" in note and "no longer running" in note and "takes the output folder over" in note
    assert not (out / LOCK_NAME).exists()
    # an empty lock (a run killed between creating and writing it) is stale once old enough
    (out / LOCK_NAME).write_text("")
    with pytest.raises(OutputDirError, match="starting"):
        OutputDirLock(out, "gan").acquire()
    os.utime(out / LOCK_NAME, (0, 0))
    with OutputDirLock(out, "gan"):
        pass


def test_a_lock_another_run_took_over_is_not_removed_by_the_first(tmp_path):
    out = tmp_path / "out"
    lock = OutputDirLock(out, "gan").acquire()
    write_lock(out, 1, command="hubtune finetune")  # replaced behind its back
    lock.release()
    assert json.loads((out / LOCK_NAME).read_text())["command"] == "hubtune finetune"


def test_the_output_folder_problems_are_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirError, match="is a file, not a folder"):
        OutputDirLock(tmp_path / "file", "gan").acquire()
    (tmp_path / "link").symlink_to(tmp_path / "missing")
    with pytest.raises(OutputDirError, match="symbolic link .*missing.*does not exist"):
        OutputDirLock(tmp_path / "link", "gan").acquire()
    if os.geteuid() != 0:
        readonly = tmp_path / "ro"
        readonly.mkdir()
        readonly.chmod(0o500)
        try:
            with pytest.raises(OutputDirError, match="cannot be written"):
                OutputDirLock(readonly, "gan").acquire()
        finally:
            readonly.chmod(0o700)
    with output_dir_lock(tmp_path / "rank1", "gan", enabled=False):
        assert not (tmp_path / "rank1").exists()


def _contend(folder, barrier, done, results):
    barrier.wait()
    try:
        lock = OutputDirLock(folder, "gan").acquire()
    except OutputDirError:
        results.put("refused")
        return
    results.put("locked")
    done.wait(60)  # hold it until every process has tried
    lock.release()


def test_of_several_processes_started_together_exactly_one_gets_the_folder(tmp_path):
    ctx = multiprocessing.get_context("fork")
    n = 4
    barrier, done, results = ctx.Barrier(n), ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_contend, args=(tmp_path / "out", barrier, done, results)) for _ in range(n)]
    for worker in workers:
        worker.start()
    outcomes = sorted(results.get(timeout=60) for _ in range(n))
    done.set()
    for worker in workers:
        worker.join(timeout=60)
    assert outcomes == ["locked"] + ["refused"] * (n - 1)
    assert all(worker.exitcode == 0 for worker in workers)
    assert not (tmp_path / "out" / LOCK_NAME).exists()
