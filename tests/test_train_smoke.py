"""train_grpo.py for real, on this machine's CPU: TRL's GRPOTrainer with a rank-4 LoRA on a tiny
random gpt-oss built in memory. Run directly, and through `fleet train` on an sshd host with the
shipped smoke config, from launch to a finished status."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml
from conftest import by_host, run_fleet
from train_jobs.kit import (
    TRAIN_GRPO,
    fleet_train,
    status,
    train_inventory,
    train_python,
    wait_for,
    wait_until_ended,
    write_config,
)

from fleet.train.jobs import parse_progress

SMOKE_CONFIG = TRAIN_GRPO.parent / "train_config.smoke.yaml"
GPT_OSS_EAGER = "eager (gpt_oss attention sinks: only eager computes them in forward and backward)"


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
    # gpt-oss has attention sinks: eager whatever is asked, the refusal logged with its reason;
    # loaded from a saved checkpoint with the real model's options
    assert "attention: flash_attention_3 refused for gpt_oss (attention sinks" in log
    assert "INFO attention: eager" in log and "vLLM generation: off" in log
    assert "model smoke (gpt_oss): dtype float32, quantization Mxfp4Config(dequantize=True), use_cache False" in log
    saved = json.loads((tmp_path / "runs" / "cpu-smoke" / "smoke-model.rank0" / "config.json").read_text())
    assert saved["quantization_config"]["quant_method"] == "mxfp4"  # laid out like gpt-oss-20b's checkpoint
    steps = [parse_progress(line) for line in log.splitlines() if "step=" in line]
    assert [s.step for s in steps] == [1, 2, 3] and all(s.max_steps == 3 for s in steps)
    assert all(s.loss is not None and s.reward is not None for s in steps)
    assert re.search(r"done: 3 steps in [\d.]+s \(3 in this launch\)", log)
    assert log.count("step=1/3") == 1  # logged once although stderr is a terminal-less pipe


@pytest.mark.ssh
def test_fleet_train_runs_the_smoke_on_an_sshd_host(python, ssh_fleet, tmp_path):
    inv = train_inventory(ssh_fleet, tmp_path / "inv")
    launched = fleet_train(inv, SMOKE_CONFIG, "--hosts", "node-02")
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert "synced train_grpo.py, train_config.smoke.yaml" in launched.stdout
    assert f"note node-02: attention {GPT_OSS_EAGER}" in launched.stdout  # asked of the script on the host
    try:
        final = wait_until_ended(inv, SMOKE_CONFIG, "node-02")
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


@pytest.mark.ssh
def test_interrupted_smoke_run_resumes_from_its_newest_checkpoint(python, ssh_fleet, tmp_path):
    """Stop a real smoke run after its first checkpoints, resume it through fleet: the step count
    goes on from the checkpoint's step, and the run ends at max_steps."""
    inv = train_inventory(ssh_fleet, tmp_path / "inv")
    body = yaml.safe_load(SMOKE_CONFIG.read_text())
    body["job"].update(run_name="resume", script=str(TRAIN_GRPO))
    # longer completions and more steps: slow enough to be stopped midway on a CPU
    body["train"]["grpo"].update(max_steps=20, save_steps=3, max_completion_length=16)
    config = tmp_path / "train_config.resume.yaml"
    config.write_text(yaml.safe_dump(body, sort_keys=False))
    run_dir = ssh_fleet.host("node-03").home / "tes_grpo_trl" / "runs" / "resume"
    try:
        assert fleet_train(inv, config, "--hosts", "node-03").returncode == 0
        wait_for(lambda: list(run_dir.glob("checkpoint-*")), "a first checkpoint", timeout=300, every=0.5)
        stopped = fleet_train(inv, config, "stop", "--hosts", "node-03")
        assert stopped.returncode == 0, stopped.stdout
        interrupted = status(inv, config, "--hosts", "node-03")[1]["node-03"]
        assert interrupted["state"] == "stopped" and interrupted["step"] < 20, interrupted
        whole = [p for p in run_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
        newest = max(int(p.name.split("-")[1]) for p in whole)
        # What a stop in the middle of a save leaves: a newer checkpoint without its trainer state.
        half = run_dir / "checkpoint-19"
        half.mkdir()
        (half / "model.safetensors").write_bytes(b"half")
        for path in (half, half / "model.safetensors"):
            shutil.chown(path, ssh_fleet.host("node-03").user, ssh_fleet.host("node-03").user)

        refused = fleet_train(inv, config, "--hosts", "node-03")
        assert refused.returncode != 0 and "nothing is overwritten" in refused.stdout

        resumed = fleet_train(inv, config, "--hosts", "node-03", "--resume")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert f"resumed from checkpoint-{newest} resume" in resumed.stdout
        final = wait_until_ended(inv, config, "node-03")
    finally:
        fleet_train(inv, config, "stop", "--hosts", "node-03")
    assert final["state"] == "finished" and (final["step"], final["max_steps"]) == (20, 20), final
    log = (run_dir / "training.log").read_text()
    first_launch, _, second_launch = log.partition(f"resuming from runs/resume/checkpoint-{newest}")
    assert second_launch, log[-3000:]
    steps_after = [parse_progress(line).step for line in second_launch.splitlines() if "step=" in line]
    assert steps_after == list(range(newest + 1, 21)), steps_after  # continues, no step twice
    assert "step=1/20" in first_launch and "step=1/20" not in second_launch
    assert "done: 20 steps in" in second_launch and f"({20 - newest} in this launch)" in second_launch


@pytest.mark.ssh
def test_facts_say_which_attention_training_will_really_use(python, ssh_fleet, tmp_path):
    """train_grpo.py --which-attention, asked on each host with the job's environment: eager for
    gpt-oss whatever is requested; down the chain for a model without sinks on a CPU host."""
    inv = train_inventory(ssh_fleet, tmp_path / "inv")
    (inv / "host_vars").mkdir()
    (inv / "host_vars" / "node-03.yaml").write_text("train_python: /nonexistent/bin/python\n")
    (inv / "host_vars" / "node-02.yaml").write_text("attn_impl: flash_attention_3\n")  # asked for; refused
    smoke = run_fleet("facts", "-i", inv, "--hosts", "node-02,node-03", "--json", "-c", SMOKE_CONFIG)
    assert smoke.returncode == 0, smoke.stderr
    facts = by_host(smoke.stdout)
    assert facts["node-02"]["attention"] == GPT_OSS_EAGER
    assert facts["node-03"]["attention"] == "unknown (no training python here)"
    table = run_fleet("facts", "-i", inv, "--hosts", "node-02", "-c", SMOKE_CONFIG)
    assert "attention" in table.stdout.splitlines()[1] and "eager (gpt_oss" in table.stdout

    host = ssh_fleet.host("node-02")  # a model without attention sinks, its config readable on the host
    model = host.home / "tiny-llama"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 64,
    }))  # fmt: skip
    for path in (model, model / "config.json"):
        shutil.chown(path, host.user, host.user)
    llama = write_config(tmp_path / "llama.yaml", script=TRAIN_GRPO, run="llama", train={"model": str(model)})
    seen = by_host(run_fleet("facts", "-i", inv, "--hosts", "node-02", "--json", "-c", llama).stdout)
    cpu = "flash_attention_3: no CUDA device; flash_attention_2: no CUDA device"
    assert seen["node-02"]["attention"] == f"sdpa ({cpu})", seen
