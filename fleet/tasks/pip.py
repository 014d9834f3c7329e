"""`pip`: Python packages in a venv, installed with `uv pip`.

Idempotent by what is installed: one probe lists the venv's distributions (and its marker
environment); the planner compares them with the requirements using `packaging`, exactly as uv
and pip judge an installed distribution (pre-releases and local labels such as `+cu128` included),
and installs only what is missing or out of range. "Already satisfied" is ok, never changed.

fleet never asks an index whether something newer exists: `upgrade: true` adds `--upgrade` to an
install that is needed anyway; to move a satisfied package forward, raise its pin or range."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from .. import shell
from ..model import CommandResult, FleetError, Plan
from ..probe import Probe
from ..task import Action, Args, Context, action
from .uv import UV_PATH, venv_python

# Runs in the venv's Python (3.8+): installed distributions and the PEP 508 marker environment.
INSTALLED = r"""import importlib.metadata as m, json, os, platform, sys
d = {}
for x in m.distributions():
    n = x.metadata["Name"]
    if n and n not in d:
        d[n] = x.version
i = sys.implementation
v = "%d.%d.%d" % i.version[:3]
if i.version.releaselevel != "final":
    v += i.version.releaselevel[0] + str(i.version.serial)
e = dict(implementation_name=i.name, implementation_version=v, os_name=os.name,
         platform_machine=platform.machine(), platform_release=platform.release(),
         platform_system=platform.system(), platform_version=platform.version(),
         python_full_version=platform.python_version(),
         platform_python_implementation=platform.python_implementation(),
         python_version=".".join(platform.python_version_tuple()[:2]), sys_platform=sys.platform)
print(json.dumps({"installed": d, "env": e}))
"""


@dataclass(frozen=True)
class Wanted:
    """One requirement as given (`text`, passed to uv) and what satisfies it."""

    text: str
    name: str  # canonical distribution name
    specifier: SpecifierSet
    requirement: Requirement
    is_path: bool = False  # a local wheel file: quoted so that `~/` still means home

    @property
    def label(self) -> str:
        return self.text if not self.is_path else f"{self.name}=={next(iter(self.specifier)).version}"


def _wheel_requirement(text: str) -> Requirement:
    filename = text.rstrip("/").rsplit("/", 1)[-1]
    try:
        name, version, _, _ = parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise FleetError(
            f"{text!r} is not a valid wheel file name ({exc}); uv refuses such a name too: "
            "save the wheel as NAME-VERSION-PYTHONTAG-ABITAG-PLATFORM.whl"
        ) from None
    return Requirement(f"{name}=={version}")


def parse_wanted(text: str) -> Wanted:
    """A requirement specifier (`vllm==0.10.2`, `torch>=2.8; platform_machine=="aarch64"`), a wheel
    file or URL (satisfied by that name and version), or `name @ URL`."""
    text = str(text).strip()
    if not text:
        raise FleetError("pip: an empty package name")
    if text.endswith(".whl") and " @ " not in text:
        req = _wheel_requirement(text)
        return Wanted(text, canonicalize_name(req.name), req.specifier, req, is_path="://" not in text)
    if text.startswith(("/", "./", "../", "~")) or "://" in text.split(" @ ")[0]:
        raise FleetError(
            f"pip: cannot tell which distribution {text!r} provides; give a wheel file, or write it as `NAME @ URL`"
        )
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise FleetError(f"pip: {text!r} is not a requirement specifier: {exc}") from None
    specifier = req.specifier
    if req.url and req.url.endswith(".whl"):
        specifier = _wheel_requirement(req.url).specifier
    return Wanted(text, canonicalize_name(req.name), specifier, req)


def installed_versions(raw: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, version in raw.items():
        out.setdefault(canonicalize_name(name), str(version))
    return out


def satisfied(wanted: Wanted, have: str | None) -> bool:
    """Whether the installed version satisfies the requirement, the way uv and pip decide it: an
    installed pre-release counts, and `==2.8.0` accepts `2.8.0+cu128`."""
    if have is None:
        return False
    try:
        return wanted.specifier.contains(Version(have), prereleases=True)
    except InvalidVersion:
        return not wanted.specifier  # a version packaging cannot read satisfies only a bare name


def applies(wanted: Wanted, env: Mapping[str, str] | None) -> bool:
    marker = wanted.requirement.marker
    return marker is None or not env or marker.evaluate(dict(env))


def to_install(
    wanted: list[Wanted], installed: Mapping[str, str], env: Mapping[str, str] | None
) -> list[tuple[Wanted, str | None]]:
    """(requirement, installed version or None) for every requirement not met."""
    return [(w, installed.get(w.name)) for w in wanted if applies(w, env) and not satisfied(w, installed.get(w.name))]


def _shell_word(word: str) -> str:
    """Quoted for sh; a local path such as a find-links folder may start with `~/` (home)."""
    return shell.path(word) if word.startswith("~/") else shell.quote(word)


_URL_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")


def _shown_word(word: str) -> str:
    """As a person would type it: `~/x` bare, anything else quoted only when it needs it, and an
    index URL's credentials (https://user:token@host) masked."""
    word = _URL_CREDENTIALS.sub(r"\1***@", word)
    return word if word.startswith("~/") and shell.quote(word[2:]) == word[2:] else shell.quote(word)


