"""The whole setup, for real: playbooks/setup.yaml on one sshd host with `require_gpu: false`,
against the real package registry (torch 2.8.0 cu128, vllm 0.10.2, the section-4 libraries, all
from the x86_64 lock), converged, run again with nothing to change, then `fleet train` of the
smoke config with the venv it built, to `finished`.

The sources this machine cannot reach are overridden by variables, and their fallbacks run for
real: the PyTorch index (`torch_stable_index: ""`: the same cu128 build from the default index),
the vLLM wheel index (`vllm_extra_index: ""`), and the FA3 wheel (a loopback URL where nothing
listens: the download fails, the smoke step trains with eager, the stack fact and ATTN_IMPL say so).
uv itself comes from a loopback stand-in of its installer.

uv's cache is kept between runs on the same machine (FLEET_E2E_UV_CACHE, default
/var/cache/fleet-ci/uv, outside the checkout): the first run downloads several GB. Each phase's
time is printed. `.ci/run` runs this module (`pytest -m e2e`); it is not part of the default run."""

from __future__ import annotations

import io
import json
import os
import platform
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_fleet
from loopback import free_port, serve, uv_binary
from test_setup_ssh import INSTALLER, host_python_version, recap, tasks
from train_jobs.kit import fleet_train, status, wait_for

pytestmark = [pytest.mark.ssh, pytest.mark.e2e]

SETUP = REPO / "playbooks" / "setup.yaml"
LOCK = REPO / "playbooks" / "locks" / "linux-x86_64-cu128.txt"
SMOKE_CONFIG = REPO / "playbooks" / "files" / "train_config.smoke.yaml"
CACHE = Path(os.environ.get("FLEET_E2E_UV_CACHE", "/var/cache/fleet-ci/uv"))
HOST = "node-01"
# What this machine needs to reach the registry (a TLS-inspecting proxy's CA, proxies, a mirror):
# exactly the case `uv_env` exists for.
PASSED_ON = (
    "SSL_CERT_FILE", "SSL_CERT_DIR", "UV_NATIVE_TLS", "UV_INDEX_URL", "UV_DEFAULT_INDEX",
    "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy",
)  # fmt: skip
GPU_ONLY = (
    "preflight: nvidia-smi works",
    "preflight: NVIDIA driver",
    "GPU monitor answers (section 6, nvidia-smi dmon)",
)
LIST = "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}))"  # noqa: E501


def say(capsys, text: str) -> None:
    with capsys.disabled():
        print(f"\n[e2e] {text}", flush=True)


@pytest.fixture(scope="module")
def installer(tmp_path_factory):
    """This machine's uv behind a stand-in of astral's installer, on 127.0.0.1."""
    root = tmp_path_factory.mktemp("uv-installer")
    root.chmod(0o755)
    stem = f"uv-{platform.machine()}-unknown-linux-gnu"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        tar.add(uv_binary(), arcname=f"{stem}/uv")
    (root / f"{stem}.tar.gz").write_bytes(buf.getvalue())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (root / "install.sh").write_text(INSTALLER.format(archive_url=f"{base}/{stem}.tar.gz", stem=stem))
    for path in root.iterdir():
        path.chmod(0o644)
    with serve(root, port):
        version = subprocess.run([uv_binary(), "--version"], capture_output=True, text=True, check=True).stdout
        yield f"{base}/install.sh", version.split()[1]


@pytest.fixture(scope="module")
def e2e(ssh_fleet, installer, tmp_path_factory):
    host = ssh_fleet.host(HOST)
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(["chown", "-R", f"{host.user}:{host.user}", str(CACHE)], check=True)  # kept between runs
    inv = ssh_fleet.inventory(tmp_path_factory.mktemp("e2e") / "inv")
    url, uv_version = installer
    dead = free_port()  # nothing listens there: the FA3 download fails for real
    values = {
        "require_gpu": False,
        "python_version": host_python_version(),
        "uv_python_downloads": "never",
        "uv_version": uv_version,
        "uv_installer_url": url,
        "uv_env": {"UV_CACHE_DIR": str(CACHE), **{k: os.environ[k] for k in PASSED_ON if k in os.environ}},
        "torch_stable_index": "",
        "vllm_extra_index": "",
        "fa3_wheel_url": f"http://127.0.0.1:{dead}/flash_attn_3-3.0.0b1-cp312-abi3-linux_x86_64.whl",
        "fa3_wheel_path": "~/tes_grpo_trl/wheels/flash_attn_3-3.0.0b1-cp312-abi3-linux_x86_64.whl",
    }
    extra = tmp_path_factory.mktemp("e2e-vars") / "e2e-vars.yaml"  # beside, not in, the inventory folder
    extra.write_text(yaml.safe_dump(values))
    return host, inv, extra


