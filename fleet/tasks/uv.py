"""`uv` (the uv tool itself, from its installer) and `venv` (a virtual environment made by uv).

The installer puts uv in ~/.local/bin, which a non-interactive SSH session does not have on PATH,
so every uv command fleet runs puts it first (UV_PATH)."""

from __future__ import annotations

import re
from typing import ClassVar

from packaging.version import InvalidVersion, Version
from pydantic import ConfigDict

from .. import shell
from ..model import CommandResult, FleetError, Plan
from ..probe import Probe
from ..task import Action, Args, Context, action
from .download import FETCH

UV_PATH = 'PATH="$HOME/.local/bin:$PATH"; export PATH\n'
INSTALLER = "https://astral.sh/uv/install.sh"
VERSIONED_INSTALLER = "https://astral.sh/uv/{version}/install.sh"

_SYSTEM_SITE = "include-system-site-packages"
_UV_VERSION = re.compile(r"^uv (\S+)", re.MULTILINE)


def venv_python(venv: str) -> str:
    """The venv's interpreter, quoted. `bin/python3` exists in a venv and in a prefix such as /usr,
    so a task can also point `venv` at a system Python's prefix."""
    return shell.path(venv.rstrip("/") + "/bin/python3")


def parse_version(text: str, what: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise FleetError(f"{what} {text!r} is not a version") from None


def installed_uv(result: CommandResult) -> str | None:
    """The installed uv's version, None when there is none."""
    found = _UV_VERSION.search(result.stdout)
    return found.group(1) if found else None


class UvArgs(Args):
    version: str | None = None  # None/"": any installed uv will do
    installer_url: str | None = None  # default: astral's installer (for `version`, when given)
    install_dir: str = "~/.local/bin"


@action
class Uv(Action):
    """uv in install_dir, installed with its installer script when missing or not the pinned version."""

    name = "uv"
    Args: ClassVar = UvArgs

    def probe(self) -> Probe[str | None]:
        uv = shell.path(self.args.install_dir.rstrip("/") + "/uv")
        return Probe(f"[ -x {uv} ] && {uv} --version; true", installed_uv)

    def plan(self, have: str | None, ctx: Context) -> Plan:
        a = self.args
        want = (a.version or "").strip() or None
        if have and (want is None or parse_version(have, "uv") == parse_version(want, "uv version")):
            return Plan(summary=f"uv {have} in {a.install_dir}")
        url = a.installer_url or (VERSIONED_INSTALLER.format(version=want) if want else INSTALLER)
        verb = f"upgrade uv {have} to {want}" if have else f"install uv {want or '(latest)'}"
        return Plan(
            script=installer_script(url, a.install_dir, want),
            summary=f"{verb} into {a.install_dir} from {url}",
            diff=f"- uv {have}\n+ uv {want or 'latest'}\n" if have else f"+ uv {want or 'latest'}\n",
        )


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


class VenvArgs(Args):
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
            words = ["uv", "venv", "--python", a.python, *flag]
            return Plan(
                script=f"{UV_PATH}{shell.join(words)} {shell.path(a.path.rstrip('/'))}\n",
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
