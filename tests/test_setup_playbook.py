"""playbooks/setup.yaml in --check on sshd hosts, with GPU facts recorded on a real GPU machine.

The hosts here have no GPU, so each gets `facts_override` (a dry-run aid) built by fleet's own
parser from tests/recorded/h200-host-probe.txt (a real H200, x86_64, driver 580.159.04, CUDA 13.0):
  node-01  a GH200, derived from the recording: aarch64, driver 570.148.08, CUDA 12.8, nvcc 12.8,
           "NVIDIA GH200 480GB" with 97871 MiB (values changed, formats kept as recorded)
  node-02  the H200 exactly as recorded (x86_64: stable cu128 wheels, no FA3 wheel)
  node-03  the GH200 above with an old driver, 535.104.05 / CUDA 12.2 (derived)
  node-04  no override: this machine's real facts (no GPU)
and the plan the playbook prints for them is asserted. --check changes nothing and needs no network."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from conftest import RECORDED, run_fleet
from sshfleet import free_port

from fleet.facts import parse_facts

pytestmark = pytest.mark.ssh

SETUP = Path(__file__).resolve().parent.parent / "playbooks" / "setup.yaml"
# --check before the venv exists: uv cannot be asked yet
NOT_YET = " (planned from metadata: ~/gh200-check/.venv does not exist yet)"
FA3_URL = (
    "https://huggingface.co/datasets/mesolitica/Flash-Attention3-wheel/resolve/main/"
    "flash_attn_3-3.0.0b1-cp312-abi3-linux_aarch64-2.8.0-12.8.whl"
)


def recorded_outputs() -> dict[str, str]:
    """Each command of the recorded `set -x` trace, with what it printed."""
    outputs: dict[str, list[str]] = {}
    command = None
    for line in (RECORDED / "h200-host-probe.txt").read_text().splitlines():
        if line.startswith("+ "):
            command = line[2:]
            outputs.setdefault(command, [])
        elif command is not None:
            outputs[command].append(line)
    return {k: "\n".join(v) for k, v in outputs.items()}


def probe_text(**changes: str) -> str:
    """The recording in the format of fleet's facts PROBE, with `old=new` text substitutions."""
    out = recorded_outputs()
    gpu_query = "nvidia-smi --query-gpu=index,name,driver_version,memory.total,memory.used,compute_cap"
    text = (
        f"@@hostname\nvm\n@@arch\n{out['uname -m']}\n@@os\n{out['cat /etc/os-release']}\n"
        f"@@smi\n{chr(10).join(out['nvidia-smi'].splitlines()[:5])}\n"
        f"@@gpus\n{out[gpu_query + ' --format=csv,noheader,nounits']}\n"
        f"@@nvcc\n{out['nvcc --version']}\n@@end\n"
    )
    for old, new in changes.values():
        text = re.sub(old, new, text)
    return text


GH200 = {
    "arch": (r"@@arch\nx86_64", "@@arch\naarch64"),
    "driver": (r"580\.159\.04", "570.148.08"),
    "cuda": (r"CUDA Version: 13\.0", "CUDA Version: 12.8"),
    "nvcc": (r"release 13\.0, V13\.0\.88", "release 12.8, V12.8.93"),
    "gpu": (r"NVIDIA H200 +On", "NVIDIA GH200 480GB    On"),
    "gpu_csv": (r"0, NVIDIA H200, (\S+), 143771,", r"0, NVIDIA GH200 480GB, \1, 97871,"),
}
OLD_DRIVER = {
    **GH200,
    "driver": (r"580\.159\.04", "535.104.05"),
    "cuda": (r"CUDA Version: 13\.0", "CUDA Version: 12.2"),
}


def override(**changes) -> dict:
    facts = parse_facts(probe_text(**changes))
    assert facts.gpus and facts.driver  # the recording parsed: a check that cannot pass vacuously
    return {
        "arch": facts.arch,
        "driver": facts.driver,
        "cuda": facts.cuda,
        "cuda_toolkit": facts.cuda_toolkit,
        "gpus": [asdict(g) for g in facts.gpus],
    }


