"""The built-in tasks' planners, pure: a probe's output in, a Plan out (no host involved).

The golden probe outputs are in the exact format the probes print; the first tests run the real
probes here (dpkg-query, stat/sha256sum/base64) to prove that format, the sshd tests run them on
hosts."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess

import pytest

from fleet.model import CommandResult, FleetError, Plan
from fleet.task import Context, build
from fleet.tasks.apt import installed, packages_script
from fleet.tasks.files import DIFF_LIMIT, FileState

CTX = Context("node-01", vars={"inventory_hostname": "node-01", "who": "fleet"})


def out(stdout: str, exited: int = 0) -> CommandResult:
    return CommandResult(stdout, "", exited)


def plan_from(task, result: CommandResult, ctx: Context) -> Plan:
    """The task's plan from its probe's output (parsed by the probe's own parser)."""
    return task.plan(task.probe().parse(result), ctx)


def plan(action: str, args: dict, stdout: str | None, ctx: Context = CTX) -> Plan:
    task = build(action, args)
    return task.plan(None, ctx) if stdout is None else plan_from(task, out(stdout), ctx)


def file_state(content: bytes, mode: str = "644") -> str:
    """What file_probe prints for a small regular file (its checksum is computed from the content)."""
    return f"file\n{mode}\n\n{base64.b64encode(content).decode()}\n"


def sh(script: str) -> str:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout


# ---- the golden formats are the real probes' formats -----------------------------------------------
def test_file_probe_prints_the_golden_format(tmp_path):
    f = tmp_path / "f.txt"
    f.write_bytes(b"a\nb\n")
    f.chmod(0o640)
    assert sh(build("copy", {"dest": str(f), "content": ""}).probe().script) == file_state(b"a\nb\n", "640")
    (tmp_path / "d").mkdir(mode=0o750)
    assert sh(build("directory", {"path": str(tmp_path / "d")}).probe().script) == "directory\n750\n"
    assert sh(build("line", {"path": str(tmp_path / "none"), "line": "x"}).probe().script) == "absent\n"
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (DIFF_LIMIT + 1))  # too large to fetch: hashed on the host, no content
    seen = sh(build("copy", {"dest": str(big), "content": ""}).probe().script)
    assert seen == f"file\n644\n{hashlib.sha256(big.read_bytes()).hexdigest()}\n\n"
    state = FileState.parse(seen)
    assert (state.sha256, state.content) == (hashlib.sha256(big.read_bytes()).hexdigest(), None)
    small = FileState.parse(sh(build("copy", {"dest": str(f), "content": ""}).probe().script))
    assert (small.sha256, small.content) == (hashlib.sha256(b"a\nb\n").hexdigest(), b"a\nb\n")


def test_apt_probe_prints_the_golden_format():  # CI and the hosts are Debian/Ubuntu: dpkg-query is there
    probe = build("apt", {"packages": ["coreutils", "fleet-no-such-package"]}).probe().script
    assert sh(probe) == "coreutils\tinstall ok installed\n"  # unknown packages print nothing (and exit 0)


def _dpkg_query(names: list[str], admindir: str | None = None) -> str:
    option = [f"--admindir={admindir}"] if admindir else []
    argv = ["dpkg-query", *option, "-W", "-f=${Package}\t${Status}\n", *names]
    return subprocess.run(argv, capture_output=True, text=True).stdout


def test_apt_probe_reads_the_status_file_as_dpkg_query_does():
    """The probe reads dpkg's status file with grep (~1 ms of host CPU, dpkg-query ~6 ms): for every
    package this machine knows and some it does not, the same installed set as dpkg-query."""
    known = sorted(set(_dpkg_query([]).split()) - {"install", "ok", "installed", "deinstall", "config-files"})
    names = [n for n in known if ":" not in n] + ["fleet-no-such-package", "python3-fleet-nothing"]
    assert len(names) > 100
    probe = packages_script(names)
    assert "grep -A3" in probe and sh(probe) != ""
    assert installed(sh(probe)) == installed(_dpkg_query(names))


