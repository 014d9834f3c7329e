"""The fault suite: faults injected into real runs on real sshd hosts (a fleet of its own, since
the faults are destructive), each with assertions on what the run reported and on what the hosts
hold afterwards. At the end one line sums up: hosts, faults injected, survived, results lost, and
partial or temp files left (both must be 0).

Faults: sshd killed mid-task, a silent host (TCP accepts, never speaks), a banner then silence, a
hung command under `timeout:`, the controller SIGKILLed mid-copy / mid-template / mid-download, two
runs at once on the same hosts, SIGINT and SIGTERM to a run, and a probe hung in a play's first
look (a plain exec channel, no agent) ended by SIGINT and by its `timeout:`."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
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


# ---- the controller dies mid-transfer -----------------------------------------------------------------
class SlowFile(http.server.SimpleHTTPRequestHandler):
    """Serves BIG bytes slowly, or (while `stall` is set) half of them and then nothing."""

    stall = threading.Event()
    release = threading.Event()

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.headers.get("Range"):  # fleet's reachability probe asks for one byte
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 0-0/{BIG}")
            self.send_header("Content-Length", "1")
            self.end_headers()
            self.wfile.write(b"d")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(BIG))
        self.end_headers()
        chunk = b"d" * (1024 * 1024)
        for i in range(BIG // len(chunk)):
            if self.stall.is_set() and i == BIG // len(chunk) // 2:
                self.release.wait(60)  # a stuck download, until the test ends
                return
            self.wfile.write(chunk)
            time.sleep(0.02)


@pytest.fixture
def slow_web(fleet):
    server = http.server.ThreadingHTTPServer((f"{fleet.subnet}.1", 0), partial(SlowFile))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    SlowFile.stall.clear()
    SlowFile.release.clear()
    yield f"http://{fleet.subnet}.1:{server.server_address[1]}/big.bin"
    SlowFile.release.set()
    server.shutdown()
    server.server_close()


def controller_killed(book: Path, inv: Path, when: Callable[[int], bool]) -> tuple[int, str]:
    """Run fleet, SIGKILL it (its whole process group) once when(pid) is true; (code, stderr)."""
    run = start_fleet("run", book, "-i", inv, stdout=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: when(run.pid) or run.poll() is not None, 120), "the moment to kill never came"
        assert run.poll() is None, f"the run ended before it could be killed: {run.stderr.read()}"
        os.killpg(run.pid, signal.SIGKILL)
        return run.wait(10), ""
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(10)


@pytest.mark.parametrize("kind", ["copy", "template"])
def test_controller_killed_mid_upload(fleet, inv, tmp_path, tally, kind):
    old, new = b"old content\n", (b"n" * 63 + b"\n") * (BIG // 64)
    targets = [h.home / f"killed-{kind}.bin" for h in fleet.hosts]
    for path in targets:
        path.write_bytes(old)
    if kind == "copy":
        (tmp_path / "big.bin").write_bytes(new)
        task = {"copy": {"src": str(tmp_path / "big.bin"), "dest": f"~/killed-{kind}.bin"}}
    else:
        (tmp_path / "big.j2").write_text("{% for i in range(count) %}" + "n" * 63 + "\n{% endfor %}")
        task = {"template": {"src": str(tmp_path / "big.j2"), "dest": f"~/killed-{kind}.bin"}}
    book = write_playbook(tmp_path / "book.yaml", [{
        "hosts": "faults", "gather_facts": False, "vars": {"count": BIG // 64}, "tasks": [{"name": kind, **task}],
    }])  # fmt: skip
    tally.fault()
    code, _ = controller_killed(book, inv, lambda pid: sent_bytes(pid) > BIG)  # about a host's worth sent
    assert code == -signal.SIGKILL
    time.sleep(1)  # the hosts notice the controller is gone
    left = wait_for(lambda: not leftovers(homes(fleet)), 15) is None
    half = partial_files(targets, {old, new})
    tally.record(lost=0, left=half + len(leftovers(homes(fleet))))
    assert half == 0, "a target holds a half-written file"
    assert not left, f"temp files left after the controller died: {leftovers(homes(fleet))}"
    again = run_fleet("run", book, "-i", inv)
    assert again.returncode == 0, again.stdout + again.stderr
    assert all(p.read_bytes() == new for p in targets) and leftovers(homes(fleet)) == []
    tally.survived += 1


def test_controller_killed_mid_download(fleet, inv, tmp_path, tally, slow_web):
    targets = [h.home / "killed-download.bin" for h in fleet.hosts]
    for path in targets:
        path.unlink(missing_ok=True)
    book = write_playbook(tmp_path / "book.yaml", [{"hosts": "faults", "gather_facts": False, "tasks": [
        {"name": "download", "download": {"url": slow_web, "dest": "~/killed-download.bin"}},
    ]}])  # fmt: skip
    SlowFile.stall.set()

    def downloading(_pid: int) -> bool:
        temps = [p for p in leftovers(homes(fleet)) if ".fleet-download" in p.name]
        return len(temps) == HOSTS and all(p.stat().st_size > 1024 * 1024 for p in temps)

    tally.fault()
    code, _ = controller_killed(book, inv, downloading)
    assert code == -signal.SIGKILL
    # The remote download is stuck (the server stalls): a dead controller must not leave its temp file.
    left = wait_for(lambda: not leftovers(homes(fleet)), 15) is None
    half = partial_files(targets, set())
    count = len(leftovers(homes(fleet)))
    SlowFile.release.set()
    SlowFile.stall.clear()
    tally.record(lost=0, left=half + count)
    assert half == 0, "a half-downloaded file sits at the target"
    assert not left, f"temp files left after the controller died: {leftovers(homes(fleet))}"
    again = run_fleet("run", book, "-i", inv)
    assert again.returncode == 0, again.stdout + again.stderr
    assert all(p.stat().st_size == BIG for p in targets) and leftovers(homes(fleet)) == []
    tally.survived += 1


# ---- runs that collide or are stopped ------------------------------------------------------------------
def test_two_runs_at_once_lose_no_change(fleet, inv, tmp_path, tally):
    for h in fleet.hosts:
        (h.home / "managed.txt").write_text("# managed\n")

    def book(tag: str) -> Path:
        return write_playbook(tmp_path / f"{tag}.yaml", [{"hosts": "faults", "gather_facts": False, "tasks": [
            {"name": f"line {tag}", "line": {"path": "~/managed.txt", "line": f"{tag}-{{{{ item }}}}"},
             "loop": list(range(8))},
        ]}])  # fmt: skip

    tally.fault()
    runs = [start_fleet("run", book(tag), "-i", inv, "--json") for tag in ("a", "b")]
    outs = [r.communicate(timeout=300) for r in runs]
    want = {f"{t}-{i}" for t in ("a", "b") for i in range(8)}
    missing = {h.name: want - set((h.home / "managed.txt").read_text().split()) for h in fleet.hosts}
    # A run that could not take a host's lock says so (not a silent success); its lines are then
    # not "lost": nothing claimed them done.
    claimed = {
        (e["host"], tag)
        for (out, _), tag in zip(outs, ("a", "b"), strict=True)
        for e in events(out)
        if e["event"] in ("task", "task_result") and e["status"] in ("ok", "changed")
    }
    lost = sum(1 for host, lines in missing.items() for line in lines if (host, line[0]) in claimed)
    tally.record(lost=lost, left=len(leftovers(homes(fleet))))
    assert lost == 0, f"lines claimed done but missing: {missing}"
    assert all(r.returncode in (0, 2) for r in runs), outs
    for (out, _), r in zip(outs, runs, strict=True):
        if r.returncode:  # it waited its bounded time for the other run, then said who holds the host
            assert "locked by" in out
    assert leftovers(homes(fleet)) == []
    tally.survived += 1


# ---- the controller's own threads -----------------------------------------------------------------------
def test_live_view_with_many_hosts_at_once_never_deadlocks():
    """Hosts' threads report while the live view redraws itself (here: hundreds of times a second):
    neither may wait on the other for good. A terminal is a real pseudo-terminal, drained as a person's is."""
    from fleet.model import Status, TaskResult
    from fleet.report import LiveReporter

    main, child = pty.openpty()
    reporter = LiveReporter(os.fdopen(child, "w"))
    hosts = [f"host-{i:02d}" for i in range(8)]
    reporter.play_started("play", hosts)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            if select.select([main], [], [], 0.05)[0]:
                try:
                    os.read(main, 1 << 16)
                except OSError:
                    return

    def redraw() -> None:
        while not stop.is_set():
            reporter.live.refresh()
            # A breath between redraws (still ~100x a real live view's rate): without it this
            # thread takes the view's lock again before any waiting host's thread can, and the
            # test measured that starvation (30-60 s on a busy machine), not a deadlock.
            time.sleep(0.002)

    def host(name: str) -> None:
        for i in range(20):
            reporter.task_started(name, f"task {i}")
            reporter.task_done(TaskResult(name, f"task {i}", "command", Status.CHANGED, "changed"))

    workers = [threading.Thread(target=host, args=(h,), daemon=True) for h in hosts]
    for thread in [threading.Thread(target=drain, daemon=True), threading.Thread(target=redraw, daemon=True), *workers]:
        thread.start()
    deadline = time.monotonic() + 60
    for thread in workers:
        thread.join(max(0.1, deadline - time.monotonic()))
    stuck = sum(t.is_alive() for t in workers)
    stop.set()
    assert stuck == 0, f"{stuck} of {len(workers)} hosts' threads are stuck in the live view (a lock-order deadlock)"
    reporter.live.stop()


