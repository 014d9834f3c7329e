"""How fleet looks at a file on a host: one path's probe script, and a look at many paths at once
that gives each path the output its own script would have printed, byte for byte.

A file probe costs a path's `stat` and `base64`, two program starts of about 1 ms of host CPU
each, and most tasks of a setup play probe a file. One look at every path of a probe batch costs
two programs however many paths there are: a `stat` of all of them and a `head -v` that prints the
small files one after another, raw, each after a `==> path <==` header. The look's output is taken
as bytes (CommandResult.stdout_bytes), never as text, so binary content comes whole without a
`base64` on the host. The controller splits the content by the sizes `stat` gave and checks every
header at the offset it must be at, so a file that changed between the two programs can never lend
its bytes to another: the look then answers nothing and each path is probed on its own, as
unbatched."""

from __future__ import annotations

import base64
from collections.abc import Sequence

from . import shell

DIFF_LIMIT = 256 * 1024  # a file up to this size comes whole (for diffs); a larger one is hashed on the host
# The most content one look fetches: the small files after this much are left to their own probes,
# so a batch's output stays well inside what a command keeps in memory (1 MiB a stream).
LOOK_BUDGET = 384 * 1024


def file_script(target: str) -> str:
    """One path's probe. Lines: kind, mode, sha256, base64 content. A small file's content comes
    whole and tells its checksum (computed by FileState.parse); only a file too large to fetch is
    hashed on the host. A file that cannot be read fails the probe: no content must never read as
    an empty file. `-L`: the mode is the file's, not a symbolic link's (which chmod never changes)."""
    p = shell.path(target)
    return (
        f"if [ -f {p} ]; then set -- $(stat -L -c '%a %s' {p}); echo file; echo \"$1\"; "
        f'if [ "$2" -le {DIFF_LIMIT} ]; then echo; base64 -w0 <{p} || exit; '
        f'else h=$(sha256sum <{p}) || exit; echo "${{h%% *}}"; fi; echo; '
        f"elif [ -d {p} ]; then echo directory; stat -L -c %a {p}; "
        f"elif [ -e {p} ]; then echo other; else echo absent; fi"
    )


def lookable(target: str) -> bool:
    """Whether a path can be part of a look at many: its name must not break the look's lines."""
    return "\n" not in target and "\r" not in target


def look_script(targets: Sequence[str]) -> str:
    """The look at many paths. Output lines: one kind letter per path (f readable file, u a file
    this user cannot read, d directory, o other, a absent); the files' and directories' paths as
    the host spelled them; `stat` of each (size, mode, type); the sha256 of each file too large to
    fetch; then the small files' raw content, each after its `head -v` header, to the end."""
    words = " ".join(shell.path(t) for t in targets)
    body = (
        f"set -- {words}\n"
        "n=$# ks=\n"
        "for p; do\n"
        '  if [ -f "$p" ]; then if [ -r "$p" ]; then k=f; else k=u; fi\n'
        '  elif [ -d "$p" ]; then k=d; elif [ -e "$p" ]; then k=o; else k=a; fi\n'
        "  ks=$ks$k\n"
        '  case $k in [fd]) set -- "$@" "$p";; esac\n'
        "done\n"
        'echo "$ks"\n'
        "shift $n\n"
        "[ $# -gt 0 ] || return 0\n"
        "s=$(stat -L -c '%s %a %F' -- \"$@\") || return\n"
        'printf \'%s\\n\' "$@" "$s"\n'
        f"b={LOOK_BUDGET}\n"
        "while read -r size mode type; do\n"
        "  p=$1; shift\n"
        "  case $type in regular*)\n"
        f'    if [ "$size" -gt {DIFF_LIMIT} ]; then h=$(sha256sum <"$p") || return; echo "${{h%% *}}"\n'
        '    elif [ "$size" -le "$b" ]; then set -- "$@" "$p"; b=$((b - size)); fi\n'
        "  esac\n"
        "done <<EOF\n"
        "$s\n"
        "EOF\n"
        f'[ $# -eq 0 ] || head -c {DIFF_LIMIT + 1} -v -- "$@"'
    )
    # A function (its `set --` is its own) that leaves nothing behind: a batch runs it inline.
    return shell.run_once("_fleet_look", body, "n ks k p s b size mode type h")


