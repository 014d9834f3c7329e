"""The engine against the real sshd hosts: ssh_config and ProxyJump, timeouts that really end the
remote process, playbook keywords, serial batches, forks, extra vars, secrets, diffs, JSON events,
exit codes, round trips, and hosts that drop out mid-run."""

from __future__ import annotations

import json
import os
import pwd
import socket
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, by_host, run_fleet

from fleet.connection import connect
from fleet.inventory import load_inventory
from fleet.playbook import load_playbook

pytestmark = pytest.mark.ssh

DEMO_PY = REPO / "playbooks" / "demo.py"
MASK = "********"


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def recap(stdout: str) -> dict[str, dict]:
    return {e["host"]: e for e in events(stdout) if e["event"] == "recap"}


def task_events(stdout: str, host: str | None = None) -> list[dict]:
    return [e for e in events(stdout) if e["event"] == "task_result" and (host is None or e["host"] == host)]


def playbook(tmp_path: Path, plays: list[dict], name: str = "book.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(plays, sort_keys=False))
    return path


def gone(pid: int, wait: float = 3.0) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.05)
    return False


# ---- ~/.ssh/config: aliases, HostName/User/Port/IdentityFile, ProxyJump ----------------------------
def ssh_config_inventory(ssh_fleet, tmp_path: Path, known_hosts: Path | None = None) -> Path:
    """Hosts known only by alias: everything else comes from an ssh_config file. `behind-02` is
    node-02 reached through node-01 (ProxyJump)."""
    one, two = ssh_fleet.host("node-01"), ssh_fleet.host("node-02")
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host alias-01\n  HostName {one.address}\n  Port {one.port}\n  User {one.user}\n"
        f"  IdentityFile {ssh_fleet.client_key}\n\n"
        f"Host behind-02\n  HostName {two.address}\n  Port {two.port}\n  User {two.user}\n"
        f"  IdentityFile {ssh_fleet.client_key}\n  ProxyJump alias-01\n"
    )
    inv = tmp_path / "inv-ssh-config"
    inv.mkdir()
    variables = {"ssh_config": str(config), "known_hosts": str(known_hosts or ssh_fleet.known_hosts)}
    hosts = {"alias-01": None, "behind-02": None}
    (inv / "hosts.yaml").write_text(yaml.safe_dump({"all": {"vars": variables, "hosts": hosts}}))
    return inv


def _hex_address(address: str, port: int) -> str:
    return "".join(f"{int(part):02X}" for part in reversed(address.split("."))) + f":{port:04X}"


def socket_owner(client: tuple[str, int], server: tuple[str, int]) -> int:
    """uid that owns the TCP socket client -> server on this machine (/proc/net/tcp)."""
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if fields[1] == _hex_address(*client) and fields[2] == _hex_address(*server):
            return int(fields[7])
    raise AssertionError(f"no TCP socket {client} -> {server}")


