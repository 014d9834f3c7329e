"""One look at many files gives every path exactly what its own probe gives.

Real files on a real sshd host, looked at as its (non-root) login user: each path's own
`file_script`, run alone, against the batch's one look at all of them (fleet/filelook.py). A path
the look cannot answer (a file this user cannot read) must come back unanswered, never guessed; a
look whose output does not add up (a file that changed between `stat` and `head`) answers nothing."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import yaml
from conftest import run_fleet

from fleet.batch import Batch, ProbeCall
from fleet.connection import connect
from fleet.filelook import DIFF_LIMIT, LOOK_BUDGET, file_script, look_outputs
from fleet.inventory import load_inventory
from fleet.model import CommandResult
from fleet.tasks.files import FileState

pytestmark = pytest.mark.ssh

# Made on the host as its user; the names are relative to its home.
SETUP = r"""
set -e
rm -rf look && mkdir -p look/dir look/closed-dir && cd look
chmod 700 closed-dir
printf 'hello\n' > small
: > empty
printf 'no newline at the end' > 'with space'
printf 'quote' > "it's"
printf 'dash' > ./-n
printf 'unicode\n' > 'ünï'
printf '\000bin\377ary\n==> small <==\n' > binary
head -c %(limit)d /dev/zero | tr '\0' a > at-limit
head -c %(over)d /dev/zero | tr '\0' b > over-limit
printf 'secret' > unreadable && chmod 000 unreadable
printf 'x' > setuid && chmod 4755 setuid
ln -s small link-to-file
ln -s dir link-to-dir
ln -s nowhere dangling
mkfifo fifo
"""

PATHS = [
    "~/look/small", "~/look/empty", "~/look/with space", "~/look/it's", "~/look/-n", "~/look/ünï",
    "~/look/binary", "~/look/at-limit", "~/look/over-limit", "~/look/setuid", "~/look/link-to-file",
    "~/look/link-to-dir", "~/look/dangling", "~/look/fifo", "~/look/dir", "~/look/closed-dir",
    "~/look/absent", "~/look/small", "~/look/unreadable",
]  # fmt: skip


@pytest.fixture
def node(ssh_inventory):
    inv = load_inventory(ssh_inventory)
    conn = connect("node-03", inv.host("node-03").vars)
    try:
        setup = conn.run(SETUP % {"limit": DIFF_LIMIT, "over": DIFF_LIMIT + 1})
        assert setup.ok, setup.stderr
        yield conn
    finally:
        conn.close()


def _alone(conn, path: str) -> CommandResult:
    return conn.run(file_script(path))


def test_one_look_gives_each_path_what_its_own_probe_gives(node):
    calls = [ProbeCall.of(file_script(p), {}, p) for p in PATHS]
    batch = Batch.of(calls)
    assert batch.sections[0] == tuple(range(len(PATHS)))  # every path in one look
    done = batch.split(node.run(batch.script(), **batch.run_kwargs()))
    for path, got in zip(PATHS, done, strict=True):
        alone = _alone(node, path)
        if path.endswith("unreadable"):
            assert got is None  # unanswered: it runs alone and says why
            assert alone.exited != 0 and "Permission denied" in alone.stderr
            continue
        assert got is not None, path
        assert (got.stdout, got.stderr, got.exited) == (alone.stdout, alone.stderr, alone.exited), path
    states = {p: FileState.parse(r.stdout) for p, r in zip(PATHS, done, strict=True) if r is not None}
    assert states["~/look/small"] == FileState("file", 0o644, states["~/look/small"].sha256, b"hello\n")
    assert states["~/look/binary"].content == b"\0bin\377ary\n==> small <==\n"
    assert states["~/look/at-limit"].content == b"a" * DIFF_LIMIT
    assert states["~/look/over-limit"].content is None and len(states["~/look/over-limit"].sha256 or "") == 64
    assert states["~/look/setuid"].mode == 0o4755
    assert states["~/look/link-to-file"].mode == 0o644  # the file's mode, not the link's 777
    assert (states["~/look/link-to-dir"].kind, states["~/look/closed-dir"].mode) == ("directory", 0o700)
    kinds = [states[p].kind for p in ("~/look/dangling", "~/look/fifo", "~/look/absent")]
    assert kinds == ["absent", "other", "absent"]


def test_a_look_fetches_at_most_its_budget_and_leaves_the_rest_to_their_own_probes(node):
    """Small files are fetched in order while LOOK_BUDGET lasts (a batch's output must stay within
    what a command keeps in memory); the ones past it are unanswered, never cut."""
    sizes = [200 * 1024, 200 * 1024, 100 * 1024]
    assert sizes[0] + sizes[1] > LOOK_BUDGET >= sizes[0] + sizes[2]
    made = node.run("".join(f"head -c {n} /dev/zero | tr '\\0' {i} > ~/look/part{i}\n" for i, n in enumerate(sizes)))
    assert made.ok, made.stderr
    paths = [f"~/look/part{i}" for i in range(len(sizes))] + ["~/look/small"]
    batch = Batch.of([ProbeCall.of(file_script(p), {}, p) for p in paths])
    done = batch.split(node.run(batch.script(), **batch.run_kwargs()))
    assert [r is not None for r in done] == [True, False, True, True]  # 200 KiB, over budget, 100 KiB, 6 bytes
    for path, got in zip(paths, done, strict=True):
        if got is not None:
            assert got.stdout == _alone(node, path).stdout, path
    assert FileState.parse(done[2].stdout).content == b"2" * sizes[2]


def test_a_look_that_does_not_add_up_answers_nothing(node):
    """Each way the look's output can stop adding up (as when a file grows, shrinks or changes
    kind between the builtin tests, stat and head) makes it answer no path at all."""
    paths = ["~/look/small", "~/look/dir", "~/look/with space", "~/look/absent"]
    batch = Batch.of([ProbeCall.of(file_script(p), {}, p) for p in paths])
    result = node.run(batch.script(), **batch.run_kwargs())
    out = result.stdout_bytes.split(f"\n{batch.marker} ".encode(), 1)[0]
    assert all(r is not None for r in look_outputs(out, len(paths)))
    lines = out.split(b"\n", 7)
    kinds, small_stat, content = lines[0], lines[4], lines[7]
    assert (kinds, small_stat.split()[0]) == (b"fdfa", b"6")
    assert content.startswith(b"==> ") and content.endswith(b"no newline at the end")  # raw, as head printed it
    small_header = content.split(b"\n", 1)[0]
    tampered = {
        "a file grew": out.replace(small_stat, b"7" + small_stat[1:], 1),
        "a file shrank": out.replace(small_stat, b"5" + small_stat[1:], 1),
        "a file became a directory": out.replace(small_stat, b"6 644 directory", 1),
        "bytes shifted past a header": out.replace(content, content[:5] + b"X" + content[5:]),
        "content cut short": out[:-1],
        "bytes left over": out + b"x",
        "a header naming another path": out.replace(small_header, small_header.replace(b"small", b"smalm"), 1),
        "a stat line missing": out.replace(small_stat + b"\n", b"", 1),
        "kinds of another count": out.replace(kinds, kinds + b"a", 1),
    }
    for why, data in tampered.items():
        assert look_outputs(data, len(paths)) == [None] * len(paths), why


def test_a_look_without_its_bytes_answers_nothing_and_every_path_runs_alone(node):
    """A look is read from stdout's bytes; a result that did not keep them (a connection that
    cannot, output too large to keep) leaves each of its paths to its own probe, while the
    batch's other probes are still answered from the text."""
    paths = ["~/look/small", "~/look/binary"]
    calls = [ProbeCall.of(file_script(p), {}, p) for p in paths] + [ProbeCall.of("echo other", {})]
    batch = Batch.of(calls)
    assert batch.run_kwargs()["keep_bytes"] is True
    result = node.run(batch.script(), **batch.run_kwargs())
    assert result.stdout_bytes is not None and "\ufffd" in result.stdout  # \377 is not text
    answered = batch.split(result)
    assert all(r is not None for r in answered)
    assert FileState.parse(answered[1].stdout).content == b"\0bin\377ary\n==> small <==\n"
    textual = dataclasses.replace(result, stdout_bytes=None)
    assert [r is None for r in batch.split(textual)] == [True, True, False]
    assert batch.split(textual)[2].stdout == "other\n"
    alone = Batch.of([ProbeCall.of("echo other", {})])
    assert alone.run_kwargs()["keep_bytes"] is False  # no look: nothing kept twice


