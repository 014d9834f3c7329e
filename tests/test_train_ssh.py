"""`fleet train` against real sshd hosts: the whole lifecycle of detached jobs (launch, status while
running, logs, a second launch that changes nothing, stop, status after), a crash, a host whose
sshd dies mid-run, and multi-node torchrun runs (gloo on CPU) where one node dies."""

from __future__ import annotations

import json
import os
import signal

import jsonschema
import pytest
import yaml
from sshfleet import free_port
from train_jobs.kit import JOBS, fleet_train, job_processes, status, train_python, wait_for, write_config

from fleet.events import SCHEMA

pytestmark = pytest.mark.ssh

THREE = "node-01,node-02,node-03"


def recap(stdout: str) -> dict[str, dict]:
    return {e["host"]: e for e in map(json.loads, stdout.splitlines()) if e["event"] == "recap"}


def tasks(stdout: str) -> dict[str, dict]:
    return {e["host"]: e for e in map(json.loads, stdout.splitlines()) if e["event"] == "task_result"}


@pytest.fixture
def stop_after(ssh_inventory):
    """Stops every run a test started, whatever happened in the test."""
    started = []
    yield started.append
    for config, pattern in started:
        fleet_train(ssh_inventory, config, "stop", "--hosts", pattern)


def test_lifecycle_on_several_hosts(ssh_fleet, ssh_inventory, tmp_path, stop_after):
    config = write_config(
        tmp_path / "steps.yaml", script=JOBS / "steps_job.py", run="life", args=["--steps", "600", "--interval", "0.1"]
    )
    stop_after((config, THREE))
    launched = fleet_train(ssh_inventory, config, "--hosts", THREE, "--json")
    assert launched.returncode == 0, launched.stdout + launched.stderr
    for name, host in recap(launched.stdout).items():
        # facts, imports and preflight in one look, the preflight again under the host lock (the
        # engine's rule for a change planned from an unlocked look), the launch
        assert host["changed"] == 1 and host["commands"] == 3, (name, host)
    assert "synced steps_job.py, steps.yaml" in tasks(launched.stdout)["node-01"]["message"]

    # the launching CLI and its SSH sessions are gone; the jobs run on, each in its own session
    states = wait_for(
        lambda: (
            (s := status(ssh_inventory, config, "--hosts", THREE)[1])
            and all(v["state"] == "running" and (v["step"] or 0) >= 3 for v in s.values())
            and s
        ),
        "three running jobs past step 3",
    )
    for name, state in states.items():
        assert state["max_steps"] == 600 and state["loss"] is not None and state["reward"] is not None
        assert state["runtime_s"] is not None and state["gpu_memory_mib"] is None  # no GPU here
        home = ssh_fleet.host(name).home / "fleet-train-test" / "runs" / "life"
        pgid = int((home / "job.pid").read_text())
        assert os.getsid(pgid) == pgid  # a session leader: not the SSH session's child
        assert pgid in job_processes("life", name)

    logs = fleet_train(ssh_inventory, config, "logs", "--hosts", THREE, "-n", "2")
    assert logs.returncode == 0, logs.stderr
    lines = logs.stdout.splitlines()
    assert {line.split(" | ")[0].strip() for line in lines} == set(THREE.split(","))
    assert all("step=" in line for line in lines) and len(lines) == 6
    as_json = fleet_train(ssh_inventory, config, "logs", "--hosts", THREE, "-n", "2", "--json")
    assert as_json.returncode == 0, as_json.stderr
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    for event in events:
        jsonschema.validate(event, SCHEMA)
    assert [e["event"] for e in events] == ["log_line"] * 6
    assert {e["host"] for e in events} == set(THREE.split(","))
    assert all("step=" in e["line"] for e in events)

    pids = {name: (ssh_fleet.host(name).home / "fleet-train-test/runs/life/job.pid").read_text() for name in states}
    again = fleet_train(ssh_inventory, config, "--hosts", THREE, "--json")
    assert again.returncode == 0, again.stdout
    for name, host in recap(again.stdout).items():
        assert host["changed"] == 0 and host["ok"] == 2 and host["commands"] == 1, (name, host)  # imports, launch
        assert "already running" in tasks(again.stdout)[name]["message"]
        assert (ssh_fleet.host(name).home / "fleet-train-test/runs/life/job.pid").read_text() == pids[name]

    stopped = fleet_train(ssh_inventory, config, "stop", "--hosts", THREE, "--json")
    assert stopped.returncode == 0, stopped.stdout
    assert all(h["changed"] == 1 for h in recap(stopped.stdout).values())
    assert job_processes("life") == {}
    code, after = status(ssh_inventory, config, "--hosts", THREE)
    assert code == 0 and {v["state"] for v in after.values()} == {"stopped"}
    assert all(v["step"] >= 3 for v in after.values())  # the log and its steps stay
    twice = fleet_train(ssh_inventory, config, "stop", "--hosts", THREE, "--json")
    assert all(e["status"] == "ok" and e["message"] == "not running" for e in tasks(twice.stdout).values())


