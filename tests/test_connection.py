"""The persistent agent against real sshd hosts (and the local connection): one session per host,
whole process trees ended on timeout and on interrupt, scripts that run only when whole, temp
files removed when the controller dies, capped output, streamed uploads, reconnecting once, the
one-shot fallback for hosts without python3, and known_hosts shared by concurrent processes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import paramiko
import pytest
import yaml
from conftest import REPO, wait_until

from fleet.connection import (
    BRACED_MAX,
    OUTPUT_KEEP,
    HostLock,
    HostLocked,
    LocalConnection,
    SSHConnection,
    SSHOptions,
    TransferFailed,
    connect,
    fingerprint,
    lock_holder,
    oneshot_request,
)
from fleet.inventory import load_inventory
from fleet.model import Unreachable

pytestmark = pytest.mark.ssh


def gone(pid: int, wait: float = 8.0) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def conn_to(ssh_inventory):
    inv = load_inventory(ssh_inventory)
    opened = []

    def make(name: str, **extra):
        conn = connect(name, {**inv.host(name).vars, **extra.pop("vars", {})}, **extra)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        conn.close()


# ---- one session, many commands --------------------------------------------------------------------
def test_commands_share_one_session_and_become_adds_one(conn_to, ssh_fleet):
    conn = conn_to("node-01")
    agents = {conn.run("echo $PPID").stdout for _ in range(20)}
    assert len(agents) == 1 and conn.sessions == 1 and conn.commands == 20
    assert conn.run("id -un", become=True).stdout == "root\n"
    assert conn.run("id -un", become=True).stdout == "root\n"
    assert conn.run("id -un").stdout == f"{ssh_fleet.host('node-01').user}\n"
    assert conn.sessions == 2
    # binary-safe output, exit status, stderr, environment per command
    result = conn.run("printf 'a\\000b\\377'; echo oops >&2; exit 7", env={"X": "1"})
    assert (result.stdout.encode("utf-8", "replace")[:3], result.stderr, result.exited) == (b"a\x00b", "oops\n", 7)
    assert conn.run('echo "$X"', env={"X": "a 'b' $c"}).stdout == "a 'b' $c\n"
    assert conn.run('echo "${X-unset}"').stdout == "unset\n"  # environment does not leak between commands


def test_the_script_never_shows_in_argv(conn_to, ssh_fleet):
    conn = conn_to("node-02")
    secret = "s3cret-" + os.urandom(4).hex()
    result = conn.run(f": {secret}; ps -eo args")
    assert result.ok and "ps -eo args" in result.stdout
    assert [line for line in result.stdout.splitlines() if secret in line] == []


def test_the_script_reaches_no_child_and_a_large_one_still_runs(conn_to):
    """A script up to 96 KiB reaches the agent's shell in its environment (no `cat` to start), which
    the shell drops before anything runs; a larger one (or one with a NUL byte) comes on stdin."""
    conn = conn_to("node-02")
    secret = "s3cret-" + os.urandom(4).hex()
    seen = conn.run(f": {secret}; env; sh -c env; stat -c %a /proc/$$/environ")
    assert seen.ok and "PATH=" in seen.stdout
    assert "FLEET_SCRIPT" not in seen.stdout and secret not in seen.stdout
    assert seen.stdout.endswith("\n400\n")  # the shell's own first environment: its user (and root) only
    how = "tr '\\0' ' ' </proc/$$/cmdline; echo"
    assert "FLEET_SCRIPT" in conn.run(how).stdout
    big = "".join(f": {'x' * 90} {i}\n" for i in range(2000)) + how + "\necho done $((6 * 7))\n"
    assert len(big) > 150_000
    ran = conn.run(big).stdout
    assert "$(cat)" in ran and ran.endswith("\ndone 42\n")
    assert conn.run("printf 'a\\0b' | od -c | head -n1 # \0").stdout.split()[1:4] == ["a", "\\0", "b"]


# ---- process trees: timeout and interrupt ----------------------------------------------------------
def test_timeout_ends_the_whole_tree_even_children_that_left_the_group(conn_to):
    conn = conn_to("node-03")
    for become in (False, True):
        started = time.monotonic()
        result = conn.run("setsid sleep 600 & echo $!; sleep 600 & echo $!; wait", timeout=1, become=become)
        assert result.timed_out and result.exited == 124 and time.monotonic() - started < 10
        pids = [int(p) for p in result.stdout.split()]
        assert len(pids) == 2 and all(gone(p) for p in pids), pids
    assert conn.run("echo still here").stdout == "still here\n"


def test_interrupt_stops_every_running_command_now(conn_to):
    conns = [conn_to("node-01"), conn_to("node-02")]
    results: dict[tuple[int, bool], object] = {}

    def work(i, conn, become):
        results[(i, become)] = conn.run(
            f"trap '' TERM; sleep 600 & echo $! > /tmp/fleet-int-{os.getpid()}-{i}-{become}; wait", become=become
        )

    threads = [threading.Thread(target=work, args=(i, c, b)) for i, c in enumerate(conns) for b in (False, True)]
    for t in threads:
        t.start()
    pidfiles = [Path(f"/tmp/fleet-int-{os.getpid()}-{i}-{b}") for i in range(2) for b in (False, True)]
    assert wait_until(lambda: all(p.exists() and p.read_text().strip() for p in pidfiles))
    started = time.monotonic()
    for conn in conns:
        conn.interrupt()
    for t in threads:
        t.join(15)
    assert time.monotonic() - started < 10
    assert all(r.interrupted and not r.ok for r in results.values()) and len(results) == 4
    for pidfile in pidfiles:
        assert gone(int(pidfile.read_text())), pidfile
        pidfile.unlink()
    assert all(c.run("echo ok").stdout == "ok\n" for c in conns)


# ---- the agent dies ----------------------------------------------------------------------------------
def test_agent_killed_between_commands_is_restarted_once(conn_to):
    conn = conn_to("node-04")
    agent = int(conn.run("echo $PPID").stdout)
    os.kill(agent, 9)
    assert gone(agent)
    assert conn.run("echo back").stdout == "back\n"
    assert conn.sessions == 2


def test_agent_killed_mid_command_is_unreachable_not_rerun(conn_to, ssh_fleet):
    conn = conn_to("node-04")
    marker = ssh_fleet.host("node-04").home / "ran-once"
    marker.unlink(missing_ok=True)
    with pytest.raises(Unreachable, match="while running a command"):
        conn.run(f"echo x >> {marker}; kill -9 $PPID; sleep 5")
    assert marker.read_text() == "x\n"  # ran once, never again behind our back


# ---- framed scripts: a controller killed mid-transfer runs nothing -------------------------------------
KILLED_CONTROLLER = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from fleet import connection
from fleet.connection import connect
from fleet.inventory import load_inventory

inv = load_inventory({inv!r})
conn = connect({host!r}, {{**inv.host({host!r}).vars, **{extra!r}}})
conn.run("true")  # the agent (or the transport) is up
sent = [0]
real = connection._ChannelStream.write

def write(self, data):
    if sent[0] + len(data) > {cut}:
        real(self, data[: {cut} - sent[0]])
        os.kill(os.getpid(), signal.SIGKILL)  # the controller dies mid-transfer
    sent[0] += len(data)
    real(self, data)

connection._ChannelStream.write = write
{action}
"""


