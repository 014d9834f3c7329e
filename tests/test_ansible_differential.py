"""fleet against ansible-core, the oracle: for every inventory of the corpus (public inventories
unpacked from PyPI packages at test time, and hand-written cases in tests/ansible_cases/), the
hosts, their groups and their effective variables (after mapping ansible_* names) must be what
ansible-core reads, and fleet's selection of every pattern what ansible-core selects. Each
deliberate difference is asserted as such below and listed in the README.

A summary line reports cases, patterns, matches and deliberate differences; a SOURCES listing
(package, version and path of every case) is written next to the cache."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ansible_corpus import CACHE, Case, Oracle, plain, public_cases
from conftest import by_host, run_fleet

from fleet.inventory import fleet_vars, load_inventory
from fleet.model import FleetError

HAND_WRITTEN = Path(__file__).parent / "ansible_cases"
COUNTS = {"cases": 0, "hosts": 0, "patterns": 0, "matches": 0, "matches_as_set": 0, "deliberate": 0}


def hand_written_cases() -> list[Case]:
    return [
        Case(f"hand-written/{d.name}", d, "hand-written (tests/ansible_cases)") for d in sorted(HAND_WRITTEN.iterdir())
    ]


@pytest.fixture(scope="module")
def corpus() -> list[Case]:
    cases = public_cases() + hand_written_cases()
    listing = "".join(f"{c.name}\t{c.origin}\n" for c in cases)
    (CACHE / "SOURCES").write_text(listing)
    print(f"\ncorpus: {len(cases)} cases, sources listed in {CACHE / 'SOURCES'}")
    return cases


def generated_patterns(oracle: Oracle) -> list[str]:
    groups = [g for g in oracle.inventory.groups if g != "all"]
    hosts = list(oracle.inventory._inventory.hosts)
    patterns = ["all", "*", "ungrouped", "localhost", "no-such-host", "all:!ungrouped", *groups[:6], *hosts[:3]]
    for g in groups[1:4]:
        patterns += [f"{g}[0]", f"{g}[-1]", f"{g}[1:3]", f"{g}[1:]", f"!{g}", f"{g[:2]}*", f"~{re.escape(g[:3])}"]
    if len(groups) >= 3:
        a, b = groups[1], groups[2]
        patterns += [f"{a}:&{b}", f"{a},{b}", f"{b}:!{a}", f"{b},{a}"]
    if hosts:
        patterns += [f"{hosts[-1]},{groups[-1]}", f"{hosts[0]},no-such-host"]
    return list(dict.fromkeys(patterns))


def fleet_select(inventory, pattern: str) -> list[str] | str:
    try:
        return inventory.select(pattern)
    except FleetError:
        return "error"


def compare_case(case: Case) -> list[str]:
    """Every disagreement between fleet and ansible-core on one case, as lines (none: all match)."""
    oracle = Oracle(case.path)
    if not oracle.parsed:
        return []  # not a static inventory (an inventory plugin's configuration): see test below
    problems = []
    inventory = load_inventory(case.path, warn=lambda _: None)
    theirs = oracle.hosts()
    ours = {h: inventory.host(h) for h in inventory.host_vars if h not in inventory.implicit}
    if set(theirs) != set(ours):
        return [
            f"{case.name}: hosts differ: ansible only {set(theirs) - set(ours)}, fleet only {set(ours) - set(theirs)}"
        ]
    for name, host in ours.items():
        if sorted(host.groups) != theirs[name]["groups"]:
            problems.append(f"{case.name}: {name} groups: fleet {sorted(host.groups)} ansible {theirs[name]['groups']}")
        expected = fleet_vars(theirs[name]["vars"])
        if plain(host.vars) != expected:
            diff = {k: (plain(host.vars).get(k), expected.get(k)) for k in set(expected) | set(host.vars)}
            diff = {k: v for k, v in diff.items() if v[0] != v[1]}
            problems.append(f"{case.name}: {name} vars (fleet, ansible): {diff}")
    COUNTS["hosts"] += len(ours)
    patterns = generated_patterns(oracle)
    listed = case.path / "patterns.txt" if case.path.is_dir() else None
    if listed and listed.exists():
        patterns += [p for p in listed.read_text().splitlines() if p.strip()]
    for pattern in patterns:
        COUNTS["patterns"] += 1
        want, got = oracle.select(pattern), fleet_select(inventory, pattern)
        if want == got:
            COUNTS["matches"] += 1
        elif (
            isinstance(want, list)
            and isinstance(got, list)
            and sorted(want) == sorted(got)
            and oracle.order_is_hash_dependent(pattern)
        ):
            COUNTS["matches_as_set"] += 1  # ansible's own order varies from run to run here
        else:
            problems.append(f"{case.name}: pattern {pattern!r}: fleet {got} ansible {want}")
    COUNTS["cases"] += 1
    return problems


def test_fleet_reads_every_inventory_as_ansible_core_does(corpus):
    problems = [line for case in corpus for line in compare_case(case)]
    print(
        f"differential: {COUNTS['cases']} cases, {COUNTS['hosts']} hosts, {COUNTS['patterns']} patterns, "
        f"{COUNTS['matches']} matches (+{COUNTS['matches_as_set']} as sets where ansible's order is random)"
    )
    assert not problems, "\n".join(problems[:40])
    assert COUNTS["cases"] >= 50 and COUNTS["patterns"] >= 1000
    assert COUNTS["matches"] + COUNTS["matches_as_set"] == COUNTS["patterns"]


def test_what_ansible_cannot_read_as_an_inventory_fleet_refuses(corpus):
    """A playbook passed as an inventory, an inventory plugin's configuration (ansible-core runs
    plugins such as constructed; fleet reads static inventories only): an error, never hosts."""
    unreadable = [c for c in corpus if not Oracle(c.path).parsed]
    assert len(unreadable) >= 2, "the corpus holds a plugin configuration and a playbook among ansible's tests"
    for case in unreadable:
        with pytest.raises(FleetError, match=r"plugin|an inventory is a mapping of groups"):
            load_inventory(case.path, warn=lambda _: None)


# ---- the real commands, a few times ---------------------------------------------------------------
def _strip_implicit(hostvars: dict) -> dict:
    return {h: fleet_vars(plain(v)) for h, v in hostvars.items()}


@pytest.mark.parametrize("case_name", ["hand-written/yaml_hosts", "hand-written/precedence", "kolla-ansible/multinode"])
def test_fleet_inventory_json_equals_ansible_inventory_list(corpus, case_name):
    (case,) = [c for c in corpus if c.name == case_name]
    theirs = subprocess.run(
        [shutil.which("ansible-inventory") or "ansible-inventory", "-i", str(case.path), "--list"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    ansible_list = json.loads(theirs)
    ours = by_host(run_fleet("inventory", "-i", case.path, "--json").stdout)
    listed = {h for group in ansible_list.values() for h in group.get("hosts", [])}
    assert set(ours) == listed
    hostvars = _strip_implicit(ansible_list["_meta"]["hostvars"])  # hosts without vars are left out there
    for host in ours:
        assert ours[host]["vars"] == hostvars.get(host, {}), host


@pytest.mark.parametrize(
    ("case_name", "pattern"),
    [("hand-written/ini_hosts_ports_ranges", "web[1:3]:~^db"), ("hand-written/children_order", "other,top:!leaf"),
     ("kolla-ansible/multinode", "control[0],compute")],
)  # fmt: skip
def test_fleet_selection_equals_ansible_list_hosts(corpus, case_name, pattern):
    (case,) = [c for c in corpus if c.name == case_name]
    listed = subprocess.run(
        [shutil.which("ansible") or "ansible", pattern, "-i", str(case.path), "--list-hosts"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    theirs = [line.strip() for line in listed.splitlines()[1:] if line.strip()]
    assert load_inventory(case.path, warn=lambda _: None).select(pattern) == theirs


# ---- deliberate differences: each asserted to be exactly what the README says --------------------
def write_case(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text))
    return folder


@pytest.fixture
def cluster(tmp_path) -> Path:
    return write_case(tmp_path / "cluster", "hosts.ini", "[gh200]\ngh200-[01:08]\n[login]\nlogin-01\n")


DELIBERATE = [
    # (pattern, fleet's selection) where ansible-core selects nothing
    ("gh200-[02:04]", ["gh200-02", "gh200-03", "gh200-04"]),  # a range where no group gh200- exists
    ("gh200-[01-03,07]", ["gh200-01", "gh200-02", "gh200-03", "gh200-07"]),  # Slurm host list
    ("gh200-0[1-2]", ["gh200-01", "gh200-02"]),  # ansible: positions 1-2 of nothing (a dash subscript)
]


@pytest.mark.parametrize(("pattern", "selected"), DELIBERATE)
def test_host_ranges_in_patterns_select_only_where_ansible_selects_nothing(cluster, pattern, selected):
    assert Oracle(cluster).select(pattern) == []
    assert load_inventory(cluster, warn=lambda _: None).select(pattern) == selected
    COUNTS["deliberate"] += 1


def test_slurm_host_lists_in_inventories(tmp_path):
    folder = write_case(tmp_path / "slurm", "hosts.ini", "[gpu]\ngh200-[01-03,07]\n")
    assert not Oracle(folder).parsed  # ansible-core: "host range must be begin:end or begin:end:step"
    inv = load_inventory(folder, warn=lambda _: None)
    assert inv.members("gpu") == ["gh200-01", "gh200-02", "gh200-03", "gh200-07"]
    COUNTS["deliberate"] += 1


def test_unknown_group_keys_are_errors_not_skipped(tmp_path):
    folder = write_case(tmp_path / "typo", "hosts.yml", "gpu:\n  host:\n    n1:\n")
    oracle = Oracle(folder)
    assert oracle.parsed and "Skipping unexpected key (host) in group (gpu)" in oracle.warnings
    with pytest.raises(FleetError, match=r"hosts\.yml:2: group 'gpu' has unknown key"):
        load_inventory(folder, warn=lambda _: None)
    COUNTS["deliberate"] += 1


def test_an_empty_range_is_an_error(tmp_path):
    folder = write_case(tmp_path / "empty", "hosts.ini", "[gpu]\nn[5:1]\n")
    assert Oracle(folder).parsed and not Oracle(folder).hosts()  # ansible-core: silently no host
    with pytest.raises(FleetError, match=r"host range \[5:1\] in 'n\[5:1\]' is empty"):
        load_inventory(folder, warn=lambda _: None)
    COUNTS["deliberate"] += 1


def test_strict_hosts_turns_the_unmatched_element_warning_into_an_error(cluster):
    oracle = Oracle(cluster)
    assert oracle.select("login-01,gh200-99") == ["login-01"]  # ansible: a warning, the rest runs
    warnings: list[str] = []
    inv = load_inventory(cluster, warn=warnings.append)
    assert inv.select("login-01,gh200-99") == ["login-01"]
    assert warnings == [f"host pattern element(s) 'gh200-99' match no host or group in {cluster}; left out "
                        "(--strict-hosts makes this an error)"]  # fmt: skip
    inv.strict_hosts = True
    with pytest.raises(FleetError, match="'gh200-99' match no host or group"):
        inv.select("login-01,gh200-99")
    COUNTS["deliberate"] += 1


def test_summary():
    """Printed last (pytest -s shows it; CI's log keeps it)."""
    print(
        f"\nansible-core differential: {COUNTS['cases']} cases, {COUNTS['hosts']} hosts, {COUNTS['patterns']} "
        f"patterns, {COUNTS['matches']} exact matches, {COUNTS['matches_as_set']} set matches (ansible's order "
        f"is random there), {COUNTS['deliberate']} deliberate differences asserted",
        file=sys.stderr,
    )