@pytest.fixture(scope="module")
def gpu_inventory(ssh_fleet, tmp_path_factory):
    path = ssh_fleet.inventory(tmp_path_factory.mktemp("gpu") / "inv")
    (path / "host_vars").mkdir()
    for host, changes in (("node-01", GH200), ("node-02", {}), ("node-03", OLD_DRIVER)):
        data = {"facts_override": override(**changes)}
        (path / "host_vars" / f"{host}.yaml").write_text(yaml.safe_dump(data))
    return path


def events(stdout: str) -> tuple[dict[tuple[str, str], dict], dict[str, dict]]:
    parsed = [json.loads(line) for line in stdout.splitlines()]
    tasks = {(e["host"], e["task"]): e for e in parsed if e["event"] == "task_result"}
    return tasks, {e["host"]: e for e in parsed if e["event"] == "recap"}


def test_recorded_facts_derive_as_described():
    gh200 = override(**GH200)
    assert gh200["arch"] == "aarch64" and gh200["driver"] == "570.148.08" and gh200["cuda"] == "12.8"
    assert gh200["gpus"][0]["name"] == "NVIDIA GH200 480GB" and gh200["cuda_toolkit"] == "12.8"
    h200 = override()
    assert (h200["arch"], h200["driver"], h200["cuda"], h200["gpus"][0]["name"]) == (
        "x86_64",
        "580.159.04",
        "13.0",
        "NVIDIA H200",
    )


