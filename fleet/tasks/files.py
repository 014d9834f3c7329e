"""Files on the host: `directory`, `copy`, `template` and `line` (one line in a file).

Each probes the path once (kind, mode, sha256 and, for small files, the content for diffs; the
script is in fleet/filelook.py) and uploads the whole new content atomically when it differs."""

from __future__ import annotations

import base64
import difflib
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from .. import shell
from ..filelook import DIFF_LIMIT, file_script
from ..model import CommandResult, FleetError, Plan, Upload
from ..probe import Probe
from ..task import Action, Args, Context, action
from ..templating import TemplateError, render_file

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def file_probe(target: str) -> Probe[FileState]:
    return Probe(file_script(target), FileState.of, path=target)


@dataclass(frozen=True)
class FileState:
    kind: str  # file | directory | other | absent
    mode: int | None = None
    sha256: str | None = None
    content: bytes | None = None  # None when too large to fetch

    @classmethod
    def parse(cls, output: str) -> FileState:
        lines = output.split("\n")
        kind = lines[0].strip() if lines else "absent"
        mode = int(lines[1], 8) if len(lines) > 1 and lines[1].strip().isdigit() else None
        if kind != "file":
            return cls(kind, mode)
        body = lines[3].strip() if len(lines) > 3 else ""
        sha = lines[2].strip() if len(lines) > 2 else ""
        if not sha:  # a small file: its whole content came, and it tells the checksum
            content = base64.b64decode(body)
            return cls(kind, mode, hashlib.sha256(content).hexdigest(), content)
        # The host hashed it: too large to fetch (an empty body), or an older probe's output.
        content = base64.b64decode(body) if body else (b"" if sha == EMPTY_SHA256 else None)
        return cls(kind, mode, sha, content)

    @classmethod
    def of(cls, result: CommandResult) -> FileState:
        return cls.parse(result.stdout)


def parse_mode(mode: str | int | None) -> int | None:
    if mode is None:
        return None
    try:
        return int(str(mode), 8)
    except ValueError:
        raise FleetError(f"mode {mode!r} is not an octal mode such as '0644'") from None


def text_diff(path: str, old: bytes | None, new: bytes) -> str | None:
    try:
        a = (old or b"").decode().splitlines(keepends=True)
        b = new.decode().splitlines(keepends=True)
    except UnicodeDecodeError:
        return f"binary file {path} changes\n"
    return "".join(difflib.unified_diff(a, b, f"{path} (before)", f"{path} (after)")) or None


@dataclass(frozen=True)
class LocalFile:
    """A controller-side file to upload, hashed in chunks and streamed, never read whole."""

    path: Path
    sha256: str
    size: int

    @classmethod
    def of(cls, path: Path) -> LocalFile:
        digest, size = hashlib.sha256(), 0
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        return cls(path, digest.hexdigest(), size)

    def small_content(self) -> bytes | None:
        """The content when small enough to show as a diff."""
        return self.path.read_bytes() if self.size <= DIFF_LIMIT else None


def plan_content(dest: str, state: FileState, content: bytes | LocalFile, mode: str | None) -> Plan:
    """The shared heart of copy/template/line: upload when content or mode differs."""
    wanted_mode = parse_mode(mode)
    if state.kind not in ("file", "absent"):
        return Plan(fail=f"{dest} exists and is a {state.kind}, not a file")
    local = content if isinstance(content, LocalFile) else None
    wanted_sha256 = local.sha256 if local else hashlib.sha256(content).hexdigest()
    same_content = state.sha256 == wanted_sha256
    if same_content and (wanted_mode is None or wanted_mode == state.mode):
        return Plan(summary=f"{dest} up to date")
    if same_content:
        return Plan(
            script=f"chmod {wanted_mode:o} {shell.path(dest)}\n",
            summary=f"chmod {wanted_mode:o} {dest}",
            diff=f"mode {state.mode:o} -> {wanted_mode:o}\n" if state.mode is not None else None,
        )
    verb = "create" if state.kind == "absent" else "update"
    upload = Upload(dest, mode=wanted_mode, source=str(local.path)) if local else Upload(dest, content, wanted_mode)
    shown = local.small_content() if local else content
    diff = text_diff(dest, state.content, shown) if shown is not None else f"binary or large file {dest} changes\n"
    return Plan(uploads=(upload,), summary=f"{verb} {dest}", diff=diff)


class DirectoryArgs(Args):
    path: str
    mode: str | None = None
    state: Literal["present", "absent"] = "present"