def test_apt_probe_asks_dpkg_query_where_the_status_file_is_not_as_dpkg_writes_it(tmp_path, monkeypatch):
    """Status further than three lines after Package, a record without Status, records of two
    lines: the probe never guesses from such a file; dpkg-query answers (here: it alone knows
    gamma is installed). A dpkg-query that is not there shows when it is asked."""
    admin = tmp_path / "dpkg"
    (admin / "updates").mkdir(parents=True)
    rest = "Architecture: all\nVersion: 1\n"
    (admin / "status").write_text(
        f"Package: alpha\nStatus: install ok installed\n{rest}\n"
        f"Package: beta\nStatus: deinstall ok config-files\n{rest}\n"
        "Package: gamma\nArchitecture: all\nVersion: 1\nMaintainer: x\nStatus: install ok installed\n\n"
        f"Package: delta\n{rest}\n"
        "Package: eps\nStatus: purge ok not-installed\n\n"  # so short that grep's context shows the next record
        f"Package: zeta\nStatus: install ok installed\n{rest}\n"
    )
    names = ["alpha", "beta", "gamma", "delta", "eps", "zeta"]
    expected = installed(_dpkg_query(names, str(admin)))
    assert expected == {"alpha", "gamma", "zeta"}
    for subset in (["alpha", "beta"], ["alpha"], ["beta"], names, ["gamma"], ["delta"], ["eps"], ["zeta", "eps"]):
        assert installed(sh(packages_script(subset, str(admin)))) == expected & set(subset), subset
    bin_dir = tmp_path / "bin"  # no dpkg-query: only the grep answer remains
    bin_dir.mkdir()
    for tool in ("sh", "grep", "true"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(bin_dir))
    assert installed(sh(packages_script(["alpha", "beta"], str(admin)))) == {"alpha"}  # grep alone
    for guess in (["gamma"], ["delta"], ["eps"]):  # grep cannot tell: dpkg-query is asked, and is not here
        assert installed(sh(packages_script(guess, str(admin)))) == set(), guess


def test_apt_probe_asks_dpkg_query_when_dpkg_has_a_pending_journal(tmp_path):
    """An interrupted dpkg run leaves updates/NNNN files that dpkg-query applies over the status
    file; the probe then asks dpkg-query, and so also for names awk cannot match (arch, globs)."""
    admin = tmp_path / "dpkg"
    (admin / "updates").mkdir(parents=True)
    (admin / "status").write_text(
        "Package: alpha\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n\n"
        "Package: beta\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n\n"
    )
    probe = packages_script(["alpha", "beta"], str(admin))
    assert installed(sh(probe)) == {"alpha", "beta"}
    journal = "Package: beta\nStatus: deinstall ok config-files\nArchitecture: all\nVersion: 1\n"
    (admin / "updates" / "0001").write_text(journal)
    assert installed(_dpkg_query(["alpha", "beta"], str(admin))) == {"alpha"}  # what dpkg itself says now
    assert installed(sh(probe)) == {"alpha"}
    assert "grep" not in packages_script(["alpha:amd64"]) and "grep" not in packages_script(["python3*"])


# ---- apt --------------------------------------------------------------------------------------------
DPKG = "git\tinstall ok installed\ncurl\tdeinstall ok config-files\nlibc6:arm64\tinstall ok installed\n"


def test_apt_reads_only_fully_installed_packages():
    assert installed(DPKG) == {"git", "libc6"}


def test_apt_all_present_is_no_change():
    p = plan("apt", {"packages": ["git", "libc6"]}, DPKG)
    assert p.script is None and not p.changes and p.summary == "2 package(s) installed"


def test_apt_installs_only_what_is_missing():
    p = plan("apt", {"packages": ["git", "curl", "build-essential"]}, DPKG)
    assert p.script == (
        "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && "
        "apt-get install -y -qq --no-install-recommends curl build-essential\n"
    )
    assert p.diff == "+ curl\n+ build-essential\n" and p.summary == "install curl, build-essential"


def test_apt_pinned_versions_and_no_cache_update():
    p = plan("apt", {"packages": ["git=1:2.39.5-0+deb12u2", "curl=7.88.1-10"], "update_cache": False}, DPKG)
    assert p.script == (
        "export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq --no-install-recommends curl=7.88.1-10\n"
    )


def test_apt_absent_and_quoting():
    assert plan("apt", {"packages": ["curl"], "state": "absent"}, DPKG).script is None
    removal = plan("apt", {"packages": ["git", "curl"], "state": "absent"}, DPKG)
    assert removal.script.endswith("apt-get remove -y -qq git\n") and removal.diff == "- git\n"
    odd = plan("apt", {"packages": ["x; rm -rf /"], "update_cache": False}, "")
    assert "'x; rm -rf /'" in odd.script
    assert "'x; rm -rf /'" in build("apt", {"packages": ["x; rm -rf /"]}).probe().script


