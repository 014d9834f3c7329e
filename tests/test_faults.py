"""The fault suite: faults injected into real runs on real sshd hosts (a fleet of its own, since
the faults are destructive), each with assertions on what the run reported and on what the hosts
hold afterwards. At the end one line sums up: hosts, faults injected, survived, results lost, and
partial or temp files left (both must be 0).

Faults: sshd killed mid-task, a silent host (TCP accepts, never speaks), a banner then silence, a
hung command under `timeout:`."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_fleet
from faultkit import events, leftovers, start_fleet, summary, write_playbook
from sshfleet import SSHFleet, SSHHost

pytestmark = [pytest.mark.ssh, pytest.mark.slow]

HOSTS = 4
BIG = 24 * 1024 * 1024  # large enough that a transfer is still going when the controller dies


@dataclass
class Tally:
    hosts: int = HOSTS
    injected: int = 0
    survived: int = 0
    lost: int = 0
    left: int = 0

    def fault(self) -> None:
        self.injected += 1

    def record(self, *, lost: int, left: int) -> None:
        """Counted before asserting, so a failing case still shows in the figures."""
        self.lost += lost
        self.left += left


@pytest.fixture(scope="module")
def tally() -> Iterator[Tally]:
    counts = Tally()
    yield counts
    summary(
        f"fault suite: {counts.hosts} hosts, {counts.injected} faults injected, {counts.survived} survived, "
        f"results lost {counts.lost}, partial or temp files left {counts.left}"
    )


@pytest.fixture(scope="module")
def fleet() -> Iterator[SSHFleet]:
    """A fleet of its own for destructive faults (sshd killed, controller killed)."""
    if os.geteuid() != 0:
        pytest.fail("the sshd hosts need root (to create their login users)")
    root = Path(tempfile.mkdtemp(prefix="fleet-faults-", dir="/tmp"))
    hosts = SSHFleet(root, HOSTS, prefix="fault")
    try:
        hosts.start()
        yield hosts
    finally:
        hosts.stop()
        hosts.remove_users()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def inv(fleet, tmp_path) -> Path:
    for path in leftovers(homes(fleet)):  # each case counts only what it leaves itself
        path.unlink()
    return fleet.inventory(tmp_path / "inv", group="faults")


def homes(fleet: SSHFleet) -> list[Path]:
    return [h.home for h in fleet.hosts]


def wait_for(check: Callable[[], object], timeout: float = 20.0, interval: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(interval)
    return None


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                ppid = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def kill_sshd(host: SSHHost) -> None:
    """SIGKILL the host's sshd: the listener and every sshd process serving a session."""
    assert host.pid is not None
    for pid in [host.pid, *descendants(host.pid)]:
        if comm(pid).startswith("sshd"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    host._proc.wait(5)
    host.pid = None


def user_processes(host: SSHHost, needle: str) -> list[int]:
    """Processes of the host's login user whose command line holds needle."""
    uid = int(subprocess.run(["id", "-u", host.user], capture_output=True, text=True).stdout)
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry.path).st_uid != uid:
                continue
            line = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in line:
            found.append(int(entry.name))
    return found


def sent_bytes(pid: int) -> int:
    """Bytes the controller process has sent over its TCP connections so far (`ss -tinp`)."""
    out = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True).stdout
    total, mine = 0, False
    for line in out.splitlines():
        if not line.startswith(("\t", " ")):
            mine = f"pid={pid}," in line
        elif mine:
            total += sum(int(word.split(":")[1]) for word in line.split() if word.startswith("bytes_sent:"))
    return total


def partial_files(paths: list[Path], whole: set[bytes]) -> int:
    """Targets that exist but hold neither an old nor the new content (a half-written file)."""
    digests = {hashlib.sha256(w).hexdigest() for w in whole}
    count = 0
    for path in paths:
        if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() not in digests:
            count += 1
    return count


