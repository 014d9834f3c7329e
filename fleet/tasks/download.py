"""`download`: a file from a URL to a path, optionally pinned by sha256.

The probe looks at the target only (its sha256 when one is pinned). A download goes to a temp file
beside the target and is moved into place only once its checksum verified, so a failed or wrong
download never leaves a partial file behind."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from pydantic import field_validator

from .. import shell
from ..model import CommandResult, FleetError, Plan
from ..probe import Probe
from ..task import Action, Args, Context, action
from .files import parse_mode

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Whichever downloader the host has: curl, else wget, else Python's urllib. The URL reaches it on
# stdin, never in argv, so a token in the URL never shows in the host's `ps`.
FETCH = r"""fetch() {
  if command -v curl >/dev/null 2>&1; then
    printf 'url = "%s"\n' "$(printf %s "$1" | sed 's/[\\"]/\\&/g')" |
      curl -fsSL --retry 3 --connect-timeout 30 -o "$2" -K -
  elif command -v wget >/dev/null 2>&1; then printf '%s\n' "$1" | wget -q --tries=3 -O "$2" -i -
  elif command -v python3 >/dev/null 2>&1; then printf '%s\n' "$1" | python3 -c 'import shutil, sys, urllib.request as u
url = sys.stdin.readline().rstrip("\n")
with u.urlopen(url, timeout=60) as r, open(sys.argv[1], "wb") as f: shutil.copyfileobj(r, f)' "$2"
  else echo "cannot download: the host has no curl, wget or python3 (apt-get install curl)" >&2; return 127; fi
}
"""


# Whether the URL answers (one byte), so that --check can say what the real run will meet; the URL
# travels on stdin as in `fetch`.
REACH = r"""reach() {
  if command -v curl >/dev/null 2>&1; then
    printf 'url = "%s"\n' "$(printf %s "$1" | sed 's/[\\"]/\\&/g')" |
      curl -fsSL -r 0-0 --connect-timeout 10 --max-time 30 -o /dev/null -K - 2>&1
  elif command -v wget >/dev/null 2>&1; then printf '%s\n' "$1" | wget -q --spider --tries=1 --timeout=30 -i - 2>&1
  else printf '%s\n' "$1" | python3 -c 'import sys, urllib.request as u
try: u.urlopen(sys.stdin.readline().rstrip("\n"), timeout=30).read(1)
except Exception as e: sys.exit(str(e))' 2>&1; fi
}
"""


@dataclass(frozen=True)
class Target:
    """The download's target: file | other | absent, its sha256 when one is pinned, and why the URL
    did not answer (None: it did, or it was not asked)."""

    kind: str
    sha256: str | None = None
    unreachable: str | None = None

    @classmethod
    def of(cls, result: CommandResult) -> Target:
        text, marker, why = result.stdout.partition("@@unreachable")
        lines = text.split()
        return cls(
            lines[0] if lines else "absent",
            lines[1] if len(lines) > 1 else None,
            (" ".join(why.split())[:300] or "no answer") if marker else None,
        )


class EnvArgs(Args):
    """`env:` variables exported for the task's commands (the setup playbook's `uv_env`: proxies,
    SSL_CERT_FILE behind a TLS-inspecting proxy, ...). Their values never reach the output."""

    env: dict[str, str] = {}

    @field_validator("env", mode="before")
    @classmethod
    def _names(cls, value: object) -> object:
        if value is None:
            return {}
        if isinstance(value, dict):
            bad = [str(k) for k in value if not _ENV_NAME.match(str(k))]
            if bad:
                raise ValueError(f"{bad[0]!r} is not an environment variable name")
            return {str(k): "" if v is None else str(v) for k, v in value.items()}
        return value

    def exports(self) -> str:
        return "".join(f"export {k}={shell.quote(v)}\n" for k, v in sorted(self.env.items()))


class DownloadArgs(EnvArgs):
    url: str
    dest: str
    sha256: str | None = None
    mode: str | None = "0644"


@action
class Download(Action):
    name = "download"
    Args: ClassVar = DownloadArgs

    def wanted_sha256(self) -> str | None:
        value = (self.args.sha256 or "").strip().lower()
        if value.startswith("sha256:"):
            value = value[len("sha256:") :]
        if value and not _SHA256.match(value):
            raise FleetError(f"download: sha256 {self.args.sha256!r} is not 64 hex digits")
        return value or None

    def probe(self) -> Probe[Target]:
        p = shell.path(self.args.dest)
        digest = f"sha256sum -- {p} | cut -c1-64" if self.wanted_sha256() else "true"
        reach = f'r=$(reach {shell.quote(self.args.url)}) || echo "@@unreachable $r"'
        script = (
            self.args.exports()
            + REACH
            + f"if [ -f {p} ]; then echo file; {digest}; elif [ -e {p} ]; then echo other; "
            + f"else echo absent; {reach}; fi"
        )
        return Probe(script, Target.of)

    def check(self) -> None:
        if self.args.dest.endswith("/"):
            raise FleetError(f"download: dest {self.args.dest!r} must be a file path, not a folder")
        self.wanted_sha256()

    def plan(self, target: Target, ctx: Context) -> Plan:
        a = self.args
        self.check()
        want = self.wanted_sha256()
        kind, have = target.kind, target.sha256
        if kind == "other":
            return Plan(fail=f"{a.dest} exists and is not a regular file")
        if kind == "file" and (want is None or have == want):
            return Plan(summary=f"{a.dest} present" + (" (sha256 verified)" if want else ""))
        reason = "missing" if kind == "absent" else f"sha256 differs (have {have}, want {want})"
        if ctx.check and kind == "absent" and target.unreachable:
            return Plan(fail=f"{a.url} does not answer ({target.unreachable}): the download would fail")
        return Plan(
            script=a.exports() + download_script(a.url, a.dest, want, parse_mode(a.mode)),
            summary=f"download {a.url} to {a.dest} ({reason})",
            diff=f"+ {a.dest} <- {a.url}\n",
            data={"dest": a.dest, "url": a.url},
        )


def download_script(url: str, dest: str, sha256: str | None, mode: int | None) -> str:
    p, u = shell.path(dest), shell.quote(url)
    verify = ""
    if sha256:
        verify = (
            f'got=$(sha256sum -- "$t" | cut -c1-64); if [ "$got" != {sha256} ]; then '
            f'echo "checksum mismatch for "{u}": expected {sha256}, got $got" >&2; exit 1; fi\n'
        )
    chmod = f'chmod {mode:o} "$t"\n' if mode is not None else ""
    return (
        FETCH
        + f'd=$(dirname -- {p}); mkdir -p -- "$d" || exit 1\n'
        + 't=$(mktemp "$d/.fleet-download.XXXXXX") || exit 1\n'
        + shell.note_temp('"$t"')
        + "trap 'rm -f \"$t\"' EXIT; trap 'exit 1' HUP INT TERM\n"
        + f'fetch {u} "$t" || {{ echo "download of "{u}" failed" >&2; exit 1; }}\n'
        + verify
        + chmod
        + f'mv -f -- "$t" {p}\n'
    )