def test_ssh_config_aliases_and_proxyjump(ssh_fleet, tmp_path):
    inv = ssh_config_inventory(ssh_fleet, tmp_path)
    result = run_fleet("facts", "-i", inv, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    facts = by_host(result.stdout)
    assert set(facts) == {"alias-01", "behind-02"} and all(f["cpus"] >= 1 for f in facts.values())

    # Where did each connection really come from? The sshd at the other end says (SSH_CONNECTION),
    # and the kernel says who owns the client's socket: fleet (root) for alias-01; node-01's login
    # user, i.e. node-01's sshd forwarding for us, for behind-02.
    inventory = load_inventory(inv)
    for name, owner in (("alias-01", os.geteuid()), ("behind-02", pwd.getpwnam(ssh_fleet.host("node-01").user).pw_uid)):
        conn = connect(name, inventory.host(name).vars)
        try:
            seen = conn.run('echo "$USER $SSH_CONNECTION"')
            user, client_ip, client_port, server_ip, server_port = seen.stdout.split()
            target = ssh_fleet.host("node-01" if name == "alias-01" else "node-02")
            assert (user, server_ip, int(server_port)) == (target.user, target.address, target.port)
            assert socket_owner((client_ip, int(client_port)), (server_ip, int(server_port))) == owner, name
        finally:
            conn.close()


def test_proxyjump_checks_the_jump_hosts_key_too(ssh_fleet, tmp_path):
    one, two = ssh_fleet.host("node-01"), ssh_fleet.host("node-02")
    jump = f"[{one.address}]:{one.port}"
    unknown_jump = tmp_path / "known_hosts_without_jump"
    unknown_jump.write_text(two.known_hosts_line())
    inv = ssh_config_inventory(ssh_fleet, tmp_path, unknown_jump)
    result = run_fleet("facts", "-i", inv, "--hosts", "behind-02", "--json")
    assert result.returncode == 4
    message = by_host(result.stdout)["behind-02"]["unreachable"]
    assert message.startswith(f"{jump} is not in {unknown_jump}") and "--accept-new-host-keys" in message
    trusted = run_fleet("facts", "-i", inv, "--hosts", "behind-02", "--json", "--accept-new-host-keys")
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert f"{jump} {' '.join(one.host_public_key)}" in unknown_jump.read_text()  # remembered now

    changed_jump = tmp_path / "known_hosts_changed_jump"
    changed_jump.write_text(two.known_hosts_line() + f"{jump} {' '.join(two.host_public_key)}\n")  # node-02's key
    other = tmp_path / "other"
    other.mkdir()
    inv = ssh_config_inventory(ssh_fleet, other, changed_jump)
    result = run_fleet("facts", "-i", inv, "--hosts", "behind-02", "--json")
    assert result.returncode == 4
    message = by_host(result.stdout)["behind-02"]["unreachable"]
    assert f"host key for {jump} has CHANGED" in message and f"ssh-keygen -R '{jump}'" in message
    assert "Traceback" not in result.stdout + result.stderr


def test_ssh_config_jump_chain_in_openssh_order_match_exec_and_a_missing_file(ssh_fleet, tmp_path):
    """`ProxyJump a,b` reaches a first, then b through a, then the host through b (OpenSSH's
    order); a `Match exec` block applies (paramiko runs it through invoke, which fleet only
    hands over to a config that has one); a missing ssh_config file is one clear line."""
    one, two, three, four = (ssh_fleet.host(f"node-0{i}") for i in range(1, 5))

    def entry(host) -> str:
        return f"  HostName {host.address}\n  Port {host.port}\n  User {host.user}\n  IdentityFile {ssh_fleet.client_key}\n"  # noqa: E501

    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host alias-01\n{entry(one)}\nHost alias-02\n{entry(two)}\n"
        f"Host two-jumps\n{entry(three)}  ProxyJump alias-01,alias-02\n\n"
        f'Match host by-match exec "test -e {tmp_path}"\n{entry(four)}'
    )
    inv = tmp_path / "inv"
    inv.mkdir()
    variables = {"ssh_config": str(config), "known_hosts": str(ssh_fleet.known_hosts)}
    (inv / "hosts.yaml").write_text(
        yaml.safe_dump({"all": {"vars": variables, "hosts": {"two-jumps": None, "by-match": None}}})
    )
    result = run_fleet("facts", "-i", inv, "--json")  # `by-match` resolves only through its Match block
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(by_host(result.stdout)) == {"two-jumps", "by-match"}

    conn = connect("two-jumps", load_inventory(inv).host("two-jumps").vars)
    try:
        _, client_ip, client_port, server_ip, server_port = conn.run('echo "$USER $SSH_CONNECTION"').stdout.split()
        assert (server_ip, int(server_port)) == (three.address, three.port)
        last_jump = pwd.getpwnam(two.user).pw_uid  # node-02's sshd made the last leg
        assert socket_owner((client_ip, int(client_port)), (server_ip, int(server_port))) == last_jump
    finally:
        conn.close()

    variables["ssh_config"] = str(tmp_path / "no-such-config")
    (inv / "hosts.yaml").write_text(yaml.safe_dump({"all": {"vars": variables, "hosts": {"two-jumps": None}}}))
    result = run_fleet("facts", "-i", inv, "--json")
    assert result.returncode == 4 and "Traceback" not in result.stdout + result.stderr
    message = by_host(result.stdout)["two-jumps"]["unreachable"]
    assert message == f"cannot read ssh_config {tmp_path / 'no-such-config'}: No such file or directory"


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ("Host bad\n  Port notaport\n{entry}", "ssh_config: Port 'notaport' for bad is not a number"),
        ("Host bad\n  ProxyJump alias-01:22x\n{entry}", "ssh_config: Port '22x' for alias-01 is not a number"),
        (
            "Host bad\n  ProxyJump alias-01\n{entry}\nHost alias-01\n  ConnectTimeout soon\n{entry}",
            "ssh_config: ConnectTimeout 'soon' for alias-01 is not a number",
        ),
        ("Host bad\n{entry}  Port\n", "ssh_config {path}: Unparsable line Port; fix that line"),
    ],
    ids=["port", "jump-port", "jump-timeout", "unparsable"],
)
def test_a_bad_ssh_config_value_is_one_line_naming_the_host(ssh_fleet, tmp_path, config, said):
    one = ssh_fleet.host("node-01")
    entry = f"  HostName {one.address}\n  Port {one.port}\n  User {one.user}\n  IdentityFile {ssh_fleet.client_key}\n"
    (tmp_path / "ssh_config").write_text(config.format(entry=entry))
    inv = tmp_path / "inv"
    inv.mkdir()
    variables = {"ssh_config": str(tmp_path / "ssh_config"), "known_hosts": str(ssh_fleet.known_hosts)}
    (inv / "hosts.yaml").write_text(yaml.safe_dump({"all": {"vars": variables, "hosts": {"bad": None}}}))
    result = run_fleet("facts", "-i", inv, "--json")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    message = by_host(result.stdout)["bad"]["unreachable"]
    assert message.startswith(said.format(path=tmp_path / "ssh_config")) and "\n" not in message, message


