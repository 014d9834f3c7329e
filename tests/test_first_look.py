"""A play's first look at a host goes over one plain exec channel: no python3 agent, no host lock.

Counted where it happens, on real sshd hosts: the hosts' sshd logs (`Starting session:`, one per
SSH session) and an interpreter that notes every start of the agent on the host. A converged play
and `fleet facts` cost one session and no agent; the agent starts only for what must run (a
change, a command that always runs, a probe after the first batch). A change planned from that
unlocked look is planned again from a look under the host lock, so another run's change in
between is never lost. The plain channel keeps the agent's guarantees that matter for a probe:
Ctrl-C and the time limit end it, output beyond the cap is spilled whole."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_fleet, wait_until
from faultkit import start_fleet

from fleet.connection import HostLock, connect, lock_holder
from fleet.inventory import load_inventory

pytestmark = pytest.mark.ssh

COUNTED_PYTHON = """#!/bin/sh
# Notes every start of an interpreter through this path: the login user and who it runs as.
printf '%s %s\\n' "${{SUDO_USER:-$(id -un)}}" "$(id -un)" >> {log}
exec python3 "$@"
"""


def gone(pid: int, wait: float = 10.0) -> bool:
    def ended() -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    return wait_until(ended, wait)


@pytest.fixture(scope="module")
def counted(tmp_path_factory):
    """Two sshd hosts that log every session, whose inventory runs the agent through a python3
    that notes each start in `starts.log`."""
    from sshfleet import SSHFleet, allow_sudo

    root = Path(tempfile.mkdtemp(prefix="fleet-look-", dir="/tmp"))  # readable by the hosts' users
    root.chmod(0o755)
    fleet = SSHFleet(root / "fleet", 2, prefix="look", log_level="VERBOSE")
    sudoers = Path(f"/etc/sudoers.d/fleet-tests-look-{fleet.run_id}")
    allow_sudo([h.user for h in fleet.hosts], sudoers)
    log = root / "starts.log"
    log.touch(mode=0o666)
    log.chmod(0o666)
    python = root / "python3-counted"
    python.write_text(COUNTED_PYTHON.format(log=log))
    python.chmod(0o755)
    inventory = fleet.inventory(tmp_path_factory.mktemp("look") / "inv")
    data = yaml.safe_load((inventory / "hosts.yaml").read_text())
    data["all"]["vars"]["python_interpreter"] = str(python)
    (inventory / "hosts.yaml").write_text(yaml.safe_dump(data))
    try:
        fleet.start()
        yield fleet, inventory, log
    finally:
        fleet.stop()
        sudoers.unlink(missing_ok=True)
        fleet.remove_users()
        shutil.rmtree(root, ignore_errors=True)


def counts(counted, *args: object) -> dict[str, tuple[int, list[str]]]:
    """Run the CLI; per host: the SSH sessions its sshd started and the agents started on it
    (as whom), during that run."""
    fleet, _inventory, log = counted
    sizes = {h.name: (h.dir / "sshd.log").stat().st_size for h in fleet.hosts}
    started = log.stat().st_size
    result = run_fleet(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr

    def sessions(host) -> int:
        return (host.dir / "sshd.log").read_bytes()[sizes[host.name] :].count(b"Starting session:")

    def seen() -> dict[str, tuple[int, list[str]]]:
        starts = log.read_bytes()[started:].decode().splitlines()
        return {
            host.name: (sessions(host), sorted(line.split()[1] for line in starts if line.split()[0] == host.user))
            for host in fleet.hosts
        }

    last = seen()
    for _ in range(20):  # sshd writes its log lines asynchronously to the client's exit: let them settle
        time.sleep(0.05)
        now = seen()
        if now == last:
            break
        last = now
    return last


def test_a_converged_play_and_facts_cost_one_session_and_no_agent(counted, tmp_path):
    fleet, inventory, _ = counted
    login = {h.name: h.user for h in fleet.hosts}
    tasks = [
        {"directory": {"path": "~/look"}},
        {"copy": {"dest": "~/look/a.txt", "content": "a\n"}},
        {"line": {"path": "~/look/b.txt", "line": "b"}},
    ]
    always = {"command": "id -un", "register": "me", "changed_when": False}
    as_root = {"command": {"cmd": "true", "creates": "/"}, "become": True}
    book = tmp_path / "book.yaml"

    def run(play_tasks: list[dict]) -> dict[str, tuple[int, list[str]]]:
        book.write_text(yaml.safe_dump([{"hosts": "nodes", "tasks": play_tasks}]))
        return counts(counted, "run", book, "-i", inventory)

    for host in fleet.hosts:
        shutil.rmtree(host.home / "look", ignore_errors=True)
    # first run: the look over a plain channel, then the agent for the changes
    assert run(tasks) == {h: (2, [user]) for h, user in login.items()}
    # converged: the look alone, one request, no agent
    assert run(tasks) == {h: (1, []) for h in login}
    book.write_text(yaml.safe_dump([{"hosts": "nodes", "tasks": tasks}]))
    recap = [json.loads(line) for line in run_fleet("run", book, "-i", inventory, "--json").stdout.splitlines()]
    assert {e["host"]: e["commands"] for e in recap if e["event"] == "recap"} == {h: 1 for h in login}
    assert counts(counted, "facts", "-i", inventory) == {h: (1, []) for h in login}
    # a command that always runs needs the agent; so does a root probe (its own agent, under sudo)
    assert run([*tasks, always]) == {h: (2, [user]) for h, user in login.items()}
    assert run([*tasks, as_root]) == {h: (2, ["root"]) for h in login}
    for host in fleet.hosts:
        shutil.rmtree(host.home / "look", ignore_errors=True)
    assert run([*tasks, as_root]) == {h: (3, sorted(["root", user])) for h, user in login.items()}


def race(host, inventory: Path, tasks: list[dict], python: str, change: str) -> tuple[int, dict[str, dict]]:
    """Run A (the CLI) plays `tasks` plus a gate, a python check in A's first batch that blocks on
    a FIFO; run B holds the host lock, and once A's look is taken (the gate opens) makes `change`
    and lets A go on. A's exit status and task results."""
    gate = host.home / "gate"
    gate.unlink(missing_ok=True)
    os.mkfifo(gate, 0o600)
    shutil.chown(gate, host.user, host.user)
    wait_on_gate = "import os; p = os.path.expanduser('~/gate'); os.path.exists(p) and open(p).read()"
    # The gate goes right after the first task: in A's first batch, unless a later task ends it sooner.
    gated = [tasks[0], {"name": "gate", "python": {"venv": "/usr", "code": wait_on_gate}}, *tasks[1:]]
    book = host.home.parent / f"race-{host.name}.yaml"
    book.write_text(yaml.safe_dump([{"hosts": host.name, "gather_facts": False, "tasks": gated}]))
    other_run = connect(host.name, load_inventory(inventory).host(host.name).vars,
                        lock=HostLock("run-b", lock_holder(), wait=5))  # fmt: skip
    interpreter = f"python_interpreter={python}"
    run_a = start_fleet("run", book, "-i", inventory, "--json", "--lock-wait", 60, "-e", interpreter)
    try:
        assert other_run.run("true").ok  # run B holds the host lock
        writer = None

        def open_gate() -> bool:
            nonlocal writer
            try:
                writer = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)  # only once a reader has it open
            except OSError:
                return False
            return True

        assert wait_until(open_gate, 60), run_a.stderr.read() if run_a.poll() is not None else "A never looked"
        gate.unlink()  # later looks pass straight through
        assert other_run.run(change).ok  # B's change, after A's look, under the lock
        other_run.release_lock()
        os.write(writer, b"go\n")
        os.close(writer)
        out, err = run_a.communicate(timeout=120)
    finally:
        other_run.close()
        if run_a.poll() is None:
            run_a.kill()
        book.unlink(missing_ok=True)
    results = {e["task"]: e for e in map(json.loads, out.splitlines()) if e["event"] == "task_result"}
    return run_a.returncode, results | {"": {"output": out + err}}


