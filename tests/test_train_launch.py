"""`fleet train` launches against real sshd hosts: a job that dies in the watch window is reported
failed with its last log lines; module checks really import; a run that exists is never
overwritten (--run NEW, --resume or --force decide)."""

from __future__ import annotations

import json
import shutil

import pytest
from sshfleet import free_port
from train_jobs.kit import JOBS, fleet_train, job_processes, status, train_inventory, wait_for, write_config

pytestmark = pytest.mark.ssh


def events(stdout: str, kind: str) -> dict[str, dict]:
    return {e["host"]: e for e in map(json.loads, stdout.splitlines()) if e["event"] == kind}


def test_job_dying_in_the_watch_window_is_reported_failed_with_its_last_lines(ssh_inventory, tmp_path):
    config = write_config(tmp_path / "dies.yaml", script=JOBS / "dies_on_import.py", run="dies")
    launched = fleet_train(ssh_inventory, config, "--hosts", "node-01", "--json")
    assert launched.returncode != 0, launched.stdout
    task = events(launched.stdout, "task_result")["node-01"]
    assert task["status"] == "failed", task
    assert "the job exited with code 1 within" in task["message"]
    assert "ModuleNotFoundError: No module named 'fleet_test_module_that_does_not_exist'" in task["message"]
    code, states = status(ssh_inventory, config, "--hosts", "node-01")
    assert code == 2 and states["node-01"]["state"] == "failed"


def test_launch_watch_ends_at_the_first_step_record(ssh_inventory, tmp_path):
    args = ["--steps", "300", "--interval", "0.1"]
    config = write_config(tmp_path / "ready.yaml", script=JOBS / "steps_job.py", run="ready", args=args)
    try:
        launched = fleet_train(ssh_inventory, config, "--hosts", "node-02", "--json")
        assert launched.returncode == 0, launched.stdout + launched.stderr
        message = events(launched.stdout, "task_result")["node-02"]["message"]
        assert "first step record after" in message, message
        assert status(ssh_inventory, config, "--hosts", "node-02")[1]["node-02"]["state"] == "running"
    finally:
        fleet_train(ssh_inventory, config, "stop", "--hosts", "node-02")


def test_module_check_imports_for_real(ssh_fleet, ssh_inventory, tmp_path):
    """A module that is there (find_spec finds it) but breaks on import stops the launch."""
    host = ssh_fleet.host("node-03")
    workdir = host.home / "fleet-train-test"
    workdir.mkdir(exist_ok=True)  # other train tests of the session may have used it
    (workdir / "broken_dep.py").write_text("raise ImportError('libcudart.so.13: cannot open shared object file')\n")
    shutil.chown(workdir, host.user, host.user)
    config = write_config(
        tmp_path / "dep.yaml", script=JOBS / "steps_job.py", run="dep", require_modules=["json", "broken_dep"]
    )
    launched = fleet_train(ssh_inventory, config, "--hosts", "node-03", "--json")
    assert launched.returncode != 0
    message = events(launched.stdout, "task_result")["node-03"]["message"]
    assert "cannot import broken_dep (ImportError: libcudart.so.13: cannot open shared object file)" in message
    assert "json" not in message.split("cannot import")[1]
    assert not (workdir / "runs" / "dep").exists()  # nothing was started


def test_existing_run_is_never_overwritten(ssh_fleet, ssh_inventory, tmp_path):
    args = ["--steps", "3", "--interval", "0.05"]
    config = write_config(tmp_path / "once.yaml", script=JOBS / "steps_job.py", run="once", args=args)
    first = fleet_train(ssh_inventory, config, "--hosts", "node-04")
    assert first.returncode == 0, first.stdout + first.stderr
    wait_for(lambda: status(ssh_inventory, config, "--hosts", "node-04")[1]["node-04"]["state"] == "finished", "end")
    run_dir = ssh_fleet.host("node-04").home / "fleet-train-test" / "runs" / "once"
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}

    again = fleet_train(ssh_inventory, config, "--hosts", "node-04", "--json")
    assert again.returncode != 0
    message = events(again.stdout, "task_result")["node-04"]["message"]
    assert "run once exists here (finished at step 3); nothing is overwritten" in message
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before

    nothing = fleet_train(ssh_inventory, config, "--hosts", "node-04", "--resume", "--json")
    assert nothing.returncode != 0
    assert "nothing to resume: no checkpoint-*" in events(nothing.stdout, "task_result")["node-04"]["message"]

    renamed = fleet_train(ssh_inventory, config, "--hosts", "node-04", "--run", "once-b")
    assert renamed.returncode == 0, renamed.stdout
    assert (run_dir.parent / "once-b" / "job.pid").exists()

    forced = fleet_train(ssh_inventory, config, "--hosts", "node-04", "--force", "--json")
    assert forced.returncode == 0, forced.stdout
    assert "replaced and started once" in events(forced.stdout, "task_result")["node-04"]["message"]
    launch_ids = {
        json.loads(before["job.json"])["launch_id"],
        json.loads((run_dir / "job.json").read_text())["launch_id"],
    }
    assert len(launch_ids) == 2
    log = (run_dir / "training.log").read_text()
    assert log.count("fleet: starting") == 1  # the old log went with the old run