def kill_controller_mid_transfer(ssh_inventory, host: str, action: str, cut: int, extra: dict | None = None):
    code = KILLED_CONTROLLER.format(
        repo=str(REPO), inv=str(ssh_inventory), host=host, extra=extra or {}, cut=cut, action=action
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr


def test_a_script_cut_off_mid_transfer_never_runs(ssh_fleet, ssh_inventory):
    host = ssh_fleet.host("node-01")
    marker = host.home / "half-ran"
    marker.unlink(missing_ok=True)
    script = f"{f'touch {marker}'!r} + '\\n: ' + 'x' * 4_000_000 + '\\necho end\\n'"  # built in the child
    kill_controller_mid_transfer(ssh_inventory, "node-01", f"conn.run({script})", cut=1_000_000)
    time.sleep(1.5)
    assert not marker.exists()


@pytest.mark.parametrize("padding", [8_000, 4_000_000], ids=["braced", "length-framed"])
def test_a_one_shot_script_cut_off_mid_transfer_never_runs(ssh_fleet, ssh_inventory, padding):
    host = ssh_fleet.host("node-02")
    marker = host.home / "half-ran-oneshot"
    marker.unlink(missing_ok=True)
    braced = oneshot_request(b"x" * padding)[0] == "exec sh"
    assert braced == (padding < BRACED_MAX)  # each framing is the one under test once
    script = f"{f'touch {marker}'!r} + '\\n: ' + 'x' * {padding} + '\\necho end\\n'"
    action = textwrap.dedent(f"""
        import paramiko
        real_sendall = paramiko.Channel.sendall
        def sendall(self, data):
            real_sendall(self, data[: len(data) // 4])
            os.kill(os.getpid(), signal.SIGKILL)
        paramiko.Channel.sendall = sendall
        conn.run({script})
    """)
    kill_controller_mid_transfer(ssh_inventory, "node-02", action, cut=10**12, extra={"python_interpreter": "none"})
    time.sleep(1.5)
    assert not marker.exists()


# ---- uploads: streamed, atomic, temp files gone even when the controller dies ---------------------------
def test_put_streams_a_file_atomically_and_keeps_modes(conn_to, ssh_fleet, tmp_path):
    conn = conn_to("node-03")
    home = ssh_fleet.host("node-03").home
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3_000_000))
    conn.put(big, "~/sub/dir/big.bin", 0o640)
    target = home / "sub" / "dir" / "big.bin"
    assert target.read_bytes() == big.read_bytes() and target.stat().st_mode & 0o777 == 0o640
    conn.put(b"small", "~/sub/dir/big.bin")  # no mode given: the file keeps its mode
    assert target.read_bytes() == b"small" and target.stat().st_mode & 0o777 == 0o640
    assert conn.get("~/sub/dir/big.bin") == b"small"
    conn.put(b"root's", "/root/fleet-put-test", become=True)
    assert Path("/root/fleet-put-test").read_bytes() == b"root's"
    Path("/root/fleet-put-test").unlink()
    with pytest.raises(TransferFailed, match="Permission denied"):
        conn.put(b"x", "/root/not-yours")
    assert [p.name for p in (home / "sub" / "dir").iterdir()] == ["big.bin"]
    assert conn.sessions == 2