def test_setup_check_plans_per_host_from_recorded_gpu_facts(ssh_fleet, gpu_inventory):
    # the FA3 wheel's URL on loopback, where nothing listens: --check says the download would fail
    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}/" + FA3_URL.rsplit("/", 1)[1]
    result = run_fleet(
        "run", SETUP, "-i", gpu_inventory, "--check", "--json",
        "-e", "project_dir=~/gh200-check", "-e", f"fa3_aarch64_wheel_url={dead}",
    )  # fmt: skip
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr  # two hosts fail preflight
    tasks, recap = events(result.stdout)

    def msg(host: str, task: str) -> str:
        return tasks[(host, task)]["message"]

    # node-01, a GH200: every requirement met; nightly cu128 with --pre; FA3 wheel for aarch64
    assert msg("node-01", "preflight: architecture") == "architecture aarch64"
    assert msg("node-01", "preflight: nvidia-smi works") == "1 GPU(s): NVIDIA GH200 480GB"
    assert msg("node-01", "preflight: NVIDIA driver") == "driver 570.148.08 >= 570.148.08"
    assert msg("node-01", "preflight: CUDA runtime") == "driver supports CUDA 12.8 >= 12.8"
    assert msg("node-01", "Python venv (uv venv --python)") == "would create venv ~/gh200-check/.venv with Python 3.12"
    assert msg("node-01", "PyTorch nightly cu128 (section 2, Option A)") == (
        "would install torch (missing), torchvision (missing), torchaudio (missing) "
        "with --pre --index-url https://download.pytorch.org/whl/nightly/cu128" + NOT_YET
    )
    assert tasks[("node-01", "PyTorch 2.8.0 cu128 stable wheels (x86_64)")]["status"] == "skipped"
    assert msg("node-01", "vLLM 0.10.2 (section 3)") == (
        "would install vllm==0.10.2 (missing) with --extra-index-url https://wheels.vllm.ai/0.10.2/ "
        "--config-settings vllm:torch-backend=auto and constraints (9 lines)" + NOT_YET
    )
    libs = msg("node-01", "NLP / training libraries (section 4)")
    for pin in (
        "transformers>=4.57.1",
        "trl==0.23.1",
        "peft>=0.17.1",
        "accelerate>=1.10.0",
        "huggingface_hub>=0.25",
        "kernels>=0.10",
        "triton>=3.4",
        "datasets",
        "pandas",
        "packaging",
        "ninja",
    ):
        assert f"{pin} (missing)" in libs
    assert libs.endswith("with --no-build-isolation and constraints (9 lines)" + NOT_YET)
    fa3 = tasks[("node-01", "FlashAttention 3 wheel (section 5)")]
    assert fa3["status"] == "failed" and fa3["ignored"] is True  # as the real run will: no file, no install
    assert fa3["message"].startswith(f"{dead} does not answer (") and fa3["message"].endswith("the download would fail")
    assert msg("node-01", "FlashAttention 3 install (section 5)") == "condition false"
    for check in ("torch imports and sees the GPU (section 2)", "versions check (section 6)"):
        assert tasks[("node-01", check)]["status"] == "skipped"
        assert msg("node-01", check).startswith("would check after the changes above (fails now: no Python at")
    assert (
        msg("node-01", "GPU monitor answers (section 6, nvidia-smi dmon)")
        == "would run nvidia-smi dmon -s pucvmt -d 5 -c 1"
    )
    assert msg("node-01", "one train_grpo.py --smoke step in the venv (section 7)").startswith("would run ")
    assert recap["node-01"]["failed"] == 0  # the FA3 download's failure is ignored
    steps = (
        "Python venv (uv venv --python)",
        "NLP / training libraries (section 4)",
        "train_grpo.py in the project folder (section 7)",
    )
    assert [tasks[("node-01", step)]["status"] for step in steps] == ["changed"] * 3

    # node-02, the recorded H200 on x86_64: stable cu128 wheels, no FA3 download
    assert msg("node-02", "preflight: NVIDIA driver") == "driver 580.159.04 >= 570.148.08"
    assert msg("node-02", "PyTorch 2.8.0 cu128 stable wheels (x86_64)") == (
        "would install torch==2.8.0 (missing), torchvision==0.23.0 (missing), torchaudio==2.8.0 (missing) "
        "with --extra-index-url https://download.pytorch.org/whl/cu128 --index-strategy unsafe-best-match "
        "and constraints (178 lines)" + NOT_YET
    )
    assert tasks[("node-02", "PyTorch nightly cu128 (section 2, Option A)")]["status"] == "skipped"
    assert tasks[("node-02", "FlashAttention 3 wheel (section 5)")]["message"] == "condition false"
    assert recap["node-02"]["failed"] == 0

    # node-03: the driver is too old; the sentence says which requirement and what the host has
    failed = [e for (h, _), e in tasks.items() if h == "node-03" and e["status"] == "failed"]
    assert [e["task"] for e in failed] == ["preflight: NVIDIA driver"]
    assert failed[0]["message"] == (
        "driver 535.104.05 is older than the required 570.148.08 (CUDA 12.8); upgrade the NVIDIA driver"
    )
    assert ("node-03", "build dependencies (section 0)") not in tasks  # a failed host stops there

    # node-04: no GPU at all
    no_gpu = msg("node-04", "preflight: nvidia-smi works")
    assert no_gpu.startswith("nvidia-smi does not work (") and no_gpu.endswith(
        "install the NVIDIA driver 570.148.08 or newer"
    )
    assert tasks[("node-04", "preflight: nvidia-smi works")]["status"] == "failed"

    for host in ssh_fleet.hosts:
        assert not (host.home / "gh200-check").exists()  # --check changed nothing


def test_source_build_option_is_behind_the_same_variable(ssh_fleet, gpu_inventory):
    result = run_fleet(
        "run",
        SETUP,
        "-i",
        gpu_inventory,
        "--check",
        "--json",
        "--limit",
        "node-01",
        "-e",
        "project_dir=~/gh200-src",
        "-e",
        "torch_source=source",
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    tasks, _ = events(result.stdout)
    assert tasks[("node-01", "preflight: CUDA toolkit (to build PyTorch from source)")]["message"] == "nvcc 12.8"
    clone = tasks[("node-01", "PyTorch source checkout (section 2, Option B)")]
    assert clone["status"] == "skipped" and clone["message"].startswith(
        "would run git clone --recursive --branch v2.8.0"
    )
    assert tasks[("node-01", "PyTorch wheel build (Option B)")]["message"].startswith("would run sh -c")
    assert tasks[("node-01", "PyTorch wheel install (Option B)")]["message"] == (
        "would install torch==2.8.0 (missing) with --find-links ~/gh200-src/pytorch/dist --no-index "
        "(planned from metadata: ~/gh200-src/.venv does not exist yet)"
    )
    assert tasks[("node-01", "PyTorch nightly cu128 (section 2, Option A)")]["status"] == "skipped"
