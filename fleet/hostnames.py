"""Host names as inventories write them: `host:port`, `[ipv6]:port`, Ansible ranges
(`gh200-[01:16]`, `lb[00:08:2]`, `[a:f]`) and Slurm hostlists (`gh200-[01-04,07]`)."""

from __future__ import annotations

import ipaddress
import re
import string

import hostlist

from .model import FleetError

_BRACKETED_PORT = re.compile(r"^\[(?P<host>.+)\]:(?P<port>[0-9]+)$")
_HOST_PORT = re.compile(r"^(?P<host>(?:[^:\[\]]|\[[^\]]*\])*):(?P<port>[0-9]+)$")
_PIECE = r"(?:[\w-]|\[[^\]]*\])"
_HOSTNAME = re.compile(rf"^(?:\w|\[[^\]]*\]){_PIECE}*(?<![_-])(?:\.(?:\w|\[[^\]]*\]){_PIECE}*(?<![_-]))*$")
_SLURM = re.compile(r"^[0-9]+(?:-[0-9]+)?(?:,[0-9]+(?:-[0-9]+)?)*$")


def _valid(host: str) -> bool:
    if _HOSTNAME.match(host):
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def split_port(text: str) -> tuple[str, int | None]:
    """`web1:2222` -> (web1, 2222); `[fe80::1]:1022` -> (fe80::1, 1022); `fe80::1` stays whole.
    Like Ansible, a port is taken only when what is left is a valid host name or address."""
    for pattern in (_BRACKETED_PORT, _HOST_PORT):
        match = pattern.match(text)
        if match and _valid(match["host"]):
            return match["host"], int(match["port"])
    return text, None


def expand(pattern: str) -> list[str]:
    """Every host name a pattern with ranges stands for, in order (the first bracket varies slowest).

    `[01:16]` keeps the zero padding (both ends equally long), `[0:8:2]` steps, `[a:f]`/`[A:F]`
    are letters; a bracket holding only numbers, `-` and `,` is a Slurm hostlist (`[01-04,07]`)."""
    start = pattern.find("[")
    if start < 0:
        return [pattern]
    end = pattern.find("]", start)
    if end < 0:
        raise FleetError(f"host range in {pattern!r} has no closing ]")
    head, body, tail = pattern[:start], pattern[start + 1 : end], pattern[end + 1 :]
    values = _slurm(body, pattern) if ":" not in body and _SLURM.match(body) else _ansible_range(body, pattern)
    return [name for value in values for name in expand(head + value + tail)]


def _slurm(body: str, pattern: str) -> list[str]:
    try:
        return hostlist.expand_hostlist(f"[{body}]")
    except hostlist.BadHostlist as exc:
        raise FleetError(f"bad Slurm host list [{body}] in {pattern!r}: {exc}") from None


def _ansible_range(body: str, pattern: str) -> list[str]:
    bounds = body.split(":")
    if len(bounds) not in (2, 3):
        raise FleetError(f"bad host range [{body}] in {pattern!r}: use [01:16], [0:8:2], [a:f] or a Slurm list [1-4,7]")
    first, last = bounds[0] or "0", bounds[1]
    try:
        step = int(bounds[2]) if len(bounds) == 3 else 1
    except ValueError:
        raise FleetError(f"bad step in host range [{body}] in {pattern!r}") from None
    if not last:
        raise FleetError(f"host range [{body}] in {pattern!r} has no end")
    if step < 1:
        raise FleetError(f"host range [{body}] in {pattern!r} needs a step of at least 1")
    if len(first) == 1 and len(last) == 1 and first in string.ascii_letters and last in string.ascii_letters:
        i, j = string.ascii_letters.index(first), string.ascii_letters.index(last)
        if i > j:
            raise FleetError(f"host range [{body}] in {pattern!r} goes backwards")
        return list(string.ascii_letters[i : j + 1 : step])
    if not (first.isdigit() and last.isdigit()):
        raise FleetError(f"bad host range [{body}] in {pattern!r}: bounds are numbers or single letters")
    width = len(first) if first.startswith("0") and len(first) > 1 else 0
    if width and len(last) != width:
        raise FleetError(f"host range [{body}] in {pattern!r}: zero-padded bounds must have the same length")
    values = [str(i).zfill(width) for i in range(int(first), int(last) + 1, step)]
    if not values:
        raise FleetError(f"host range [{body}] in {pattern!r} is empty")
    return values


def parse_host(text: str) -> tuple[list[str], int | None]:
    """An inventory's host entry: its host names and the port written with it, if any."""
    if ":" not in text and "[" not in text:
        return [text.strip()], None
    host, port = split_port(text.strip())
    if text.strip().endswith(":") and port is None:
        raise FleetError(f"host {text!r} ends in ':' (write host:PORT, or quote the name)")
    return expand(host), port
