# ruff: noqa: UP031, SIM105 - runs on hosts with python3 >= 3.6: no newer syntax, no extra imports
"""The remote half of a persistent connection: a small loop the controller starts once per host
(and once more for `become`) and feeds framed requests on stdin; it answers with framed replies.

This file runs on the host under the host's own python3 (3.6 or newer, standard library only)
and never imports fleet. It is sent over the channel itself, checked against its sha256 before it
runs, so nothing but a one-line bootstrap shows in the host's `ps`. The controller side of the
protocol is fleet/connection.py (`Agent`); the wire format is `encode`/`decode` below, shared by
both sides.

Wire format, both directions: a frame is
    "!IQ" (header length, body length) | header | body | sha256(header + body)
and a header is a flat dict of str -> str | int | float | bool | None in a tiny typed encoding
(json would pull in `re` and cost the host ~7 ms per start). A frame that is short or whose
checksum differs is never acted on: a script that did not arrive whole does not run.

Requests (op):    run (body: the script; may carry lock_* fields: take the host lock first),
                  put / data / end (a streamed upload), get, lock, unlock, interrupt.
Replies (op):     hello, started, out (body: a chunk of stdout/stderr), done, ok, error, data,
                  end, locked.
When stdin ends (the controller went away or closed the channel) the agent stops every running
command's process tree, removes the temp files of its unfinished uploads and of its commands
(listed in its temp list), and exits. A later agent removes what a killed agent left behind.
"""

import errno
import fcntl
import os
import struct
import sys
import threading
import time

# Only what a converged run's one request needs is imported at start: the agent starts once per
# host per run, and hashlib (OpenSSL), subprocess and signal (locale, re, enum) cost the host
# ~40 ms of imports. The interpreter's built-in sha256 is the same digest.
try:
    from _sha256 import sha256  # Python <= 3.11
except ImportError:
    try:
        from _sha2 import sha256  # Python >= 3.12
    except ImportError:
        from hashlib import sha256  # built without the built-in hashes

PREFIX = struct.Struct("!IQ")
DIGEST = 32
CHUNK = 256 * 1024
KILL_GRACE = 5.0  # from SIGTERM to SIGKILL when a command overruns its limit
EXIT_GRACE = 1.0  # how long output may trail a command's exit (a background child may hold it open)
# Every script runs as one brace group, which sh parses whole before running any of it: a script
# with a syntax error runs none of it, on this path as on the one-shot one (fleet/connection.py).
RUN_STDIN_SCRIPT = 'f=$(cat) && eval "{ $f\n}" </dev/null'
# A script up to this size comes in the environment instead (Linux takes up to 128 KiB per string):
# that spares a `cat`, a fork and exec per command. Never in argv, which every user can read; the
# environment only the same user and root can, and the shell drops it before anything else runs.
RUN_ENV_SCRIPT = 'f=$FLEET_SCRIPT; unset FLEET_SCRIPT; eval "{ $f\n}" </dev/null'
ENV_SCRIPT_MAX = 96 * 1024


# ---- wire format (shared with the controller, which imports these two functions) -----------------
def encode(header, body=b""):
    parts = []
    for key, value in header.items():
        k = key.encode()
        if value is None:
            kind, raw = b"n", b""
        elif value is True or value is False:
            kind, raw = b"b", b"1" if value else b"0"
        elif isinstance(value, int):
            kind, raw = b"i", str(value).encode()
        elif isinstance(value, float):
            kind, raw = b"f", repr(value).encode()
        else:
            kind, raw = b"s", str(value).encode("utf-8", "surrogateescape")
        parts.append(struct.pack("!H", len(k)) + k + kind + struct.pack("!I", len(raw)) + raw)
    head = b"".join(parts)
    return PREFIX.pack(len(head), len(body)) + head + body + sha256(head + body).digest()