def test_a_file_behind_a_symbolic_link_converges(ssh_fleet, ssh_inventory, tmp_path):
    """The mode a file probe reports is the file's, not the link's (always 777): a copy whose
    content already matches only sets the mode once, batched and alone (chmod follows the link)."""
    host = ssh_fleet.host("node-04")
    home = host.home
    (home / "real.conf").write_text("same\n")
    (home / "real.conf").chmod(0o600)
    shutil.chown(home / "real.conf", host.user, host.user)
    (home / "linked.conf").unlink(missing_ok=True)
    (home / "linked.conf").symlink_to("real.conf")
    task = {"copy": {"dest": "~/linked.conf", "content": "same\n", "mode": "0644"}}
    other = {"copy": {"dest": "~/other.conf", "content": "x\n"}}  # two file probes: one look
    book = tmp_path / "link.yaml"
    book.write_text(yaml.safe_dump([{"hosts": "node-04", "gather_facts": False, "tasks": [task, other]}]))
    changed = []
    for flags in ((), (), ("--no-batch",)):
        done = run_fleet("run", book, "-i", ssh_inventory, "--json", *flags)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr
        results = [json.loads(line) for line in done.stdout.splitlines() if '"task_result"' in line]
        changed.append([r["status"] for r in results])
    assert changed == [["changed", "changed"], ["ok", "ok"], ["ok", "ok"]]
    assert (home / "linked.conf").is_symlink() and (home / "real.conf").stat().st_mode & 0o777 == 0o644