@pytest.mark.parametrize("python", ["python3", "none"], ids=["agent", "no-python3"])
def test_a_change_planned_from_the_unlocked_look_is_planned_again_under_the_lock(ssh_fleet, ssh_inventory, python):
    """Run A looks (no lock) and would add its line to a missing file; run B, holding the host
    lock, adds its own line after A's look; A must plan from B's file, not from its look. Also
    on a host without python3, where a session running flock holds the lock."""
    host = ssh_fleet.host("node-03")
    shared = host.home / "relock.txt"
    shared.unlink(missing_ok=True)
    tasks = [{"name": "a line", "line": {"path": "~/relock.txt", "line": "a-line"}}]
    code, results = race(host, ssh_inventory, tasks, python, "echo b-line >> ~/relock.txt")
    assert code == 0, results[""]["output"]
    assert results["a line"]["status"] == "changed"
    assert shared.read_text() == "b-line\na-line\n"  # B's line survived: A planned from the file B left


@pytest.fixture
def plain_conn(ssh_fleet, ssh_inventory):
    inv = load_inventory(ssh_inventory)
    opened = []

    def make(name: str):
        conn = connect(name, inv.host(name).vars)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        conn.close()


@pytest.mark.parametrize("become", [False, True], ids=["login", "become"])
def test_interrupt_and_time_limit_end_a_plain_look_with_its_process_tree(plain_conn, become):
    conn = plain_conn("node-04")
    pidfile = f"/tmp/fleet-look-{os.getpid()}-{become}"
    done = []
    look = f"sleep 600 & echo $! > {pidfile}; wait"
    worker = threading.Thread(
        target=lambda: done.append(conn.run(look, become=become, observe_only=True, plain=True)), daemon=True
    )
    worker.start()
    assert wait_until(lambda: Path(pidfile).exists() and Path(pidfile).read_text().strip(), 30)
    pid = int(Path(pidfile).read_text())
    conn.interrupt()
    worker.join(15)
    assert done and done[0].interrupted and not done[0].ok
    assert gone(pid), "the look's process tree outlived the interrupt"
    Path(pidfile).unlink()
    result = conn.run(look, timeout=1, become=become, observe_only=True, plain=True)
    assert result.timed_out and result.exited == 124
    assert gone(int(Path(pidfile).read_text())), "the look's process tree outlived its time limit"
    Path(pidfile).unlink()
    assert (conn.sessions, conn.commands) == (2, 2)  # two plain channels, no agent


