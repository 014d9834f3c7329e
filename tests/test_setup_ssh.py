"""The setup playbook's Python tasks for real, on sshd hosts: uv from its installer, venvs, package
installs with uv, a checksummed download, profile exports, Python checks, the stack fact and
`fleet doctor`. Every URL is on loopback: tiny wheels built here with uv, served as a PEP 503 index
by a local HTTP server, and this machine's own uv binary behind a stand-in installer script."""

from __future__ import annotations

import hashlib
import io
import json
import platform
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import by_host, run_fleet
from loopback import build_wheel, free_port, serve, uv_binary

pytestmark = pytest.mark.ssh

HERE = Path(__file__).resolve().parent
TOOLING = HERE / "playbooks" / "python_tooling.yaml"
SETUP = HERE.parent / "playbooks" / "setup.yaml"


def recap(stdout: str) -> dict[str, dict]:
    return {e["host"]: e for e in map(json.loads, stdout.splitlines()) if e.get("event") == "recap"}


def tasks(stdout: str) -> list[dict]:
    return [e for e in map(json.loads, stdout.splitlines()) if e.get("event") == "task_result"]


def host_python_version() -> str:
    """major.minor of the python3 an sshd login finds on its default PATH."""
    found = subprocess.run(
        [
            "env",
            "-i",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "python3",
            "-c",
            "import sys; print('%d.%d' % sys.version_info[:2])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return found.stdout.strip()


def simple_index(root: Path, wheels: list[Path]) -> None:
    """PEP 503: /<root>/<project>/index.html linking the project's files."""
    by_project: dict[str, list[Path]] = {}
    for wheel in wheels:
        by_project.setdefault(wheel.name.split("-")[0].replace("_", "-"), []).append(wheel)
    for project, files in by_project.items():
        page = root / project
        page.mkdir(parents=True, exist_ok=True)
        links = "".join(f'<a href="/files/{f.name}">{f.name}</a>\n' for f in files)
        (page / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")


INSTALLER = """#!/bin/sh
# Stand-in for https://astral.sh/uv/install.sh with the same contract: fetch the release archive,
# put `uv` in $UV_INSTALL_DIR (default ~/.local/bin), edit shell profiles unless UV_NO_MODIFY_PATH=1.
set -eu
dir="${{UV_INSTALL_DIR:-$HOME/.local/bin}}"
t=$(mktemp -d)
curl -fsSL {archive_url} -o "$t/uv.tar.gz"
tar -xzf "$t/uv.tar.gz" -C "$t"
mkdir -p "$dir"
cp "$t/{stem}/uv" "$dir/uv"
chmod 755 "$dir/uv"
rm -rf "$t"
if [ "${{UV_NO_MODIFY_PATH:-0}}" != 1 ]; then echo 'export PATH="$HOME/.local/bin:$PATH"' >>"$HOME/.profile"; fi
echo "everything's installed!"
"""


@dataclass
class PyIndex:
    base: str
    root: Path
    uv_version: str
    file_sha256: str

    def vars(self, **extra: str) -> list[str]:
        values = {
            "uv_version": self.uv_version,
            "installer_url": f"{self.base}/uv/install.sh",
            "index_url": f"{self.base}/simple",
            "extra_index_url": f"{self.base}/extra/simple",
            "links_url": f"{self.base}/links/",
            "file_url": f"{self.base}/files/demo_f-1.0-py3-none-any.whl",
            "file_sha256": self.file_sha256,
            "python_version": host_python_version(),
            "demo_b": "demo-b==1.0",
            **extra,
        }
        return [arg for k, v in values.items() for arg in ("-e", f"{k}={v}")]


@pytest.fixture(scope="module")
def pyindex(tmp_path_factory):
    """Wheels, a PEP 503 index, a find-links folder, a file and the uv installer, on 127.0.0.1."""
    root = tmp_path_factory.mktemp("pyindex")
    root.chmod(0o755)
    files, work = root / "files", tmp_path_factory.mktemp("wheel-src")
    files.mkdir()
    main = [
        build_wheel(n, v, files, work)
        for n, v in [("demo-a", "1.0"), ("demo-b", "1.0"), ("demo-b", "2.0"), ("demo-c", "1.0"), ("demo-c", "2.0.dev1")]
    ]
    simple_index(root / "simple", main)
    simple_index(root / "extra" / "simple", [build_wheel("demo-d", "1.0", files, work)])
    links = root / "links"
    links.mkdir()
    shutil.move(build_wheel("demo-e", "1.0+cu128", files, work), links)
    demo_f = build_wheel("demo-f", "1.0", files, work)
    # uv's release archive layout: uv-<target>/uv inside uv-<target>.tar.gz
    stem = f"uv-{platform.machine()}-unknown-linux-gnu"
    (root / "uv").mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        tar.add(uv_binary(), arcname=f"{stem}/uv")
    (root / "uv" / f"{stem}.tar.gz").write_bytes(buf.getvalue())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (root / "uv" / "install.sh").write_text(INSTALLER.format(archive_url=f"{base}/uv/{stem}.tar.gz", stem=stem))
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    with serve(root, port):
        version = subprocess.run([uv_binary(), "--version"], capture_output=True, text=True, check=True).stdout
        yield PyIndex(base, root, version.split()[1], hashlib.sha256(demo_f.read_bytes()).hexdigest())


@pytest.fixture(scope="module")
def inv(ssh_fleet, tmp_path_factory):
    path = ssh_fleet.inventory(tmp_path_factory.mktemp("inv") / "inv")
    (path / "host_vars").mkdir()
    (path / "host_vars" / "node-04.yaml").write_text("forced_attn: flash_attention_2\n")
    return path


@pytest.fixture(scope="module")
def converged(ssh_fleet, pyindex, inv):
    """The first run of the tooling playbook: hosts from bare to converged."""
    result = run_fleet("run", TOOLING, "-i", inv, "--json", *pyindex.vars())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return result


def site_packages(home: Path, venv: str = "proj/.venv") -> Path:
    return next((home / venv / "lib").glob("python3*/site-packages"))


def test_first_run_installs_everything_for_real(ssh_fleet, converged, pyindex):
    hosts = recap(converged.stdout)
    assert set(hosts) == {h.name for h in ssh_fleet.hosts}
    by_task = {(e["host"], e["task"]): e for e in tasks(converged.stdout)}
    for host in ssh_fleet.hosts:
        assert hosts[host.name]["failed"] == 0
        uv = host.home / ".local" / "bin" / "uv"
        assert subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.split()[1] == pyindex.uv_version
        assert not (host.home / ".profile").exists()  # the installer was told not to edit profiles
        installed = {p.name for p in site_packages(host.home).glob("demo_*.dist-info")}
        assert installed == {
            "demo_a-1.0.dist-info",
            "demo_b-1.0.dist-info",
            "demo_c-2.0.dev1.dist-info",
            "demo_d-1.0.dist-info",
            "demo_e-1.0+cu128.dist-info",
            "demo_f-1.0.dist-info",
        }
        assert "include-system-site-packages = true" in (host.home / "proj/sys-venv/pyvenv.cfg").read_text()
        wheel = host.home / "proj/wheels/demo_f-1.0-py3-none-any.whl"
        assert hashlib.sha256(wheel.read_bytes()).hexdigest() == pyindex.file_sha256
        pre = by_task[(host.name, "a pre-release")]
        assert (
            pre["status"] == "changed"
            and pre["message"]
            == f"install demo-c (missing) with --pre --index-url {pyindex.base}/simple; uv: 1 new (demo-c 2.0.dev1)"
        )
        label = by_task[(host.name, "a local version label, build options and MAX_JOBS")]["message"]
        assert "--upgrade --find-links" in label and "--config-settings demo:setting=on --no-build-isolation" in label


def test_profile_exports_source_cleanly(ssh_fleet, converged):
    for host in ssh_fleet.hosts:
        env_sh = host.home / ".fleet" / "env.sh"
        shown = subprocess.run(
            ["sh", "-c", '. "$1"; . "$1"; printf "%s\\n%s\\n%s" "$PATH" "$LD_LIBRARY_PATH" "$ATTN_IMPL"', "sh", env_sh],
            env={"HOME": str(host.home), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        assert shown[0] == f"{host.home}/.local/bin:/usr/bin:/bin"  # once, though sourced twice
        assert shown[1].startswith(f"{host.home}/proj/.venv/lib/python3") and shown[1].endswith("/torch/lib")
        assert shown[2] == ("flash_attention_2" if host.name == "node-04" else "sdpa")
        bashrc = (host.home / ".bashrc").read_text()
        assert bashrc.count(".fleet/env.sh") == 2 and bashrc.count("\n") == 1  # one line, "[ -f f ] && . f"


def test_second_run_changes_nothing_and_costs_two_round_trips(ssh_fleet, converged, pyindex, inv):
    second = run_fleet("run", TOOLING, "-i", inv, "--json", *pyindex.vars())
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr
    for name, host in recap(second.stdout).items():
        assert host["changed"] == 0, (name, [t for t in tasks(second.stdout) if t["status"] == "changed"])
        # facts and 13 probes in one batch; the last task needs the result the stack task registers
        assert host["commands"] == 2, name
    installs = [t for t in tasks(second.stdout) if t["action"] == "pip"]
    assert all(t["status"] == "ok" and t["message"].startswith("satisfied: ") for t in installs)


def test_a_requirement_out_of_range_is_upgraded_then_satisfied(ssh_fleet, converged, pyindex, inv):
    moved = run_fleet("run", TOOLING, "-i", inv, "--json", *pyindex.vars(demo_b="demo-b>=2.0"))
    assert moved.returncode == 0, moved.stdout[-3000:] + moved.stderr
    changed = [t for t in tasks(moved.stdout) if t["status"] == "changed"]
    assert {t["host"] for t in changed} == {h.name for h in ssh_fleet.hosts}
    assert {t["task"] for t in changed} == {"pinned and ranged from an index"}
    assert all(
        t["message"] == f"install demo-b>=2.0 (have 1.0) with --index-url {pyindex.base}/simple; "
        "uv: 1 upgrade (demo-b 1.0 -> 2.0)"
        for t in changed
    )
    for host in ssh_fleet.hosts:
        assert (site_packages(host.home) / "demo_b-2.0.dist-info").is_dir()
    again = run_fleet("run", TOOLING, "-i", inv, "--json", *pyindex.vars(demo_b="demo-b>=2.0"))
    assert all(h["changed"] == 0 for h in recap(again.stdout).values())


def test_stack_is_kept_per_host_and_odd_stacks_are_marked(ssh_fleet, converged, pyindex, inv):
    for host in ssh_fleet.hosts:
        stack = json.loads((host.home / ".fleet/facts.d/stack.json").read_text())
        assert stack["torch"] is None and stack["flash_attn_3"] is False
    notes = recap(converged.stdout)["node-01"]["notes"]
    assert notes == [
        "flash_attn_3 is not usable here (ModuleNotFoundError: No module named 'flash_attn_3'); "
        "this host trains with sdpa (ATTN_IMPL=sdpa) unless the model class refuses it (no smoke step proved it)"
    ]
    facts = run_fleet("facts", "-i", inv, "--json")
    assert facts.returncode == 0, facts.stderr
    shown = by_host(facts.stdout)
    assert {h: f["custom"]["stack"]["attn_impl"] for h, f in shown.items()} == {
        "node-01": "sdpa",
        "node-02": "sdpa",
        "node-03": "sdpa",
        "node-04": "flash_attention_2",
    }
    assert [h for h, f in shown.items() if f["stack_differs"]] == ["node-04"]
    table = run_fleet("facts", "-i", inv)
    assert "≠ stack differs from the rest of the fleet on: node-04" in table.stdout
    plain = run_fleet("run", TOOLING, "-i", inv, *pyindex.vars(demo_b="demo-b>=1.0"))  # the recap, as people see it
    assert "note node-01: flash_attn_3 is not usable here" in plain.stdout
    assert "note node-04: attention set to flash_attention_2 by configuration" in plain.stdout


def test_failures_say_what_went_wrong_and_leave_nothing_behind(ssh_fleet, pyindex, inv, tmp_path):
    good = f"{pyindex.base}/files/demo_f-1.0-py3-none-any.whl"
    wrong = "0" * 64
    book = tmp_path / "failures.yaml"
    play = lambda host, tasks: {"hosts": host, "gather_facts": False, "tasks": tasks}  # noqa: E731
    book.write_text(
        yaml.safe_dump(
            [
                play(
                    "node-01", [{"name": "bad sum", "download": {"url": good, "dest": "~/dl/f.whl", "sha256": wrong}}]
                ),
                play(
                    "node-02",
                    [{"name": "no such file", "download": {"url": f"{pyindex.base}/files/nope.whl", "dest": "~/dl/n"}}],
                ),
                play("node-03", [{"name": "import", "python": {"venv": "/usr", "code": "import not_a_module_xyz"}}]),
                play(
                    "node-04",
                    [
                        {
                            "name": "good",
                            "download": {"url": good, "dest": "~/dl/f.whl", "sha256": pyindex.file_sha256},
                        },
                        {
                            "name": "pinned to another sum",
                            "download": {"url": good, "dest": "~/dl/f.whl", "sha256": wrong},
                        },
                    ],
                ),
            ]
        )
    )
    result = run_fleet("run", book, "-i", inv, "--json")
    assert result.returncode == 2
    failed = {e["host"]: e for e in tasks(result.stdout) if e["status"] == "failed"}
    assert failed["node-01"]["message"] == (
        f"download {good} to ~/dl/f.whl (missing) failed: checksum mismatch for {good}: "
        f"expected {wrong}, got {pyindex.file_sha256}"
    )
    assert failed["node-02"]["message"].endswith(f"failed: download of {pyindex.base}/files/nope.whl failed")
    assert failed["node-03"]["message"] == "ModuleNotFoundError: No module named 'not_a_module_xyz'"
    assert "checksum mismatch" in failed["node-04"]["message"]
    for host in ssh_fleet.hosts[:2]:
        assert not (host.home / "dl").exists() or list((host.home / "dl").iterdir()) == []
    kept = ssh_fleet.host("node-04").home / "dl"
    assert [p.name for p in kept.iterdir()] == ["f.whl"]  # the good file stays; no temp file is left
    assert hashlib.sha256((kept / "f.whl").read_bytes()).hexdigest() == pyindex.file_sha256


def test_doctor_finds_section_8_failures_and_fixes_as_tasks(ssh_fleet, converged, inv, tmp_path):
    offline = tmp_path / "offline.yaml"  # uv never leaves this machine: its plans fail "offline" instead
    offline.write_text(yaml.safe_dump({"project_dir": "~/proj", "uv_env": {"UV_OFFLINE": "1"}}))
    found = run_fleet("doctor", "-i", inv, "--json", "-e", f"@{offline}")
    assert found.returncode == 2, found.stdout + found.stderr
    events = [json.loads(line) for line in found.stdout.splitlines()]
    ids = {(e["host"], e["finding"]) for e in events}
    for host in ssh_fleet.hosts:
        assert {
            (host.name, "cpu-torch"),
            (host.name, "fa3-missing"),
            (host.name, "vllm-missing"),
            (host.name, "build-prereqs"),
            (host.name, "no-gpu"),
        } <= ids
    by = {(e["host"], e["finding"]): e for e in events}
    assert by[("node-01", "cpu-torch")]["problem"] == "torch is not installed"
    assert by[("node-01", "fa3-missing")]["problem"].startswith("flash_attn_3 seems to be not installed")
    assert "packaging" in by[("node-01", "build-prereqs")]["problem"]

    # What --fix would do, without doing it (check mode asks uv, which is offline here).
    rehearsal = run_fleet("doctor", "-i", inv, "--json", "--fix", "--check", "-e", f"@{offline}")
    plan = {
        (e["host"], e["task"]): e
        for e in map(json.loads, rehearsal.stdout.splitlines())
        if e.get("event") == "task_result"
    }
    stable = platform.machine() != "aarch64"
    torch_task = (
        "PyTorch 2.8.0 cu128 stable wheels (x86_64)" if stable else "PyTorch nightly cu128 (section 2, Option A)"
    )
    assert plan[("node-02", "doctor: uninstall torch torchvision torchaudio")]["message"] == "3 package(s) absent"
    assert plan[("node-02", torch_task)]["message"].startswith("would install torch")
    vllm = plan[("node-02", "doctor: reinstall vLLM with its extra index (and the fallback index)")]["message"]
    assert vllm.startswith(
        "would install vllm==0.10.2 (missing) with --extra-index-url https://wheels.vllm.ai/0.10.2/ "
        "--extra-index-url https://pypi.nvidia.com --config-settings vllm:torch-backend=auto and constraints ("
    )
    assert "(uv cannot plan it now: " in vllm and "the network was disabled" in vllm

    # A real fix, on one host: the FA3 remedy records the fallback. Where setup recorded one already,
    # FA3 missing is a note with nothing to fix; node-04 forgets its record first.
    assert all(e.get("note") for e in events if e["finding"] == "fa3-missing")
    (ssh_fleet.host("node-04").home / ".fleet/facts.d/stack.json").unlink()
    fixed = run_fleet(
        "doctor",
        "-i",
        inv,
        "--hosts",
        "node-04",
        "--fix",
        "--only",
        "fa3-missing",
        "-e",
        f"@{offline}",
        "-e",
        "fa3_wheel_url=",
    )
    assert "doctor: fix fa3-missing" in fixed.stdout and "doctor (after fix)" in fixed.stdout
    assert "note node-04: flash_attn_3 is not usable here" in fixed.stdout
    home = ssh_fleet.host("node-04").home
    assert json.loads((home / ".fleet/facts.d/stack.json").read_text())["attn_impl"] == "sdpa"
    assert "export ATTN_IMPL=sdpa" in (home / ".fleet/env.sh").read_text()
    assert fixed.returncode == 2  # the host's other findings (no GPU, no torch, no vLLM) remain
    again = run_fleet("doctor", "-i", inv, "--hosts", "node-04", "--json", "-e", f"@{offline}")
    fa3 = next(e for e in map(json.loads, again.stdout.splitlines()) if e["finding"] == "fa3-missing")
    assert fa3.get("note") is True and fa3["problem"].endswith("setup recorded the fallback ATTN_IMPL=sdpa")
    assert "no FA3 wheel is published for" in fa3["remedy"] or platform.machine() == "aarch64"


def test_setup_playbook_parts_converge_for_real(ssh_fleet, converged, pyindex, inv, tmp_path):
    """playbooks/setup.yaml itself, for the parts that need no internet: uv, the PATH and
    LD_LIBRARY_PATH exports, the project folder and the venv; twice. GPU facts as recorded."""
    from test_setup_playbook import GH200, override

    facts = tmp_path / "gh200.yaml"
    facts.write_text(yaml.safe_dump({"facts_override": override(**GH200)}))
    extra = {
        "project_dir": "~/setup-real",
        "python_version": host_python_version(),
        "uv_version": pyindex.uv_version,
        "uv_installer_url": f"{pyindex.base}/uv/install.sh",
        "uv_python_downloads": "never",  # the hosts' own Python only: no download, ever, in tests
    }
    args = ["run", SETUP, "-i", inv, "--json", "--tags", "uv,venv,profile", "--skip-tags", "base", "-e", f"@{facts}"]
    args += [arg for k, v in extra.items() for arg in ("-e", f"{k}={v}")]
    first = run_fleet(*args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    done = {(e["host"], e["task"]): e for e in tasks(first.stdout)}
    assert done[("node-01", "preflight: NVIDIA driver")]["message"] == "driver 570.148.08 >= 570.148.08"
    assert done[("node-01", "Python venv (uv venv --python)")]["status"] == "changed"
    assert ("node-01", "pip, wheel and setuptools (uv pip install -U)") not in done  # skipped by tag
    for host in ssh_fleet.hosts:
        assert (host.home / "setup-real/.venv/bin/python3").exists()
        assert "setup-real/.venv/lib/python" in (host.home / ".fleet/env.sh").read_text()
    second = run_fleet(*args)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr
    assert all(h["changed"] == 0 and h["failed"] == 0 for h in recap(second.stdout).values())