def test_temp_files_go_when_the_controller_dies_mid_upload(ssh_fleet, ssh_inventory, tmp_path):
    host = ssh_fleet.host("node-04")
    folder = host.home / "uploads"
    big = tmp_path / "big.bin"
    big.write_bytes(b"z" * 8_000_000)
    kill_controller_mid_transfer(ssh_inventory, "node-04", f"conn.put({str(big)!r}, '~/uploads/big.bin')", 3_000_000)
    assert wait_until(lambda: folder.exists() and not any(folder.iterdir())), list(folder.iterdir())


def agent_with_a_listed_temp_file(conn, home: Path):
    """The agent's pid, and what lists the `.fleet-download.*` files left in `home`."""
    agent = int(conn.run("echo $PPID").stdout)
    # a command's temp file, listed where the agent looks (as the download task does)
    conn.run('t=$(mktemp ~/.fleet-download.XXXXXX) && echo "$t" >> "$FLEET_TEMP_LIST"')
    leftovers = lambda: [p for p in home.iterdir() if p.name.startswith(".fleet-download.")]  # noqa: E731
    assert len(leftovers()) == 1
    return agent, leftovers


def test_the_next_agent_removes_what_a_killed_agent_left(conn_to, ssh_fleet, tmp_path):
    agent, leftovers = agent_with_a_listed_temp_file(conn_to("node-04"), ssh_fleet.host("node-04").home)
    os.kill(agent, 9)  # no chance to tidy up
    assert gone(agent) and len(leftovers()) == 1
    other = conn_to("node-04")
    assert other.run("true").ok and leftovers() == []


def test_an_agent_that_ends_normally_removes_its_listed_temp_files_and_its_list(conn_to, ssh_fleet):
    host = ssh_fleet.host("node-04")
    conn = conn_to("node-04")
    agent, leftovers = agent_with_a_listed_temp_file(conn, host.home)
    conn.close()  # the agent sees its stdin end and tidies up itself
    assert gone(agent)
    assert leftovers() == []
    assert [p.name for p in (host.home / ".fleet" / "tmp").iterdir() if p.name.startswith(f"{agent}-")] == []