# ---- timeouts ------------------------------------------------------------------------------------
def test_hung_task_times_out_and_its_process_is_gone(ssh_fleet, ssh_inventory, tmp_path):
    plain, root = ssh_fleet.host("node-01"), ssh_fleet.host("node-02")
    hang = "sleep 600 & echo $! > {}; wait"
    book = playbook(tmp_path, [
        {"hosts": plain.name, "gather_facts": False, "tasks": [
            {"name": "hang", "shell": hang.format(plain.home / "hang.pid"), "timeout": 2},
            {"name": "never reached", "command": "true"},
        ]},
        {"hosts": root.name, "gather_facts": False, "tasks": [
            {"name": "hang as root", "shell": hang.format(root.home / "hang-root.pid"), "timeout": 2, "become": True},
        ]},
    ])  # fmt: skip
    started = time.monotonic()
    result = run_fleet("run", book, "-i", ssh_inventory)
    assert time.monotonic() - started < 30
    assert result.returncode == 2, result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if line.startswith("failed")]
    assert len(failed) == 2 and "never reached" not in result.stdout
    for line in failed:
        assert line.endswith("timed out after 2s and was stopped; raise the task's `timeout:` if it needs longer")
    for pidfile in (plain.home / "hang.pid", root.home / "hang-root.pid"):
        pid = int(pidfile.read_text())
        assert gone(pid), f"the remote `sleep 600` (pid {pid}) is still running"


def test_connection_level_timeouts_never_hang_the_run(ssh_fleet, ssh_inventory):
    inv = load_inventory(ssh_inventory)
    conn = connect("node-03", inv.host("node-03").vars)
    try:
        started = time.monotonic()
        result = conn.run("sleep 600", timeout=2)
        assert result.timed_out and not result.ok and result.brief() == "timed out"
        assert time.monotonic() - started < 6

        # ignores SIGTERM: `timeout -k` kills it a few seconds later
        started = time.monotonic()
        result = conn.run("trap '' TERM; echo $$; sleep 600", timeout=1)
        assert result.timed_out and gone(int(result.stdout))
        assert time.monotonic() - started < 10

        # a background process that keeps stdout open does not hold the command past its exit
        started = time.monotonic()
        result = conn.run("echo started; sleep 30 & echo $! >&2")
        assert result.ok and result.stdout == "started\n"
        assert time.monotonic() - started < 5
        os.kill(int(result.stderr), 15)  # the test's own leftover: ended by pid

        # and the connection still works
        assert conn.run("echo still here", timeout=5).stdout == "still here\n"
        assert conn.commands == 4
    finally:
        conn.close()


def test_command_that_ends_before_reading_its_script_fails_but_the_host_is_reachable(ssh_fleet, ssh_inventory):
    inv = load_inventory(ssh_inventory)
    conn = connect("node-04", inv.host("node-04").vars)
    try:
        big = "true " + "x" * 5_000_000  # more than the channel's window: sudo exits long before it is sent
        refused = conn.run(big, become=True, become_user="no-such-user-here")
        assert refused.exited == 1 and "unknown user" in refused.stderr
        assert conn.run("echo fine").stdout == "fine\n"
    finally:
        conn.close()