def decode(head):
    out, i = {}, 0
    while i < len(head):
        (klen,) = struct.unpack_from("!H", head, i)
        key = head[i + 2 : i + 2 + klen].decode()
        kind = head[i + 2 + klen : i + 3 + klen]
        (vlen,) = struct.unpack_from("!I", head, i + 3 + klen)
        raw = head[i + 7 + klen : i + 7 + klen + vlen]
        i += 7 + klen + vlen
        if kind == b"n":
            out[key] = None
        elif kind == b"b":
            out[key] = raw == b"1"
        elif kind == b"i":
            out[key] = int(raw)
        elif kind == b"f":
            out[key] = float(raw)
        elif kind == b"s":
            out[key] = raw.decode("utf-8", "surrogateescape")
        else:
            raise ValueError("bad header field type %r" % kind)
    return out


# ---- the loop ------------------------------------------------------------------------------------
class Agent:
    def __init__(self, rfile, wfile):
        self.rfile = rfile
        self.wfile = wfile
        self.write_lock = threading.Lock()
        self.running = {}  # request id -> Command
        self.running_lock = threading.Lock()
        self.uploads = {}  # request id -> [fd, temp path, target, mode, sha256 object, error]
        self.home = os.path.expanduser("~")
        self.state_dir = os.path.join(self.home, ".fleet")
        self.temp_list = None
        self.lock_fd = None

    # frames
    def send(self, header, body=b""):
        data = encode(header, body)
        with self.write_lock:
            self.wfile.write(data)
            self.wfile.flush()

    def read_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.rfile.read(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def receive(self):
        prefix = self.read_exact(PREFIX.size)
        if prefix is None:
            return None
        hlen, blen = PREFIX.unpack(prefix)
        rest = self.read_exact(hlen + blen + DIGEST)
        if rest is None:
            return None  # cut off mid-frame: never acted on
        head, body, digest = rest[:hlen], rest[hlen : hlen + blen], rest[hlen + blen :]
        if sha256(head + body).digest() != digest:
            raise ValueError("a request failed its checksum")
        return decode(head), body

    # temp files: listed in a file this agent holds locked, so a later agent can tell a dead one's
    def start_temp_list(self):
        folder = os.path.join(self.state_dir, "tmp")
        os.makedirs(folder, mode=0o700, exist_ok=True)
        for name in os.listdir(folder):
            self.sweep(os.path.join(folder, name))
        path = os.path.join(folder, "%d-%s.list" % (os.getpid(), os.urandom(4).hex()))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)  # read back by cleanup()
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.temp_list = (path, fd)
        os.environ["FLEET_TEMP_LIST"] = path

    @staticmethod
    def sweep(list_path):
        """Remove the temp files a dead agent listed (its lock is free), then its list."""
        try:
            fd = os.open(list_path, os.O_RDONLY)
        except OSError:
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # its agent is alive
            with os.fdopen(os.dup(fd), "rb") as fh:
                for line in fh.read().split(b"\n"):
                    path = line.decode("utf-8", "surrogateescape")
                    if os.path.basename(path).startswith(".fleet"):
                        remove(path)
            remove(list_path)
        finally:
            os.close(fd)

    def note_temp(self, path):
        if self.temp_list:
            os.write(self.temp_list[1], path.encode("utf-8", "surrogateescape") + b"\n")

    def cleanup(self):
        with self.running_lock:
            procs = list(self.running.values())
        for proc in procs:
            stop_tree(proc, grace=KILL_GRACE)
        for upload in list(self.uploads.values()):
            close_quietly(upload[0])
            remove(upload[1])
        if self.temp_list:
            path, fd = self.temp_list
            os.lseek(fd, 0, os.SEEK_SET)
            with os.fdopen(os.dup(fd), "rb") as fh:
                for line in fh.read().split(b"\n"):
                    if line and os.path.basename(line).startswith(b".fleet"):
                        remove(line.decode("utf-8", "surrogateescape"))
            remove(path)

    # requests
    def serve(self):
        try:
            self.start_temp_list()
        except OSError:
            pass  # no writable home (e.g. become_user nobody): its temp files are still removed on EOF
        self.send({"op": "hello", "pid": os.getpid(), "python": sys.version.split()[0]})
        try:
            while True:
                frame = self.receive()
                if frame is None:
                    return
                self.handle(*frame)
        finally:
            self.cleanup()

    def handle(self, req, body):
        op, rid = req.get("op"), req.get("id")
        if op == "run":
            threading.Thread(target=self.run, args=(rid, body, req), daemon=True).start()
        elif op == "interrupt":
            with self.running_lock:
                procs = list(self.running.values())
            for proc in procs:
                proc.fleet_interrupted = True
                threading.Thread(target=stop_tree, args=(proc, 1.0), daemon=True).start()
        elif op == "put":
            self.put_begin(rid, req["path"], req.get("mode"))
        elif op == "data":
            self.put_data(rid, body)
        elif op == "end":
            self.put_end(rid, req.get("sha256"))
        elif op == "get":
            self.get(rid, req["path"])
        elif op == "lock":
            threading.Thread(target=self.lock, args=(rid, req), daemon=True).start()
        elif op == "unlock":
            self.unlock()
        else:
            self.send({"op": "error", "id": rid, "message": "unknown request %r" % op})

    def run(self, rid, script, req):
        timeout = req.get("timeout")
        if req.get("lock_path"):  # the host lock rides on the play's first request: no extra round trip
            lock = {key[5:]: value for key, value in req.items() if key.startswith("lock_")}
            failure = self.acquire(lock)
            if failure:
                self.send(dict(failure, id=rid))
                return
        started = time.monotonic()
        # Said before the command starts: a controller that loses this agent before reading it
        # knows the command never ran and may send it again to a new agent.
        self.send({"op": "started", "id": rid})
        in_env = len(script) <= ENV_SCRIPT_MAX and b"\0" not in script
        try:
            if in_env:
                env = dict(os.environb)
                env[b"FLEET_SCRIPT"] = script
                proc = Command(["sh", "-c", RUN_ENV_SCRIPT], env)
                script = b""
            else:
                proc = Command(["sh", "-c", RUN_STDIN_SCRIPT])
        except OSError as exc:
            self.send({"op": "done", "id": rid, "exit": 127, "error": str(exc), "duration": 0.0})
            return
        with self.running_lock:
            self.running[rid] = proc
        timer = None
        if timeout:
            timer = threading.Timer(timeout, self.overran, args=(proc,))
            timer.daemon = True
            timer.start()
        try:
            try:
                view = memoryview(script)
                while view:
                    view = view[os.write(proc.stdin, view) :]
            except OSError:
                pass  # it ended before reading its whole script (e.g. sh is gone): its status says why
            close_quietly(proc.stdin)
            self.pump(rid, proc)
            code = proc.wait()
        finally:
            if timer:
                timer.cancel()
            with self.running_lock:
                self.running.pop(rid, None)
        if code < 0:
            code = 128 - code  # killed by a signal, reported as a shell would
        self.send(
            {
                "op": "done",
                "id": rid,
                "exit": 124 if proc.fleet_timed_out else code,
                "timed_out": proc.fleet_timed_out,
                "interrupted": proc.fleet_interrupted,
                "duration": time.monotonic() - started,
            }
        )

    def overran(self, proc):
        proc.fleet_timed_out = True
        stop_tree(proc, KILL_GRACE)

    def pump(self, rid, proc):
        """Relay stdout and stderr until both end, or shortly after the command exited (a
        background process it left may hold them open for good). Small outputs go as one frame."""
        import select  # poll() directly: selectors would pull in collections and math

        poller = select.poll()
        names = {proc.stdout: "stdout", proc.stderr: "stderr"}
        pending = {"stdout": [], "stderr": []}
        size = 0
        for fd in names:
            poller.register(fd, select.POLLIN)
        deadline = None
        while names:
            wait = 0.2 if deadline is None else max(0.0, deadline - time.monotonic())
            for fd, _ in poller.poll(int(wait * 1000)):
                data = os.read(fd, CHUNK)
                if not data:
                    poller.unregister(fd)
                    del names[fd]
                    continue
                pending[names[fd]].append(data)
                size += len(data)
                if size >= CHUNK:
                    self.flush_output(rid, pending)
                    size = 0
            if deadline is None and proc.poll() is not None:
                deadline = time.monotonic() + EXIT_GRACE
            elif deadline is not None and time.monotonic() >= deadline:
                break
        close_quietly(proc.stdout)
        close_quietly(proc.stderr)
        self.flush_output(rid, pending)

    def flush_output(self, rid, pending):
        for stream, chunks in pending.items():
            if chunks:
                self.send({"op": "out", "id": rid, "stream": stream}, b"".join(chunks))
                del chunks[:]

    # uploads: a temp file beside the target, renamed over it only once whole and checked
    def put_begin(self, rid, target, mode):
        path = os.path.expanduser(target)
        entry = [None, None, path, mode, sha256(), None]
        self.uploads[rid] = entry
        try:
            folder = os.path.dirname(path) or "."
            os.makedirs(folder, exist_ok=True)
            temp = os.path.join(folder, ".fleet.%s" % os.urandom(6).hex())
            self.note_temp(temp)
            entry[0] = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            entry[1] = temp
        except OSError as exc:
            entry[5] = describe(exc, path)

    def put_data(self, rid, data):
        entry = self.uploads.get(rid)
        if entry is None or entry[5]:
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(entry[0], view) :]
            entry[4].update(data)
        except OSError as exc:
            entry[5] = describe(exc, entry[2])

    def put_end(self, rid, sha256):
        fd, temp, path, mode, digest, error = self.uploads.pop(rid)
        try:
            if not error and digest.hexdigest() != sha256:
                error = "the upload to %s arrived damaged (checksum differs)" % path
            if not error:
                try:
                    if mode is None:
                        try:
                            mode = os.stat(path).st_mode & 0o7777  # keep an existing file's mode
                        except OSError:
                            mode = 0o644
                    os.fchmod(fd, mode)
                    os.fsync(fd)
                    os.rename(temp, path)
                    temp = None
                except OSError as exc:
                    error = describe(exc, path)
        finally:
            close_quietly(fd)
            if temp:
                remove(temp)
        if error:
            self.send({"op": "error", "id": rid, "message": error})
        else:
            self.send({"op": "ok", "id": rid})

    def get(self, rid, target):
        path = os.path.expanduser(target)
        digest = sha256()
        try:
            with open(path, "rb") as fh:
                while True:
                    data = fh.read(CHUNK)
                    if not data:
                        break
                    digest.update(data)
                    self.send({"op": "data", "id": rid}, data)
        except OSError as exc:
            self.send({"op": "error", "id": rid, "message": describe(exc, path)})
            return
        self.send({"op": "end", "id": rid, "sha256": digest.hexdigest()})

    # the host lock: held by this process, so it ends when the agent does, however it ends
    def lock(self, rid, req):
        failure = self.acquire(req)
        self.send(dict(failure or {"op": "ok"}, id=rid))

    def acquire(self, req):
        """Take the host lock (flock, held by this process); None when held, else the reply
        that says why not. Another run's lock is waited for at most req["wait"] seconds."""
        if self.lock_fd is not None:
            return None
        path = os.path.expanduser(req["path"])
        deadline = time.monotonic() + float(req.get("wait") or 0)
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            return {"op": "error", "message": describe(exc, path)}
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    return {"op": "error", "message": describe(exc, path)}
            holder = read_text(path)
            if req.get("run") and holder.split("\n", 1)[0] == "run %s" % req["run"]:
                os.close(fd)  # this very run holds it through another connection to the same host
                return None
            if time.monotonic() >= deadline:
                os.close(fd)
                return {"op": "locked", "holder": holder.strip()}
            time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, ("run %s\n%s\n" % (req.get("run", "?"), req.get("holder", ""))).encode())
        self.lock_fd = fd
        return None

    def unlock(self):
        if self.lock_fd is not None:
            close_quietly(self.lock_fd)
            self.lock_fd = None


