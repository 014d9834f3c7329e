"""train_grpo.py for real, on this machine's CPU: TRL's GRPOTrainer with a rank-4 LoRA on a tiny
random gpt-oss built in memory. Run directly, and through `fleet train` on an sshd host with the
shipped smoke config, from launch to a finished status."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml
from train_jobs.kit import TRAIN_GRPO, fleet_train, status, train_python, wait_for

from fleet.train.jobs import parse_progress

SMOKE_CONFIG = TRAIN_GRPO.parent / "train_config.smoke.yaml"


@pytest.fixture(scope="module")
def python():
    path = train_python()
    if not path.exists():
        pytest.fail(f"{path} missing: a python with torch, trl, peft, transformers and datasets (.ci/run builds it)")
    return path


def test_smoke_trains_grpo_steps_on_cpu(python, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ATTN_IMPL": "flash_attention_3"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(
        [str(python), str(TRAIN_GRPO), "--smoke", "--max-steps", "3", "--run-name", "cpu-smoke"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    log = (tmp_path / "runs" / "cpu-smoke" / "training.log").read_text()
    # the fallback chain, each refusal with its reason, ending on what gpt-oss supports on a CPU
    assert "attention: flash_attention_3 unavailable: no CUDA device" in log
    assert "attention: sdpa unavailable: GptOssForCausalLM does not support sdpa" in log
    assert "INFO attention: eager" in log and "vLLM generation: off" in log
    steps = [parse_progress(line) for line in log.splitlines() if "step=" in line]
    assert [s.step for s in steps] == [1, 2, 3] and all(s.max_steps == 3 for s in steps)
    assert all(s.loss is not None and s.reward is not None for s in steps)
    assert re.search(r"done: 3 steps in [\d.]+s", log)
    assert log.count("step=1/3") == 1  # logged once although stderr is a terminal-less pipe


@pytest.mark.ssh
def test_fleet_train_runs_the_smoke_on_an_sshd_host(python, ssh_fleet, tmp_path):
    inv = ssh_fleet.inventory(tmp_path / "inv")
    (inv / "group_vars").mkdir()
    (inv / "group_vars" / "all.yaml").write_text(yaml.safe_dump({"train_python": str(python)}))
    launched = fleet_train(inv, SMOKE_CONFIG, "--hosts", "node-02")
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert "synced train_grpo.py, train_config.smoke.yaml" in launched.stdout
    try:
        final = wait_for(
            lambda: (s := status(inv, SMOKE_CONFIG, "--hosts", "node-02")[1]["node-02"])["state"] != "running" and s,
            "the smoke run to end",
            timeout=300,
            every=3,
        )
    finally:
        fleet_train(inv, SMOKE_CONFIG, "stop", "--hosts", "node-02")
    assert final["state"] == "finished", final
    assert (final["step"], final["max_steps"]) == (4, 4) and final["loss"] is not None
    workdir = ssh_fleet.host("node-02").home / "tes_grpo_trl"
    log = (workdir / "runs" / "grpo_smoke" / "training.log").read_text()
    assert "smoke (tiny random gpt-oss)" in log and "fleet: job exited with code 0" in log
    assert (workdir / "train_grpo.py").read_bytes() == TRAIN_GRPO.read_bytes()
    table = fleet_train(inv, SMOKE_CONFIG, "status", "--hosts", "node-02")
    assert re.search(r"node-02\s+finished\s+4/4", table.stdout), table.stdout
