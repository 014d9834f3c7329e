"""`uv` (the uv tool itself, from its installer) and `venv` (a virtual environment made by uv).

A uv already on the host's PATH at the wanted version (any version when none is pinned) is used
as it is; otherwise the installer puts uv in ~/.local/bin. The task's result says which uv
(`path`), and the tasks that run uv take it as `uv:`; without it they look on PATH with
~/.local/bin first, which a non-interactive SSH session lacks.

Every task that runs uv also takes `env:` (the playbook's `uv_env`): variables exported for each
uv command, e.g. SSL_CERT_FILE or UV_NATIVE_TLS behind a TLS-inspecting proxy, HTTPS_PROXY,
UV_INDEX_URL, UV_CACHE_DIR."""

from __future__ import annotations

import re
from typing import ClassVar

from packaging.version import InvalidVersion, Version
from pydantic import ConfigDict

from .. import shell
from ..facts import sections
from ..model import CommandResult, FleetError, Plan
from ..probe import Probe
from ..task import Action, Context, action
from .download import FETCH, EnvArgs

INSTALLER = "https://astral.sh/uv/install.sh"
VERSIONED_INSTALLER = "https://astral.sh/uv/{version}/install.sh"

_SYSTEM_SITE = "include-system-site-packages"
_UV_VERSION = re.compile(r"^uv (\S+)", re.MULTILINE)


class UvEnvironment(EnvArgs):
    """Arguments of every task that runs uv: which uv, and the environment it runs with."""

    uv: str | None = None  # a uv binary on the host; None/"": PATH with ~/.local/bin first


def uv_command(uv: str | None) -> str:
    """The uv to run: the given binary, else `uv` from PATH with ~/.local/bin first."""
    if uv and uv.strip():
        return shell.path(uv.strip())
    return 'PATH="$HOME/.local/bin:$PATH" uv'


def venv_python(venv: str) -> str:
    """The venv's interpreter, quoted. `bin/python3` exists in a venv and in a prefix such as /usr,
    so a task can also point `venv` at a system Python's prefix."""
    return shell.path(venv.rstrip("/") + "/bin/python3")


def parse_version(text: str, what: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise FleetError(f"{what} {text!r} is not a version") from None


class UvArgs(UvEnvironment):
    version: str | None = None  # None/"": any installed uv will do
    installer_url: str | None = None  # default: astral's installer (for `version`, when given)
    install_dir: str = "~/.local/bin"


@action
class Uv(Action):
    """uv on PATH or in install_dir at the pinned version, else installed there by its installer."""

    name = "uv"
    Args: ClassVar = UvArgs

    def probe(self) -> Probe[dict[str, str]]:
        """@@path: the uv on PATH and its version; @@dir: install_dir's uv version."""
        uv = shell.path(self.args.install_dir.rstrip("/") + "/uv")
        script = (
            'echo @@path; p=$(command -v uv 2>/dev/null) && echo "$p" && "$p" --version\n'
            f"echo @@dir; [ -x {uv} ] && {uv} --version; true"
        )
        return Probe(script, uv_sections)

    def plan(self, parts: dict[str, str], ctx: Context) -> Plan:
        a = self.args
        want = (a.version or "").strip() or None
        wanted = parse_version(want, "uv version") if want else None
        in_dir = a.install_dir.rstrip("/") + "/uv"
        path_lines = parts.get("path", "").splitlines()
        on_path = _UV_VERSION.search(parts.get("path", ""))
        if on_path and path_lines and (wanted is None or _same(on_path.group(1), wanted)):
            return Plan(summary=f"uv {on_path.group(1)} at {path_lines[0]} (on PATH)", data={"path": path_lines[0]})
        found = _UV_VERSION.search(parts.get("dir", ""))
        have = found.group(1) if found else None
        if have and (wanted is None or _same(have, wanted)):
            return Plan(summary=f"uv {have} in {a.install_dir}", data={"path": in_dir})
        url = a.installer_url or (VERSIONED_INSTALLER.format(version=want) if want else INSTALLER)
        verb = f"upgrade uv {have} to {want}" if have else f"install uv {want or '(latest)'}"
        if on_path and not have:
            verb += f" (the uv on PATH is {on_path.group(1)})"
        return Plan(
            script=self.args.exports() + installer_script(url, a.install_dir, want),
            summary=f"{verb} into {a.install_dir} from {url}",
            diff=f"- uv {have}\n+ uv {want or 'latest'}\n" if have else f"+ uv {want or 'latest'}\n",
            data={"path": in_dir},
        )


def uv_sections(result: CommandResult) -> dict[str, str]:
    return sections(result.stdout)


def _same(have: str, wanted: Version) -> bool:
    try:
        return Version(have) == wanted
    except InvalidVersion:
        return False


def installer_script(url: str, install_dir: str, version: str | None) -> str:
    """Fetch the installer to a file first: `curl | sh` would run an empty script, and succeed,
    when the download fails."""
    d, u = shell.path(install_dir.rstrip("/")), shell.quote(url)
    check = ""
    if version:
        check = (
            f'case "$({d}/uv --version)" in "uv {version}"|"uv {version} "*) ;; '
            f'*) echo "the installer did not install uv {version}: $({d}/uv --version)" >&2; exit 1;; esac\n'
        )
    return (
        FETCH
        + f"mkdir -p -- {d} || exit 1\n"
        + "t=$(mktemp) || exit 1; trap 'rm -f \"$t\"' EXIT; trap 'exit 1' HUP INT TERM\n"
        + f'fetch {u} "$t" || {{ echo "could not download the uv installer from "{u} >&2; exit 1; }}\n'
        + f'UV_INSTALL_DIR={d} UV_NO_MODIFY_PATH=1 sh "$t" || exit 1\n'
        + f'[ -x {d}/uv ] || {{ echo "the installer left no uv in "{d} >&2; exit 1; }}\n'
        + check
        + f"{d}/uv --version\n"
    )


class VenvArgs(UvEnvironment):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)  # python: 3.12

    path: str
    python: str = "3.12"  # a version (3.12) or an interpreter path, as `uv venv --python` takes
    system_site_packages: bool = False