def test_multi_node_launch_where_a_node_dies_at_once_stops_the_others(ssh_fleet, tmp_path):
    inv = train_inventory(ssh_fleet, tmp_path / "pair")
    config = write_config(
        tmp_path / "pair.yaml", script=JOBS / "steps_job.py", run="pair-dies",
        args=["--steps", "900", "--interval", "0.2", "--fail-on-node", "1", "--exit-code", "4"],
        multi_node=True, master_port=free_port(ssh_fleet.host("node-01").address), require_modules=["torch"],
        workdir="~/fleet-train-pair-dies",  # its own: the session's hosts are shared with other train tests
        env={"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    launched = fleet_train(inv, config, "--hosts", "node-01,node-02", "--json")
    assert launched.returncode != 0, launched.stdout
    results = [e for e in map(json.loads, launched.stdout.splitlines()) if e["event"] == "task_result"]
    assert results, launched.stdout + launched.stderr
    dead = [e for e in results if e["host"] == "node-02"]
    assert dead and "the job exited with code" in dead[-1]["message"], results
    assert "RuntimeError: node 1 cannot start" in dead[-1]["message"]
    peer = [e for e in results if e["host"] == "node-01"][-1]
    assert peer["status"] == "failed" and peer["message"] == "stopped: peer node-02 failed at launch", results
    _, states = status(inv, config, "--hosts", "node-01,node-02")
    assert {s["state"] for s in states.values()} == {"failed"}, states
    assert job_processes("pair-dies") == {}


def test_multi_node_launch_starts_nowhere_when_one_node_fails_its_preflight(ssh_fleet, tmp_path):
    """The barrier: every node's preflight passes, or no node launches; the recap names the node
    and says why."""
    inv = train_inventory(ssh_fleet, tmp_path / "barrier")
    (inv / "host_vars").mkdir()
    (inv / "host_vars" / "node-02.yaml").write_text("train_python: /nonexistent/bin/python\n")
    config = write_config(
        tmp_path / "barrier.yaml", script=JOBS / "steps_job.py", run="all-or-none", args=["--steps", "900"],
        multi_node=True, master_port=free_port(ssh_fleet.host("node-01").address),
        workdir="~/fleet-train-barrier",
    )  # fmt: skip
    launched = fleet_train(inv, config, "--hosts", "node-01,node-02")
    assert launched.returncode == 2, launched.stdout + launched.stderr
    why = "python '/nonexistent/bin/python' not found"
    recap = launched.stdout[launched.stdout.index("2 host(s) failed or unreachable:") :]
    assert f"node-02: imports: {why}" in recap, launched.stdout
    assert f"node-01: train all-or-none: launch: not started on any node: node-02: imports: {why}" in recap
    for name in ("node-01", "node-02"):  # nothing was started, nothing was written
        assert not (ssh_fleet.host(name).home / "fleet-train-barrier" / "runs").exists()
    assert job_processes("all-or-none") == {}
    as_json = fleet_train(inv, config, "--hosts", "node-01,node-02", "--json")
    results = [e for e in map(json.loads, as_json.stdout.splitlines()) if e["event"] == "task_result"]
    assert [(e["host"], e["task"], e["status"]) for e in results if e["status"] != "ok"] == [
        ("node-02", "imports", "failed"), ("node-01", "train all-or-none: launch", "failed"),
    ]  # fmt: skip
    assert not any(e["task"] == "launch" for e in results)