# ---- the network and the hosts fail ------------------------------------------------------------------
def test_sshd_killed_mid_task(fleet, inv, tmp_path, tally):
    victim, others = fleet.hosts[0], fleet.hosts[1:]
    book = write_playbook(tmp_path / "book.yaml", [{"hosts": "faults", "gather_facts": False, "tasks": [
        {"name": "slow", "shell": "sleep 3"},
        {"name": "result", "copy": {"dest": "~/after-kill.txt", "content": "{{ inventory_hostname }}\n"}},
    ]}])  # fmt: skip
    run = start_fleet("run", book, "-i", inv, "--json")
    tally.fault()
    try:
        assert wait_for(lambda: user_processes(victim, "sleep 3"), 20), "the task never started on the victim"
        kill_sshd(victim)
        out, err = run.communicate(timeout=120)
    finally:
        if victim.pid is None:
            victim.start()
    recap = {e["host"]: e for e in events(out) if e["event"] == "recap"}
    lost = (
        sum(1 for h in others if (h.home / "after-kill.txt").read_text(errors="replace") != f"{h.name}\n")
        if all((h.home / "after-kill.txt").exists() for h in others)
        else len(others)
    )
    tally.record(lost=lost, left=len(leftovers(homes(fleet))))
    assert run.returncode == 4, out + err
    assert recap[victim.name]["unreachable"], recap
    assert all(not recap[h.name]["unreachable"] and recap[h.name]["failed"] == 0 for h in others)
    assert lost == 0 and leftovers(homes(fleet)) == []
    again = run_fleet("run", book, "-i", inv)  # the host is back: the next run converges it
    assert again.returncode == 0, again.stdout + again.stderr
    assert (victim.home / "after-kill.txt").read_text() == f"{victim.name}\n"
    tally.survived += 1


def silent_server(banner: bytes | None) -> tuple[socket.socket, threading.Event]:
    """A TCP port that accepts connections and then says nothing (after an SSH banner, if given)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            if banner:
                conn.sendall(banner)
            held.append(conn)  # kept open, silent
        for conn in held:
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, stop


@pytest.mark.parametrize("banner", [None, b"SSH-2.0-OpenSSH_9.6\r\n"], ids=["silent", "banner-then-silence"])
def test_host_that_never_answers(fleet, tmp_path, tally, banner):
    server, stop = silent_server(banner)
    port = server.getsockname()[1]
    inv = fleet.inventory(
        tmp_path / "inv", group="faults", extra_hosts={"mute": {"address": "127.0.0.1", "port": port}}
    )
    text = inv / "hosts.yaml"
    text.write_text(text.read_text().replace("connect_timeout: 5", "connect_timeout: 2"))
    book = write_playbook(tmp_path / "book.yaml", [{"hosts": "faults", "gather_facts": False, "tasks": [
        {"name": "mark", "copy": {"dest": "~/mute.txt", "content": "{{ inventory_hostname }}\n"}},
    ]}])  # fmt: skip
    tally.fault()
    try:
        result = run_fleet("run", book, "-i", inv, "--json", timeout=120)
    finally:
        stop.set()
        server.close()
    recap = {e["host"]: e for e in events(result.stdout) if e["event"] == "recap"}
    lost = sum(1 for h in fleet.hosts if not (h.home / "mute.txt").exists())
    tally.record(lost=lost, left=len(leftovers(homes(fleet))))
    assert result.returncode == 4, result.stdout + result.stderr
    reason = recap["mute"]["unreachable"]
    assert reason and "127.0.0.1" in reason, recap["mute"]
    assert "Traceback" not in result.stdout + result.stderr
    assert lost == 0 and leftovers(homes(fleet)) == []
    tally.survived += 1


def test_hung_command_under_timeout(fleet, inv, tmp_path, tally):
    host = fleet.hosts[1]
    book = write_playbook(tmp_path / "book.yaml", [{"hosts": host.name, "gather_facts": False, "tasks": [
        {"name": "hang", "shell": "sleep 600 & echo $! > ~/hang.pid; wait", "timeout": 2},
        {"name": "not reached", "command": "true"},
    ]}])  # fmt: skip
    tally.fault()
    result = run_fleet("run", book, "-i", inv, "--json", timeout=120)
    pid = int((host.home / "hang.pid").read_text())
    alive = wait_for(lambda: not Path(f"/proc/{pid}").exists(), 15) is None
    tally.record(lost=0, left=len(leftovers(homes(fleet))) + int(alive))
    assert result.returncode == 2, result.stdout + result.stderr
    tasks = [e for e in events(result.stdout) if e["event"] in ("task", "task_result")]
    assert [e["status"] for e in tasks if e["task"] == "hang"] == ["failed"]
    assert "timed out after 2s" in next(e["message"] for e in tasks if e["task"] == "hang")
    assert not any(e["task"] == "not reached" for e in tasks)
    assert not alive, f"the hung command (pid {pid}) still runs"
    tally.survived += 1