# ---- output kept in memory ----------------------------------------------------------------------------
def test_output_is_capped_in_memory_and_spilled_whole(conn_to, tmp_path):
    conn = conn_to("node-01")
    conn.output_keep = 64 * 1024
    result = conn.run("seq 1 1000000")  # 6.9 MB
    assert len(result.stdout) < 3 * 64 * 1024
    assert result.stdout.startswith("1\n2\n") and result.stdout.endswith("999999\n1000000\n")
    assert f"stdout: output too large: {result.dropped} bytes not kept in memory]" in result.stdout
    conn.output_dir = tmp_path / "out"
    result = conn.run("seq 1 1000000; echo done >&2")
    assert result.stderr == "done\n"
    (spilled,) = (tmp_path / "out").iterdir()  # raw until the run log masks it (test_..._run_log_folder)
    assert result.spilled == (str(spilled),) and spilled.name == f"node-01.{conn.commands}.stdout.part"
    assert spilled.read_bytes() == subprocess.run(["seq", "1", "1000000"], capture_output=True).stdout
    assert oct(spilled.stat().st_mode & 0o777) == "0o600"
    assert f"full output in {str(spilled).removesuffix('.part')}]" in result.stdout


# ---- hosts without python3 ----------------------------------------------------------------------------
def test_host_without_python_falls_back_to_one_framed_session_per_command(conn_to):
    conn = conn_to("node-02", vars={"python_interpreter": "/nonexistent/python3"})
    assert conn.run("echo one").stdout == "one\n" and conn.mode == "one-shot"
    assert conn.run("echo two", become=True).stdout == "two\n"
    result = conn.run("sleep 600", timeout=1)
    assert result.timed_out
    conn.put(b"data", "~/oneshot.txt", 0o600)
    assert conn.get("~/oneshot.txt") == b"data"
    # one to find there is no python3, then one per command, put and get
    assert (conn.commands, conn.sessions) == (3, 1 + 3 + 2)


@pytest.mark.parametrize(
    ("python", "padding"),
    [("none", 0), ("none", 2 * BRACED_MAX), ("python3", 0), ("python3", 100 * 1024)],
    ids=["one-shot-braced", "one-shot-length-framed", "agent-env", "agent-stdin"],
)
def test_a_script_runs_as_written_on_every_path(conn_to, python, padding):
    """Exit codes, /dev/null as the script's input, a last line without a newline, `exit`
    part-way, a here-doc holding `}`, and a syntax error that runs none of the script, with the
    script's own line number: the same on the agent and one-shot paths, however framed."""
    conn = conn_to("node-02", vars={"python_interpreter": python})
    pad = f": {'x' * padding}\n" if padding else ""
    line = 3 if padding else 2

    result = conn.run(f"{pad}cat; echo in=$?\n# a last line without a newline")
    assert conn.mode == ("one-shot" if python == "none" else "agent")
    assert (result.stdout, result.exited) == ("in=0\n", 0)  # cat read nothing: not the rest of the script
    result = conn.run(f"{pad}echo a; exit 3\necho never")
    assert (result.stdout, result.exited) == ("a\n", 3)
    broken = conn.run(f"{pad}echo first\nif then\n")
    assert (broken.stdout, broken.exited) == ("", 2) and f"{line}:" in broken.stderr, broken.stderr
    heredoc = conn.run(f"{pad}cat <<'EOF'\n}}\nEOF\necho after")
    assert heredoc.stdout == "}\nafter\n"


# ---- the host lock --------------------------------------------------------------------------------------
def test_host_lock_waits_then_names_the_holder(conn_to):
    holder = conn_to("node-03", lock=HostLock("run-one", lock_holder(), wait=1))
    assert holder.run("true").ok
    waiter = conn_to("node-03", lock=HostLock("run-two", lock_holder(), wait=1))
    started = time.monotonic()
    with pytest.raises(HostLocked, match=r"locked by run run-one \(.*@.*, pid \d+, since .* UTC\); waited 1s"):
        waiter.run("true")
    assert time.monotonic() - started >= 1
    same_run = conn_to("node-03", lock=HostLock("run-one", lock_holder(), wait=1))
    assert same_run.run("true").ok  # two connections of one run to one host do not lock each other out
    holder.release_lock()  # the runner does this when the host finished a play
    assert waiter.run("true").ok
    with pytest.raises(HostLocked, match=r"locked by run run-two \("):
        holder.run("true")  # its next play must wait in turn
    waiter.close()  # released when the agent ends, however it ends
    assert conn_to("node-03", lock=HostLock("run-three", lock_holder(), wait=5)).run("true").ok


