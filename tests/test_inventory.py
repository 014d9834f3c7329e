"""Inventories: fleet YAML, Ansible YAML and INI, ranges, group_vars/host_vars precedence, host
patterns, connection variables, and the `fleet inventory` command."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import by_host, run_fleet

from fleet.connection import LocalConnection, SSHConnection, connect
from fleet.inventory import expand_range, load_inventory
from fleet.model import FleetError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def lab(tmp_path) -> Path:
    """A GH200 lab: 16 nodes in racks, a login node, group_vars and host_vars folders."""
    root = tmp_path / "lab"
    write(
        root / "hosts.yaml",
        """\
        all:
          vars: {level: all-file, ntp: pool.ntp.org}
          children:
            gh200:
              vars: {level: gh200-file, user: ubuntu}
              hosts:
                gh200-[01:16]:
              children:
                rack1:
                  vars: {level: rack1-file}
                  hosts:
                    gh200-[01:04]:
                rack2:
                  hosts:
                    gh200-[05:08]:
            login:
              hosts:
                login-01: {address: 10.0.0.5, port: 2222, key: ~/.ssh/lab, connection: ssh, level: host-file}
        """,
    )
    write(root / "group_vars" / "all.yaml", "level: all-dir\nproxy: none\n")
    write(root / "group_vars" / "rack1" / "main.yaml", "level: rack1-dir\n")  # a folder of files works too
    write(root / "group_vars" / "rack1" / "secrets.yml", "hf_token: hf_rack1secret\n")
    write(root / "host_vars" / "gh200-02.yaml", "level: host-dir\nport: 2202\n")
    return root


def test_ranges_expand_with_padding_and_letters():
    assert expand_range("gh200-[01:16]")[:3] == ["gh200-01", "gh200-02", "gh200-03"]
    assert len(expand_range("gh200-[01:16]")) == 16 and expand_range("gh200-[01:16]")[-1] == "gh200-16"
    assert expand_range("n[8:10]") == ["n8", "n9", "n10"]
    assert expand_range("rack[a:c]-[1:2]") == ["racka-1", "racka-2", "rackb-1", "rackb-2", "rackc-1", "rackc-2"]
    assert expand_range("n[0:6:3]") == ["n0", "n3", "n6"]
    with pytest.raises(FleetError, match="empty"):
        expand_range("n[5:1]")


def test_groups_children_and_ranges(lab):
    inv = load_inventory(lab)
    assert inv.hosts[:2] == ["gh200-01", "gh200-02"] and len(inv.hosts) == 17
    assert inv.members("rack1") == ["gh200-01", "gh200-02", "gh200-03", "gh200-04"]
    assert inv.members("gh200")[-1] == "gh200-16" and len(inv.members("gh200")) == 16
    assert inv.host("gh200-03").groups == ["gh200", "rack1"]
    assert inv.host("login-01").groups == ["login"]


def test_variable_precedence_follows_the_documented_order(lab):
    inv = load_inventory(lab)
    # host_vars/ beats the host's line, which beats every group
    assert inv.host("gh200-02").vars["level"] == "host-dir"
    assert inv.host("gh200-02").vars["port"] == 2202
    assert inv.host("login-01").vars["level"] == "host-file"
    # a child group beats its parent; a group's folder beats its block in the inventory file
    assert inv.host("gh200-03").vars["level"] == "rack1-dir"
    # as in Ansible, group_vars/all beats every group's vars written in the inventory file
    assert inv.host("gh200-06").vars["level"] == "all-dir"
    # group_vars/all.yaml beats `all:` in the file, and every other group beats `all`
    assert inv.host("gh200-06").vars["proxy"] == "none"
    assert inv.host("login-01").vars["ntp"] == "pool.ntp.org"
    assert inv.host("gh200-01").vars["hf_token"] == "hf_rack1secret"
    assert "hf_token" not in inv.host("gh200-05").vars


def test_equal_depth_groups_apply_alphabetically(tmp_path):
    write(
        tmp_path / "hosts.yaml",
        """\
        beta: {hosts: {n1: null}, vars: {x: beta, only_beta: 1}}
        alpha: {hosts: {n1: null}, vars: {x: alpha}}
        """,
    )
    host = load_inventory(tmp_path).host("n1")
    assert host.vars == {"x": "beta", "only_beta": 1}
    assert host.groups == ["alpha", "beta"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("gh200-03", ["gh200-03"]),
        ("gh200-1*", [f"gh200-{i}" for i in range(10, 17)]),
        ("rack1", ["gh200-01", "gh200-02", "gh200-03", "gh200-04"]),
        ("rack1,login-01", ["gh200-01", "gh200-02", "gh200-03", "gh200-04", "login-01"]),
        ("login-01,rack2", ["login-01", "gh200-05", "gh200-06", "gh200-07", "gh200-08"]),  # pattern order
        ("gh200,!rack1,!gh200-1*", ["gh200-05", "gh200-06", "gh200-07", "gh200-08", "gh200-09"]),
        ("gh200:&rack2", ["gh200-05", "gh200-06", "gh200-07", "gh200-08"]),  # Ansible's `:` works too
        (
            "gh200-0*,&rack*,!gh200-05",
            ["gh200-01", "gh200-02", "gh200-03", "gh200-04", "gh200-06", "gh200-07", "gh200-08"],
        ),
        ("gh200-[02:04]", ["gh200-02", "gh200-03", "gh200-04"]),  # a range, not a glob character class
        ("gh200-1[0:2],login-*", ["gh200-10", "gh200-11", "gh200-12", "login-01"]),
        ("gh200-[01:03]:!gh200-02", ["gh200-01", "gh200-03"]),
        ("!gh200", ["login-01"]),
        ("&rack1", ["gh200-01", "gh200-02", "gh200-03", "gh200-04"]),
        ("all", None),
        ("*", None),
        (None, None),
    ],
)
def test_host_patterns(lab, pattern, expected):
    inv = load_inventory(lab)
    assert inv.select(pattern) == (inv.hosts if expected is None else expected)


@pytest.mark.parametrize("pattern", ["nothing-*", "gh200-99", "rack1,&login", "gh200-[20:22]"])
def test_pattern_matching_no_host_is_an_error_naming_it(lab, pattern):
    with pytest.raises(FleetError) as err:
        load_inventory(lab).require(pattern)
    assert repr(pattern) in str(err.value) and str(lab) in str(err.value)


def test_ansible_ini_inventory(tmp_path):
    ini = write(
        tmp_path / "hosts.ini",
        """\
        # an Ansible INI inventory
        [gpu]
        gh200-[01:02] ansible_user=ubuntu
        gh200-03 ansible_host=10.0.0.3 ansible_port=2222 ansible_ssh_private_key_file=~/.ssh/gpu "note=two words"

        [login]
        login ansible_connection=local   # the machine we run on

        [cluster:children]
        gpu
        login

        [cluster:vars]
        ansible_user=admin
        ntp_server=pool.ntp.org
        """,
    )
    write(tmp_path / "group_vars" / "gpu.yml", "cuda: '12.8'\n")
    inv = load_inventory(ini)  # a file, with group_vars beside it
    assert inv.hosts == ["gh200-01", "gh200-02", "gh200-03", "login"]
    assert inv.select("cluster:!login") == ["gh200-01", "gh200-02", "gh200-03"]
    assert inv.host("gh200-01").vars == {"user": "ubuntu", "ntp_server": "pool.ntp.org", "cuda": "12.8"}
    g3 = inv.host("gh200-03").vars
    assert (g3["address"], g3["port"], g3["key"], g3["user"], g3["note"]) == (
        "10.0.0.3", 2222, "~/.ssh/gpu", "admin", "two words",
    )  # fmt: skip
    assert inv.host("login").vars["connection"] == "local"
    assert inv.host("login").groups == ["cluster", "login"]


def test_ansible_yaml_inventory_in_a_file_named_hosts(tmp_path):
    write(
        tmp_path / "hosts",
        """\
        ---
        all:
          children:
            gpu:
              hosts:
                gh200-01:
                  ansible_host: 10.0.0.1
                  ansible_user: ubuntu
                  ansible_ssh_private_key_file: ~/.ssh/id_gpu
                  ansible_port: 22
          vars:
            ansible_connection: ssh
        """,
    )
    inv = load_inventory(tmp_path)
    assert inv.host("gh200-01").vars == {
        "connection": "ssh", "address": "10.0.0.1", "user": "ubuntu", "key": "~/.ssh/id_gpu", "port": 22,
    }  # fmt: skip


def test_connection_variables_pick_the_connection(lab, tmp_path):
    inv = load_inventory(lab)
    conn = connect("login-01", inv.host("login-01").vars)
    assert isinstance(conn, SSHConnection)
    o = conn.options
    assert (o.address, o.port, o.user, o.key) == ("10.0.0.5", 2222, None, "~/.ssh/lab")
    node = connect("gh200-02", inv.host("gh200-02").vars).options
    assert (node.address, node.port, node.user) == ("gh200-02", 2202, "ubuntu")  # no address: the name
    assert isinstance(connect("here", {"connection": "local"}), LocalConnection)
    with pytest.raises(ValueError, match="unknown connection type"):
        connect("x", {"connection": "telnet"})


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"hosts.yaml": "all:\n  hosts: [a\n"}, "hosts.yaml:3: malformed YAML"),
        ({"hosts.yaml": "gpu:\n  host: {a: null}\n"}, "hosts.yaml:2: group 'gpu' has unknown key(s) host"),
        ({"hosts.yaml": "gpu:\n  hosts:\n    n-[1:x]:\n"}, "bad host range"),
        ({"hosts.yaml": "gpu:\n  hosts: {a: 5}\n"}, "vars of host 'a' must be a mapping"),
        ({"hosts.ini": "[gpu\nn1\n"}, "hosts.ini:1: unclosed section header"),
        ({"hosts.ini": "[gpu:vars]\njust-a-word\n"}, "hosts.ini:2: expected key=value"),
        ({"hosts.ini": "[gpu]\nn1 user\n"}, "hosts.ini:2: expected key=value after host name"),
        ({"notes.txt": "hi"}, "has no hosts.yaml"),
        (
            {"hosts.yaml": "gpu: {hosts: {a: }}\n", "group_vars/gpu.yaml": "- a\n"},
            "gpu.yaml: variables must be a mapping",
        ),
    ],
)
def test_bad_inventories_say_file_and_line(tmp_path, files, message):
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(FleetError, match=re.escape(message)):
        load_inventory(tmp_path)


def test_missing_inventory():
    with pytest.raises(FleetError, match="does not exist"):
        load_inventory("no/such/inventory")


def test_fleet_inventory_lists_hosts_groups_and_merged_vars_with_secrets_masked(lab):
    write(lab / "host_vars" / "login-01.yaml", "db_password: s3cret-pw\n")
    listed = run_fleet("inventory", "-i", lab, "--hosts", "gh200-0[1:2],login-01", "-e", "api_key=key-from-cli")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[2:] if line.strip()}
    assert set(rows) == {"gh200-01", "gh200-02", "login-01"}
    assert "gh200,rack1" in rows["gh200-01"] and '"level": "host-dir"' in rows["gh200-02"]
    as_json = run_fleet("inventory", "-i", lab, "--hosts", "gh200-01,login-01", "--json", "-e", "api_key=key-from-cli")
    data = by_host(as_json.stdout)
    assert data["gh200-01"]["groups"] == ["gh200", "rack1"]
    assert data["gh200-01"]["vars"]["user"] == "ubuntu" and data["login-01"]["vars"]["port"] == 2222
    assert data["gh200-01"]["vars"]["hf_token"] == "********" and data["login-01"]["vars"]["db_password"] == "********"
    assert data["login-01"]["vars"]["api_key"] == "********"
    for output in (listed.stdout + listed.stderr, as_json.stdout + as_json.stderr):
        for secret in ("hf_rack1secret", "s3cret-pw", "key-from-cli"):
            assert secret not in output


def test_play_vars_and_extra_vars_sit_on_top_of_inventory_vars(tmp_path):
    inv = write(
        tmp_path / "inv" / "hosts.yaml", "all:\n  hosts:\n    here: {connection: local, a: inv, b: inv, c: inv}\n"
    )
    book = tmp_path / "book.yaml"
    book.write_text(yaml.safe_dump([{
        "hosts": "here", "gather_facts": False, "vars": {"b": "play", "c": "play"},
        "tasks": [{"assert": {"that": ["a == 'inv'", "b == 'play'", "c == 'cli'"]}}],
    }]))  # fmt: skip
    result = run_fleet("run", book, "-i", inv.parent, "-e", "c=cli")
    assert result.returncode == 0, result.stdout + result.stderr
    failing = run_fleet("run", book, "-i", inv.parent)  # the assert really checks: without -e it fails
    assert failing.returncode == 2, failing.stdout


# ---- Ansible's host syntax, Slurm, patterns --------------------------------------------------------
from fleet.hostnames import parse_host, split_port  # noqa: E402
from fleet.inventory import ini_value  # noqa: E402


@pytest.mark.parametrize(
    ("entry", "names", "port"),
    [
        ("web1:2222", ["web1"], 2222),
        ("[fe80::1]:1022", ["fe80::1"], 1022),
        ("fe80::2", ["fe80::2"], None),
        ("lb[00:08:2]", ["lb00", "lb02", "lb04", "lb06", "lb08"], None),
        ("[A:B][0:1].example.org", ["A0.example.org", "A1.example.org", "B0.example.org", "B1.example.org"], None),
        ("web[1:2]:2200", ["web1", "web2"], 2200),
        ("gh200-[01-03,07]", ["gh200-01", "gh200-02", "gh200-03", "gh200-07"], None),
        ("n[y:B]", ["ny", "nz", "nA", "nB"], None),  # Ansible's letters run a..z then A..Z
    ],
)
def test_host_entries_as_ansible_writes_them(entry, names, port):
    assert parse_host(entry) == (names, port)


def test_a_port_is_split_off_only_a_valid_host():
    assert split_port("weird!host:22") == ("weird!host:22", None)
    with pytest.raises(FleetError, match="ends in ':'"):
        parse_host("web1:")


@pytest.mark.parametrize(
    ("text", "value"),
    [("0644", "0644"), ("10:30", "10:30"), ("yes", "yes"), ("~", "~"), ("true", "true"), ("True", True),
     ("22", 22), ("1e3", 1000.0), ("[1, 'a']", [1, "a"]), ("(1, 2)", [1, 2]), ("'x'", "x"), ("None", None),
     ("12 # note", 12), ("a # note", "a # note")],
)  # fmt: skip
def test_ini_values_are_python_literals_or_text_as_in_ansible(text, value):
    assert ini_value(text) == value and type(ini_value(text)) is type(value)


def test_a_host_named_before_any_section_leaves_ungrouped_when_a_section_names_it(tmp_path):
    write(tmp_path / "hosts", "solo\nweb1\n[web]\nweb1\n")
    inv = load_inventory(tmp_path)
    assert inv.members("ungrouped") == ["solo"] and inv.host("web1").groups == ["web"]


def test_slurm_job_nodelist_is_an_inventory(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gh200-[01-03,07],login-01")
    inv = load_inventory("slurm")
    assert inv.members("slurm") == ["gh200-01", "gh200-02", "gh200-03", "gh200-07", "login-01"]
    assert inv.select("slurm[0]") == ["gh200-01"]
    monkeypatch.delenv("SLURM_JOB_NODELIST")
    monkeypatch.delenv("SLURM_NODELIST", raising=False)
    with pytest.raises(FleetError, match=r"reads \$SLURM_JOB_NODELIST, which is not set"):
        load_inventory("slurm")


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("rack1[0]", ["gh200-01"]),
        ("rack1[-1]", ["gh200-04"]),
        ("rack1[1:2]", ["gh200-02", "gh200-03"]),
        ("~gh200-1[0-2]", ["gh200-10", "gh200-11", "gh200-12"]),
        ("gh200-[01-02,16]", ["gh200-01", "gh200-02", "gh200-16"]),  # a Slurm list: no group gh200- exists
        ("localhost", ["localhost"]),  # implicit, not in `all`
    ],
)
def test_ansible_pattern_forms(lab, pattern, expected):
    inv = load_inventory(lab)
    assert inv.select(pattern) == expected
    assert "localhost" not in inv.select("all")


def test_an_unmatched_comma_element_warns_and_strict_hosts_makes_it_an_error(lab):
    listed = run_fleet("inventory", "-i", lab, "--hosts", "gh200-01,gh200-99", "--json")
    assert listed.returncode == 0 and list(by_host(listed.stdout)) == ["gh200-01"]
    assert "fleet: warning: host pattern element(s) 'gh200-99' match no host or group" in listed.stderr
    strict = run_fleet("inventory", "-i", lab, "--hosts", "gh200-01,gh200-99", "--strict-hosts")
    assert strict.returncode == 1 and strict.stdout == ""
    assert strict.stderr.startswith("fleet: error: host pattern element(s) 'gh200-99' match no host or group")


def test_ignored_ansible_variables_are_named_once(tmp_path):
    write(tmp_path / "hosts", "[gpu]\nn1 ansible_python_interpreter=/usr/bin/python3\nn2 ansible_user=u\n"
          "[gpu:vars]\nansible_ssh_common_args=-o X=1\n")  # fmt: skip
    warnings: list[str] = []
    inv = load_inventory(tmp_path, warn=warnings.append)
    assert len(warnings) == 1
    assert (
        "fleet does not use these Ansible variables: ansible_python_interpreter, ansible_ssh_common_args"
        in (warnings[0])
    )
    assert inv.host("n2").vars["user"] == "u"


def test_group_priority_orders_groups_of_equal_depth(tmp_path):
    write(tmp_path / "hosts", "[a]\nn1\n[z]\nn1\n[a:vars]\nx=a\nansible_group_priority=5\n[z:vars]\nx=z\n")
    assert load_inventory(tmp_path).host("n1").vars == {"x": "a"}  # a's priority 5 beats z's default 1