def test_crash_shows_failed_with_exit_code(ssh_inventory, tmp_path, stop_after):
    args = ["--steps", "50", "--interval", "0.5", "--fail-at", "6", "--exit-code", "7"]
    config = write_config(tmp_path / "crash.yaml", script=JOBS / "steps_job.py", run="crash", args=args)
    stop_after((config, "node-04"))
    assert fleet_train(ssh_inventory, config, "--hosts", "node-04").returncode == 0
    # follow the log while the job runs: it ends by itself once the job is over, the last words in
    followed = fleet_train(ssh_inventory, config, "logs", "-f", "--hosts", "node-04", "-n", "100", timeout=60)
    assert followed.returncode == 0, followed.stderr
    assert all(line.startswith("node-04 | ") for line in followed.stdout.splitlines())
    assert "RuntimeError: injected failure" in followed.stdout and "job exited with code 7" in followed.stdout
    failed = wait_for(
        lambda: (s := status(ssh_inventory, config, "--hosts", "node-04")[1]["node-04"])["state"] == "failed" and s,
        "the job to fail",
    )
    assert followed.stdout.count("step=1/50") == 1 and "step=6/50" in followed.stdout
    assert failed["exit_code"] == 7 and failed["step"] == 6
    assert "exit code 7: RuntimeError: injected failure" in failed["note"]
    code, _ = status(ssh_inventory, config, "--hosts", "node-04")
    assert code == 2
    table = fleet_train(ssh_inventory, config, "status", "--hosts", "node-04")
    assert "failed (7)" in table.stdout


def test_host_whose_sshd_dies_mid_run_is_unreachable_not_lost(ssh_fleet, ssh_inventory, tmp_path, stop_after):
    config = write_config(
        tmp_path / "down.yaml",
        script=JOBS / "steps_job.py",
        run="sshd-down",
        args=["--steps", "900", "--interval", "0.2"],
    )
    stop_after((config, "node-03,node-04"))
    assert fleet_train(ssh_inventory, config, "--hosts", "node-03,node-04").returncode == 0
    wait_for(
        lambda: all(
            (v["step"] or 0) >= 2 for v in status(ssh_inventory, config, "--hosts", "node-03,node-04")[1].values()
        ),
        "both jobs past step 2",
    )
    host = ssh_fleet.host("node-04")
    host.stop()
    try:
        code, down = status(ssh_inventory, config, "--hosts", "node-03,node-04")
        assert code == 4
        assert down["node-04"]["state"] == "unreachable" and host.address in down["node-04"]["note"]
        assert down["node-03"]["state"] == "running"
        step_before = down["node-03"]["step"]
    finally:
        host.start()
    code, back = status(ssh_inventory, config, "--hosts", "node-03,node-04")
    assert code == 0 and back["node-04"]["state"] == "running"  # nothing was lost while sshd was down
    assert back["node-04"]["step"] >= step_before >= 2


@pytest.fixture
def pair_inventory(ssh_fleet, tmp_path):
    """node-01 and node-02 able to run torch: the CI's world-readable training venv."""
    inv = ssh_fleet.inventory(tmp_path / "pair")
    (inv / "group_vars").mkdir()
    (inv / "group_vars" / "all.yaml").write_text(yaml.safe_dump({"train_python": str(train_python())}))
    return inv


def _gloo_config(tmp_path, ssh_fleet, run: str):
    return write_config(
        tmp_path / f"{run}.yaml",
        script=JOBS / "gloo_job.py",
        run=run,
        args=["--steps", "900", "--interval", "0.2"],
        multi_node=True,
        master_port=free_port(ssh_fleet.host("node-01").address),
        require_modules=["torch"],
        env={"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"},
    )


def _launch_pair(inv, config):
    launched = fleet_train(inv, config, "--hosts", "node-01,node-02", "--json")
    assert launched.returncode == 0, launched.stdout + launched.stderr
    messages = tasks(launched.stdout)
    assert "node 0/2" in messages["node-01"]["message"] and "node 1/2" in messages["node-02"]["message"]
    return wait_for(
        lambda: (
            (s := status(inv, config, "--hosts", "node-01,node-02")[1])
            and all(v["state"] == "running" and (v["step"] or 0) >= 3 for v in s.values())
            and s
        ),
        "both nodes of the run past step 3",
        timeout=120,
    )


def _one(processes: dict[int, str], *, agent: bool) -> int:
    found = [
        pid for pid, cmd in processes.items() if "gloo_job.py" in cmd and ("torch.distributed.run" in cmd) == agent
    ]
    assert len(found) == 1, processes
    return found[0]