def _words(value: list[str] | str | None) -> list[str]:
    if value is None:
        return []
    values = [value] if isinstance(value, str) else list(value)
    return [str(v).strip() for v in values if str(v).strip()]


class PipArgs(Args):
    venv: str
    packages: list[str] | str
    state: Literal["present", "absent"] = "present"
    index_url: str | None = None
    extra_index_url: list[str] | str | None = None
    find_links: list[str] | str | None = None
    no_index: bool = False
    pre: bool = False
    upgrade: bool = False
    no_build_isolation: bool = False
    config_settings: dict[str, str] | list[str] | None = None
    extra_args: list[str] = []


@action
class Pip(Action):
    name = "pip"
    Args: ClassVar = PipArgs

    def wanted(self) -> list[Wanted]:
        return [parse_wanted(p) for p in _words(self.args.packages)]

    def probe(self) -> Probe[dict[str, Any]]:
        py = venv_python(self.args.venv)
        script = f"if [ -x {py} ]; then {py} -c {shell.quote(INSTALLED)}; else echo '{{\"missing\": true}}'; fi"
        return Probe(script, self.listing)

    def listing(self, result: CommandResult) -> dict[str, Any]:
        """{"installed": {name: version}, "env": marker environment} or {"missing": True}."""
        try:
            seen = json.loads(result.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise FleetError(f"could not list the packages in {self.args.venv}: {result.brief()}") from None
        if not isinstance(seen, dict):
            raise FleetError(f"could not list the packages in {self.args.venv}: {result.brief()}")
        return seen

    def options(self) -> list[str]:
        a = self.args
        words: list[str] = []
        if a.pre:
            words.append("--pre")
        if a.upgrade:
            words.append("--upgrade")
        if a.index_url and a.index_url.strip():
            words += ["--index-url", a.index_url.strip()]
        for url in _words(a.extra_index_url):
            words += ["--extra-index-url", url]
        for link in _words(a.find_links):
            words += ["--find-links", link]
        if a.no_index:
            words.append("--no-index")
        settings = a.config_settings or {}
        pairs = [f"{k}={v}" for k, v in settings.items()] if isinstance(settings, dict) else _words(settings)
        for pair in pairs:
            words += ["--config-settings", pair]
        if a.no_build_isolation:
            words.append("--no-build-isolation")
        return words + [str(w) for w in a.extra_args]

    def plan(self, seen: Mapping[str, Any], ctx: Context) -> Plan:
        a = self.args
        wanted = self.wanted()
        py = venv_python(a.venv)
        if seen.get("missing"):
            if not ctx.check:
                return Plan(fail=f"{a.venv} has no bin/python3; create it first (a `venv` task)")
            seen = {"installed": {}, "env": None}  # the venv task before this one would create it
        installed = installed_versions(seen.get("installed") or {})
        env = seen.get("env")
        if a.state == "absent":
            present = [w for w in wanted if w.name in installed]
            if not present:
                return Plan(summary=f"{len(wanted)} package(s) absent")
            names = [w.name for w in present]
            return Plan(
                script=f"{UV_PATH}uv pip uninstall --python {py} {shell.join(names)}\n",
                summary=f"uninstall {', '.join(f'{n} {installed[n]}' for n in names)}",
                diff="".join(f"- {n} {installed[n]}\n" for n in names),
                data={"removed": names},
            )
        todo = to_install(wanted, installed, env)
        if not todo:
            shown = [f"{w.name} {installed[w.name]}" for w in wanted if w.name in installed]
            more = f" … (+{len(shown) - 6})" if len(shown) > 6 else ""
            return Plan(summary=f"satisfied: {', '.join(shown[:6])}{more}" if shown else "nothing applies here")
        options = self.options()
        words = [shell.path(w.text) if w.is_path else shell.quote(w.text) for w, _ in todo]
        script = " ".join(["uv pip install --python", py, *map(_shell_word, options), *words])
        reasons = [f"{w.label} (missing)" if have is None else f"{w.label} (have {have})" for w, have in todo]
        flags = f" with {' '.join(map(_shown_word, options))}" if options else ""
        command = " ".join(["uv pip install", *map(_shown_word, options), *(_shown_word(w.text) for w, _ in todo)])
        return Plan(
            script=f"{UV_PATH}{script}\n",
            summary=f"install {', '.join(reasons)}{flags}",
            diff="".join(f"+ {w.label}\n" if have is None else f"~ {w.name} {have} -> {w.label}\n" for w, have in todo)
            + f"$ {command}\n",
            data={
                "missing": [w.name for w, have in todo if have is None],
                "out_of_range": {w.name: have for w, have in todo if have is not None},
                "command": command,
            },
        )
