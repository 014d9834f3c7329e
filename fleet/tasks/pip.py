"""`pip`: Python packages in a venv, installed with `uv pip`, decided by the host's own uv.

One probe asks the host's uv for its plan: `uv pip install --dry-run --offline` first (uv's own
"already satisfied" check: extras, dependencies of what is installed, markers, URL and wheel-path
requirements, constraints, and only the venv's own site-packages, as the install will judge them;
no index is contacted), and only when that would change something, `uv pip install --dry-run`
against the indexes. Every package uv would install, upgrade, downgrade or remove is in the
summary and the diff (`torch 2.9.0.dev… -> 2.8.0 (downgrade)`), in --check as in a real run.

Where uv cannot be asked (--check on a host whose uv or venv the tasks above have not made yet),
the plan comes from the venv's metadata and says so.

`lock` is a constraints file (`uv pip compile` output or hand-written bounds) on the controller,
`pins` replace its line for the same package (or add one); both reach uv as `-c`, so every step
installs the locked version of whatever it pulls in.

fleet never asks an index whether something newer exists: `upgrade: true` adds `--upgrade` to an
install that is needed anyway; to move a satisfied package forward, raise its pin or range."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from .. import shell
from ..facts import sections
from ..model import CommandResult, FleetError, Plan
from ..probe import Probe
from ..task import Action, Context, action, output_data
from .uv import UvEnvironment, uv_command, venv_python
from .uvplan import NO_CHANGES, Change, parse_changes, summarize, uv_error

# Runs in the venv's Python (3.8+): the distributions in the venv's own site-packages (uv installs
# into the venv whatever a system site-packages holds) and the PEP 508 marker environment.
INSTALLED = r"""import importlib.metadata as m, json, os, platform, sys, sysconfig
d = {}
own = sorted({sysconfig.get_paths()[k] for k in ("purelib", "platlib")})
for x in m.distributions(path=own):
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


class PipArgs(UvEnvironment):
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
    lock: str | None = None  # a constraints file on the controller
    pins: list[str] | str | None = None  # constraint lines that replace the lock's for the same package
    extra_args: list[str] = []


def merge_constraints(lock_text: str, pins: list[str], source: str = "pins") -> str:
    """The lock's lines, each pinned package's line replaced by its pin (new pins appended)."""
    pinned: dict[str, str] = {}
    for pin in pins:
        try:
            pinned[canonicalize_name(Requirement(pin).name)] = pin
        except InvalidRequirement as exc:
            raise FleetError(f"pip: {source}: {pin!r} is not a requirement specifier: {exc}") from None
    lines = []
    for raw in lock_text.splitlines():
        text = raw.split("#", 1)[0].strip()
        if not text or text.startswith("-"):
            continue
        try:
            name = canonicalize_name(Requirement(text).name)
        except InvalidRequirement as exc:
            raise FleetError(f"pip: lock line {raw.strip()!r} is not a requirement specifier: {exc}") from None
        lines.append(pinned.pop(name, text))
    return "".join(f"{line}\n" for line in [*lines, *pinned.values()])