def test_multi_node_run_fails_when_a_rank_dies(ssh_fleet, pair_inventory, tmp_path, stop_after):
    config = _gloo_config(tmp_path, ssh_fleet, "pair-rank")
    stop_after((config, "node-01,node-02"))
    running = _launch_pair(pair_inventory, config)
    assert {v["node_rank"] for v in running.values()} == {0, 1} and {v["nnodes"] for v in running.values()} == {2}
    os.kill(_one(job_processes("pair-rank", "node-02"), agent=False), signal.SIGKILL)
    states = wait_for(
        lambda: (
            (s := status(pair_inventory, config, "--hosts", "node-01,node-02")[1])
            and all(v["state"] == "failed" for v in s.values())
            and s
        ),
        "the whole run to fail",
    )
    assert states["node-02"]["exit_code"] not in (None, 0)
    assert job_processes("pair-rank") == {}


def test_multi_node_killed_agent_stops_the_run_and_its_orphans(ssh_fleet, pair_inventory, tmp_path, stop_after):
    """torchrun SIGKILLed: its worker (a session of its own) trains on with the other node. Status
    sees the node failed, stops its leftover worker and the other node, and fails the run."""
    config = _gloo_config(tmp_path, ssh_fleet, "pair-agent")
    stop_after((config, "node-01,node-02"))
    _launch_pair(pair_inventory, config)
    os.kill(_one(job_processes("pair-agent", "node-02"), agent=True), signal.SIGKILL)
    wait_for(
        lambda: (ssh_fleet.host("node-02").home / "fleet-train-test/runs/pair-agent/job.exit").exists(),
        "node-02's wrapper to record its exit",
    )
    assert _one(job_processes("pair-agent", "node-02"), agent=False)  # the orphaned worker lives on
    code, states = status(pair_inventory, config, "--hosts", "node-01,node-02")
    assert code == 2
    assert states["node-02"]["state"] == "failed" and states["node-02"]["exit_code"] == 137
    assert states["node-01"]["state"] == "failed"
    assert states["node-01"]["note"] == "stopped: peer node-02 failed (exit code 137)"
    assert job_processes("pair-agent") == {}
    _, later = status(pair_inventory, config, "--hosts", "node-01,node-02")
    assert later["node-01"]["state"] == "failed" and "peer node-02" in later["node-01"]["note"]


def test_job_killed_with_its_wrapper_shows_lost(ssh_fleet, ssh_inventory, tmp_path, stop_after):
    config = write_config(
        tmp_path / "lost.yaml", script=JOBS / "steps_job.py", run="lost", args=["--steps", "900", "--interval", "0.1"]
    )
    stop_after((config, "node-03"))
    assert fleet_train(ssh_inventory, config, "--hosts", "node-03").returncode == 0
    wait_for(lambda: status(ssh_inventory, config, "--hosts", "node-03")[1]["node-03"]["step"], "a first step")
    pgid = int((ssh_fleet.host("node-03").home / "fleet-train-test/runs/lost/job.pid").read_text())
    os.killpg(pgid, signal.SIGKILL)  # wrapper and job at once: nobody left to write the exit code
    wait_for(lambda: not job_processes("lost"), "the job's processes to end")
    code, states = status(ssh_inventory, config, "--hosts", "node-03")
    assert code == 2 and states["node-03"]["state"] == "lost" and states["node-03"]["step"] >= 1


def _session_processes(user: str) -> dict[int, str]:
    """pid -> command line of every process of the host's user that is not part of a training
    job: fleet's SSH session on the host (sshd's child, the agent, the commands it runs)."""
    import pwd
    from pathlib import Path

    uid = pwd.getpwnam(user).pw_uid
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or entry.stat().st_uid != uid:
                continue
            if b"FLEET_JOB=" in (entry / "environ").read_bytes():
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return found


def test_ctrl_c_during_logs_follow_ends_it_and_its_remote_commands(ssh_fleet, ssh_inventory, tmp_path, stop_after):
    import subprocess
    import sys
    import time

    from conftest import REPO

    config = write_config(
        tmp_path / "f.yaml", script=JOBS / "steps_job.py", run="follow", args=["--steps", "900", "--interval", "0.1"]
    )
    stop_after((config, "node-04"))
    assert fleet_train(ssh_inventory, config, "--hosts", "node-04").returncode == 0
    user = ssh_fleet.host("node-04").user
    wait_for(lambda: not _session_processes(user), "the launch's SSH session to end")
    follow = subprocess.Popen(
        [sys.executable, "-m", "fleet.cli", "train", "logs", "-f", "-n", "1", "--hosts", "node-04",
         "-i", str(ssh_inventory), "-c", str(config)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = [follow.stdout.readline() for _ in range(5)]  # the first, then four that came while following
        assert all(line.startswith("node-04 | ") and "step=" in line for line in lines), lines
        during = _session_processes(user)
        assert during, "fleet's session on the host (its agent) should be there while it follows"
        follow.send_signal(signal.SIGINT)
        _, stderr = follow.communicate(timeout=30)
    finally:
        if follow.poll() is None:
            follow.kill()
    assert follow.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    deadline = time.monotonic() + 10
    while set(during) & set(_session_processes(user)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not set(during) & set(_session_processes(user)), (during, _session_processes(user))
    assert not [cmd for cmd in _session_processes(user).values() if "tail" in cmd]
    assert job_processes("follow", "node-04")  # the job itself runs on: following it never touched it