@action
class Directory(Action):
    name = "directory"
    Args: ClassVar = DirectoryArgs

    def probe(self) -> Probe[FileState]:
        return file_probe(self.args.path)

    def plan(self, state: FileState, ctx: Context) -> Plan:
        p = shell.path(self.args.path)
        if self.args.state == "absent":
            if state.kind == "absent":
                return Plan(summary=f"{self.args.path} absent")
            return Plan(script=f"rm -rf -- {p}\n", summary=f"remove {self.args.path}")
        mode = parse_mode(self.args.mode)
        if state.kind == "directory":
            if mode is None or mode == state.mode:
                return Plan(summary=f"{self.args.path} exists")
            return Plan(script=f"chmod {mode:o} {p}\n", summary=f"chmod {mode:o} {self.args.path}")
        if state.kind != "absent":
            return Plan(fail=f"{self.args.path} exists and is a {state.kind}, not a directory")
        chmod = f" && chmod {mode:o} {p}" if mode is not None else ""
        return Plan(script=f"mkdir -p -- {p}{chmod}\n", summary=f"create {self.args.path}/")


class CopyArgs(Args):
    dest: str
    content: str | None = None
    src: str | None = None
    mode: str | None = None


def _local_source(src: str, ctx: Context) -> Path:
    path = Path(src)
    if not path.is_absolute():
        path = Path(str(ctx.vars.get("playbook_dir", "."))) / path
    if not path.is_file():
        raise FleetError(f"source file {path} does not exist")
    return path


@action
class Copy(Action):
    name = "copy"
    Args: ClassVar = CopyArgs

    def probe(self) -> Probe[FileState]:
        return file_probe(self.args.dest)

    def check(self) -> None:
        if (self.args.content is None) == (self.args.src is None):
            raise FleetError("copy: give exactly one of `content` or `src`")

    def content(self, ctx: Context) -> bytes | LocalFile:
        self.check()
        if self.args.content is not None:
            return self.args.content.encode()
        return LocalFile.of(_local_source(self.args.src, ctx))

    def plan(self, state: FileState, ctx: Context) -> Plan:
        return plan_content(self.args.dest, state, self.content(ctx), self.args.mode)


class TemplateArgs(Args):
    src: str
    dest: str
    mode: str | None = None


@action
class Template(Action):
    """Render a Jinja2 file from the playbook's folder with the host's variables."""

    name = "template"
    Args: ClassVar = TemplateArgs

    def probe(self) -> Probe[FileState]:
        return file_probe(self.args.dest)

    def plan(self, state: FileState, ctx: Context) -> Plan:
        source = _local_source(self.args.src, ctx)
        try:
            text = render_file(source.read_text(), ctx.vars)
        except TemplateError as exc:
            raise FleetError(f"template {source}: {exc}") from None
        return plan_content(self.args.dest, state, text.encode(), self.args.mode)


class LineArgs(Args):
    path: str
    line: str | None = None
    regexp: str | None = None
    state: Literal["present", "absent"] = "present"
    create: bool = True
    mode: str | None = None


def edit_lines(text: str, line: str | None, regexp: str | None, present: bool) -> str:
    """The file's text with `line` present once (replacing the last regexp match) or absent."""
    lines = text.splitlines()
    pattern = re.compile(regexp) if regexp else None

    def matches(candidate: str) -> bool:
        return bool(pattern.search(candidate)) if pattern else candidate == line

    hits = [i for i, candidate in enumerate(lines) if matches(candidate)]
    if not present:
        lines = [c for i, c in enumerate(lines) if i not in hits]
    elif line in lines and (not pattern or lines.index(line) in hits or not hits):
        return text
    elif hits:
        lines[hits[-1]] = line
    else:
        lines.append(line)
    return "\n".join(lines) + ("\n" if lines else "")


@action
class Line(Action):
    name = "line"
    Args: ClassVar = LineArgs

    def probe(self) -> Probe[FileState]:
        return file_probe(self.args.path)

    def check(self) -> None:
        a = self.args
        if a.state == "present" and a.line is None:
            raise FleetError("line: state present needs `line`")
        if a.state == "absent" and a.line is None and a.regexp is None:
            raise FleetError("line: state absent needs `line` or `regexp`")
        try:
            re.compile(a.regexp or "")
        except re.error as exc:
            raise FleetError(f"line: regexp {a.regexp!r} is not a valid regular expression: {exc}") from None

    def plan(self, state: FileState, ctx: Context) -> Plan:
        a = self.args
        self.check()
        if state.kind == "absent":
            if a.state == "absent":
                return Plan(summary=f"{a.path} absent")
            if not a.create:
                return Plan(fail=f"{a.path} does not exist (set create: true to create it)")
        if state.kind == "file" and state.content is None:
            return Plan(fail=f"{a.path} is larger than {DIFF_LIMIT} bytes; line edits only small files")
        old = (state.content or b"").decode()
        new = edit_lines(old, a.line, a.regexp, a.state == "present")
        return plan_content(a.path, state, new.encode(), a.mode)
