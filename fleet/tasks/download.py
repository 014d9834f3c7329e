"""`download`: a file from a URL to a path, optionally pinned by sha256.

The probe looks at the target only (its sha256 when one is pinned). A download goes to a temp file
beside the target and is moved into place only once its checksum verified, so a failed or wrong
download never leaves a partial file behind."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from .. import shell
from ..model import CommandResult, FleetError, Plan
from ..probe import Probe
from ..task import Action, Args, Context, action
from .files import parse_mode

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

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


@dataclass(frozen=True)
class Target:
    """The download's target: file | other | absent, and its sha256 when one is pinned."""

    kind: str
    sha256: str | None = None

    @classmethod
    def of(cls, result: CommandResult) -> Target:
        lines = result.stdout.split()
        return cls(lines[0] if lines else "absent", lines[1] if len(lines) > 1 else None)


class DownloadArgs(Args):
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
        script = f"if [ -f {p} ]; then echo file; {digest}; elif [ -e {p} ]; then echo other; else echo absent; fi"
        return Probe(script, Target.of)

    def plan(self, target: Target, ctx: Context) -> Plan:
        a = self.args
        if a.dest.endswith("/"):
            raise FleetError(f"download: dest {a.dest!r} must be a file path, not a folder")
        want = self.wanted_sha256()
        kind, have = target.kind, target.sha256
        if kind == "other":
            return Plan(fail=f"{a.dest} exists and is not a regular file")
        if kind == "file" and (want is None or have == want):
            return Plan(summary=f"{a.dest} present" + (" (sha256 verified)" if want else ""))
        reason = "missing" if kind == "absent" else f"sha256 differs (have {have}, want {want})"
        return Plan(
            script=download_script(a.url, a.dest, want, parse_mode(a.mode)),
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
        + "trap 'rm -f \"$t\"' EXIT; trap 'exit 1' HUP INT TERM\n"
        + f'fetch {u} "$t" || {{ echo "download of "{u}" failed" >&2; exit 1; }}\n'
        + verify
        + chmod
        + f'mv -f -- "$t" {p}\n'
    )