def stopped_run(
    fleet: SSHFleet, tally: Tally, marker: str, sig: signal.Signals | None, *args: object
) -> tuple[subprocess.Popen, str, str, bool]:
    """Start `fleet *args`, wait until `marker` runs on every host, send `sig` (None: the run ends
    by itself); the run, its output, and whether a remote process still runs afterwards."""
    run = start_fleet(*args)
    tally.fault()
    try:
        assert wait_for(lambda: all(user_processes(h, marker) for h in fleet.hosts), 30), "never started everywhere"
        if sig is not None:
            os.kill(run.pid, sig)
        out, err = run.communicate(timeout=90)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(10)
    still = wait_for(lambda: not any(user_processes(h, marker) for h in fleet.hosts), 15) is None
    tally.record(lost=0, left=len(leftovers(homes(fleet))) + int(still))
    return run, out, err, still


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_the_run_and_its_remote_commands(fleet, inv, tmp_path, tally, sig):
    marker = f"sleep 4{sig.value}.5"
    book = write_playbook(tmp_path / "book.yaml", [{"hosts": "faults", "gather_facts": False, "tasks": [
        {"name": "long", "shell": marker},
        {"name": "after", "copy": {"dest": "~/after-signal.txt", "content": "x\n"}},
    ]}])  # fmt: skip
    for h in fleet.hosts:
        (h.home / "after-signal.txt").unlink(missing_ok=True)
    run, out, err, still = stopped_run(fleet, tally, marker, sig, "run", book, "-i", inv)
    assert run.returncode in (130, 128 + sig.value), (run.returncode, out, err)  # 130: "interrupted"
    assert "Traceback" not in out + err
    assert "interrupted" in (out + err).lower() or "stopped" in (out + err).lower()
    assert not still, "the remote commands outlived the run"
    assert not any((h.home / "after-signal.txt").exists() for h in fleet.hosts)  # nothing ran after the stop
    assert leftovers(homes(fleet)) == []
    tally.survived += 1