@action
class Pip(Action):
    name = "pip"
    Args: ClassVar = PipArgs

    def wanted(self) -> list[Wanted]:
        return [parse_wanted(p) for p in _words(self.args.packages)]

    @cached_property
    def constraints(self) -> str:
        """The constraints uv gets (`-c`): the lock file with the pins applied; "" for none."""
        a = self.args
        text = ""
        if a.lock and a.lock.strip():
            path = Path(a.lock.strip()).expanduser()
            try:
                text = path.read_text()
            except OSError as exc:
                raise FleetError(f"pip: lock {a.lock}: cannot read it ({exc.strerror})") from None
        pins = _words(a.pins)
        return merge_constraints(text, pins) if text or pins else ""

    def _constraints_file(self) -> tuple[str, list[str]]:
        """Script lines that write the constraints to a temp file on the host, and uv's words."""
        if not self.constraints:
            return "", []
        write = (
            "c=$(mktemp) || exit 1\n"
            + shell.note_temp('"$c"')
            + "trap 'rm -f \"$c\"' EXIT\n"
            + f"printf '%s' {shell.quote(self.constraints)} >\"$c\"\n"
        )
        return write, ["-c", '"$c"']

    def _install(self, options: list[str], words: list[str], *, dry_run: bool = False) -> str:
        py = venv_python(self.args.venv)
        dry = ["--dry-run"] if dry_run else []
        return " ".join([uv_command(self.args.uv), "pip install", *dry, "--python", py, *options, *words])

    def _requirement_words(self, wanted: list[Wanted]) -> list[str]:
        return [shell.path(w.text) if w.is_path else shell.quote(w.text) for w in wanted]

    def probe(self) -> Probe[dict[str, str]]:
        """@@venv: the venv's listing (or `missing`); @@no-uv; @@audit: uv's offline check;
        @@uv-plan: uv's plan, asked only when the check says something would change."""
        return Probe(self.script(), probe_sections)

    def script(self) -> str:
        py = venv_python(self.args.venv)
        listing = f"echo @@venv; if [ -x {py} ]; then {py} -c {shell.quote(INSTALLED)}; else echo missing; fi\n"
        if self.args.state == "absent":
            return listing
        wanted = self.wanted()
        write, constraint_words = self._constraints_file()
        options = [*map(_shell_word, self.options()), *constraint_words]
        audit_options = [o for o in options if o != "--upgrade"]
        words = self._requirement_words(wanted)
        audit = self._install([*audit_options, "--offline"], words, dry_run=True)
        asked = self._install(options, words, dry_run=True)
        return (
            self.args.exports()
            + write
            + listing
            + f"[ -x {py} ] || exit 0\n"
            + f"if ! {uv_command(self.args.uv)} --version >/dev/null 2>&1; then echo @@no-uv; exit 0; fi\n"
            + f'a=$({audit} 2>&1); r=$?; echo @@audit; echo "$a"; echo "@@audit-rc $r"\n'
            + f'case "$a" in *{shell.quote(NO_CHANGES)}*) exit 0;; esac\n'
            + f'echo @@uv-plan; {asked} 2>&1; echo "@@uv-plan-rc $?"\n'
        )

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

    def plan(self, parts: dict[str, str], ctx: Context) -> Plan:
        a = self.args
        wanted = self.wanted()
        venv_text = parts.get("venv", "")
        if venv_text.strip() == "missing":
            if not ctx.check:
                return Plan(fail=f"{a.venv} has no bin/python3; create it first (a `venv` task)")
            seen: dict = {"installed": {}, "env": None}  # the venv task before this one would create it
            why = f"{a.venv} does not exist yet"
        else:
            try:
                seen = json.loads(venv_text.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                said = " ".join(venv_text.split())[-300:] or "no output"
                return Plan(fail=f"could not list the packages in {a.venv}: {said}")
            why = "uv is not installed yet" if "no-uv" in parts else ""
        installed = installed_versions(seen.get("installed") or {})
        if a.state == "absent":
            return self._uninstall(wanted, installed)
        if why and not ctx.check:
            return Plan(fail="uv is not on the host's PATH (nor in ~/.local/bin); install it first (a `uv` task)")
        if why:
            return self._plan_from_metadata(wanted, installed, seen.get("env"), why)
        if "uv-plan" not in parts:  # uv's own check: nothing to do
            audit = parts.get("audit", "")
            if NO_CHANGES not in audit:
                return Plan(fail=f"uv pip install --dry-run --offline did not answer: {uv_error(audit)}")
            shown = [f"{w.name} {installed[w.name]}" for w in wanted if w.name in installed]
            more = f" … (+{len(shown) - 6})" if len(shown) > 6 else ""
            return Plan(summary=f"satisfied: {', '.join(shown[:6])}{more}" if shown else "nothing applies here")
        return self._plan_from_uv(wanted, installed, parts, ctx)

    def _request(self, wanted: list[Wanted], installed: Mapping[str, str]) -> tuple[str, str, str]:
        """(what was asked and why, the options as shown, the command as a person would type it)."""
        reasons = []
        for w in wanted:  # what the venv's metadata says is not met; uv's report says the rest
            have = installed.get(w.name)
            if have is None:
                reasons.append(f"{w.label} (missing)")
            elif not satisfied(w, have):
                reasons.append(f"{w.label} (have {have})")
        if not reasons:
            reasons = [f"{', '.join(w.label for w in wanted)} (installed; uv changes what they need)"]
        options = self.options()
        flags = f" with {' '.join(map(_shown_word, options))}" if options else ""
        if self.constraints:
            flags += f"{' and' if flags else ' with'} constraints ({self.constraints.count(chr(10))} lines)"
        command = " ".join(["uv pip install", *map(_shown_word, options), *(_shown_word(w.text) for w in wanted)])
        return ", ".join(reasons), flags, command

    def _plan_from_uv(self, wanted: list[Wanted], installed: Mapping[str, str], parts: dict, ctx: Context) -> Plan:
        text = parts.get("uv-plan", "")
        rc = parts.get("uv-plan-rc-code", "1")
        request, flags, command = self._request(wanted, installed)
        if rc != "0":
            reason = uv_error(text)
            if not ctx.check:
                return Plan(fail=f"uv cannot install {request}: {reason}")
            # --check: the tasks above (another index, the venv) may still change what uv can find
            return Plan(script=":\n", summary=f"install {request}{flags} (uv cannot plan it now: {reason})",
                        diff=f"$ {command}\n", data={"command": command, "uv_error": reason})  # fmt: skip
        changes = parse_changes(text)
        if not changes:
            return Plan(summary=f"satisfied (uv: no changes): {request}")
        write, constraint_words = self._constraints_file()
        options = [*map(_shell_word, self.options()), *constraint_words]
        script = self.args.exports() + write + self._install(options, self._requirement_words(wanted)) + "\n"
        return Plan(
            script=script,
            summary=f"install {request}{flags}; {summarize(changes)}",
            diff="".join(f"{c}\n" for c in changes) + f"$ {command}\n",
            data=_change_data(changes) | {"command": command},
        )

    def _plan_from_metadata(
        self, wanted: list[Wanted], installed: Mapping[str, str], env: Mapping[str, str] | None, why: str
    ) -> Plan:
        todo = to_install(wanted, installed, env)
        if not todo:
            return Plan(summary=f"satisfied by metadata ({why}; uv decides once it is there)")
        reasons = [f"{w.label} (missing)" if have is None else f"{w.label} (have {have})" for w, have in todo]
        _, flags, command = self._request([w for w, _ in todo], installed)
        return Plan(
            script=":\n",
            summary=f"install {', '.join(reasons)}{flags} (planned from metadata: {why})",
            diff="".join(f"+ {w.label}\n" if have is None else f"~ {w.name} {have} -> {w.label}\n" for w, have in todo)
            + f"$ {command}\n",
            data={
                "missing": [w.name for w, have in todo if have is None],
                "out_of_range": {w.name: have for w, have in todo if have is not None},
                "command": command,
            },
        )

    def _uninstall(self, wanted: list[Wanted], installed: Mapping[str, str]) -> Plan:
        present = [w for w in wanted if w.name in installed]
        if not present:
            return Plan(summary=f"{len(wanted)} package(s) absent")
        names = [w.name for w in present]
        py = venv_python(self.args.venv)
        return Plan(
            script=f"{self.args.exports()}{uv_command(self.args.uv)} pip uninstall --python {py} {shell.join(names)}\n",
            summary=f"uninstall {', '.join(f'{n} {installed[n]}' for n in names)}",
            diff="".join(f"- {n} {installed[n]}\n" for n in names),
            data={"removed": names},
        )

    def applied(self, plan: Plan, result: CommandResult, ctx: Context) -> Mapping[str, Any]:
        """What uv really did, from its own report; a note when it differs from its plan."""
        done = parse_changes(result.stderr + "\n" + result.stdout)
        data: dict[str, Any] = output_data(result)
        if "changes" not in plan.data or not result.ok:
            return data
        applied = _change_data(done)
        if (set(applied["installed"]), set(applied["removed"])) != (
            set(plan.data["installed"]),
            set(plan.data["removed"]),
        ):
            data["note"] = f"uv did more or less than it planned: {summarize(done)}"
        return data | {f"applied_{k}": v for k, v in applied.items()}


def probe_sections(result: CommandResult) -> dict[str, str]:
    """The probe's sections; `@@x-rc N` lines become `x-rc-code`."""
    parts = sections(result.stdout)
    for key in list(parts):
        name, _, code = key.partition(" ")
        if name.endswith("-rc"):
            parts[f"{name}-code"] = code.strip()
    return parts


def _change_data(changes: list[Change]) -> dict[str, Any]:
    return {
        "changes": [str(c) for c in changes],
        "installed": {c.name: c.new for c in changes if c.new is not None},
        "removed": [c.name for c in changes if c.new is None],
        "downgraded": {c.name: [c.old, c.new] for c in changes if c.kind == "downgrade"},
    }