# ---- known_hosts -----------------------------------------------------------------------------------------
def test_accept_new_host_keys_from_two_processes_writes_each_key_once(ssh_fleet, ssh_inventory, tmp_path):
    known = tmp_path / "known_hosts"
    inv = ssh_fleet.inventory(tmp_path / "inv-new")
    text = (inv / "hosts.yaml").read_text().replace(str(ssh_fleet.known_hosts), str(known))
    (inv / "hosts.yaml").write_text(text)
    argv = [sys.executable, "-m", "fleet.cli", "facts", "-i", str(inv), "--accept-new-host-keys", "--json"]
    procs = [subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    for proc in procs:
        proc.communicate(timeout=120)
        assert proc.returncode == 0
    lines = known.read_text().splitlines()
    assert len(lines) == len(ssh_fleet.hosts) == len(set(lines))


def test_changed_host_key_shows_the_openssh_sha256_fingerprint(ssh_fleet, tmp_path):
    host = ssh_fleet.host("node-01")
    other = ssh_fleet.host("node-02")
    known = tmp_path / "known_hosts"
    known.write_text(f"[{host.address}]:{host.port} {' '.join(other.host_public_key)}\n")  # the wrong key
    options = SSHOptions(
        address=host.address, port=host.port, user=host.user, key=str(ssh_fleet.client_key),
        known_hosts=str(known), ssh_config="",
    )  # fmt: skip
    conn = SSHConnection("node-01", options)
    with pytest.raises(Unreachable) as caught:
        conn.run("true")
    printed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(host.dir / "ssh_host_ed25519_key.pub")],
        capture_output=True,
        text=True,
    ).stdout.split()[1]
    assert printed.startswith("SHA256:") and f"got ssh-ed25519 {printed})" in str(caught.value)
    key = paramiko.Ed25519Key(filename=str(host.dir / "ssh_host_ed25519_key"))
    assert fingerprint(key) == printed