@action
class Venv(Action):
    """A virtual environment made by `uv venv --python X`. An existing one with another Python
    is never wiped silently: the task fails and says how to recreate it."""

    name = "venv"
    Args: ClassVar = VenvArgs

    def probe(self) -> Probe[list[str]]:
        p = shell.path(self.args.path.rstrip("/"))
        script = (
            f"if [ -x {p}/bin/python ]; then echo venv; "
            f"{p}/bin/python -c 'import sys; print(\"%d.%d.%d\" % sys.version_info[:3])'; "
            f"grep -i '^include-system-site-packages' {p}/pyvenv.cfg 2>/dev/null || echo no-cfg; "
            f"elif [ -e {p} ]; then echo other; else echo absent; fi"
        )
        return Probe(script, venv_lines)

    def plan(self, lines: list[str], ctx: Context) -> Plan:
        """lines: venv, its Python version, its include-system-site-packages line (or no-cfg);
        or other; or absent."""
        a = self.args
        kind = lines[0] if lines else "absent"
        if kind == "other":
            return Plan(fail=f"{a.path} exists but is not a virtual environment (no bin/python); move it away")
        flag = ["--system-site-packages"] if a.system_site_packages else []
        if kind == "absent":
            words = ["venv", "--python", a.python, *flag]
            return Plan(
                script=f"{a.exports()}{uv_command(a.uv)} {shell.join(words)} {shell.path(a.path.rstrip('/'))}\n",
                summary=f"create venv {a.path} with Python {a.python}" + (" (system site packages)" if flag else ""),
                diff=f"+ {a.path}/ (Python {a.python})\n",
            )
        have = lines[1] if len(lines) > 1 else "?"
        if not python_matches(have, a.python):
            return Plan(
                fail=f"venv {a.path} has Python {have}, not {a.python}; remove it (rm -rf {a.path}) "
                "and run again to recreate it"
            )
        cfg = lines[2] if len(lines) > 2 else "no-cfg"
        system = cfg.lower().replace(" ", "").endswith("=true")
        if cfg == "no-cfg" or system == a.system_site_packages:
            return Plan(summary=f"venv {a.path} (Python {have})")
        value = "true" if a.system_site_packages else "false"
        cfg_path = shell.path(a.path.rstrip("/") + "/pyvenv.cfg")
        return Plan(
            script=f"sed -i 's/^{_SYSTEM_SITE} *=.*/{_SYSTEM_SITE} = {value}/' {cfg_path}\n",
            summary=f"set include-system-site-packages = {value} in {a.path}",
            diff=f"- include-system-site-packages = {str(system).lower()}\n+ include-system-site-packages = {value}\n",
        )


def venv_lines(result: CommandResult) -> list[str]:
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def python_matches(have: str, want: str) -> bool:
    """3.12.1 matches 3.12 and 3.12.1; an interpreter path matches whatever it is."""
    try:
        wanted = Version(want)
    except InvalidVersion:
        return True
    try:
        release = Version(have).release
    except InvalidVersion:
        return False
    return release[: len(wanted.release)] == wanted.release