# ---- directory --------------------------------------------------------------------------------------
def test_directory_plans():
    created = plan("directory", {"path": "~/runs dir", "mode": "0750"}, "absent\n")
    assert created.script == "mkdir -p -- \"$HOME\"/'runs dir' && chmod 750 \"$HOME\"/'runs dir'\n"
    assert plan("directory", {"path": "/srv/x", "mode": "750"}, "directory\n750\n").script is None
    assert plan("directory", {"path": "/srv/x"}, "directory\n700\n").script is None  # no mode: any mode
    assert plan("directory", {"path": "/srv/x", "mode": "0755"}, "directory\n700\n").script == "chmod 755 /srv/x\n"
    assert plan("directory", {"path": "/srv/x"}, file_state(b"")).fail == "/srv/x exists and is a file, not a directory"
    assert plan("directory", {"path": "/srv/x", "state": "absent"}, "directory\n755\n").script == "rm -rf -- /srv/x\n"
    assert plan("directory", {"path": "/srv/x", "state": "absent"}, "absent\n").script is None
    with pytest.raises(FleetError, match="octal mode"):
        plan("directory", {"path": "/srv/x", "mode": "rwx"}, "absent\n")


# ---- copy -------------------------------------------------------------------------------------------
def test_copy_plans():
    new = plan("copy", {"dest": "/etc/motd", "content": "hello\n", "mode": "0644"}, "absent\n")
    assert not new.script and len(new.uploads) == 1
    upload = new.uploads[0]
    assert (upload.path, upload.content, upload.mode) == ("/etc/motd", b"hello\n", 0o644)
    assert new.summary == "create /etc/motd" and "+hello" in new.diff

    same = plan("copy", {"dest": "/etc/motd", "content": "hello\n"}, file_state(b"hello\n", "600"))
    assert not same.changes and same.summary == "/etc/motd up to date"

    chmod = plan("copy", {"dest": "/etc/motd", "content": "hello\n", "mode": "0644"}, file_state(b"hello\n", "600"))
    assert chmod.script == "chmod 644 /etc/motd\n" and not chmod.uploads and chmod.diff == "mode 600 -> 644\n"

    updated = plan("copy", {"dest": "/etc/motd", "content": "hello\nworld\n"}, file_state(b"hello\n"))
    assert updated.summary == "update /etc/motd" and updated.uploads[0].mode is None  # keeps the file's mode
    assert updated.diff.splitlines()[-1] == "+world"

    assert plan("copy", {"dest": "/etc", "content": "x"}, "directory\n755\n").fail == (
        "/etc exists and is a directory, not a file"
    )


def test_copy_large_file_is_compared_by_checksum_only():
    big = b"x" * (DIFF_LIMIT + 1)
    probe = f"file\n644\n{hashlib.sha256(big).hexdigest()}\n\n"  # too large: no content printed
    assert not plan("copy", {"dest": "/big", "content": big.decode()}, probe).changes
    changed = plan("copy", {"dest": "/big", "content": "small"}, probe)
    assert changed.uploads and changed.uploads[0].content == b"small"


def test_copy_src_is_found_beside_the_playbook(tmp_path):
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.conf").write_bytes(b"k=v\n")
    ctx = Context("h", vars={"playbook_dir": str(tmp_path)})
    planned = plan("copy", {"dest": "/etc/a.conf", "src": "files/a.conf"}, "absent\n", ctx)
    # streamed from the file by the connection, never read whole into the plan
    assert planned.uploads[0].source == str(tmp_path / "files" / "a.conf") and planned.uploads[0].content == b""
    assert "+k=v" in planned.diff
    with pytest.raises(FleetError, match="does not exist"):
        plan("copy", {"dest": "/etc/a.conf", "src": "files/missing"}, "absent\n", ctx)
    with pytest.raises(FleetError, match="exactly one of"):
        plan("copy", {"dest": "/etc/a.conf", "src": "files/a.conf", "content": "x"}, "absent\n", ctx)


# ---- template ---------------------------------------------------------------------------------------
def test_template_renders_with_the_hosts_variables(tmp_path):
    (tmp_path / "motd.j2").write_text("hi {{ who }} on {{ inventory_hostname }}\n")
    ctx = Context("node-01", vars={**CTX.vars, "playbook_dir": str(tmp_path)})
    p = plan("template", {"src": "motd.j2", "dest": "~/motd"}, "absent\n", ctx)
    assert p.uploads[0].content == b"hi fleet on node-01\n" and p.uploads[0].path == "~/motd"
    assert not plan("template", {"src": "motd.j2", "dest": "~/motd"}, file_state(b"hi fleet on node-01\n"), ctx).changes
    (tmp_path / "bad.j2").write_text("{{ nope }}")
    with pytest.raises(FleetError, match=r"template .*bad\.j2: undefined variable 'nope'"):
        plan("template", {"src": "bad.j2", "dest": "~/x"}, "absent\n", ctx)


