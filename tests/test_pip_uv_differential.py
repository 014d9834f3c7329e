"""fleet's `pip` decisions against `uv pip install --dry-run`, the oracle, over a corpus of
specifiers: pins, ranges, extras, markers, pre/post/dev/local versions, URL and wheel-path
requirements, dependencies missing from an installed package, a broken dependency, constraints,
and a venv with system site-packages.

Real parts only: tiny wheels built here by uv, served as a PEP 503 index on 127.0.0.1, venvs
made by uv, one sshd host running `fleet run --check` (one pip task per specifier), and the same
uv answering the same question directly, as the host's user. Every specifier must get the same
answer: nothing to do, the same set of installs/removals, or an error on both sides."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import run_fleet
from loopback import build_wheel, serve, uv_binary
from test_setup_ssh import simple_index

pytestmark = pytest.mark.ssh

SYS_NAME = f"dxsys{os.getpid()}"  # installed into the host Python's own site-packages for one test run

# (name, version, dependencies, optional dependencies)
WHEELS = [
    ("dx-a", "1.0", [], {}),
    ("dx-a", "2.0", [], {}),
    ("dx-b", "1.0", ["dx-c>=1.0"], {}),
    ("dx-c", "1.0", [], {}),
    ("dx-c", "1.1", [], {}),
    ("dx-d", "1.0", [], {"feat": ["dx-e"]}),
    ("dx-e", "1.0", [], {}),
    ("dx-pre", "1.0", [], {}),
    ("dx-pre", "2.0rc1", [], {}),
    ("dx-post", "1.0", [], {}),
    ("dx-post", "1.0.post1", [], {}),
    ("dx-dev", "1.0.dev3", [], {}),
    ("dx-local", "1.0+cu128", [], {}),
    ("dx-broken", "1.0", ["dx-nowhere>=1"], {}),
    ("dx-mark", "1.0", ["dx-e; python_version < '3'"], {}),
    ("dx-url", "1.0", [], {}),
    (SYS_NAME, "1.0", [], {}),
]
# What the main venv holds before the corpus is asked: dx-b without its dependency, dx-d without its
# extra, dx-url from its URL, a post and a local version.
MAIN = ["dx-a==1.0", "dx-b==1.0", "dx-d==1.0", "dx-post==1.0", "dx-local==1.0", "dx-url @ {url}"]
CORPUS = [
    ("main", "dx-a==1.0"),
    ("main", "dx-a==2.0"),
    ("main", "dx-a>=1.0"),
    ("main", "dx-a~=1.0"),
    ("main", "dx-a!=1.0"),
    ("main", "dx-a<1.0"),
    ("main", "dx-a==2.0; python_version < '3'"),
    ("main", "dx-a==2.0; sys_platform == 'linux'"),
    ("main", "dx-b"),
    ("main", "dx-b==1.0"),
    ("main", "dx-c>=1.0,<1.1"),
    ("main", "dx-d"),
    ("main", "dx-d[feat]"),
    ("main", "dx-d[feat]==1.0"),
    ("main", "dx-e"),
    ("main", "dx-pre"),
    ("main", "dx-pre>=2.0rc1"),
    ("main", "dx-post"),
    ("main", "dx-post==1.0"),
    ("main", "dx-post==1.0.post1"),
    ("main", "dx-post>1.0"),
    ("main", "dx-dev"),
    ("main", "dx-dev==1.0.dev3"),
    ("main", "dx-local==1.0"),
    ("main", "dx-local==1.0+cu128"),
    ("main", "dx-local>1.0"),
    ("main", "dx-url"),
    ("main", "dx-url @ {url}"),
    ("main", "dx-url @ {other_url}"),
    ("main", "{wheel_path}"),
    ("main", "dx-broken"),
    ("main", "dx-mark"),
    ("main", "dx-nonexistent"),
    ("main", "dx-a dx-c"),
    ("sys", SYS_NAME),
    ("sys", f"{SYS_NAME}==1.0"),
    ("sys", "dx-a"),
    ("plain", SYS_NAME),
]
PRE = {"dx-pre": True}  # asked with --pre too
CONSTRAINED = [("main", "dx-b", ["dx-c==1.0"]), ("main", "dx-a", ["dx-a==2.0"]), ("main", "dx-c", ["dx-c<1.0"])]


@pytest.fixture(scope="module")
def world(ssh_fleet, tmp_path_factory):
    host = ssh_fleet.host("node-03")
    root = Path(tempfile.mkdtemp(prefix="fleet-difftest-", dir="/tmp"))  # the host's user reads it
    root.chmod(0o755)
    files, work = root / "files", tmp_path_factory.mktemp("dx-src")
    files.mkdir()
    wheels = [build_wheel(n, v, files, work, d, e) for n, v, d, e in WHEELS]
    simple_index(root / "simple", [w for w in wheels if not w.name.startswith("dx_url")])
    other = root / "other"
    other.mkdir()
    url_wheel = next(w for w in wheels if w.name.startswith("dx_url"))
    shutil.copy(url_wheel, other / url_wheel.name)
    uv = root / "bin" / "uv"
    uv.parent.mkdir()
    shutil.copy(uv_binary(), uv)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() or path == uv else 0o644)
    site = Path(
        subprocess.run(
            ["/usr/bin/python3", "-c", "import site; print([p for p in site.getsitepackages() if '/local/' in p][0])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    site.mkdir(parents=True, exist_ok=True)
    sys_wheel = next(w for w in wheels if w.name.startswith(SYS_NAME))
    placed = []
    try:
        with serve(root) as base:
            # the "system" copy of SYS_NAME: unpacked into the host Python's site-packages (a wheel is a zip)
            before = set(site.iterdir())
            shutil.unpack_archive(sys_wheel, site, "zip")
            placed = sorted(set(site.iterdir()) - before)
            venvs = root / "venvs"
            venvs.mkdir()
            shutil.chown(venvs, host.user, host.user)

            def as_user(*argv: str) -> subprocess.CompletedProcess:
                env = ["env", f"HOME={host.home}", "UV_PYTHON_DOWNLOADS=never", "UV_NO_CONFIG=1"]
                return subprocess.run(["sudo", "-u", host.user, *env, *argv], capture_output=True, text=True)

            for name, flags in (("main", []), ("sys", ["--system-site-packages"]), ("plain", [])):
                made = as_user(str(uv), "venv", "-q", "--python", "/usr/bin/python3", *flags, str(venvs / name))
                assert made.returncode == 0, made.stderr
            url = f"{base}/files/{url_wheel.name}"
            wanted = [m.format(url=url) for m in MAIN]
            index = ["--index-url", f"{base}/simple"]
            done = as_user(str(uv), "pip", "install", "--python", str(venvs / "main/bin/python3"), *index, *wanted)
            assert done.returncode == 0, done.stderr
            gone = as_user(str(uv), "pip", "uninstall", "--python", str(venvs / "main/bin/python3"), "dx-c")
            assert gone.returncode == 0, gone.stderr  # dx-b's dependency is now missing
            values = {"url": url, "other_url": f"{base}/other/{url_wheel.name}"}
            values["wheel_path"] = str(other / url_wheel.name)
            yield {"host": host, "venvs": venvs, "uv": uv, "base": base, "values": values, "as_user": as_user}
    finally:
        for path in placed:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        shutil.rmtree(root, ignore_errors=True)


def uv_answer(world, venv: str, packages: list[str], pre: bool, constraints: list[str]) -> tuple[str, set]:
    """The oracle: ("ok" | "change" | "error", {(sign, name, version)}) from uv's own dry run."""
    py = str(world["venvs"] / venv / "bin" / "python3")
    extra = ["--pre"] if pre else []
    if constraints:
        path = world["venvs"] / f"c-{abs(hash(tuple(constraints)))}.txt"
        path.write_text("".join(f"{c}\n" for c in constraints))
        path.chmod(0o644)
        extra += ["-c", str(path)]
    args = [str(world["uv"]), "pip", "install", "--dry-run", "--python", py, "--index-url", f"{world['base']}/simple"]
    done = world["as_user"](*args, *extra, *packages)
    if done.returncode != 0:
        return "error", set()
    changes = set()
    for line in done.stderr.splitlines():
        m = re.match(r"^ ([+-]) (\S+?)(?:==(\S+)| @ (\S+))", line)
        if m:
            changes.add((m.group(1), m.group(2).replace("_", "-").lower(), m.group(3) or m.group(4)))
    return ("change" if changes else "ok"), changes


