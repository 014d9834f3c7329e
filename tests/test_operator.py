"""The operator's controls on real sshd hosts: Ctrl-C, why a task failed, run logs, @failed,
failure policy, `fleet shell`, grouped diffs, listings, a closed pipe, one flag vocabulary."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_fleet
from faultkit import start_fleet, write_playbook

from fleet.cli import build_parser, split_command

pytestmark = pytest.mark.ssh
MASK = "********"


def playbook(tmp_path: Path, plays: list[dict], name: str = "book.yaml") -> Path:
    return write_playbook(tmp_path / name, plays)


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def still_running(pids: list[int], wait: float = 5.0) -> list[int]:
    """The pids still running after `wait` seconds."""
    deadline = time.monotonic() + wait
    while any(not gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if not gone(p)]


# ---- Ctrl-C ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_ends_the_remote_commands_and_prints_the_partial_recap(ssh_fleet, ssh_inventory, tmp_path, sig):
    hosts = ssh_fleet.hosts
    for host in hosts:
        for name in ("long.sh.pid", "long.sleep.pid", "never-ran"):
            (host.home / name).unlink(missing_ok=True)
    book = playbook(tmp_path, [{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "long", "shell": "echo $$ > ~/long.sh.pid; sleep 97 & echo $! > ~/long.sleep.pid; wait"},
        {"name": "never", "shell": "touch ~/never-ran"},
    ]}])  # fmt: skip
    proc = start_fleet("run", book, "-i", ssh_inventory)
    try:
        pidfiles = [h.home / n for h in hosts for n in ("long.sh.pid", "long.sleep.pid")]
        deadline = time.monotonic() + 60
        while not all(p.exists() and p.read_text().strip() for p in pidfiles):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the long task never started on every host"
            time.sleep(0.1)
        pids = [int(p.read_text()) for p in pidfiles]
        assert all(Path(f"/proc/{pid}").exists() for pid in pids)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err
    assert "recap" in out and f"interrupted: {len(hosts)} host(s) stopped part-way" in out, out
    left = still_running(pids)
    assert not left, f"remote processes still running after the interrupt: {left}"
    assert not any((h.home / "never-ran").exists() for h in hosts)


def test_second_interrupt_exits_at_once(ssh_fleet, ssh_inventory, tmp_path):
    host = ssh_fleet.host("node-01")
    pidfile = host.home / "twice.pid"
    pidfile.unlink(missing_ok=True)
    book = playbook(tmp_path, [{"hosts": host.name, "gather_facts": False, "tasks": [
        {"name": "long", "shell": f"sleep 95 & echo $! > {pidfile}; wait"}]}])  # fmt: skip
    proc = start_fleet("run", book, "-i", ssh_inventory)
    try:
        deadline = time.monotonic() + 60
        while not (pidfile.exists() and pidfile.read_text().strip()):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        if pidfile.exists():
            pid = int(pidfile.read_text())
            if still_running([pid]):  # the first interrupt may not have ended it: the test cleans up
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert "Traceback" not in err


# ---- why it failed, the run log, @failed ---------------------------------------------------------
def test_failed_task_shows_rc_and_the_last_lines_masked_and_the_log_keeps_everything(
    ssh_fleet, ssh_inventory, tmp_path, fleet_home
):
    noise = "".join(f"echo line-{i} >&2; " for i in range(30))
    book = playbook(tmp_path, [{"hosts": "node-0[1:2]", "gather_facts": False, "tasks": [
        {"name": "compile", "shell": noise + "echo 'nvcc fatal : Unsupported gpu architecture' >&2; "
         "echo 'token {{ hf_token }} used' >&2; echo progress; "
         "echo 'note: This error originates from a subprocess' >&2; exit 3"},
    ]}])  # fmt: skip
    result = run_fleet("run", book, "-i", ssh_inventory, "-e", "hf_token=hf_secret_123")
    assert result.returncode == 2
    out = result.stdout
    assert "hf_secret_123" not in out + result.stderr and f"token {MASK} used" in out
    for needle in ("rc: 3", "nvcc fatal : Unsupported gpu architecture", "stdout:", "progress", "earlier line(s)"):
        assert needle in out, needle
    assert "line-0\n" not in out  # only the last lines on the screen...
    assert "2 host(s) failed or unreachable:" in out and "rerun just them with: --limit @failed" in out
    log_line = next(line for line in out.splitlines() if line.startswith("log: "))
    folder = Path(log_line[5:])
    assert folder.parent == fleet_home / "runs"
    text = (folder / "node-01.log").read_text()
    for needle in ("task: compile", "line-0", "exit 3", "nvcc fatal", f"token {MASK} used"):  # ...all in the log
        assert needle in text, needle
    assert "hf_secret_123" not in text
    assert sorted(line.split("\t")[0] for line in (folder / "failed.txt").read_text().splitlines()) == [
        "node-01",
        "node-02",
    ]


def test_limit_failed_reruns_just_the_failed_and_unreachable_hosts(ssh_fleet, tmp_path, fleet_home):
    target = ssh_fleet.host("node-03")
    inv = ssh_fleet.inventory(tmp_path / "inv", extra_hosts={"ghost": {"address": ssh_fleet.unused_address(),
                                                                        "connect_timeout": 2}})  # fmt: skip
    marker = target.home / "fixed"
    marker.unlink(missing_ok=True)
    book = playbook(tmp_path, [{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "needs marker", "shell": "test \"$USER\" != " + target.user + " || test -e ~/fixed"}]}])  # fmt: skip
    first = run_fleet("run", book, "-i", inv)
    assert first.returncode == 6, first.stdout
    listed = run_fleet("run", book, "-i", inv, "--limit", "@failed", "--list-hosts")
    assert sorted(line.strip() for line in listed.stdout.splitlines()[1:]) == ["ghost", "node-03"]
    marker.write_text("")
    again = run_fleet("run", book, "-i", inv, "--limit", "@failed", "--json")
    events = [json.loads(line) for line in again.stdout.splitlines()]
    assert {e["host"] for e in events if e["event"] == "recap"} == {"ghost", "node-03"}
    assert again.returncode == 4  # ghost is still unreachable, node-03 passes now


def test_one_hosts_bad_connection_type_or_variable_fails_only_that_host(ssh_fleet, tmp_path):
    # (a static bad connection type is refused before any host is touched: tests/test_cli_errors.py)
    inv = ssh_fleet.inventory(tmp_path / "inv", extra_hosts={"odd": {"connection": "{{ kind }}", "kind": "telnet"}})
    book = playbook(tmp_path, [{"hosts": "all", "tasks": [
        {"name": "uses var", "command": "echo {{ only_on_some }}"}]}])  # fmt: skip
    (tmp_path / "inv" / "host_vars").mkdir(exist_ok=True)
    for host in ssh_fleet.hosts[1:]:
        (tmp_path / "inv" / "host_vars" / f"{host.name}.yaml").write_text("only_on_some: here\n")
    result = run_fleet("run", book, "-i", inv, "--json")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    recap = {e["host"]: e for e in events if e["event"] == "recap"}
    assert recap["odd"]["failed"] == 1 and "unknown connection type 'telnet'" in recap["odd"]["why"]
    assert recap["node-01"]["failed"] == 1 and "only_on_some" in recap["node-01"]["why"]
    assert all(recap[h.name]["changed"] == 1 for h in ssh_fleet.hosts[1:])
    assert result.returncode == 2 and events[-1]["event"] == "run_end"


# ---- fleet shell --------------------------------------------------------------------------------
def test_shell_groups_identical_output_and_summarises_exit_codes(ssh_fleet, ssh_inventory):
    odd = ssh_fleet.host("node-04")
    command = f'if [ "$USER" = {odd.user} ]; then echo different; exit 5; fi; echo same; id -un >/dev/null'
    result = run_fleet("shell", "node-*", "-i", ssh_inventory, "--", command)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "---- 3 host(s): node-01, node-02, node-03 ----" in lines
    assert lines[lines.index("---- 3 host(s): node-01, node-02, node-03 ----") + 1] == "same"
    assert "---- 1 host(s): node-04 ----" in lines and "different" in lines
    assert lines[-1] == "exit 0 on 3 host(s); exit 5 on 1 host(s) (node-04)"
    rooted = run_fleet("shell", "node-0[1:2]", "-i", ssh_inventory, "--become", "--", "id", "-un")
    assert rooted.returncode == 0 and "---- 2 host(s): node-01, node-02 ----\nroot" in rooted.stdout
    slow = run_fleet("shell", "node-01", "-i", ssh_inventory, "--timeout", "1", "--", "sleep 30")
    assert slow.returncode == 2 and "timed out on 1 host(s) (node-01)" in slow.stdout


# ---- check and diff at many hosts -----------------------------------------------------------------
def test_diffs_are_grouped_by_task_and_identical_ones_collapsed(ssh_fleet, ssh_inventory, tmp_path):
    book = playbook(tmp_path, [{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "motd", "copy": {"dest": "~/motd-ops", "content": "{{ 'odd' if inventory_hostname == 'node-04' "
                                                                  "else 'welcome' }}\n"}}]}])  # fmt: skip
    for host in ssh_fleet.hosts:
        (host.home / "motd-ops").unlink(missing_ok=True)
    checked = run_fleet("run", book, "-i", ssh_inventory, "--check", "--diff")
    assert checked.returncode == 0, checked.stdout
    out = checked.stdout
    assert out.count("--- diff: motd") == 1
    assert "same on 3 hosts: node-01, node-02, node-03:" in out and "\nnode-04:\n" in out
    assert out.count("+welcome") == 1 and out.count("+odd") == 1
    assert not (ssh_fleet.host("node-01").home / "motd-ops").exists()
    applied = run_fleet("run", book, "-i", ssh_inventory, "--diff")  # --diff alone: the diffs of what was applied
    assert "same on 3 hosts" in applied.stdout and (ssh_fleet.host("node-01").home / "motd-ops").read_text() == (
        "welcome\n"
    )


# ---- listings, start-at-task ------------------------------------------------------------------------
def test_listings_syntax_check_and_start_at_task(ssh_fleet, ssh_inventory, tmp_path):
    book = playbook(tmp_path, [{"hosts": "node-0[1:2]", "gather_facts": False, "tags": ["base"], "tasks": [
        {"name": "first", "shell": "touch ~/ops-first", "tags": ["a"]},
        {"name": "second", "shell": "touch ~/ops-second", "tags": ["b"]},
    ]}])  # fmt: skip
    hosts = run_fleet("run", book, "-i", ssh_inventory, "--list-hosts", "--limit", "node-02,node-03")
    assert hosts.stdout.splitlines()[1:] == ["  node-02"]
    tasks = run_fleet("run", book, "-i", ssh_inventory, "--list-tasks", "--skip-tags", "a")
    assert tasks.stdout.splitlines()[1:] == ["  second  tags: b, base"]
    tags = run_fleet("run", book, "-i", ssh_inventory, "--list-tags")
    assert tags.stdout.strip().endswith("tags: a, b, base")
    syntax = run_fleet("run", book, "-i", ssh_inventory, "--syntax-check")
    assert syntax.returncode == 0 and "syntax ok (1 play(s), 2 task(s))" in syntax.stdout
    home = ssh_fleet.host("node-01").home
    for name in ("ops-first", "ops-second"):
        (home / name).unlink(missing_ok=True)
    started = run_fleet("run", book, "-i", ssh_inventory, "--start-at-task", "second", "--limit", "node-01")
    assert started.returncode == 0 and (home / "ops-second").exists() and not (home / "ops-first").exists()
    missing = run_fleet("run", book, "-i", ssh_inventory, "--start-at-task", "secnd")
    assert missing.returncode == 1 and "no task named 'secnd'" in missing.stderr


# ---- verbosity ----------------------------------------------------------------------------------
def test_verbose_shows_output_and_very_verbose_the_scripts(ssh_fleet, ssh_inventory, tmp_path):
    book = playbook(tmp_path, [{"hosts": "node-01", "gather_facts": False, "tasks": [
        {"name": "talk", "shell": "echo said-{{ api_token }}"}]}])  # fmt: skip
    output = f"    stdout:\n      said-{MASK}\n"
    quiet = run_fleet("run", book, "-i", ssh_inventory, "-e", "api_token=tok-9876")
    assert quiet.returncode == 0 and output not in quiet.stdout
    verbose = run_fleet("run", book, "-i", ssh_inventory, "-e", "api_token=tok-9876", "-v")
    assert output in verbose.stdout and "node-01 $ " not in verbose.stdout
    scripts = run_fleet("run", book, "-i", ssh_inventory, "-e", "api_token=tok-9876", "-vv")
    assert output in scripts.stdout and "node-01 $ " in scripts.stdout and "node-01 -> exit 0" in scripts.stdout
    assert "tok-9876" not in verbose.stdout + scripts.stdout


# ---- the terminal ---------------------------------------------------------------------------------
def test_closed_pipe_ends_quietly_and_the_run_completes(ssh_fleet, ssh_inventory, tmp_path):
    book = playbook(tmp_path, [{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": f"step {i}", "shell": f"echo {i} >> ~/pipe-steps"} for i in range(5)]}])  # fmt: skip
    for host in ssh_fleet.hosts:
        (host.home / "pipe-steps").unlink(missing_ok=True)
    cmd = f"{sys.executable} -m fleet.cli run {book} -i {ssh_inventory} | head -n 1; echo rc=${{PIPESTATUS[0]}} >&2"
    result = subprocess.run(["bash", "-c", cmd], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert result.stdout.count("\n") == 1
    for host in ssh_fleet.hosts:
        assert (host.home / "pipe-steps").read_text().split() == ["0", "1", "2", "3", "4"]


def test_one_flag_vocabulary_version_and_python_m_fleet():
    parser = build_parser()
    commands = [  # (words before the options, words after them)
        (["run"], ["book.yaml"]), (["facts"], []), (["inventory"], []), (["doctor"], []),
        (["shell", "all"], ["--", "true"]), (["train"], []), (["train", "status"], []),
        (["train", "logs"], []), (["train", "stop"], []),
    ]  # fmt: skip
    for head, tail in commands:
        for flag in ("--hosts", "--limit", "-H", "-l"):
            options, _command = split_command([*head, flag, "x", *tail])
            assert parser.parse_args(options).pattern == "x", (head, flag)
        assert parser.parse_args(split_command([*head, "--forks", "3", *tail])[0]).forks == 3
    assert parser.parse_args(["train", "logs", "-f"]).follow
    version = subprocess.run([sys.executable, "-m", "fleet", "--version"], cwd=REPO, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("fleet ")
    completion = run_fleet("completion", "bash")
    assert "complete -F _fleet_complete fleet" in completion.stdout and "--start-at-task" in completion.stdout


# ---- failure policy and retries -------------------------------------------------------------------
def test_max_fail_percentage_stops_a_serial_rollout_at_the_batch_that_crosses_it(ssh_fleet, ssh_inventory, tmp_path):
    roll = [{"name": "roll", "shell": "test {{ inventory_hostname }} != node-01"}]
    book = playbook(tmp_path, [{"hosts": "all", "gather_facts": False, "serial": 2, "max_fail_percentage": 40,
                                "tasks": roll}])  # fmt: skip
    result = run_fleet("run", book, "-i", ssh_inventory, "--json")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    started = {e["host"] for e in events if e["event"] == "task_start"}
    assert started == {"node-01", "node-02"}  # the second batch never started
    assert "max_fail_percentage 40% crossed: 1 of 2" in events[-1]["stopped"] and result.returncode == 2
    tolerant = playbook(tmp_path, [{"hosts": "all", "gather_facts": False, "serial": 2, "max_fail_percentage": 50,
                                    "tasks": roll}], "tolerant.yaml")  # fmt: skip
    events = [
        json.loads(line) for line in run_fleet("run", tolerant, "-i", ssh_inventory, "--json").stdout.splitlines()
    ]
    assert {e["host"] for e in events if e["event"] == "task_start"} == {h.name for h in ssh_fleet.hosts}
    assert "stopped" not in events[-1]


def test_any_errors_fatal_stops_every_host_at_its_next_command(ssh_fleet, ssh_inventory, tmp_path):
    for host in ssh_fleet.hosts:
        (host.home / "fatal-after").unlink(missing_ok=True)
    book = playbook(tmp_path, [{"hosts": "all", "gather_facts": False, "any_errors_fatal": True, "tasks": [
        {"name": "first", "shell": "if [ {{ inventory_hostname }} = node-02 ]; then exit 1; fi; sleep 3"},
        {"name": "after", "shell": "touch ~/fatal-after"},
    ]}])  # fmt: skip
    result = run_fleet("run", book, "-i", ssh_inventory)
    assert result.returncode == 2, result.stdout
    assert "run stopped early: any_errors_fatal: node-02 failed at 'first'" in result.stdout
    assert not any((h.home / "fatal-after").exists() for h in ssh_fleet.hosts)
    bad = playbook(tmp_path, [{"hosts": "all", "max_fail_percentage": "lots", "tasks": []}], "bad.yaml")
    refused = run_fleet("run", bad, "-i", ssh_inventory)
    assert refused.returncode == 1 and "`max_fail_percentage:` must be a number from 0 to 100" in refused.stderr


def test_retries_until_and_delay(ssh_fleet, ssh_inventory, tmp_path):
    host = ssh_fleet.host("node-01")
    (host.home / "tries").unlink(missing_ok=True)
    bump = "n=$(cat ~/tries 2>/dev/null || echo 0); n=$((n+1)); echo $n > ~/tries; echo $n"
    book = playbook(tmp_path, [{"hosts": "node-01", "gather_facts": False, "tasks": [
        {"name": "flaky", "shell": bump + "; [ $n -ge 3 ]", "retries": 5, "delay": 0},
        {"name": "until", "shell": bump, "register": "out", "until": "out.stdout | int >= 5", "retries": 5,
         "delay": 0.2},
        {"name": "never", "shell": "false", "retries": 1, "delay": 0},
    ]}])  # fmt: skip
    result = run_fleet("run", book, "-i", ssh_inventory, "--json")
    results = {e["task"]: e for e in map(json.loads, result.stdout.splitlines()) if e["event"] == "task_result"}
    assert (results["flaky"]["status"], results["flaky"]["attempts"]) == ("changed", 3)
    assert (results["until"]["status"], results["until"]["attempts"], results["until"]["stdout"]) == (
        "changed",
        2,
        "5",
    )
    assert (results["never"]["status"], results["never"]["attempts"]) == ("failed", 2)
    assert (host.home / "tries").read_text().strip() == "5"
    assert [e["event"] for e in map(json.loads, result.stdout.splitlines())].count("task_result") == 3


def test_live_view_at_80_columns_fits_names_totals_and_more_hosts(tmp_path):
    from faultkit import run_in_pty

    names = [f"gh200-rack{r:02d}-node{n:02d}-infiniband" for r in range(1, 5) for n in range(1, 11)]
    (tmp_path / "inv").mkdir()
    hosts = {name: {"connection": "local"} for name in names}
    (tmp_path / "inv" / "hosts.yaml").write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    book = playbook(tmp_path, [{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "step", "shell": "sleep 1"},
        {"name": "odd ones", "shell": "case {{ inventory_hostname }} in *node01*) echo no >&2; exit 4;; esac"},
    ]}])  # fmt: skip
    code, screen = run_in_pty(
        "run", book, "-i", tmp_path / "inv", "--forks", "40", env={"COLUMNS": "80", "LINES": "20"}
    )
    assert code == 2, screen[-2000:]  # it ended by itself: no deadlock between printing and the table
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)  # colours and cursor moves
    assert "gh200-…rack01-node07…" in screen  # the part that tells hosts apart, never cut
    assert re.search(r"40 hosts +\d+ more hosts; \d+ busy", screen), screen[-3000:]
    assert "4 hosts (gh200-rack01-node01-infiniband, gh200-rack02-node01-infiniband" in screen