def test_unreachable_reasons_say_what_is_wrong(ssh_fleet, tmp_path):
    address = ssh_fleet.unused_address()
    one, two = ssh_fleet.host("node-01"), ssh_fleet.host("node-02")
    with socket.socket() as silent:  # takes TCP connections (backlog) but never says a word
        silent.bind((address, 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        odd = {
            "node-mute": {"address": address, "port": port, "user": "nobody", "connect_timeout": 2},
            "node-nokey": {"address": one.address, "port": one.port, "user": one.user, "key": "/nonexistent/key"},
            "node-nouser": {"address": two.address, "port": two.port, "user": "nobody"},
        }
        inv = ssh_fleet.inventory(tmp_path / "inv", extra_hosts=odd)
        started = time.monotonic()
        result = run_fleet("facts", "-i", inv, "--hosts", "node-mute,node-nokey,node-nouser,node-01", "--json")
        assert time.monotonic() - started < 15
    assert result.returncode == 4 and result.stderr == ""  # no stray paramiko thread noise either
    facts = by_host(result.stdout)
    assert facts["node-mute"]["unreachable"] == (
        f"{address}:{port} took the connection but no SSH server answered within 2s"
    )
    assert facts["node-nokey"]["unreachable"].endswith("No such file or directory: /nonexistent/key")
    assert facts["node-nouser"]["unreachable"] == f"ssh to {two.address}:{two.port} failed: Authentication failed."
    assert facts["node-01"]["cpus"] >= 1


def test_local_connection_runs_tasks_and_times_out(tmp_path):
    pidfile = tmp_path / "local.pid"
    book = playbook(tmp_path, [{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "write", "copy": {"dest": str(tmp_path / "local.txt"), "content": "here\n"}},
        {"name": "hang", "shell": f"sleep 600 & echo $! > {pidfile}; wait", "timeout": 1},
    ]}])  # fmt: skip
    result = run_fleet("run", book, "-i", "inventories/local", "--json")
    assert result.returncode == 2
    assert (tmp_path / "local.txt").read_text() == "here\n"
    assert [e["status"] for e in task_events(result.stdout)] == ["changed", "failed"]
    assert gone(int(pidfile.read_text()))


def test_a_quoted_false_condition_fails_the_task_and_runs_nothing(tmp_path):
    """`flag: "false"` (text, as a quoted YAML value or an INI inventory gives it) is not false:
    `when: flag` fails the task with the reason, as ansible-core 2.19 does, and nothing runs."""
    marker = tmp_path / "ran.txt"
    book = playbook(tmp_path, [{"hosts": "localhost", "gather_facts": False, "vars": {"flag": "false"}, "tasks": [
        {"name": "guarded", "command": f"touch {marker}", "when": "flag"},
        {"name": "fixed", "copy": {"dest": str(tmp_path / "fixed.txt"), "content": "x"}, "when": "not (flag | bool)"},
    ]}])  # fmt: skip
    result = run_fleet("run", book, "-i", "inventories/local", "--json")
    assert result.returncode == 2 and not marker.exists()
    (failed,) = [e for e in task_events(result.stdout) if e["status"] == "failed"]
    assert failed["task"] == "guarded" and "'flag' gives str 'false', not true or false" in failed["message"]
    result = run_fleet("run", book, "-i", "inventories/local", "--json", "--start-at-task", "fixed")
    assert result.returncode == 0 and (tmp_path / "fixed.txt").read_text() == "x"


# ---- playbook keywords ---------------------------------------------------------------------------
FEATURES = [
    {
        "name": "features",
        "hosts": "nodes",
        "gather_facts": False,
        "vars": {"word": "hello"},
        "environment": {"PLAY_ENV": "from-play"},
        "tasks": [
            {"name": "who am i", "command": "echo {{ inventory_hostname }}", "register": "me", "changed_when": False},
            {"name": "registered per host", "assert": {"that": "me.stdout.strip() == inventory_hostname"}},
            {"name": "loop", "shell": "echo {{ item }} >> ~/{{ out }}", "loop": ["a", "b", "c"], "when": "item != 'b'"},
            {"name": "only node-01", "command": "true", "when": "inventory_hostname == 'node-01'"},
            {"name": "env", "shell": 'echo "$PLAY_ENV $TASK_ENV"', "environment": {"TASK_ENV": "{{ word }}"},
             "register": "env_out", "changed_when": False, "tags": ["env"]},
            {"name": "env seen", "assert": {"that": "env_out.stdout.strip() == 'from-play hello'"}, "tags": ["env"]},
            {"name": "ignored failure", "command": "false", "ignore_errors": True},
            {"name": "rc 3 is fine", "shell": "echo three; exit 3", "register": "r3",
             "failed_when": "r3.rc not in [0, 3]"},
            {"name": "said so",
             "assert": {"that": ["r3.rc == 3", "r3.stdout == 'three'", "r3.stdout_lines == ['three']"]}},
            {"name": "changed when told", "command": "echo x", "changed_when": "'x' in result.stdout", "tags": ["cw"]},
            {"name": "failed when told", "command": "echo oops", "failed_when": "'oops' in result.stdout",
             "ignore_errors": True, "tags": ["fw"]},
        ],
    }
]  # fmt: skip