@pytest.mark.parametrize("how", ["SIGINT", "timeout"])
def test_a_probe_hung_in_the_first_look_is_ended(fleet, inv, tmp_path, tally, how):
    """The first look goes over a plain exec channel, not the agent: Ctrl-C (an SSH signal to its
    process group) and the task's time limit (`timeout -k` on the host) must still end it."""
    marker = f"time.sleep(6{len(how)}1)"
    hung = {"name": "hung look", "python": {"venv": "/usr", "code": f"import time; {marker}"}}
    if how == "timeout":
        hung["timeout"] = 2
    book = write_playbook(tmp_path / "book.yaml", [{"hosts": "faults", "gather_facts": False, "tasks": [
        hung, {"name": "after", "copy": {"dest": "~/after-look.txt", "content": "x\n"}},
    ]}])  # fmt: skip
    for h in fleet.hosts:
        (h.home / "after-look.txt").unlink(missing_ok=True)
    sig = signal.SIGINT if how == "SIGINT" else None
    run, out, err, still = stopped_run(fleet, tally, marker, sig, "run", book, "-i", inv, "--json")
    assert "Traceback" not in out + err
    assert not still, "the hung probe outlived the run"
    assert not any((h.home / "after-look.txt").exists() for h in fleet.hosts)
    if how == "SIGINT":
        assert run.returncode == 130, (run.returncode, out, err)
    else:
        assert run.returncode == 2, (out, err)
        results = [e for e in events(out) if e["event"] == "task_result"]
        assert {(e["task"], e["status"]) for e in results} == {("hung look", "failed")}
        assert all("timed out after 2s" in e["message"] for e in results)
    tally.survived += 1