def test_the_transport_asks_for_aes_gcm_and_still_reaches_a_server_without_it(ssh_fleet, tmp_path):
    """fleet prefers AES-GCM (an AEAD cipher: no per-packet MAC compared in Python); a server that
    offers none (here a second sshd of node-03 limited to aes256-ctr) is reached as before."""
    from sshfleet import SSHD, free_port

    host = ssh_fleet.host("node-03")

    def listening(address: str, port: int) -> bool:
        try:
            socket.create_connection((address, port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def connected(port: int, known: Path) -> SSHConnection:
        options = SSHOptions(
            address=host.address, port=port, user=host.user, key=str(ssh_fleet.client_key),
            known_hosts=str(known), ssh_config="",
        )  # fmt: skip
        conn = SSHConnection("node-03", options)
        assert conn.run("echo hi").stdout == "hi\n"
        return conn

    usual = connected(host.port, ssh_fleet.known_hosts)
    try:
        assert usual._conn.transport.remote_cipher == "aes128-gcm@openssh.com"
    finally:
        usual.close()
    port = free_port(host.address)
    known = tmp_path / "known_hosts"
    known.write_text(f"[{host.address}]:{port} {' '.join(host.host_public_key)}\n")
    log = open(tmp_path / "sshd.log", "wb")  # noqa: SIM115 - the child's
    argv = [SSHD, "-D", "-e", "-f", str(host.dir / "sshd_config"), "-o", f"Port={port}", "-o", "Ciphers=aes256-ctr"]
    sshd = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    try:
        assert wait_until(lambda: listening(host.address, port))
        plain = connected(port, known)
        try:
            assert plain._conn.transport.remote_cipher == "aes256-ctr"
        finally:
            plain.close()
    finally:
        os.killpg(sshd.pid, 15)
        sshd.wait(10)
        log.close()


# ---- the local connection: the same agent -------------------------------------------------------------------
def test_local_connection_has_the_same_interface(tmp_path):
    conn = LocalConnection()
    try:
        assert {conn.run("echo $PPID").stdout for _ in range(5)} != set() and conn.sessions == 1
        result = conn.run("setsid sleep 600 & echo $!; wait", timeout=1)
        assert result.timed_out and gone(int(result.stdout))
        data = os.urandom(1_000_000)
        conn.put(data, str(tmp_path / "f.bin"), 0o600)
        assert hashlib.sha256(conn.get(str(tmp_path / "f.bin"))).digest() == hashlib.sha256(data).digest()
        done = []
        t = threading.Thread(target=lambda: done.append(conn.run("sleep 600 & echo $!; wait")))
        t.start()
        time.sleep(0.5)
        conn.interrupt()
        t.join(10)
        assert done and done[0].interrupted and gone(int(done[0].stdout))
    finally:
        conn.close()


def test_a_probe_batch_too_large_to_keep_whole_gives_only_whole_results(conn_to):
    from fleet.batch import Batch, ProbeCall

    conn = conn_to("node-02")
    conn.output_keep = 4096
    calls = [ProbeCall.of(f"head -c 3000 /dev/zero | tr '\\0' {i}; echo", {}) for i in range(6)]
    batch = Batch.of(calls)
    result = conn.run(batch.script(), **batch.run_kwargs())
    assert result.dropped > 0
    done = batch.split(result)
    whole = [r for r in done if r is not None]
    assert 0 < len(whole) < len(calls) and done[: len(whole)] == whole  # the first ones, then none
    assert [r.stdout for r in whole] == [str(i) * 3000 + "\n" for i in range(len(whole))]


# ---- two runs at once (the CLI) ----------------------------------------------------------------------------
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fleet.cli", *map(str, args)]


def test_two_runs_at_once_lose_no_line(ssh_fleet, ssh_inventory, tmp_path):
    book = tmp_path / "lines.yaml"
    task = {"line": {"path": "~/shared.txt", "line": "{{ tag }}-{{ item }}"}, "loop": list(range(12))}
    book.write_text(yaml.safe_dump([{"hosts": "nodes", "gather_facts": False, "tasks": [task]}]))
    for host in ssh_fleet.hosts:
        (host.home / "shared.txt").unlink(missing_ok=True)
    runs = [
        subprocess.Popen(_cli("run", book, "-i", ssh_inventory, "-e", f"tag={tag}", "--json"), cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for tag in ("a", "b")
    ]  # fmt: skip
    for run in runs:
        out, err = run.communicate(timeout=240)
        assert run.returncode == 0, out + err
    for host in ssh_fleet.hosts:
        lines = (host.home / "shared.txt").read_text().splitlines()
        assert sorted(lines) == sorted(f"{t}-{i}" for t in "ab" for i in range(12)), host.name


def test_a_locked_host_fails_with_who_holds_it_and_no_lock_overrides(conn_to, ssh_fleet, ssh_inventory, tmp_path):
    holder = conn_to("node-02", lock=HostLock("other-run", lock_holder(), wait=1))
    assert holder.run("true").ok
    book = tmp_path / "book.yaml"
    book.write_text(yaml.safe_dump([{"hosts": "node-01,node-02", "gather_facts": False,
                                     "tasks": [{"command": "echo hi"}]}]))  # fmt: skip
    result = subprocess.run(_cli("run", book, "-i", ssh_inventory, "--lock-wait", "1", "--json"), cwd=REPO,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    failed = [e for e in events if e.get("status") == "failed"]
    assert [(e["host"], e["task"]) for e in failed] == [("node-02", "host lock")]
    assert re.match(r"locked by run other-run \(\S+@\S+, pid \d+, since .+ UTC\); waited 1s", failed[0]["message"])
    recap = {e["host"]: e for e in events if e["event"] == "recap"}
    assert recap["node-01"]["changed"] == 1 and not recap["node-02"]["unreachable"]
    forced = subprocess.run(_cli("run", book, "-i", ssh_inventory, "--no-lock", "--json"), cwd=REPO,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert forced.returncode == 0, forced.stdout + forced.stderr


def test_host_without_python_still_takes_the_host_lock(conn_to):
    def lock(run: str, wait: float = 1) -> HostLock:
        return HostLock(run, lock_holder(), wait=wait)

    no_python = {"python_interpreter": "none"}
    holder = conn_to("node-01", vars=no_python, lock=lock("run-a"))
    assert holder.run("true").ok and holder.mode == "one-shot"
    with pytest.raises(HostLocked, match=r"locked by run run-a \("):
        conn_to("node-01", lock=lock("run-b")).run("true")  # an agent waits for it, and the other way round
    with pytest.raises(HostLocked, match=r"locked by run run-a \("):
        conn_to("node-01", vars=no_python, lock=lock("run-c")).run("true")
    holder.close()
    assert conn_to("node-01", vars=no_python, lock=lock("run-d", wait=10)).run("true").ok


def test_the_login_agent_holds_the_lock_even_when_the_play_starts_as_root(conn_to, ssh_fleet):
    home = ssh_fleet.host("node-02").home
    first = conn_to("node-02", lock=HostLock("run-root-first", lock_holder(), wait=1))
    assert first.run("id -un", become=True).stdout == "root\n"
    assert (home / ".fleet" / "lock").read_text().startswith("run run-root-first\n")
    with pytest.raises(HostLocked, match="run-root-first"):
        conn_to("node-02", lock=HostLock("run-other", lock_holder(), wait=1)).run("true", become=True)
    first.release_lock()
    assert conn_to("node-02", lock=HostLock("run-other", lock_holder(), wait=5)).run("true", become=True).ok


def test_output_beyond_the_cap_lands_masked_in_the_run_log_folder(ssh_fleet, ssh_inventory, tmp_path):
    """A secret in the dropped middle of a huge output: the whole output is in a file beside the
    host's run log, masked and escaped like the log, and the task result names that file."""
    from fleet.secrets import MASK

    token = "tok-spill-7d41c9e2a8"
    line = "a" * 79 + "\n"
    head, middle = line * 20_000, "secret: TOK \x1b[2J end\n"  # head alone is beyond the 1 MiB kept
    expected_raw = head + middle.replace("TOK", token) + head
    book = tmp_path / "big.yaml"
    script = f"import os, sys; h = {line!r} * 20000; m = {middle!r}.replace('TOK', os.environ['T']); "
    script += "sys.stdout.write(h + m + h)"
    book.write_text(yaml.safe_dump([{"hosts": "node-01", "gather_facts": False, "tasks": [
        {"name": "big", "environment": {"T": "{{ api_token }}"}, "command": shlex.join(["python3", "-c", script])},
    ]}]))  # fmt: skip
    fleet_home = tmp_path / "fleet-home"
    env = {**os.environ, "FLEET_HOME": str(fleet_home)}
    run = subprocess.run(_cli("run", book, "-i", ssh_inventory, "-e", f"api_token={token}", "--json"), cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=240)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    assert token not in run.stdout + run.stderr
    result = next(e for e in map(json.loads, run.stdout.splitlines()) if e["event"] == "task_result")
    dropped = len(expected_raw.encode()) - 2 * OUTPUT_KEEP
    note = re.search(r"output too large: (\d+) bytes not kept in memory; full output in (\S+)\]", result["stdout"])
    assert note, result["stdout"][OUTPUT_KEEP - 100 : OUTPUT_KEEP + 400]
    assert int(note.group(1)) == dropped
    spilled = Path(note.group(2))
    run_dir = next((fleet_home / "runs").glob("*/node-01.log")).parent
    assert spilled.parent == run_dir and re.fullmatch(r"node-01\.\d+\.stdout", spilled.name)
    masked = expected_raw.replace(token, MASK).replace("\x1b", "\\x1b")
    assert spilled.read_text() == masked  # every byte, the secret masked, the escape made visible
    assert oct(spilled.stat().st_mode & 0o777) == "0o600"
    assert str(spilled) in (run_dir / "node-01.log").read_text()  # the run log line names it too
    assert not list(run_dir.glob("*.part"))  # no raw copy left behind
    assert not [p for p in run_dir.iterdir() if token.encode() in p.read_bytes()]


def test_a_spilled_line_too_long_is_cut_without_showing_part_of_a_secret(tmp_path, monkeypatch):
    from fleet import runlog
    from fleet.secrets import Redactor

    monkeypatch.setattr(runlog, "LINE_LIMIT", 64)
    secret = "sk-abcdefghij0123456789"
    raw = tmp_path / "h.1.stdout.part"
    long_line = "y" * 50 + secret + "z" * 200 + "\n"  # the cut at byte 64 falls inside the secret
    raw.write_text("short " + secret + "\n" + long_line + "last\n")
    runlog.mask_output(raw, tmp_path / "h.1.stdout", Redactor([secret]))
    lines = (tmp_path / "h.1.stdout").read_text().splitlines()
    assert lines[0] == "short ********" and lines[2] == "last"
    assert lines[1].startswith("y" * 50) and "more bytes of this line left out]" in lines[1]
    assert secret[:5] not in lines[1]
    assert int(re.search(r"(\d+) more bytes", lines[1]).group(1)) == len(long_line) - 64