# What a path's own probe prints for the kinds the look's builtin tests settle alone (u: a file
# this user cannot read, left to its own probe).
_KIND_OUTPUT: dict[str, str | None] = {"u": None, "o": "other\n", "a": "absent\n"}


def _file_output(mode: str, sha256: str, content: bytes | None) -> str:
    if content is None:
        return f"file\n{mode}\n{sha256}\n\n"
    return f"file\n{mode}\n\n{base64.b64encode(content).decode()}\n"


def look_outputs(stdout: bytes, count: int) -> list[str | None]:
    """What each path's own `file_script` would have printed, from the look's output as bytes;
    None for a path the look cannot answer (a file this user cannot read: its own probe says why;
    a small file past LOOK_BUDGET). Every path is None when the output is not exactly what an
    unchanging host gives."""
    unanswered: list[str | None] = [None] * count
    kinds_line, _, after = stdout.partition(b"\n")
    kinds = kinds_line.decode("ascii", "replace")
    if len(kinds) != count or set(kinds) - set("fudoa"):
        return unanswered
    found = sum(k in "fd" for k in kinds)
    if found == 0:
        return [_KIND_OUTPUT[k] for k in kinds] if after == b"" else unanswered
    lines = after.split(b"\n", 2 * found)
    if len(lines) != 2 * found + 1:
        return unanswered
    paths, stats, rest = lines[:found], lines[found : 2 * found], lines[2 * found]
    parsed = []
    for kind, stat in zip((k for k in kinds if k in "fd"), stats, strict=True):
        size, _, rest_of_line = stat.decode("ascii", "replace").partition(" ")
        mode, _, filetype = rest_of_line.partition(" ")
        is_file, is_dir = filetype.startswith("regular"), filetype == "directory"
        if not (size.isdigit() and mode.isdigit()) or is_file != (kind == "f") or is_dir != (kind == "d"):
            return unanswered  # it changed kind between the builtin tests and stat
        parsed.append((int(size), mode, is_file))
    big = [i for i, (size, _, is_file) in enumerate(parsed) if is_file and size > DIFF_LIMIT]
    small, budget = [], LOOK_BUDGET  # as the look chose them: in order, while the budget lasts
    for i, (size, _, is_file) in enumerate(parsed):
        if is_file and size <= DIFF_LIMIT and size <= budget:
            small.append(i)
            budget -= size
    tail = rest.split(b"\n", len(big))
    if len(tail) != len(big) + 1:
        return unanswered
    hashes = {i: h.decode("ascii", "replace") for i, h in zip(big, tail[: len(big)], strict=True)}
    contents = _split_heads(tail[-1], [(paths[i], parsed[i][0]) for i in small])
    if contents is None or any(len(h) != 64 for h in hashes.values()):
        return unanswered
    content_of = dict(zip(small, contents, strict=True))
    out: list[str | None] = []
    index = 0
    for kind in kinds:
        if kind in "fd":
            size, mode, is_file = parsed[index]
            if not is_file:
                out.append(f"directory\n{mode}\n")
            elif index in hashes or index in content_of:
                out.append(_file_output(mode, hashes.get(index, ""), content_of.get(index)))
            else:
                out.append(None)  # past the look's budget: its own probe fetches it
            index += 1
        else:
            out.append(_KIND_OUTPUT[kind])
    return out


def _split_heads(data: bytes, files: Sequence[tuple[bytes, int]]) -> list[bytes] | None:
    """Each file's content from `head -v`'s output, by the sizes stat gave; None unless every
    header is where it must be and nothing is left over."""
    contents, at = [], 0
    for number, (path, size) in enumerate(files):
        header = (b"\n" if number else b"") + b"==> " + path + b" <==\n"
        if data[at : at + len(header)] != header:
            return None
        at += len(header)
        contents.append(data[at : at + size])
        at += size
    return contents if at == len(data) and all(len(c) == s for c, (_, s) in zip(contents, files, strict=True)) else None
