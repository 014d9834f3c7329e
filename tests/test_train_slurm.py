"""`fleet train --backend slurm` against a real Slurm (munged, slurmctld, slurmd on this machine,
one CPU node): the GRPO smoke submitted through fleet runs to COMPLETED; a job whose training
process is killed shows failed; `fleet train stop` cancels a job and it shows stopped."""

from __future__ import annotations

import os
import signal

import pytest
import yaml
from conftest import by_host, run_fleet
from slurmcluster import NODE, SlurmCluster, missing
from sshfleet import free_port
from train_jobs.kit import JOBS, TRAIN_GRPO, job_processes, train_python, wait_for, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    lacking = missing()
    if lacking:
        pytest.fail(f"{', '.join(lacking)} missing: Slurm and munge from Debian's packages (.ci/run installs them)")
    if os.geteuid() != 0:
        pytest.fail("the test Slurm cluster runs its daemons as root")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def inventory(tmp_path):
    inv = tmp_path / "inv"
    inv.mkdir()
    host = {"connection": "local", "train_python": str(train_python()), "train_workdir": str(tmp_path / "work")}
    (inv / "hosts.yaml").write_text(yaml.safe_dump({"all": {"hosts": {NODE: host}}}))
    return inv


def train(slurm, inv, config, *args):
    return run_fleet("train", *args, "-i", inv, "-c", config, "--backend", "slurm", env=slurm.env, timeout=300)


def status(slurm, inv, config) -> dict:
    result = train(slurm, inv, config, "status", "--json", "--hosts", NODE)
    assert "Traceback" not in result.stderr, result.stderr
    (state,) = by_host(result.stdout).values()
    return state


def test_smoke_runs_to_completed_through_slurm(slurm, inventory, tmp_path):
    body = yaml.safe_load((TRAIN_GRPO.parent / "train_config.smoke.yaml").read_text())
    body["job"].update(script=str(TRAIN_GRPO), run_name="slurm-smoke", master_port=free_port("127.0.0.1"))
    config = tmp_path / "train_config.slurm.yaml"
    config.write_text(yaml.safe_dump(body, sort_keys=False))
    launched = train(slurm, inventory, config, "--hosts", NODE)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert "as slurm job" in launched.stdout and f"(1 node(s): {NODE})" in launched.stdout
    job_id = launched.stdout.split("as slurm job ")[1].split()[0]
    final = wait_for(lambda: (s := status(slurm, inventory, config))["state"] not in ("pending", "running") and s,
                     "the smoke job to end", timeout=300, every=2)  # fmt: skip
    assert final["state"] == "finished", final
    assert (final["step"], final["max_steps"]) == (4, 4) and final["exit_code"] == 0
    assert "JobState=COMPLETED" in slurm.run("scontrol", "-o", "show", "job", job_id).stdout
    batch = (tmp_path / "work" / "runs" / "slurm-smoke" / "batch.sh").read_text()
    assert "srun --kill-on-bad-exit=1" in batch and '--rdzv_endpoint="$head:' in batch
    log = (tmp_path / "work" / "runs" / "slurm-smoke" / "training.log").read_text()
    assert f"fleet: slurm job {job_id} on {NODE}" in log and "smoke (tiny random gpt-oss)" in log
    logs = train(slurm, inventory, config, "logs", "-n", "3", "--hosts", NODE)
    assert "fleet: job exited with code 0" in logs.stdout
    again = train(slurm, inventory, config, "--hosts", NODE)
    assert again.returncode != 0 and "nothing is overwritten" in again.stdout


def test_killed_job_shows_failed_and_stop_cancels(slurm, inventory, tmp_path):
    args = ["--steps", "900", "--interval", "0.1"]
    port = free_port("127.0.0.1")
    config = write_config(tmp_path / "k.yaml", script=JOBS / "steps_job.py", run="slurm-kill", args=args,
                          master_port=port, python="python3")  # fmt: skip
    assert train(slurm, inventory, config, "--hosts", NODE).returncode == 0
    wait_for(lambda: (status(slurm, inventory, config)["step"] or 0) >= 3, "the job past step 3", timeout=300)
    victims = [p for p, cmd in job_processes("slurm-kill").items() if "steps_job.py" in cmd and "torch" not in cmd]
    assert len(victims) == 1, job_processes("slurm-kill")
    os.kill(victims[0], signal.SIGKILL)
    failed = wait_for(
        lambda: (s := status(slurm, inventory, config))["state"] == "failed" and s, "the job to fail", timeout=300
    )
    assert failed["exit_code"] not in (None, 0) and "FAILED" in failed["note"], failed

    # a partition and a node count instead of a host pattern; python and workdir from the config
    config2 = write_config(tmp_path / "s.yaml", script=JOBS / "steps_job.py", run="slurm-stop", args=args,
                           master_port=port, python=str(train_python()), workdir=str(tmp_path / "work2"))  # fmt: skip
    by_partition = ("--partition", "debug", "--nodes", "1")
    launched = train(slurm, inventory, config2, *by_partition)
    assert launched.returncode == 0 and "(1 node(s): partition debug)" in launched.stdout, launched.stdout
    batch = (tmp_path / "work2" / "runs" / "slurm-stop" / "batch.sh").read_text()
    assert "#SBATCH --partition=debug" in batch and "--nodelist" not in batch

    def stop_status() -> dict:
        result = train(slurm, inventory, config2, "status", "--json", *by_partition)
        (state,) = by_host(result.stdout).values()
        return state

    wait_for(lambda: (stop_status()["step"] or 0) >= 2, "the second job past step 2", timeout=300)
    stopped = train(slurm, inventory, config2, "stop", *by_partition)
    assert stopped.returncode == 0 and "cancelled; squeue no longer lists it" in stopped.stdout, stopped.stdout
    after = stop_status()
    assert after["state"] == "stopped", after
    assert slurm.run("squeue", "-h").stdout.strip() == ""
    assert job_processes("slurm-stop") == {}


def test_slurm_states_map_to_fleet_states():
    """What squeue/scontrol print, and the exit file when Slurm forgot the job, as fleet's states."""
    from fleet.train.slurm import parse_state

    def state(slurm: str, *extra: str) -> str:
        text = "\n@@slurm_state\njobid 7\n" + f"slurm {slurm}\n" + "".join(f"{e}\n" for e in extra) + "@@slurm_end\n"
        return parse_state(text)[0].state

    assert state("PENDING -") == "pending" and state("RUNNING -") == "running"
    assert state("COMPLETED 0:0") == "finished"
    assert state("FAILED 1:0") == "failed" and state("TIMEOUT 0:15") == "failed" and state("NODE_FAIL 0:0") == "failed"
    assert state("CANCELLED+ 0:15", "stopped 1700000000 stopped by fleet train stop") == "stopped"
    assert state("CANCELLED 0:15") == "failed"  # cancelled by someone else: the run did not end well
    assert state("", "exit 0 1700000000") == "finished" and state("", "exit 3 1700000000") == "failed"
    assert state("") == "lost"
    assert parse_state("\n@@slurm_state\njobid \n@@slurm_end\n")[0].state == "absent"
    assert parse_state("\n@@slurm_state\njobid 7\nslurm FAILED 0:9\n@@slurm_end\n")[0].exit_code == 137
