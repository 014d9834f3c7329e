"""Helpers of the fault, bad-input and secret-leak suites: run the CLI (also under a pseudo
terminal, also in the background to be killed), watch every process's command line, list what a
run left on the hosts, and print one summary line per suite."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import yaml
from conftest import REPO, SUITE_SUMMARIES

FLEET = [sys.executable, "-m", "fleet.cli"]


def write_playbook(path: Path, plays: list[dict]) -> Path:
    path.write_text(yaml.safe_dump(plays, sort_keys=False))
    return path


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def start_fleet(*args: object, env: dict | None = None, stdout: int | None = subprocess.PIPE) -> subprocess.Popen:
    """The real CLI in the background, in its own process group (so a test can signal it)."""
    return subprocess.Popen(
        [*FLEET, *map(str, args)],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def run_in_pty(*args: object, env: dict | None = None, timeout: float = 120) -> tuple[int, str]:
    """The CLI with a terminal as stdout (so fleet shows its live view); returns (code, all output)."""
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [*FLEET, *map(str, args)],
        cwd=REPO,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", **(env or {})},
        stdin=child,
        stdout=child,
        stderr=child,
        start_new_session=True,
    )
    os.close(child)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    else:
        os.killpg(proc.pid, signal.SIGKILL)
    os.close(main)
    return proc.wait(10), b"".join(chunks).decode("utf-8", "replace")


class ProcessWatch:
    """Samples every process's command line (what `ps -ef` shows on the hosts, which are local
    sshd processes) until stopped; remembers the ones containing any of `needles`."""

    def __init__(self, needles: Iterable[str], interval: float = 0.02) -> None:
        self.needles = [n for n in needles if n]
        self.interval = interval
        self.samples = 0
        self.seen: set[str] = set()
        self.hits: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        me = str(os.getpid())
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit() or entry.name == me:
                    continue
                try:
                    raw = Path(entry.path, "cmdline").read_bytes()
                except OSError:
                    continue
                line = raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()
                if not line:
                    continue
                self.samples += 1
                self.seen.add(line)
                if any(n in line for n in self.needles):
                    self.hits.append(line)
            self._stop.wait(self.interval)


def leftovers(homes: Iterable[Path], patterns: Iterable[str] = (".fleet*", "*.fleet-*")) -> list[Path]:
    """Temp files fleet creates on hosts (`.fleet.XXXXXX`, `.fleet-download.*`, `x.fleet-1234abcd`)."""
    found: list[Path] = []
    for home in homes:
        for pattern in patterns:
            found += [p for p in home.rglob(pattern) if p.is_file() and p.parent.name != ".fleet"]
    return sorted(set(found))  # a name like .fleet-download.x matches both patterns


def one_line_error(stderr: str) -> bool:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return len(lines) == 1 and "Traceback" not in stderr


def summary(text: str) -> None:
    """One line shown at the end of the pytest run (the figures the README quotes)."""
    SUITE_SUMMARIES.append(text)
    print(text)