def test_playbook_keywords(ssh_fleet, ssh_inventory, tmp_path):
    book = playbook(tmp_path, FEATURES)
    result = run_fleet("run", book, "-i", ssh_inventory, "-l", "node-01,node-02", "--json", "-e", "out=loop-kw.txt")
    assert result.returncode == 0, result.stdout + result.stderr
    for host in ("node-01", "node-02"):
        seen = [
            (e["task"], e.get("item"), e["status"], e.get("ignored", False)) for e in task_events(result.stdout, host)
        ]
        assert seen == [
            ("who am i", None, "ok", False),
            ("registered per host", None, "ok", False),
            ("loop", "a", "changed", False),
            ("loop", "b", "skipped", False),
            ("loop", "c", "changed", False),
            ("only node-01", None, "changed" if host == "node-01" else "skipped", False),
            ("env", None, "ok", False),
            ("env seen", None, "ok", False),
            ("ignored failure", None, "failed", True),
            ("rc 3 is fine", None, "changed", False),
            ("said so", None, "ok", False),
            ("changed when told", None, "changed", False),
            ("failed when told", None, "failed", True),
        ], host
        assert (ssh_fleet.host(host).home / "loop-kw.txt").read_text() == "a\nc\n"
    hosts = recap(result.stdout)
    assert set(hosts) == {"node-01", "node-02"}  # --limit
    assert hosts["node-01"]["changed"] == 5 and hosts["node-02"]["skipped"] == 2
    assert hosts["node-01"]["failed"] == 0  # ignored failures are not failures

    only = run_fleet("run", book, "-i", ssh_inventory, "-l", "node-01", "--json", "--tags", "env,cw")
    assert [e["task"] for e in task_events(only.stdout)] == ["env", "env seen", "changed when told"]
    skipped = run_fleet(
        "run", book, "-i", ssh_inventory, "-l", "node-01", "--json", "--skip-tags", "env,fw", "-e", "out=x"
    )
    names = [e["task"] for e in task_events(skipped.stdout)]
    assert "env" not in names and "env seen" not in names and "failed when told" not in names
    assert "changed when told" in names and "who am i" in names


def test_become_per_play_and_task(ssh_fleet, ssh_inventory, tmp_path):
    user = ssh_fleet.host("node-01").user
    book = playbook(tmp_path, [{"hosts": "node-01", "gather_facts": False, "become": True, "tasks": [
        {"name": "play says root", "command": "id -un", "register": "a", "changed_when": False},
        {"name": "task says no", "command": "id -un", "become": False, "register": "b", "changed_when": False},
        {"name": "task says nobody", "command": "id -un", "become_user": "nobody", "register": "c",
         "changed_when": False},
        {"assert": {"that": ["a.stdout.strip() == 'root'", f"b.stdout.strip() == '{user}'",
                             "c.stdout.strip() == 'nobody'"]}},
    ]}])  # fmt: skip
    result = run_fleet("run", book, "-i", ssh_inventory)
    assert result.returncode == 0, result.stdout + result.stderr


def test_failed_host_sits_out_later_plays_and_exit_codes(ssh_fleet, tmp_path):
    down = {"address": ssh_fleet.unused_address(), "port": 1, "user": "nobody"}
    inv = ssh_fleet.inventory(tmp_path / "inv", extra_hosts={"node-down": down})
    book = playbook(tmp_path, [
        {"hosts": "nodes", "gather_facts": False, "tasks": [
            {"name": "fail on node-01", "command": "false", "when": "inventory_hostname == 'node-01'"},
            {"name": "after the failure", "command": "true"},
        ]},
        {"hosts": "all", "gather_facts": False, "tasks": [{"name": "second play", "command": "true"}]},
    ])  # fmt: skip
    both = run_fleet("run", book, "-i", inv, "--json")
    assert both.returncode == 6, both.stdout + both.stderr  # failed (2) + unreachable (4)
    hosts = recap(both.stdout)
    assert hosts["node-01"]["failed"] == 1 and hosts["node-down"]["unreachable"]
    assert [e["task"] for e in task_events(both.stdout, "node-01")] == ["fail on node-01"]
    assert [e["task"] for e in task_events(both.stdout, "node-02")] == [
        "fail on node-01", "after the failure", "second play",
    ]  # fmt: skip
    assert run_fleet("run", book, "-i", inv, "-l", "nodes,!node-down", "--json").returncode == 2
    assert run_fleet("run", book, "-i", inv, "-l", "node-02,node-down", "--json").returncode == 4


