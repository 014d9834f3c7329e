"""fleet from a real, non-editable wheel in a fresh venv, run from a folder that is not the
checkout: the setup playbook, training script and configs come from the package data; `fleet
init` writes an editable copy that then wins."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, by_host

pytestmark = pytest.mark.slow


def _run(*argv, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    # nothing points python at the checkout: what runs is the installed wheel
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FLEET_INVENTORY", "VIRTUAL_ENV")}
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`fleet` of a wheel built from this checkout, installed with its dependencies in a new venv."""
    uv = shutil.which("uv")
    assert uv, "uv (a test extra) is needed to build and install the wheel"
    root = tmp_path_factory.mktemp("wheel")
    # a copy of the checkout's shipped tree, so that building leaves nothing in the repository
    src = root / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", ".whl", "bench", "tests"))
    built = _run(uv, "build", "--wheel", "--out-dir", root / "dist", src, cwd=root)
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "dist").glob("fleet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("setup.yaml", "files/train_grpo.py", "files/train_config.yaml", "files/train_config.smoke.yaml"):
        assert f"fleet/shipped/playbooks/{shipped}" in names
    venv = root / "venv"
    assert _run(uv, "venv", "-q", "--python", sys.executable, venv, cwd=root).returncode == 0
    done = _run(uv, "pip", "install", "-q", "--python", venv / "bin" / "python", wheel, cwd=root)
    assert done.returncode == 0, done.stderr
    return venv / "bin" / "fleet"


def test_train_status_and_doctor_work_from_any_folder(installed, tmp_path):
    where = tmp_path / "elsewhere"
    where.mkdir()
    status = _run(installed, "train", "status", "--json", cwd=where)
    assert status.returncode == 0, status.stderr
    assert by_host(status.stdout)["localhost"]["state"] == "absent"
    shown = _run(installed, "train", "status", cwd=where)
    assert "run grpo_gptoss20b_lora4_tes on 1 host(s)" in shown.stdout  # the shipped config's run
    doctor = _run(installed, "doctor", cwd=where)
    assert doctor.returncode in (0, 2), doctor.stdout + doctor.stderr  # 2: findings on this machine
    assert "doctor (found)" in doctor.stdout and "not found" not in doctor.stderr
    located = _run(installed.parent / "python", "-c", "import fleet.resources as r; print(r.shipped_root())", cwd=where)
    assert "site-packages/fleet/shipped" in located.stdout  # the package data, not a checkout


def test_init_writes_an_editable_copy_that_wins(installed, tmp_path):
    made = _run(installed, "init", "lab", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    lab = tmp_path / "lab"
    for rel in ("playbooks/setup.yaml", "playbooks/files/train_grpo.py", "inventories/lab/hosts.yaml"):
        assert (lab / rel).is_file(), rel
    assert (lab / "playbooks/setup.yaml").read_bytes() == (REPO / "playbooks/setup.yaml").read_bytes()
    config = lab / "playbooks/files/train_config.yaml"
    config.write_text(config.read_text().replace("run_name: grpo_gptoss20b_lora4_tes", "run_name: my_lab_run"))
    status = _run(installed, "train", "status", cwd=lab)
    assert "run my_lab_run on 1 host(s)" in status.stdout, status.stdout + status.stderr
    again = _run(installed, "init", "lab", cwd=tmp_path)
    assert again.returncode == 1 and "overwrites nothing" in again.stderr and "Traceback" not in again.stderr
    assert "run_name: my_lab_run" in config.read_text()  # the edit survived