def test_a_plain_look_caps_and_spills_its_output_and_the_next_request_starts_the_agent(plain_conn, tmp_path):
    conn = plain_conn("node-01")
    conn.output_keep = 64 * 1024
    conn.output_dir = tmp_path / "out"
    result = conn.run("seq 1 1000000; echo done >&2", observe_only=True, plain=True)
    assert result.stderr == "done\n" and result.stdout.endswith("999999\n1000000\n")
    assert f"stdout: output too large: {result.dropped} bytes not kept in memory" in result.stdout
    (spilled,) = (tmp_path / "out").iterdir()
    assert result.spilled == (str(spilled),)
    assert spilled.read_bytes() == subprocess.run(["seq", "1", "1000000"], capture_output=True).stdout
    assert conn.sessions == 1 and conn.mode == "agent"
    agent = conn.run("echo $PPID").stdout  # anything that is not a plain look goes to the agent
    assert conn.run("echo $PPID", observe_only=True, plain=True).stdout == agent  # it runs now: no new channel
    assert conn.sessions == 2


@pytest.mark.parametrize("python", ["python3", "none"], ids=["agent", "no-python3"])
def test_a_change_decided_from_a_result_registered_without_the_lock_is_not_applied_once_it_is_stale(
    ssh_fleet, ssh_inventory, tmp_path, python
):
    """Run A registers what it saw without the host lock (`state`: old) and a later task acts on it
    (a command: no probe of its own to look again). Run B, holding the lock, changes the state
    after A's look. A must not act on the stale value: the task fails and says why, nothing runs,
    and an ignored failure does not make the value fresh for the next change."""
    host = ssh_fleet.host("node-02")
    state, acted = host.home / "state.txt", host.home / "acted.txt"
    acted.unlink(missing_ok=True)
    state.write_text("old\n")
    shutil.chown(state, host.user, host.user)
    read_state = "import os; print(open(os.path.expanduser('~/state.txt')).read().strip())"
    tasks = [
        {"name": "state", "python": {"venv": "/usr", "code": read_state}, "register": "state"},
        {"name": "act", "command": "sh -c 'echo acted-on-{{ state.stdout | trim }} >> ~/acted.txt'",
         "ignore_errors": True},
        {"name": "act again", "command": "sh -c 'echo again-on-{{ state.stdout | trim }} >> ~/acted.txt'"},
    ]  # fmt: skip
    code, results = race(host, ssh_inventory, tasks, python, "echo new > ~/state.txt")
    assert not acted.exists(), f"A acted on what it saw before B's change: {acted.read_text()!r}"
    assert code == 2, results[""]["output"]
    assert results["state"]["status"] == "ok" and results["act"]["status"] == "failed"
    assert results["act again"]["status"] == "failed"  # an ignored failure does not make it fresh
    assert "`state`" in results["act"]["message"] and "run again" in results["act"]["message"]
    # Unchallenged, the same play acts on what it registered (the check costs no failure).
    book = tmp_path / "unchallenged.yaml"
    book.write_text(yaml.safe_dump([{"hosts": host.name, "gather_facts": False, "tasks": tasks}]))
    done = run_fleet("run", book, "-i", ssh_inventory, "-e", f"python_interpreter={python}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert acted.read_text() == "acted-on-new\nagain-on-new\n"


@pytest.mark.parametrize("plain", [True, False], ids=["plain", "agent"])
def test_a_connection_lost_mid_spill_leaves_no_raw_output_on_disk(plain_conn, tmp_path, plain):
    """Output too large for memory is written raw to `<spill>.part` until the run log masks it;
    when the connection dies mid-command no result ever reaches the run log, so the raw file (a
    secret the command printed, unmasked) must not stay behind."""
    conn = plain_conn("node-01")
    conn.output_keep = 16 * 1024
    conn.output_dir = tmp_path / "out"
    pidfile = Path(f"/tmp/fleet-spill-{os.getpid()}-{plain}")  # writable by the host's user
    script = f"echo raw-secret-value; seq 1 200000; echo $$ > {pidfile}; sleep 600"
    errors = []

    def look() -> None:
        try:
            conn.run(script, observe_only=plain, plain=plain)
        except Exception as exc:  # the loss is what this test causes
            errors.append(exc)

    worker = threading.Thread(target=look, daemon=True)
    worker.start()
    assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 30)
    shell_pid = int(pidfile.read_text())
    group = os.getpgid(shell_pid)  # the script's process group: its `sleep` too
    session = shell_pid
    while Path(f"/proc/{session}/comm").read_text().strip() != "sshd":  # up to the host's sshd session
        session = int(Path(f"/proc/{session}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(session, 9)  # the connection dies mid-command
    worker.join(30)
    pidfile.unlink()
    if not gone(shell_pid, 5):
        os.kill(shell_pid, 9)
    with contextlib.suppress(ProcessLookupError):  # what this test started, so the host's user can be removed
        os.killpg(group, 9)
    assert errors and type(errors[0]).__name__ == "Unreachable", errors
    left = {p.name: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert not [name for name, data in left.items() if b"raw-secret-value" in data], sorted(left)


def test_a_retried_registered_look_is_confirmed_by_its_last_attempt_only(ssh_fleet, ssh_inventory, tmp_path):
    """`retries`/`until` registers its last attempt; an earlier attempt saw something else by design,
    so the first change after it must not take that for another run's change."""
    host = ssh_fleet.host("node-04")
    flag, out = host.home / "retry-flag", host.home / "retry-out.txt"
    flag.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    seen_then_set = "import os; p = os.path.expanduser('~/retry-flag'); e = os.path.exists(p); open(p, 'a'); print(e)"
    book = tmp_path / "book.yaml"
    book.write_text(yaml.safe_dump([{"hosts": host.name, "gather_facts": False, "tasks": [
        {"name": "wait", "python": {"venv": "/usr", "code": seen_then_set}, "register": "flag",
         "until": "'True' in flag.stdout", "retries": 3, "delay": 0},
        {"name": "act", "command": "sh -c 'echo {{ flag.attempts }} >> ~/retry-out.txt'"},
    ]}]))  # fmt: skip
    result = run_fleet("run", book, "-i", ssh_inventory, "--json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert out.read_text() == "2\n"
