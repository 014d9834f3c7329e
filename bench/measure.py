"""Run one CLI process the way a user does and measure what they wait for: wall-clock time from
start to exit, the peak RSS of its largest process, and the peak summed RSS of its whole process
tree (Ansible forks a worker per host, so its largest process alone understates its memory)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
SAMPLE_EVERY = 0.1  # seconds between process-tree samples; cheap enough not to skew 2 cores


@dataclass(frozen=True)
class Measured:
    seconds: float
    exit_code: int
    max_rss_kib: int  # the largest single process of the tree (kernel's own accounting)
    tree_rss_kib: int  # the largest sum over the tree seen by sampling every SAMPLE_EVERY s
    stdout: str
    stderr: str


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found.extend(int(c) for c in fh.read().split())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return found


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE_KIB
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return 0


def tree_rss_kib(root: int) -> int:
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _rss_kib(pid)
        todo.extend(_children(pid))
    return total


def run_measured(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], logs: Path, timeout: float) -> Measured:
    """Run argv to completion (killed after `timeout` seconds); its output goes to files in logs."""
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / "stdout.txt", logs / "stderr.txt"
    peak = 0
    done = threading.Event()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
        )

        def sample() -> None:
            nonlocal peak
            while not done.wait(SAMPLE_EVERY):
                peak = max(peak, tree_rss_kib(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        killer = threading.Timer(timeout, lambda: _kill_group(proc.pid))
        killer.start()
        # wait4 (not Popen.wait) because it returns the child's rusage: ru_maxrss is the peak RSS
        # of the largest process among the child and the descendants it waited for.
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        killer.cancel()
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        seconds=seconds,
        exit_code=proc.returncode,
        max_rss_kib=int(usage.ru_maxrss),
        tree_rss_kib=max(peak, int(usage.ru_maxrss)),
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )


def _kill_group(pid: int) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
