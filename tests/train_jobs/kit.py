"""Helpers shared by the `fleet train` tests: job configs, status polling, finding job processes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from conftest import REPO, by_host, run_fleet

JOBS = Path(__file__).resolve().parent
TRAIN_GRPO = REPO / "playbooks" / "files" / "train_grpo.py"


def train_python() -> Path:
    """A python with torch, transformers, trl, peft and datasets that every test user may run
    (.ci/run builds it; the CI runner's own python lives in a home the sshd users cannot read)."""
    if os.environ.get("FLEET_TRAIN_PYTHON"):
        return Path(os.environ["FLEET_TRAIN_PYTHON"])
    return Path(os.environ.get("FLEET_TRAIN_VENV", "/opt/fleet-train-venv")) / "bin" / "python"


def write_config(path: Path, *, script: Path, run: str, args: list[str] = (), train: dict | None = None, **job: Any):
    body = {
        "job": {
            "run_name": run,
            "workdir": "~/fleet-train-test",
            "python": "python3",
            "script": str(script),
            "args": list(args),
            "require_gpu": False,
            "require_modules": [],
            "stop_timeout": 10,
            **job,
        },
        "train": train or {},
    }
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def fleet_train(inv: Path, config: Path, *args: str, timeout: float = 120):
    return run_fleet("train", *args, "-i", inv, "-c", config, timeout=timeout)


def status(inv: Path, config: Path, *args: str) -> tuple[int, dict[str, dict]]:
    result = fleet_train(inv, config, "status", "--json", *args)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, by_host(result.stdout)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 90, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {value!r}")
        time.sleep(every)


def wait_until_ended(inv: Path, config: Path, host: str, timeout: float = 300, every: float = 2) -> dict:
    """The host's status once its run no longer runs."""

    def ended() -> dict | None:
        state = status(inv, config, "--hosts", host)[1][host]
        return state if state["state"] != "running" else None

    return wait_for(ended, f"the run on {host} to end", timeout=timeout, every=every)


def train_inventory(ssh_fleet: Any, path: Path) -> Path:
    """The sshd fleet's inventory, every host running jobs with the training venv's python."""
    inv = ssh_fleet.inventory(path)
    (inv / "group_vars").mkdir()
    (inv / "group_vars" / "all.yaml").write_text(yaml.safe_dump({"train_python": str(train_python())}))
    return inv


def job_processes(run: str, host: str | None = None) -> dict[int, str]:
    """pid -> command line of every live process tagged with this run (on `host` if given)."""
    prefix = f"FLEET_JOB={run}@{host}/" if host else f"FLEET_JOB={run}@"
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if any(item.decode(errors="replace").startswith(prefix) for item in env):
            found[int(entry.name)] = cmdline
    return found