def fleet_answer(event: dict) -> tuple[str, set]:
    if event["status"] == "ok":
        return "ok", set()
    if event["status"] == "failed" or "uv cannot plan it" in event["message"]:
        return "error", set()
    changes = set()
    for line in event.get("diff", "").splitlines():
        if m := re.match(r"^\+ (\S+) (\S+)$", line):
            changes.add(("+", m.group(1), m.group(2)))
        elif m := re.match(r"^- (\S+) (\S+)$", line):
            changes.add(("-", m.group(1), m.group(2)))
        elif m := re.match(r"^~ (\S+) (\S+) -> (\S+) ", line):
            changes |= {("-", m.group(1), m.group(2)), ("+", m.group(1), m.group(3))}
    return "change", changes


def test_fleet_decides_every_specifier_as_uv_does(ssh_fleet, world, tmp_path):
    cases = []
    for venv, spec in CORPUS:
        packages = spec.split(" ") if spec == "dx-a dx-c" else [spec.format(**world["values"])]
        cases.append((venv, packages, False, []))
        if spec in PRE:
            cases.append((venv, packages, True, []))
    cases += [(venv, [spec], False, pins) for venv, spec, pins in CONSTRAINED]
    tasks = []
    for i, (venv, packages, pre, pins) in enumerate(cases):
        args = {
            "venv": str(world["venvs"] / venv),
            "packages": packages,
            "index_url": f"{world['base']}/simple",
            "uv": str(world["uv"]),
            "pre": pre,
            "pins": pins,
        }
        tasks.append({"name": f"case {i}", "pip": args, "ignore_errors": True})
    book = tmp_path / "corpus.yaml"
    book.write_text(yaml.safe_dump([{"hosts": "node-03", "gather_facts": False, "tasks": tasks}]))
    inv = ssh_fleet.inventory(tmp_path / "inv")
    result = run_fleet("run", book, "-i", inv, "--check", "--json", timeout=600)
    events = {e["task"]: e for e in map(json.loads, result.stdout.splitlines()) if e.get("event") == "task_result"}
    assert len(events) == len(cases), result.stdout[-2000:] + result.stderr
    differ = []
    kinds = {"ok": 0, "change": 0, "error": 0}
    for i, (venv, packages, pre, pins) in enumerate(cases):
        want = uv_answer(world, venv, packages, pre, pins)
        got = fleet_answer(events[f"case {i}"])
        kinds[want[0]] += 1
        if want != got:
            differ.append((venv, packages, pre, pins, want, got, events[f"case {i}"]["message"]))
    assert not differ, "\n".join(map(str, differ))
    # the corpus covers all three answers, and the cases the old metadata planner got wrong
    assert kinds["ok"] >= 8 and kinds["change"] >= 12 and kinds["error"] >= 3, kinds
    by_spec = {(c[0], *c[1], c[2], *c[3]): events[f"case {i}"] for i, c in enumerate(cases)}
    assert "dx-e 1.0" in by_spec[("main", "dx-d[feat]", False)]["diff"]  # an extra's dependency is missing
    assert "dx-c" in by_spec[("main", "dx-b", False)]["diff"]  # an installed package's dependency is missing
    assert by_spec[("sys", SYS_NAME, False)]["status"] == "changed"  # a system copy does not count in the venv
    assert "-> 2.0 (upgrade)" in by_spec[("main", "dx-a", False, "dx-a==2.0")]["diff"]  # the lock moves it