def test_host_that_drops_mid_run_is_unreachable_and_sits_out(ssh_fleet, ssh_inventory, tmp_path):
    # node-03 ends its own ssh session (its sshd process, found by walking up from the task's shell)
    drop = (
        '[ "{{ inventory_hostname }}" = node-03 ] || exit 0\n'
        "p=$$\n"
        'while [ "$p" -gt 1 ]; do\n'
        '  case "$(cat /proc/$p/comm)" in sshd*) kill -9 "$p"; break;; esac\n'
        "  p=$(awk '{print $4}' /proc/$p/stat)\n"
        "done\n"
        "sleep 5\n"
    )
    book = playbook(tmp_path, [
        {"hosts": "node-03,node-04", "gather_facts": False, "tasks": [
            {"name": "drop", "shell": drop}, {"name": "after", "command": "true"}]},
        {"hosts": "node-03,node-04", "gather_facts": False, "tasks": [{"name": "second play", "command": "true"}]},
    ])  # fmt: skip
    result = run_fleet("run", book, "-i", ssh_inventory, "--json")
    assert result.returncode == 4, result.stdout + result.stderr
    hosts = recap(result.stdout)
    assert "lost while running a command" in hosts["node-03"]["unreachable"]
    assert task_events(result.stdout, "node-03") == []
    assert [e["task"] for e in task_events(result.stdout, "node-04")] == ["drop", "after", "second play"]
    assert not hosts["node-04"]["unreachable"] and hosts["node-04"]["failed"] == 0


# ---- serial and forks -----------------------------------------------------------------------------
def timeline_play(**play) -> dict:
    """Each host notes when its task starts and ends, in ~/{{ timeline }}."""
    note = 'echo "$1 $(date +%s.%N)" >> ~/{{ timeline }}'
    work = f"s() {{ {note}; }}; s start; sleep 0.4; s end"
    return {"hosts": "nodes", "gather_facts": False, **play, "tasks": [{"name": "work", "shell": work}]}


def read_timeline(ssh_fleet, name: str) -> dict[str, dict[str, float]]:
    spans = {}
    for host in ssh_fleet.hosts:
        lines = (host.home / name).read_text().split()
        spans[host.name] = dict(zip(lines[::2], map(float, lines[1::2]), strict=True))
    return spans


def test_serial_batches_run_in_order(ssh_fleet, ssh_inventory, tmp_path):
    book = playbook(tmp_path, [timeline_play(serial=2)])
    result = run_fleet("run", book, "-i", ssh_inventory, "-e", "timeline=serial.txt")
    assert result.returncode == 0, result.stdout + result.stderr
    t = read_timeline(ssh_fleet, "serial.txt")
    first, second = ("node-01", "node-02"), ("node-03", "node-04")
    assert max(t[h]["end"] for h in first) < min(t[h]["start"] for h in second)  # batch after batch
    assert max(t[h]["start"] for h in first) < min(t[h]["end"] for h in first)  # within a batch: together


def test_forks_bound_the_hosts_worked_on_at_once(ssh_fleet, ssh_inventory, tmp_path):
    book = playbook(tmp_path, [timeline_play()])
    result = run_fleet("run", book, "-i", ssh_inventory, "--forks", "1", "-e", "timeline=forks.txt")
    assert result.returncode == 0, result.stdout + result.stderr
    spans = sorted((s["start"], s["end"]) for s in read_timeline(ssh_fleet, "forks.txt").values())
    assert len(spans) == 4
    assert all(spans[i][1] < spans[i + 1][0] for i in range(3))  # one at a time