class Command:
    """A command in its own session (so its whole process group can be stopped) with pipes for
    stdin, stdout and stderr (plain fds). subprocess.Popen would do, but importing it costs the
    agent's start more than everything else together."""

    def __init__(self, argv, env=None):
        ends = [os.pipe() for _ in range(3)]
        theirs = (ends[0][0], ends[1][1], ends[2][1])
        try:
            self.pid = spawn(argv, theirs, os.environ if env is None else env)
        except BaseException:
            for fd in [fd for pair in ends for fd in pair]:
                close_quietly(fd)
            raise
        for fd in theirs:
            close_quietly(fd)
        self.stdin, self.stdout, self.stderr = ends[0][1], ends[1][0], ends[2][0]
        self.returncode = None
        self.wait_lock = threading.Lock()  # one waitpid at a time: the run thread and stop_tree
        self.fleet_interrupted = False
        self.fleet_timed_out = False

    def poll(self):
        if self.returncode is None and self.wait_lock.acquire(False):
            try:
                if self.returncode is None:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                    if pid:
                        self.returncode = exit_code(status)
            finally:
                self.wait_lock.release()
        return self.returncode

    def wait(self):
        with self.wait_lock:
            if self.returncode is None:
                self.returncode = exit_code(os.waitpid(self.pid, 0)[1])
        return self.returncode