# ---- line -------------------------------------------------------------------------------------------
def test_line_plans():
    args = {"path": "~/.profile", "line": "export HF_HOME=/data/hf", "regexp": "^export HF_HOME="}
    created = plan("line", args, "absent\n")
    assert created.uploads[0].content == b"export HF_HOME=/data/hf\n"

    replaced = plan("line", args, file_state(b"a\nexport HF_HOME=/old\nb\n"))
    assert replaced.uploads[0].content == b"a\nexport HF_HOME=/data/hf\nb\n"
    assert "-export HF_HOME=/old" in replaced.diff and "+export HF_HOME=/data/hf" in replaced.diff

    appended = plan("line", args, file_state(b"a\n"))
    assert appended.uploads[0].content == b"a\nexport HF_HOME=/data/hf\n"

    present = plan("line", args, file_state(b"a\nexport HF_HOME=/data/hf\n"))
    assert not present.changes

    removed = plan("line", {"path": "/f", "regexp": "^#", "state": "absent"}, file_state(b"#x\ny\n#z\n"))
    assert removed.uploads[0].content == b"y\n"
    assert not plan("line", {"path": "/f", "line": "x", "state": "absent"}, "absent\n").changes
    assert plan("line", {"path": "/f", "line": "x", "create": False}, "absent\n").fail.startswith("/f does not exist")
    assert "larger than" in plan("line", {"path": "/f", "line": "x"}, "file\n644\nabc\n\n").fail
    with pytest.raises(FleetError, match="not a valid regular expression"):
        plan("line", {"path": "/f", "line": "x", "regexp": "(("}, file_state(b""))


# ---- command / shell --------------------------------------------------------------------------------
def test_command_creates_and_removes():
    creates = build("command", {"cmd": "make install", "creates": "~/bin/tool"})
    assert creates.probe().script == '[ -e "$HOME"/bin/tool ] && echo creates-present || echo creates-absent'
    assert not plan_from(creates, out("creates-present\n"), CTX).changes
    ran = plan_from(creates, out("creates-absent\n"), CTX)
    assert ran.script == "make install\n" and ran.always_runs

    removes = build("command", {"cmd": ["rm", "-r", "~/cache dir"], "removes": "~/cache dir", "chdir": "/tmp"})
    assert not plan_from(removes, out("removes-absent\n"), CTX).changes
    assert plan_from(removes, out("removes-present\n"), CTX).script == "cd /tmp && rm -r \"$HOME\"/'cache dir'\n"


def test_command_without_creates_always_runs_and_needs_no_probe():
    cmd = build("command", {"cmd": "echo $HOME; true"})
    assert cmd.probe() is None
    assert cmd.plan(None, CTX).script == "echo '$HOME;' true\n"  # command: no shell features
    assert build("shell", {"cmd": "echo $HOME; true"}).plan(None, CTX).script == "echo $HOME; true\n"
    bash = build("shell", {"cmd": "echo ${BASH_VERSION}", "executable": "bash"}).plan(None, CTX)
    assert bash.script == "bash -c 'echo ${BASH_VERSION}'\n"


# ---- assert -----------------------------------------------------------------------------------------
def test_assert_plans():
    ctx = Context("h", vars={"facts": {"driver": "570.148.08", "arch": "aarch64"}})
    ok = plan("assert", {"that": ["facts.arch == 'aarch64'", "facts.driver is version('>=', '570.148.08')"]}, None, ctx)
    assert ok.fail is None and not ok.changes
    bad = plan("assert", {"that": "facts.driver is version('>=', '580')", "msg": "driver too old"}, None, ctx)
    assert bad.fail == "driver too old"
    default = plan("assert", {"that": ["true", "facts.arch == 'x86_64'"]}, None, ctx)
    assert default.fail == "assertion failed: facts.arch == 'x86_64'"
    with pytest.raises(FleetError, match="undefined variable 'nope'"):
        plan("assert", {"that": "nope > 1"}, None, ctx)


@pytest.mark.parametrize(
    ("action", "args", "message"),
    [
        ("copy", {"content": "x"}, "missing required argument 'dest'"),
        ("copy", {"dest": "/x", "content": "x", "owner": "root"}, "unknown argument 'owner'"),
        ("apt", {"packages": "git"}, "argument 'packages'"),
        ("directory", {"path": "/x", "state": "gone"}, "argument 'state'"),
    ],
)
def test_arguments_are_validated(action, args, message):
    with pytest.raises(FleetError, match=message):
        build(action, args)


def test_every_task_module_is_found_by_its_task_types():
    """fleet imports only the task modules a playbook uses: the map must know every type."""
    import importlib

    from fleet import tasks
    from fleet.task import ACTIONS

    for module in tasks.MODULES:
        importlib.import_module(f"fleet.tasks.{module}")
    assert {name: cls.__module__ for name, cls in ACTIONS.items()} == {
        name: f"fleet.tasks.{module}" for name, module in tasks.MODULE.items()
    }