# ---- extra vars, secrets, diff, JSON ----------------------------------------------------------------
def test_extra_vars_secrets_and_diff(ssh_fleet, tmp_path):
    inv = ssh_fleet.inventory(tmp_path / "inv")
    group_vars = inv / "group_vars"
    group_vars.mkdir()
    (group_vars / "nodes.yaml").write_text("api_token: tok-from-inventory-123\n")
    (tmp_path / "extra.yaml").write_text("db_password: pw-from-file-456\nsetting: from-file\n")
    book = playbook(tmp_path, [{"hosts": "node-01", "gather_facts": False, "tasks": [
        {"name": "echo secrets", "command": "echo {{ hf_token }} {{ db_password }} {{ api_token }} {{ setting }}",
         "register": "echoed"},
        {"name": "shows values", "assert": {"that": "echoed.stdout.split() == [hf_token, db_password, api_token, "
                                                     "'from-file']"}},
        {"name": "failure shows output", "shell": "echo token={{ hf_token }}; exit 1", "ignore_errors": True},
        {"name": "long", "command": "echo {{ 'x' * 45 }} {{ hf_token }}"},  # the summary is cut inside the token
        {"name": "secret file", "copy": {"dest": "~/secret-diff.txt", "content": "token={{ hf_token }}\nplain\n"}},
    ]}])  # fmt: skip
    secrets = ("hf_secret_789", "pw-from-file-456", "tok-from-inventory-123")
    args = ("run", book, "-i", inv, "-e", "hf_token=hf_secret_789", "-e", f"@{tmp_path / 'extra.yaml'}", "--diff")
    home = ssh_fleet.host("node-01").home
    plain = run_fleet(*args)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert (home / "secret-diff.txt").read_text() == "token=hf_secret_789\nplain\n"  # the host got the real value
    (home / "secret-diff.txt").write_text("old\n")
    as_json = run_fleet(*args, "--json")
    assert as_json.returncode == 0
    for output in (plain.stdout + plain.stderr, as_json.stdout + as_json.stderr):
        for secret in secrets:
            assert secret[:6] not in output  # not even part of it
    assert f"run echo {MASK} {MASK} {MASK}" in plain.stdout
    assert f"run echo {'x' * 45} {MASK}…" in plain.stdout
    assert f"failed: token={MASK}" in plain.stdout
    assert f"+token={MASK}" in plain.stdout and "+plain" in plain.stdout  # --diff shows the change, masked
    diff_event = next(e for e in task_events(as_json.stdout) if e["task"] == "secret file")
    assert diff_event["diff"].endswith(f"-old\n+token={MASK}\n+plain\n")

    (home / "secret-diff.txt").write_text("old\n")
    quiet = run_fleet("run", book, "-i", inv, "-e", "hf_token=x1234", "-e", f"@{tmp_path / 'extra.yaml'}")
    assert "+plain" not in quiet.stdout and "changed  node-01          secret file" in quiet.stdout


def test_json_is_one_event_per_task_result(ssh_fleet, ssh_inventory, tmp_path):
    book = playbook(tmp_path, [{"hosts": "node-0[1:2]", "gather_facts": False, "tasks": [
        {"name": "one", "command": "true"},
        {"name": "looped", "command": "echo {{ item }}", "loop": [1, 2, 3]},
        {"name": "skipped", "command": "true", "when": False},
    ]}])  # fmt: skip
    result = run_fleet("run", book, "-i", ssh_inventory, "--json")
    assert result.returncode == 0
    all_events = events(result.stdout)  # every line is JSON
    assert [e["event"] for e in all_events].count("task_result") == 2 * 5
    expected = {"run_start", "play_start", "task_start", "task_result", "recap", "run_end"}
    assert {e["event"] for e in all_events} == expected
    for event in task_events(result.stdout):
        assert {"host", "task", "action", "status", "message", "duration"} <= set(event)
    assert sorted(e["item"] for e in task_events(result.stdout, "node-01") if e["task"] == "looped") == [1, 2, 3]
    assert recap(result.stdout)["node-02"] == {**recap(result.stdout)["node-02"], "ok": 0, "changed": 4, "skipped": 1}


def test_plain_output_lines_and_recap(ssh_fleet, ssh_inventory, tmp_path):
    book = playbook(tmp_path, [{"hosts": "node-01,node-02", "gather_facts": False, "tasks": [
        {"name": "t [gpu]", "command": "echo {{ item }}", "loop": ["a"]},
        {"name": "s", "command": "true", "when": False}]}])  # fmt: skip
    result = run_fleet("run", book, "-i", ssh_inventory)
    lines = result.stdout.splitlines()
    for host in ("node-01", "node-02"):  # brackets in names and items are shown, not taken for markup
        assert f"changed  {host:<16} t [gpu] [a]  run echo a" in lines
        assert f"skipped  {host:<16} s  condition false" in lines
    header = lines.index(next(line for line in lines if line.split()[:1] == ["host"]))
    assert lines[header].split() == ["host", "ok", "changed", "failed", "skipped", "unreachable", "commands", "time"]
    rows = [line.split() for line in lines[header + 1 :] if line.startswith(" node-")]
    assert [r[:7] for r in rows] == [
        ["node-01", "0", "1", "0", "1", "no", "1"],
        ["node-02", "0", "1", "0", "1", "no", "1"],
    ]
    assert all(r[7].endswith("s") for r in rows)