def spawn(argv, fds, env):
    """Start argv (found on PATH) in a new session with fds as its stdin, stdout and stderr."""
    actions = [(os.POSIX_SPAWN_DUP2, fd, n) for n, fd in enumerate(fds)] if hasattr(os, "posix_spawnp") else None
    if actions:
        try:
            return os.posix_spawnp(argv[0], argv, env, file_actions=actions, setsid=True)
        except NotImplementedError:
            pass  # a libc without posix_spawn_setsid
    pid = os.fork()  # Python < 3.8 or no posix_spawn_setsid: nothing but these calls before exec
    if pid == 0:
        try:
            os.setsid()
            for n, fd in enumerate(fds):
                os.dup2(fd, n)
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    return pid


def exit_code(status):
    """A waitpid status as subprocess reports it: the exit status, or -signal."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def stop_tree(proc, grace):
    """SIGTERM the command's process group and every descendant (also those that left the
    group), then SIGKILL whatever is left after `grace` seconds."""
    import signal  # only when something must be stopped: it imports enum

    tree = descendants(proc.pid)
    signal_all(proc.pid, tree, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if proc.poll() is not None and not any(alive(p) for p in tree | descendants(proc.pid)):
            return
        time.sleep(0.05)
    signal_all(proc.pid, tree | descendants(proc.pid), signal.SIGKILL)


def descendants(root):
    children = {}
    try:
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open("/proc/%s/stat" % name, "rb") as fh:
                        stat = fh.read()
                except OSError:
                    continue
                ppid = int(stat.rsplit(b")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(name))
    except OSError:
        return set()
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def signal_all(group, pids, sig):
    try:
        os.killpg(group, sig)
    except OSError:
        pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def describe(exc, path):
    return "%s: %s" % (exc.strerror or exc, path)


def read_text(path):
    try:
        with open(path, "rb") as fh:
            return fh.read(4096).decode("utf-8", "replace")
    except OSError:
        return ""


def remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def close_quietly(f):
    if f is None:
        return
    try:
        if isinstance(f, int):
            os.close(f)
        else:
            f.close()
    except OSError:
        pass


def main():
    Agent(sys.stdin.buffer, sys.stdout.buffer).serve()
    # Everything is sent and cleaned up; a daemon thread that has not yet let go of stdout's lock
    # would make the interpreter's own exit abort ("could not acquire lock ... at shutdown").
    os._exit(0)


if __name__ == "__main__":
    main()