def run_setup(inv: Path, extra: Path):
    started = time.monotonic()
    result = run_fleet("run", SETUP, "-i", inv, "--limit", HOST, "--json", "-e", f"@{extra}", timeout=3000)
    return result, time.monotonic() - started


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)==(\S+)(?:\s*;\s*(.*))?$", line.split("#")[0].strip())
        if m and not m.group(3):
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_setup_converges_reruns_unchanged_and_trains(e2e, capsys):
    host, inv, extra = e2e
    first, took = run_setup(inv, extra)
    say(capsys, f"first setup run: {took:.0f}s (rc {first.returncode})")
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
    done = {e["task"]: e for e in tasks(first.stdout)}
    for gpu_only in GPU_ONLY:
        assert done[gpu_only]["status"] == "skipped", done[gpu_only]
    assert done["FlashAttention 3 wheel (section 5)"]["status"] == "failed"  # ignored: the fallback
    assert done["FlashAttention 3 wheel (section 5)"].get("ignored") is True
    libs = done["vLLM 0.10.2 (section 3)"]
    assert libs["status"] in ("changed", "ok"), libs
    versions = done["versions check (section 6)"]["message"]
    assert "GRPOTrainer, LoraConfig, GptOssForCausalLM, LLM import" in versions, versions
    notes = recap(first.stdout)[HOST].get("notes", [])
    assert any("the smoke step trained with eager" in n for n in notes), notes

    # the venv holds exactly the lock's versions of everything the lock pins and the venv has
    py = host.home / "tes_grpo_trl" / ".venv" / "bin" / "python3"
    listing = subprocess.run(["sudo", "-u", host.user, str(py), "-c", LIST], capture_output=True, text=True, check=True)
    have = json.loads(listing.stdout)
    pins = lock_pins()
    off = {n: (have[n], v) for n, v in pins.items() if n in have and have[n].split("+")[0] != v}
    assert not off, off
    shown = ", ".join(f"{n} {have[n]}" for n in ("torch", "vllm", "transformers", "trl", "peft", "datasets", "kernels"))
    say(capsys, f"installed: {shown} ({len(have)} distributions)")
    stack = json.loads((host.home / ".fleet/facts.d/stack.json").read_text())
    assert stack["attn_impl"] == "eager" and stack["attn_proven"] is True, stack
    assert "export ATTN_IMPL=eager" in (host.home / ".fleet/env.sh").read_text()

    second, took = run_setup(inv, extra)
    say(capsys, f"second setup run: {took:.0f}s (rc {second.returncode})")
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-3000:]
    changed = [t for t in tasks(second.stdout) if t["status"] == "changed"]
    assert recap(second.stdout)[HOST]["changed"] == 0, changed

    # fleet doctor on the converged host: nothing to fix (FA3 missing is a note on a host without a
    # GPU), and --fix --check plans no change that the real run would not make
    started = time.monotonic()
    found = run_fleet("doctor", "-i", inv, "--hosts", HOST, "--json", "-e", f"@{extra}")
    assert found.returncode == 0, found.stdout + found.stderr
    findings = [json.loads(line) for line in found.stdout.splitlines()]
    assert [(e["finding"], e.get("note")) for e in findings] == [("fa3-missing", True)], findings
    rehearsal = run_fleet("doctor", "-i", inv, "--hosts", HOST, "--fix", "--check", "--json", "-e", f"@{extra}")
    assert rehearsal.returncode == 0, rehearsal.stdout + rehearsal.stderr
    assert not [line for line in rehearsal.stdout.splitlines() if json.loads(line).get("event") == "task_result"]
    say(capsys, f"fleet doctor and doctor --fix --check: {time.monotonic() - started:.0f}s, no findings but a note")

    # fleet train of the smoke config, with the venv setup built, in bf16 as setup's smoke step: on a CPU
    # train_grpo.py's own default (float32) fails with the locked transformers 4.57 (MXFP4 experts stay bf16)
    (inv / "group_vars").mkdir(exist_ok=True)
    (inv / "group_vars" / "all.yaml").write_text(yaml.safe_dump({"train_python": str(py)}))
    smoke = yaml.safe_load(SMOKE_CONFIG.read_text())
    smoke["job"]["script"] = str(SMOKE_CONFIG.parent / smoke["job"]["script"])
    smoke["train"]["dtype"] = "bfloat16"
    config = extra.parent / "train_config.smoke.yaml"
    config.write_text(yaml.safe_dump(smoke))
    started = time.monotonic()
    launched = fleet_train(inv, config, "--hosts", HOST)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    try:
        final = wait_for(
            lambda: (s := status(inv, config, "--hosts", HOST)[1][HOST])["state"] != "running" and s,
            "the smoke run to end",
            timeout=600,
            every=3,
        )
    finally:
        fleet_train(inv, config, "stop", "--hosts", HOST)
    say(capsys, f"fleet train (smoke config): {time.monotonic() - started:.0f}s, {final['state']}")
    assert final["state"] == "finished", final
    assert (final["step"], final["max_steps"]) == (4, 4)
    if shutil.disk_usage(CACHE).free < 5 * 2**30:
        say(capsys, f"note: less than 5 GiB free next to the uv cache {CACHE}")