# ---- files: nothing half-written --------------------------------------------------------------------
def test_failed_copy_leaves_the_old_file_intact(ssh_fleet, ssh_inventory, tmp_path):
    host = ssh_fleet.host("node-04")
    folder = host.home / "locked"
    folder.mkdir(exist_ok=True)
    (folder / "app.conf").write_text("old\n")
    for path in (folder, folder / "app.conf"):
        os.chown(path, pwd.getpwnam(host.user).pw_uid, -1)
    folder.chmod(0o555)  # the login user may read but not create files here
    book = playbook(tmp_path, [{"hosts": host.name, "gather_facts": False, "tasks": [
        {"name": "new config", "copy": {"dest": "~/locked/app.conf", "content": "new\n" * 1000}}]}])  # fmt: skip
    result = run_fleet("run", book, "-i", ssh_inventory, "--json")
    assert result.returncode == 2
    (event,) = task_events(result.stdout)
    assert event["status"] == "failed" and "update ~/locked/app.conf failed" in event["message"]
    assert (folder / "app.conf").read_text() == "old\n"
    assert sorted(p.name for p in folder.iterdir()) == ["app.conf"]  # no temp file left behind


# ---- round trips ----------------------------------------------------------------------------------
def test_python_playbook_converges_then_changes_nothing(ssh_fleet, ssh_inventory):
    first = run_fleet("run", DEMO_PY, "-i", ssh_inventory, "--json", "-e", "demo_dir=~/demo-py")
    assert first.returncode == 0, first.stdout + first.stderr
    assert all(h["changed"] == 5 and h["failed"] == 0 for h in recap(first.stdout).values())
    for host in ssh_fleet.hosts:
        assert (host.home / "demo-py" / "greeting.txt").read_text() == f"hello from fleet on {host.name}\n"
        assert (host.home / "demo-py" / "summary.txt").read_text().startswith(f"host: {host.name}\narch: ")
    second = run_fleet("run", DEMO_PY, "-i", ssh_inventory, "--json", "-e", "demo_dir=~/demo-py")
    assert second.returncode == 0
    for name, host in recap(second.stdout).items():
        # One batch (facts and the five probes), then the command that always runs; the assert
        # after it needs no probe.
        assert (host["changed"], host["ok"], host["commands"]) == (0, 7, 2), name


def test_python_demo_mirrors_the_yaml_demo(ssh_fleet, ssh_inventory):
    def shape(book):
        return [
            (p.name, p.hosts, dict(p.vars), [
                (t.action, t.args, t.name, t.when, t.register, t.changed_when) for t in p.tasks])
            for p in book.plays
        ]  # fmt: skip

    assert shape(load_playbook(DEMO_PY)) == shape(load_playbook(REPO / "playbooks" / "demo.yaml"))
    check = run_fleet("run", DEMO_PY, "-i", ssh_inventory, "--check", "--json", "-e", "demo_dir=~/demo-py-check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert all(h["changed"] == 4 and h["failed"] == 0 for h in recap(check.stdout).values())
    assert not any((host.home / "demo-py-check").exists() for host in ssh_fleet.hosts)


def test_unchanged_playbook_costs_one_command(ssh_fleet, ssh_inventory, tmp_path):
    (tmp_path / "motd.j2").write_text("{{ inventory_hostname }} {{ facts.arch }}\n")
    tasks = [
        {"directory": {"path": "~/rt", "mode": "0750"}},
        {"copy": {"dest": "~/rt/a.txt", "content": "a\n", "mode": "0600"}},
        {"template": {"src": "motd.j2", "dest": "~/rt/motd"}},
        {"line": {"path": "~/rt/env.sh", "line": "export A=1"}},
        {"command": {"cmd": "touch ~/rt/stamp", "creates": "~/rt/stamp"}},
        {"command": {"cmd": "rm ~/rt/gone", "removes": "~/rt/gone"}},
        {"apt": {"packages": ["coreutils"]}},
    ]
    book = playbook(tmp_path, [{"hosts": "nodes", "tasks": tasks}])
    first = run_fleet("run", book, "-i", ssh_inventory, "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    second = run_fleet("run", book, "-i", ssh_inventory, "--json")
    assert second.returncode == 0
    for name, host in recap(second.stdout).items():
        assert host["changed"] == 0 and host["ok"] == len(tasks), name
        assert host["commands"] == 1, name  # facts and every probe in one batch
    unbatched = run_fleet("run", book, "-i", ssh_inventory, "--json", "--no-batch")
    assert unbatched.returncode == 0
    for name, host in recap(unbatched.stdout).items():
        assert (host["changed"], host["commands"]) == (0, 1 + len(tasks)), name  # facts, then one probe per task


def test_facts_table_over_ssh(ssh_fleet, ssh_inventory):
    result = run_fleet("facts", "-i", ssh_inventory)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.strip().startswith("node-")]
    assert [r[0] for r in rows] == [h.name for h in ssh_fleet.hosts]
    assert all("no" in r and "GPU" in r for r in rows)
