"""harness — helpers for sockmapd's black-box suites, run by pytest.

A suite is a module tests/bb_<part>.py; pytest runs it (tests/conftest.py
loads tests/lib/harness_pytest.py, which collects the cases and gives each
the time limit and cleanup below).  A case is a plain pytest function using
the fixtures of harness_pytest, or a function registered with @test:

    import os, sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
    from harness import *

    @test
    def unknown_map_is_perm():
        rc, out, err = run_pipe(temp_config(base_config()), encode(b"nosuch key"))
        eq(decode_stream(out)[0][:5], b"PERM ")

    def test_found(mariadb):                       # the same, written for pytest
        rc, out, err = run_pipe(temp_config(base_config(mariadb)), encode(b"recipient postmaster@example.org"))
        assert replies(out) == [fixture_reply("recipient", "postmaster@example.org")]

    if __name__ == "__main__":
        main()                                     # = pytest tests/bb_<part>.py ARGS

Run: pytest tests/bb_core.py -k NAME (tests/README.md).

Pieces:
  cases            @test / @test(timeout=S) (cases in registration order), main(),
                   eq/ok/contains/startswith/wait_for, defer(fn) (per-case cleanup)
  processes        MariaDB, shared_mariadb(), SocketActivated, serve() (sockmapd in each mode),
                   spawn(), spawn_as() (as another user, who may not reach the checkout),
                   xinetd_style(), run_pipe(), stop_pid(), pid_alive(), proc_children(), vm_hwm_kb()
  Postfix          postfix_dir() (a main.cf of the test's own), postmap(), postmap_outcome()
  protocol         encode(), decode_stream(), Client
  config           base_config(), write_config(), temp_config(), FIXTURE_MAPS
  temp files       suite_dir(), tmpdir(), tmpfile(); removed after the suite unless KEEP_TMP=1

Every process started here is remembered and stopped by its pid: after the
case that started it (objects created inside a case or a function-scoped
fixture), or after the suite (objects created outside a case, in a
module-scoped fixture, or marked with .keep_for_suite()).  Timeouts are
multiplied by the environment variable TIMEOUT_SCALE (e.g. 3 for sanitizer
builds).
"""

import atexit
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

__all__ = [
    # framework
    "test", "main", "begin_suite", "end_suite", "begin_case", "end_case", "eq", "ne", "ok", "contains", "not_contains", "startswith",
    "wait_for", "defer", "TestTimeout", "scaled", "require_tool", "run_clients", "finish_conversation",
    # processes
    "MariaDB", "SqlError", "shared_mariadb", "SocketActivated", "spawn", "spawn_as", "xinetd_style", "run_pipe",
    "sockmapd_path", "sockmapd_for_others", "others_can_enter", "sockmapd_env", "sanitized", "pid_alive", "stop_pid", "free_port", "free_ports", "closed_port",
    "proc_children", "vm_hwm_kb", "postfix_dir", "postmap", "postmap_outcome", "listening_on", "unit_settings",
    "tcp_connections_to",
    # protocol
    "encode", "decode_stream", "replies", "parse_netstring", "NetstringError", "Client", "to_bytes",
    "MAX_MAP_NAME", "MAX_KEY", "MAX_REQUEST",
    # config
    "base_config", "write_config", "temp_config", "read_log", "FIXTURE_MAPS", "fixture_replies", "fixture_reply",
    "FIXTURES_SQL", "REPO",
    # temp files
    "suite_dir", "tmpdir", "tmpfile", "runtime_dir", "reset_runtime_dir",
]

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURES_SQL = os.path.join(REPO, "tests", "fixtures.sql")
FIXTURE_REPLIES_JSON = os.path.join(REPO, "tests", "fixtures.replies.json")
DEFAULT_TIMEOUT = 60.0
# The request limits of src/socketmap.hh: a key may be MAX_KEY bytes behind
# any map name; a frame longer than MAX_REQUEST is broken framing.
MAX_MAP_NAME = 100
MAX_KEY = 10000
MAX_REQUEST = MAX_MAP_NAME + 1 + MAX_KEY


def scaled(seconds):
    """`seconds` times $TIMEOUT_SCALE (default 1): for slow (sanitizer) builds."""
    try:
        factor = float(os.environ.get("TIMEOUT_SCALE", "1"))
    except ValueError:
        factor = 1.0
    return seconds * max(factor, 1.0)


# ---------------------------------------------------------------- temp files

_suite_dir = None
_suite = None
_counter = 0


def _suite_name():
    if _suite:
        return _suite
    return os.path.splitext(os.path.basename(sys.argv[0] or "suite"))[0] or "suite"


def suite_dir():
    """The per-suite temp directory (created on first use, removed at exit unless KEEP_TMP=1)."""
    global _suite_dir
    if _suite_dir is None:
        # Short paths: unix socket names are limited to 107 bytes.
        # Reachable by other users too (the nodes of bb_cluster, the handlers
        # of bb_security run as nobody): not under a $TMPDIR of one's own.
        base = tempfile.gettempdir()
        if len(base) > 40 or not others_can_enter(base):
            base = "/tmp"
        _suite_dir = tempfile.mkdtemp(prefix="sockmapd-%s-" % _suite_name()[:16], dir=base)
        os.chmod(_suite_dir, 0o755)
    return _suite_dir


def others_can_enter(path):
    """True if every directory from / down to `path` lets any user through (o+x)."""
    path = os.path.realpath(path)
    while True:
        try:
            if not os.stat(path).st_mode & 0o001:
                return False
        except OSError:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _next_name(prefix):
    global _counter
    _counter += 1
    return "%s%d" % (prefix, _counter)


def tmpdir(prefix="d"):
    """A new directory under the suite directory."""
    path = os.path.join(suite_dir(), _next_name(prefix))
    os.makedirs(path)
    return path


def tmpfile(name="f", content=None, mode=0o600):
    """A new file path under the suite directory; written if `content` (str/bytes) is given."""
    path = os.path.join(suite_dir(), _next_name(name + "-"))
    if content is not None:
        data = content.encode() if isinstance(content, str) else content
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return path


def runtime_dir():
    """RUNTIME_DIRECTORY given to every sockmapd (its failover state file lives there)."""
    path = os.path.join(suite_dir(), "run")
    os.makedirs(path, exist_ok=True)
    return path


def reset_runtime_dir():
    """Forget the failover state (hosts marked down) shared by the suite's sockmapd processes."""
    path = runtime_dir()
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.isdir(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            os.unlink(full)


# ---------------------------------------------------------------- process registry

# Objects with a .stop() method; scope "test" (stopped after the current test)
# or "suite" (stopped at exit).
_live = []
_current_test = None
_test_cleanups = []


def _register(obj):
    # The scope is fixed when an object is first started: a suite-wide server
    # restarted inside a test stays suite-wide.
    if not hasattr(obj, "_scope"):
        obj._scope = "test" if _current_test is not None else "suite"
    if obj not in _live:
        _live.append(obj)


def _unregister(obj):
    try:
        _live.remove(obj)
    except ValueError:
        pass


def _stop_scope(scope):
    for obj in list(reversed(_live)):
        if scope == "all" or getattr(obj, "_scope", "suite") == scope:
            try:
                obj.stop()
            except Exception as e:  # keep stopping the others
                sys.stderr.write("harness: stopping %r failed: %s\n" % (obj, e))
            _unregister(obj)


def _at_exit():
    """Stop everything, remove (or report) the suite directory.  Idempotent."""
    global _suite_dir
    _stop_scope("all")
    _reap_orphans()
    if _suite_dir is not None and os.path.isdir(_suite_dir):
        if os.environ.get("KEEP_TMP") == "1":
            sys.stdout.write("harness: kept %s\n" % _suite_dir)
            sys.stdout.flush()
        else:
            shutil.rmtree(_suite_dir, ignore_errors=True)
    _suite_dir = None


atexit.register(_at_exit)


def begin_suite(name):
    """A suite (a module) starts: its temp and runtime directories are named after it and its own."""
    global _suite
    _suite = name


def end_suite():
    """After a suite's last case: stop what it kept, remove its directory; the next suite starts afresh."""
    global _suite, _shared_db, _public_binary
    _at_exit()
    _shared_db = _public_binary = None  # both lived in the suite directory
    _suite = None


def _on_term(signum, frame):
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _on_term)
signal.signal(signal.SIGHUP, _on_term)

# Become a child subreaper: handlers forked by systemd-socket-activate that
# outlive it are re-parented to us, so we can see, stop and reap them.
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
except Exception:
    _libc = None


# Pids of Popen objects we created: never reaped behind subprocess's back.
_popen_pids = set()


def _reap_orphans():
    """Reap zombie children we did not start ourselves (re-parented handlers)."""
    for kid in _child_pids(os.getpid(), zombies=True):
        if kid not in _popen_pids:
            _try_reap(kid)


def _child_pids(pid, zombies=False):
    kids = []
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except FileNotFoundError:
        return kids
    for tid in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                kids += [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            continue
    return [k for k in dict.fromkeys(kids) if zombies or pid_alive(k)]


def pid_alive(pid):
    """True if `pid` exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat[stat.rfind(")") + 2:].split()[0]
    return state not in ("Z", "X")


def _try_reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_pid(pid, grace=5.0, popen=None):
    """SIGTERM `pid`, wait up to `grace` seconds, then SIGKILL.

    Pass the Popen for a process we started, so its exit status stays with it;
    other children of ours (re-parented handlers) are reaped here.
    """
    def alive():
        if popen is not None:
            return popen.poll() is None
        if pid not in _popen_pids:
            _try_reap(pid)
        return pid_alive(pid)

    for sig, wait in ((signal.SIGCONT, 0), (signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not alive():
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and alive():
            time.sleep(0.02)
    alive()


def proc_children(pid, recursive=True):
    """Live child pids of `pid` (and their descendants if `recursive`)."""
    result = []
    for kid in _child_pids(pid):
        if kid not in result:
            result.append(kid)
            if recursive:
                result.extend(k for k in proc_children(kid) if k not in result)
    return result


def _pids_in_group(pgid):
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            pids.append(int(name))
    return pids


def vm_hwm_kb(pid):
    """Peak resident set size (VmHWM) of `pid` in kB, or None if it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# ---------------------------------------------------------------- test framework

class TestTimeout(Exception):
    pass


_TESTS = []


def test(fn=None, *, timeout=None, name=None, marks=()):
    """Register a case: `@test` or `@test(timeout=120)`.  Cases run in registration order.

    pytest collects them from the module that defines them (tests/lib/harness_pytest.py);
    pytest marks (@pytest.mark.slow) go on the function as on any other, or in `marks`
    (a tuple of them: the marks a section's cases share)."""
    def register(f):
        for mark in marks:
            f = mark(f)
        _TESTS.append((name or f.__name__, f, timeout or DEFAULT_TIMEOUT, f.__module__))
        return f
    if callable(fn):
        return register(fn)
    return register


def defer(fn, *args, **kwargs):
    """Run fn(*args, **kwargs) after the current case, pass or fail (LIFO)."""
    _test_cleanups.append((fn, args, kwargs))


_timer_limit = 0


def _on_alarm(signum, frame):
    raise TestTimeout("timed out after %gs" % _timer_limit)


def begin_case(name, timeout):
    """A case starts: what is started from now on is stopped after it; SIGALRM after scaled(timeout)."""
    global _current_test
    _current_test = name
    start_timer(timeout)


def start_timer(timeout):
    """TestTimeout in the main thread after scaled(timeout) seconds; 0 stops it."""
    global _timer_limit
    _timer_limit = scaled(timeout) if timeout else 0
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, _timer_limit)


def end_case():
    """After a case: its deferred functions (LIFO), then whatever it started, stopped by pid, within
    scaled(60) s.  The first error is raised once all of it is done."""
    global _current_test
    first = None
    start_timer(60)
    try:
        while _test_cleanups:
            cfn, cargs, ckw = _test_cleanups.pop()
            try:
                cfn(*cargs, **ckw)
            except Exception as e:
                first = first or e
        _stop_scope("test")
        _reap_orphans()
    except TestTimeout:
        first = first or TestTimeout("cleanup timed out")
    finally:
        start_timer(0)
        _current_test = None
        del _test_cleanups[:]
    if first is not None:
        raise first


def main(argv=None):
    """`tests/bb_x.py ARGS` is `pytest tests/bb_x.py ARGS` (e.g. -k NAME, --collect-only -q).

    Names given bare, as the old runner took them (a glob's `*` dropped), become one -k:
    `tests/bb_core.py framing_* pipe_eof` runs `pytest tests/bb_core.py -k "framing_ or pipe_eof"`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    options, names = [], []
    while argv:
        a = argv.pop(0)
        if a.startswith("-"):
            options.append(a)
            if a in ("-k", "-m", "-n", "-p", "--dist", "--durations") and argv:
                options.append(argv.pop(0))
        else:
            names.append(a.replace("*", "").replace("?", ""))
    if names:
        options += ["-k", " or ".join(names)]
    path = os.path.abspath(sys.argv[0])
    os.execv("/usr/bin/python3", ["/usr/bin/python3", "-m", "pytest", path] + options)


def _show(v, limit=300):
    r = repr(v)
    return r if len(r) <= limit else r[:limit] + "...(%d chars)" % len(r)


def eq(actual, expected, msg=""):
    """assert actual == expected, with both shown."""
    if actual != expected:
        raise AssertionError("%sexpected %s, got %s" % (msg + ": " if msg else "", _show(expected), _show(actual)))


def ne(actual, unexpected, msg=""):
    if actual == unexpected:
        raise AssertionError("%sdid not expect %s" % (msg + ": " if msg else "", _show(actual)))


def ok(cond, msg="condition is false"):
    if not cond:
        raise AssertionError(msg)


def contains(haystack, needle, msg=""):
    if needle not in haystack:
        raise AssertionError("%s%s not found in %s" % (msg + ": " if msg else "", _show(needle), _show(haystack, 2000)))


def not_contains(haystack, needle, msg=""):
    if needle in haystack:
        raise AssertionError("%s%s unexpectedly found in %s" % (msg + ": " if msg else "", _show(needle), _show(haystack, 2000)))


def startswith(actual, prefix, msg=""):
    if not actual.startswith(prefix):
        raise AssertionError("%sexpected a value starting with %s, got %s" % (msg + ": " if msg else "", _show(prefix), _show(actual)))


def run_clients(n_clients, one, timeout=30):
    """Runs one(i, errors) in n_clients threads at once and returns the list of
    errors they appended; an exception in a client is an error too.  Each
    client is expected to end its conversation with shutdown + read to EOF."""
    errors = []

    def guarded(i):
        try:
            one(i, errors)
        except Exception as e:
            errors.append("client %d: %s: %s" % (i, type(e).__name__, e))

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(timeout))
    errors.extend("client thread %d still running" % i for i, t in enumerate(threads) if t.is_alive())
    return errors


def finish_conversation(c, i, errors, timeout=5):
    """Half-closes the client and checks nothing follows the last reply."""
    c.shutdown_write()
    rest = c.read_until_eof(timeout)
    if rest:
        errors.append("client %d: bytes after EOF: %r" % (i, rest[:100]))


def wait_for(pred, timeout=5.0, interval=0.05, msg="condition"):
    """Poll pred() until it returns a true value (returned); AssertionError after `timeout`."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("%s not reached within %gs" % (msg, scaled(timeout)))
        time.sleep(interval)


def require_tool(name):
    """Full path of `name`; a missing tool is a failure, never a skip."""
    path = shutil.which(name) or (name if os.path.isabs(name) and os.access(name, os.X_OK) else None)
    if not path:
        for d in ("/usr/sbin", "/sbin", "/usr/bin"):
            cand = os.path.join(d, name)
            if os.access(cand, os.X_OK):
                return cand
        raise AssertionError("required tool missing: %s (run `make deps`)" % name)
    return path


# ---------------------------------------------------------------- ports

def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n):
    """n distinct TCP ports on 127.0.0.1 that were free a moment ago (held together while picked:
    free_port() called n times may give one port twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def closed_port():
    """A port nobody listens on (connections are refused): for unreachable-database tests."""
    return free_port()


def _socket_inodes(pid):
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        pass
    return inodes


def _tcp_sockets(match):
    """Inodes of the TCP sockets (IPv4 and IPv6) whose /proc/net/tcp fields satisfy `match`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if match(fields):
                        inodes.add(fields[9])
        except OSError:
            pass
    return inodes


def _tcp_listening(port, pid=None):
    """Something (process `pid`, if given) listens on TCP `port`."""
    want = ":%04X" % port
    inodes = _tcp_sockets(lambda f: f[1].endswith(want) and f[3] == "0A")
    if pid is None or not inodes:
        return bool(inodes)
    return bool(inodes & _socket_inodes(pid))


def tcp_connections_to(port, pid):
    """How many TCP connections process `pid` holds to a remote `port` (any state but LISTEN)."""
    want = ":%04X" % port
    return len(_tcp_sockets(lambda f: f[2].endswith(want) and f[3] != "0A") & _socket_inodes(pid))


def _unix_listening(path, pid=None):
    # bind() creates the file before listen(): look for the listening flag.
    inodes = set()
    try:
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                fields = line.split()
                if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & 0x10000:
                    inodes.add(fields[6])
    except OSError:
        pass
    if pid is None or not inodes:
        return bool(inodes)
    return bool(inodes & _socket_inodes(pid))


# ---------------------------------------------------------------- netstrings

class NetstringError(ValueError):
    pass


def to_bytes(v):
    return v if isinstance(v, (bytes, bytearray)) else str(v).encode("utf-8")


def encode(payload):
    """Netstring of `payload` (bytes or str)."""
    data = to_bytes(payload)
    return b"%d:%s," % (len(data), data)


def parse_netstring(buf, limit=10 ** 7):
    """(payload, rest) for the first netstring in `buf`, or None if it is incomplete.

    Raises NetstringError if `buf` does not start with a netstring.
    """
    colon = buf.find(b":", 0, 12)
    if colon < 0:
        if len(buf) >= 12 or not buf[:12].isdigit() and buf:
            raise NetstringError("bad length prefix: %r" % bytes(buf[:20]))
        return None
    digits = bytes(buf[:colon])
    if not digits.isdigit() or (len(digits) > 1 and digits[0:1] == b"0"):
        raise NetstringError("bad length prefix: %r" % bytes(buf[:20]))
    n = int(digits)
    if n > limit:
        raise NetstringError("length %d over %d" % (n, limit))
    end = colon + 1 + n
    if len(buf) < end + 1:
        return None
    if buf[end:end + 1] != b",":
        raise NetstringError("missing ',' after %d-byte payload: %r" % (n, bytes(buf[end:end + 10])))
    return bytes(buf[colon + 1:end]), bytes(buf[end + 1:])


def decode_stream(data):
    """All netstring payloads in `data`; NetstringError if anything else (or a partial frame) is there."""
    out = []
    rest = bytes(data)
    while rest:
        r = parse_netstring(rest)
        if r is None:
            raise NetstringError("incomplete netstring at end: %r" % rest[:60])
        payload, rest = r
        out.append(payload)
    return out


def replies(data):
    """Netstring payloads of a whole output; fails the test if it holds anything else."""
    try:
        return decode_stream(data)
    except NetstringError as e:
        raise AssertionError("output is not netstrings only (%s): %r" % (e, bytes(data[:300])))


class Client:
    """A socketmap client over TCP ((host, port) or a port number), a unix path, or a socket."""

    def __init__(self, addr, timeout=5.0):
        self.timeout = scaled(timeout)
        if isinstance(addr, socket.socket):
            self.sock = addr
        elif isinstance(addr, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(self.timeout)
            self.sock.connect(addr)
        else:
            if isinstance(addr, int):
                addr = ("127.0.0.1", addr)
            self.sock = socket.create_connection(addr, timeout=self.timeout)
        self.sock.settimeout(self.timeout)
        self.buf = b""
        self.eof = False

    def send_raw(self, data):
        self.sock.sendall(to_bytes(data))

    def ask(self, mapname, key, timeout=None):
        """Send `<map> <key>` and return the reply payload (bytes)."""
        self.send_raw(encode(to_bytes(mapname) + b" " + to_bytes(key)))
        return self.read_reply(timeout)

    def _recv(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no reply within the timeout")
        self.sock.settimeout(left)
        chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
        self.buf += chunk
        return chunk

    def read_reply(self, timeout=None):
        """The next reply payload; EOFError if the server closed first; socket.timeout if none came."""
        deadline = time.monotonic() + (scaled(timeout) if timeout is not None else self.timeout)
        while True:
            r = parse_netstring(self.buf)
            if r is not None:
                payload, self.buf = r
                return payload
            if self.eof or not self._recv(deadline):
                raise EOFError("connection closed before a complete reply (pending %r)" % self.buf[:60])

    def read_until_eof(self, timeout=None, reset_ok=True):
        """Everything the server still sends until it closes; socket.timeout if it stays open.
        With reset_ok=False a reset (RST, not FIN) fails the case: the end was not a clean one."""
        deadline = time.monotonic() + (scaled(timeout) if timeout is not None else self.timeout)
        while not self.eof:
            try:
                self._recv(deadline)
            except ConnectionResetError:
                if not reset_ok:
                    raise AssertionError("connection reset (after %r)" % self.buf[:80])
                self.eof = True
        data, self.buf = self.buf, b""
        return data

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- sockmapd processes

def sanitized():
    """True if the binary under test is built with AddressSanitizer."""
    try:
        with open(sockmapd_path(), "rb") as f:
            return b"__asan_init" in f.read()
    except (OSError, AssertionError):  # no binary: the cases that run it say so
        return False


def sockmapd_path():
    """The binary under test: $SOCKMAPD, default build/sockmapd (absolute)."""
    path = os.environ.get("SOCKMAPD") or os.path.join(REPO, "build", "sockmapd")
    path = os.path.abspath(path)
    if not os.access(path, os.X_OK):
        raise AssertionError("sockmapd binary missing: %s (run make)" % path)
    return path


_DROP_ENV = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "CREDENTIALS_DIRECTORY")


def sockmapd_env(extra=None):
    """Environment for sockmapd: ours minus systemd activation variables, plus RUNTIME_DIRECTORY."""
    env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
    env["RUNTIME_DIRECTORY"] = runtime_dir()
    if extra:
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
    return env


class _Proc:
    """Registry entry for a spawned process."""

    def __init__(self, popen):
        self.popen = popen
        _popen_pids.add(popen.pid)
        _register(self)

    def stop(self):
        stop_pid(self.popen.pid, grace=2.0, popen=self.popen)
        try:
            self.popen.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if f:
                try:
                    f.close()
                except OSError:
                    pass

    def __repr__(self):
        return "<process %d %s>" % (self.popen.pid, self.popen.args[:3])


_public_binary = None


def sockmapd_for_others():
    """The binary under test, where another user can run it.

    A checkout under a directory only its owner may enter (as /root is)
    keeps build/sockmapd from every other user: this is a copy of it in the
    suite directory (0755 all the way down), made once a suite, wherever
    the checkout is (so both places test the same thing).
    """
    global _public_binary
    if _public_binary is None:
        d = os.path.join(suite_dir(), "bin")
        os.makedirs(d, mode=0o755, exist_ok=True)
        os.chmod(d, 0o755)
        copy = os.path.join(d, "sockmapd")
        shutil.copyfile(sockmapd_path(), copy)
        os.chmod(copy, 0o755)
        _public_binary = copy
    return _public_binary


def _argv(config_path, args, binary=None):
    argv = [binary or sockmapd_path()]
    if config_path is not None:
        argv += ["-c", config_path]
    return argv + [str(a) for a in args]


def spawn(config_path, args=(), env=None, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
          stderr=subprocess.PIPE, prefix=(), **popen_kw):
    """Start `[prefix...] sockmapd [-c config] args` (Popen); stopped after the test if still running."""
    p = subprocess.Popen(list(prefix) + _argv(config_path, args), stdin=stdin, stdout=stdout, stderr=stderr,
                         env=sockmapd_env(env), **popen_kw)
    _Proc(p)
    return p


def spawn_as(pw, config_path, args=(), env=None, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
             stderr=subprocess.PIPE):
    """spawn() as the user of the passwd entry `pw` (its uid, its gid, no other groups).

    That user runs sockmapd_for_others(); it must be able to read the
    config too (suite files are 0600 unless made otherwise).
    """
    if not others_can_enter(os.path.dirname(os.path.abspath(config_path))):
        raise AssertionError("%s: the user %s cannot reach the config" % (config_path, pw.pw_name))
    p = subprocess.Popen(_argv(config_path, args, sockmapd_for_others()), stdin=stdin, stdout=stdout,
                         stderr=stderr, env=sockmapd_env(env), user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
    _Proc(p)
    return p


def run_pipe(config_path, stdin_bytes=b"", args=(), timeout=10, env=None):
    """Run `sockmapd [-c config] args` with `stdin_bytes` on a pipe; (rc, stdout, stderr).

    AssertionError if it does not exit within `timeout` seconds after stdin is closed.
    """
    p = subprocess.Popen(_argv(config_path, args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=sockmapd_env(env))
    entry = _Proc(p)
    try:
        out, err = p.communicate(to_bytes(stdin_bytes or b""), timeout=scaled(timeout))
    except subprocess.TimeoutExpired:
        entry.stop()
        out, err = p.communicate()
        raise AssertionError("sockmapd did not exit within %gs; stdout=%s stderr=%s"
                             % (scaled(timeout), _show(out), _show(err)))
    finally:
        if p.poll() is None:
            entry.stop()
        _unregister(entry)
    return p.returncode, out, err


def xinetd_style(config_path, args=(), env=None):
    """sockmapd with fd 0, 1 and 2 all on one socket, as xinetd runs it.

    Returns (Popen, Client): everything the process writes, logs included,
    arrives on the client socket.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        p = spawn(config_path, args, env=env, stdin=theirs, stdout=theirs, stderr=theirs)
    finally:
        theirs.close()
    return p, Client(ours)


class SocketActivated:
    """systemd-socket-activate -l 127.0.0.1:PORT -a [--inetd] sockmapd ARGS (a handler per connection).

    `accept=False` leaves out -a: the listening socket is passed as an Accept=no
    unit passes it, the binary is exec'd once, on the first connection, and its
    children are the handlers.
    `args` follow the binary, e.g. ["-c", cfg].  `unix=PATH` listens on a unix
    socket instead; `host` ("127.0.0.1", "::1") is the TCP address.  `env` (dict) is passed to handlers with -E, as is
    RUNTIME_DIRECTORY.  The activator's and fd-3 handlers' stdout/stderr go to
    self.log (a file).  stop() ends the activator and every handler by pid.
    """

    def __init__(self, args, inetd=False, port=None, unix=None, env=None, binary=None, start=True, accept=True,
                 host="127.0.0.1"):
        self.args = [str(a) for a in args]
        self.host = host
        self.inetd = inetd
        self.accept = accept
        self.unix = unix
        self._fixed_port = port is not None
        self.port = None if unix else (port or free_port())
        self.env = dict(env or {})
        self.binary = binary
        self.proc = None
        self.log = tmpfile("activate", content=b"")
        self._seen = set()
        if start:
            self.start()

    @property
    def address(self):
        return self.unix if self.unix else (self.host, self.port)

    def start(self):
        for attempt in range(3):
            if self._start_once():
                return self
            self.port = free_port()  # lost a race for an auto-chosen port: another one
        raise AssertionError("systemd-socket-activate: no free port after 3 tries: %s" % self.log_text())

    def _start_once(self):
        tool = require_tool("systemd-socket-activate")
        listen = self.unix if self.unix else ("[%s]:%d" if ":" in self.host else "%s:%d") % (self.host, self.port)
        cmd = [tool, "-l", listen] + (["-a"] if self.accept else [])
        if self.inetd:
            cmd.append("--inetd")
        env = {"RUNTIME_DIRECTORY": runtime_dir()}
        env.update(self.env)
        for k, v in env.items():
            cmd += ["-E", "%s=%s" % (k, v)]
        cmd += [self.binary or sockmapd_path()] + self.args
        self.cmd = cmd
        log_offset = os.path.getsize(self.log)
        logf = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                         env=sockmapd_env(), start_new_session=True)
        finally:
            logf.close()
        _popen_pids.add(self.proc.pid)
        _register(self)
        deadline = time.monotonic() + scaled(10)
        while True:
            if self.proc.poll() is not None:
                text = self.log_text()[log_offset:]
                if "in use" in text and not self.unix and not self._fixed_port:
                    self.proc = None
                    return False
                raise AssertionError("systemd-socket-activate exited (%s): %s" % (self.proc.returncode, text))
            if (_unix_listening(self.unix, self.proc.pid) if self.unix
                    else _tcp_listening(self.port, self.proc.pid)):
                return True
            if time.monotonic() > deadline:
                raise AssertionError("systemd-socket-activate not listening after 10s: %s" % self.log_text())
            time.sleep(0.02)

    def client(self, timeout=5.0):
        return Client(self.address, timeout=timeout)

    def children(self):
        """Live handler pids (and their descendants)."""
        if self.proc is None:
            return []
        kids = proc_children(self.proc.pid)
        self._seen.update(kids)
        return kids

    def log_text(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        pids = set(self.children()) | self._seen
        stop_pid(self.proc.pid, grace=3.0, popen=self.proc)
        try:
            self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        pids.update(_pids_in_group(self.proc.pid))
        for pid in pids:
            stop_pid(pid, grace=2.0)
        self.proc = None
        _unregister(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------- sockmapd in each mode

MODES = ("pipe", "fd3", "inetd", "service", "listen")


class Served:
    """sockmapd -c CONFIG served in one of MODES; .session() opens a conversation with it.

    pipe: a process per session on pipes (PipeSession); fd3, inetd: systemd-socket-activate -a
    (a handler per connection), without or with --inetd; service: without -a (the Accept=no
    service: one process, its handlers); listen: sockmapd --listen 127.0.0.1:PORT.
    .address is (host, port) for the socket modes, None for pipe; .pid the listening process.
    Stopped after the case (or the suite, when started outside a case)."""

    def __init__(self, mode, config_path, args=(), env=None):
        if mode not in MODES:
            raise ValueError("mode %r: one of %s" % (mode, ", ".join(MODES)))
        self.mode, self.config, self.args, self.env = mode, config_path, [str(a) for a in args], env
        self.activator = self.proc = self.address = None
        if mode in ("fd3", "inetd", "service"):
            self.activator = SocketActivated(["-c", config_path] + self.args, inetd=mode == "inetd",
                                             accept=mode != "service", env=env)
            self.address = self.activator.address
        elif mode == "listen":
            for attempt in range(3):
                port = free_port()
                self.proc = spawn(config_path, ["--listen", "127.0.0.1:%d" % port] + self.args, env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
                if _wait_listening_or_exit(self.proc, port):
                    self.address = ("127.0.0.1", port)
                    break
            else:
                raise AssertionError("sockmapd --listen: no free port after 3 tries")

    @property
    def pid(self):
        if self.activator is not None:
            return self.activator.proc.pid if self.activator.proc else None
        return self.proc.pid if self.proc else None

    def session(self, timeout=5.0):
        """A Client on the socket, or for pipe a PipeSession (a process of its own); both .ask()."""
        if self.mode == "pipe":
            return PipeSession(self.config, self.args, env=self.env, timeout=timeout)
        return Client(self.address, timeout=timeout)

    def stop(self):
        if self.activator is not None:
            self.activator.stop()
        if self.proc is not None:
            stop_pid(self.proc.pid, grace=5.0, popen=self.proc)


def _wait_listening_or_exit(proc, port):
    """True once `proc` listens on `port`; False if it exited because the port was taken."""
    deadline = time.monotonic() + scaled(10)
    while not _tcp_listening(port, proc.pid):
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")
            if "in use" in err:
                return False
            raise AssertionError("sockmapd --listen exited (%s): %s" % (proc.returncode, err[-2000:]))
        if time.monotonic() > deadline:
            raise AssertionError("sockmapd --listen not listening on %d after %gs" % (port, scaled(10)))
        time.sleep(0.02)
    return True


def serve(mode, config_path, args=(), env=None):
    """Served(mode, config_path, args, env): sockmapd in one of MODES."""
    return Served(mode, config_path, args, env)


__all__ += ["MODES", "Served", "serve"]


# ---------------------------------------------------------------- Postfix's client

def postfix_dir():
    """A Postfix config directory of the caller's own, for `postmap -c DIR`: a minimal main.cf, an empty master.cf.

    Postfix's tools read DIR/main.cf; a machine where Postfix was installed
    with debconf's "No configuration" has no /etc/postfix/main.cf at all."""
    d = tmpdir("postfix")
    with open(os.path.join(d, "main.cf"), "w") as f:
        f.write("compatibility_level = 3.6\n"
                "inet_interfaces = loopback-only\n")
    open(os.path.join(d, "master.cf"), "w").close()  # postconf reads it too
    return d


def postmap(pdir, args, stdin=None, timeout=30):
    """(status, stdout, stderr) of `postmap -c pdir ARGS...`, the streams as text."""
    r = subprocess.run([require_tool("postmap"), "-c", pdir] + list(args), input=stdin,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=scaled(timeout))
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def postmap_outcome(rc, out, err):
    """What one `postmap -q KEY TABLE` said: ("found", value), ("notfound", "") or ("error", stderr).

    postmap exits 1 both for "not found" and for a fatal error (a missing
    main.cf, a refused connection, a TEMP or PERM reply): only an empty
    stderr makes exit 1 a "not found"."""
    if err:
        return "error", err.strip()
    if rc == 0 and out:
        return "found", out.rstrip("\n")
    if rc == 1 and not out:
        return "notfound", ""
    return "error", "exit status %d, output %r" % (rc, out)


# ---------------------------------------------------------------- MariaDB

class SqlError(AssertionError):
    pass


class MariaDB:
    """A throwaway mariadbd: temp datadir, unix socket, 127.0.0.1:port, run as the current user.

    db = MariaDB(); db.start(); db.load_fixtures()   (or: with MariaDB(fixtures=True) as db:)
    Attributes: port, socket, datadir, dir, error_log, pid, host_entry ("127.0.0.1:PORT"),
    unix_entry ("unix:/path"), init_seconds, startup_seconds (last start).
    Users (created at first start): root (no password, unix socket), sockmapd/sockpw
    (SELECT on dbmail, mail, other; from localhost, 127.0.0.1, ::1, %), noaccess/nopw
    (no privileges).  The port is kept for restarts.
    """

    APP_USER = "sockmapd"
    APP_PASSWORD = "sockpw"
    FIXTURE_DBS = ("dbmail", "mail", "other")

    def __init__(self, port=None, max_connections=None, extra_args=(), fixtures=False, start=False,
                 name="mariadb"):
        self.dir = tmpdir(name + "-")
        self.datadir = os.path.join(self.dir, "data")
        self.socket = os.path.join(self.dir, "mysqld.sock")
        self.error_log = os.path.join(self.dir, "error.log")
        self.port = port
        self.max_connections = max_connections
        self.extra_args = list(extra_args)
        self.fixtures = fixtures
        self.proc = None
        self.paused = False
        self.init_seconds = None
        self.startup_seconds = None
        self._users_done = False
        if start:
            self.start()

    # -- properties
    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def host_entry(self):
        return "127.0.0.1:%d" % self.port

    @property
    def unix_entry(self):
        return "unix:" + self.socket

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def keep_for_suite(self):
        """Keep this server across tests (stopped at exit)."""
        self._scope = "suite"
        return self

    # -- life cycle
    def _initialise(self):
        """A fresh datadir: a copy of the one mariadb-install-db made first in this run (TEST_CACHE_DIR,
        set by tests/lib/harness_pytest.py for a pytest run and its workers), else its own."""
        t0 = time.monotonic()
        cache = os.environ.get("TEST_CACHE_DIR")
        if cache and os.path.isdir(cache):
            template = os.path.join(cache, "mariadb-datadir")
            with open(os.path.join(cache, "mariadb-datadir.lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # one install-db, the other workers wait for it
                if not os.path.isdir(template):
                    shutil.rmtree(template + ".new", ignore_errors=True)
                    self._install_db(template + ".new", self.dir)
                    os.rename(template + ".new", template)
            shutil.copytree(template, self.datadir, symlinks=True)
        else:
            self._install_db(self.datadir, self.dir)
        self.init_seconds = time.monotonic() - t0

    def _install_db(self, datadir, tmp):
        cmd = [require_tool("mariadb-install-db"), "--no-defaults", "--datadir=" + datadir,
               "--auth-root-authentication-method=normal", "--skip-test-db",
               "--skip-name-resolve",
               # Its own temp files beside the datadir: bootstraps running at
               # the same time (other suites, other checkouts) share no /tmp.
               "--tmpdir=" + tmp] + self._innodb_args()
        if os.geteuid() == 0:
            cmd.append("--user=root")
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=scaled(120))
        if r.returncode != 0:
            raise AssertionError("mariadb-install-db failed (%d): %s" % (r.returncode, r.stdout.decode(errors="replace")[-3000:]))

    @staticmethod
    def _innodb_args():
        return ["--innodb-buffer-pool-size=16M", "--innodb-log-file-size=4M",
                "--innodb-log-buffer-size=1M", "--skip-log-bin"]

    def _command(self):
        cmd = [require_tool("mariadbd"), "--no-defaults"]
        if os.geteuid() == 0:
            cmd.append("--user=root")
        cmd += ["--datadir=" + self.datadir, "--socket=" + self.socket, "--port=%d" % self.port,
                "--bind-address=127.0.0.1", "--skip-name-resolve", "--pid-file=" + os.path.join(self.dir, "mysqld.pid"),
                "--log-error=" + self.error_log, "--tmpdir=" + self.dir,
                "--innodb-flush-log-at-trx-commit=2", "--innodb-doublewrite=0",
                "--performance-schema=OFF", "--loose-feedback=OFF",
                "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci"]
        cmd += self._innodb_args()
        if self.max_connections is not None:
            cmd.append("--max-connections=%d" % self.max_connections)
        return cmd + self.extra_args

    def start(self, timeout=60):
        if self.running():
            return self
        if not os.path.isdir(os.path.join(self.datadir, "mysql")):
            self._initialise()
        chosen = self.port is not None
        for attempt in range(3):
            if not chosen:
                self.port = free_port()
            log_offset = os.path.getsize(self.error_log) if os.path.exists(self.error_log) else 0
            t0 = time.monotonic()
            self.proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _popen_pids.add(self.proc.pid)
            _register(self)
            self.paused = False
            try:
                self._wait_ready(scaled(timeout))
            except AssertionError:
                text = self._log_since(log_offset)
                self.kill()
                if not chosen and "Address already in use" in text and attempt < 2:
                    continue
                raise AssertionError("mariadbd did not start: %s" % text[-3000:])
            self.startup_seconds = time.monotonic() - t0
            break
        if not self._users_done:
            self._create_users()
            self._users_done = True
        if self.fixtures and not getattr(self, "_fixtures_loaded", False):
            self.load_fixtures(None if self.fixtures is True else self.fixtures)
            self._fixtures_loaded = True
        return self

    def _log_since(self, offset):
        try:
            with open(self.error_log, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("mariadbd exited with %s" % self.proc.returncode)
            if self._greets():
                return
            time.sleep(0.03)
        raise AssertionError("mariadbd not ready after %gs" % timeout)

    def _greets(self):
        if not _tcp_listening(self.port, self.proc.pid):
            return False
        for family, addr in ((socket.AF_UNIX, self.socket), (socket.AF_INET, ("127.0.0.1", self.port))):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.settimeout(1.0)
            try:
                s.connect(addr)
                if len(s.recv(4)) < 4:  # the server's handshake packet header
                    return False
            except OSError:
                return False
            finally:
                s.close()
        return True

    def _create_users(self):
        stmts = []
        for user, pw in ((self.APP_USER, self.APP_PASSWORD), ("noaccess", "nopw")):
            for host in ("localhost", "127.0.0.1", "::1", "%"):
                stmts.append("CREATE USER IF NOT EXISTS '%s'@'%s' IDENTIFIED BY '%s';" % (user, host, pw))
                if user == self.APP_USER:
                    for dbname in self.FIXTURE_DBS:
                        stmts.append("GRANT SELECT ON `%s`.* TO '%s'@'%s';" % (dbname, user, host))
        stmts.append("FLUSH PRIVILEGES;")
        self.sql("\n".join(stmts))

    def stop(self):
        """SIGTERM (SIGKILL after 30s) and wait."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            stop_pid(self.proc.pid, grace=scaled(30), popen=self.proc)
        self.proc.wait()
        self.paused = False
        _unregister(self)

    def kill(self):
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.paused = False
        _unregister(self)

    def pause(self):
        """SIGSTOP: connections hang (accepted by the kernel, never answered).
        Returns once every server thread has stopped (SIGSTOP is asynchronous)."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True
        wait_stopped(self.proc.pid)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def restart(self):
        """stop() and start() on the same port and datadir."""
        self.stop()
        return self.start()

    # -- SQL
    def client_argv(self, user="root", password=None, db=None, tcp=False):
        """argv for the `mariadb` client (batch mode, no column names)."""
        cmd = [require_tool("mariadb"), "--no-defaults", "--batch", "--skip-column-names",
               "--default-character-set=utf8mb4", "--user=" + user]
        if password is not None:
            cmd.append("--password=" + password)
        if tcp:
            cmd += ["--protocol=TCP", "--host=127.0.0.1", "--port=%d" % self.port]
        else:
            cmd += ["--protocol=SOCKET", "--socket=" + self.socket]
        if db:
            cmd.append("--database=" + db)
        return cmd

    def sql(self, text, db=None, user="root", password=None, tcp=False, timeout=60):
        """Run SQL statements with the mariadb client (root over the unix socket by default); stdout."""
        r = subprocess.run(self.client_argv(user, password, db, tcp), input=to_bytes(text),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=scaled(timeout))
        if r.returncode != 0:
            raise SqlError("mariadb client failed (%d): %s" % (r.returncode, r.stderr.decode(errors="replace").strip()))
        return r.stdout.decode("utf-8", "replace")

    def app_sql(self, text, db=None):
        """SQL as the sockmapd user over TCP, as sockmapd connects."""
        return self.sql(text, db=db, user=self.APP_USER, password=self.APP_PASSWORD, tcp=True)

    def load_fixtures(self, path=None):
        with open(path or FIXTURES_SQL, "rb") as f:
            return self.sql(f.read())

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return "<MariaDB port=%s pid=%s>" % (self.port, self.pid)


_shared_db = None


def shared_mariadb():
    """One MariaDB with the fixtures for the whole suite (started on first use, stopped at exit).

    Tests that stop, kill or pause a server should start their own MariaDB instead.
    """
    global _shared_db
    if _shared_db is None or not _shared_db.running():
        if _shared_db is None:
            _shared_db = MariaDB(fixtures=True).keep_for_suite()
        _shared_db.start()
    return _shared_db


# ---------------------------------------------------------------- config

# The maps every test config carries (tables in tests/fixtures.sql).
FIXTURE_MAPS = [
    {"service": "recipient", "database": "dbmail", "table": "dbmail_aliases",
     "key": "alias", "value": "deliver_to"},
    {"service": "exists", "database": "dbmail", "table": "recipients", "key": "address"},
    {"service": "sender", "database": "dbmail", "table": "sender_access",
     "key": "sender", "value": "action", "reason": "reason"},
    {"service": "transport", "database": "dbmail", "table": "transport",
     "key": "domain", "value": "nexthop"},
    {"service": "awkward", "database": "dbmail", "table": "awkward", "key": "k", "value": "v"},
    {"service": "othermap", "database": "other", "table": "things", "key": "name", "value": "val"},
]


_fixture_replies = None


def fixture_replies(*maps):
    """[(map, key, reply)]: what the fixtures answer (tests/fixtures.replies.json, beside fixtures.sql).

    Of the maps named, or of every map; map and key as str (keys may hold NUL,
    quotes, UTF-8), reply as bytes, in the table's order.
    """
    global _fixture_replies
    if _fixture_replies is None:
        with open(FIXTURE_REPLIES_JSON, encoding="utf-8") as f:
            _fixture_replies = [(m, k, r.encode("utf-8")) for m, k, r in json.load(f)["replies"]]
    return [row for row in _fixture_replies if not maps or row[0] in maps]


def fixture_reply(mapname, key):
    """The reply the fixtures give for `key` in `mapname` (bytes); KeyError when the table lacks it."""
    for m, k, r in fixture_replies(mapname):
        if k == key:
            return r
    raise KeyError("tests/fixtures.replies.json has no row for %s %r" % (mapname, key))


def _merge(section, changes):
    out = dict(section)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def base_config(db=None, **overrides):
    """A config dict (doc/DESIGN.md, "Configuration") for the fixture maps.

    `db`: a MariaDB, a host entry string ("127.0.0.1:3306", "unix:/path"), a
    list of them, or None (a closed local port: every lookup must be TEMP).
    Overrides: sysconfig={...}, database={...} are merged into their section
    (a None value deletes the key); postmaps=[...] replaces the maps;
    extra_maps=[...] appends maps.
    """
    if isinstance(db, MariaDB):
        hosts = [db.host_entry]
    elif isinstance(db, str):
        hosts = [db]
    elif isinstance(db, (list, tuple)):
        hosts = [h.host_entry if isinstance(h, MariaDB) else h for h in db]
    else:
        hosts = ["127.0.0.1:%d" % closed_port()]
    cfg = {
        "sysconfig": {
            "logfile": os.path.join(tmpdir("log"), "sockmapd.log"),
            "loglevel": "debug",
            "idle_timeout": 30,
            "max_session": 300,
        },
        "database": {
            "host": hosts,
            "username": MariaDB.APP_USER,
            "password": MariaDB.APP_PASSWORD,
            "connect_timeout": 2,
            "read_timeout": 5,
            "write_timeout": 5,
            "retry_interval": 30,
        },
        "postmaps": json.loads(json.dumps(FIXTURE_MAPS)),
    }
    for section in ("sysconfig", "database"):
        if section in overrides:
            cfg[section] = _merge(cfg[section], overrides.pop(section))
    if "postmaps" in overrides:
        cfg["postmaps"] = overrides.pop("postmaps")
    if "extra_maps" in overrides:
        cfg["postmaps"] += overrides.pop("extra_maps")
    if overrides:
        raise TypeError("base_config: unknown overrides %s" % sorted(overrides))
    return cfg


def write_config(path, cfg):
    """Write a config dict as JSON (or text/bytes as is) to `path`, mode 0600; returns path."""
    if isinstance(cfg, dict):
        data = (json.dumps(cfg, indent=2) + "\n").encode()
    else:
        data = to_bytes(cfg)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def temp_config(cfg):
    """write_config() to a new temp file; returns its path."""
    return write_config(tmpfile("config") + ".json", cfg)


def read_log(cfg):
    """Text of a config's sysconfig.logfile ('' if absent)."""
    if isinstance(cfg, str):
        with open(cfg) as f:
            cfg = json.load(f)
    path = cfg.get("sysconfig", {}).get("logfile")
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


# ---------------------------------------------------------------- reliability helpers
#
# Used by the fault, replication, TLS, hostile-client, load, secrets and
# memory-checker suites.  Additions only: nothing above depends on them.

def status_word(payload):
    """The status word of a reply payload: b"OK", b"NOTFOUND", b"TEMP", ..."""
    return bytes(payload).split(b" ", 1)[0]


class PipeSession:
    """One sockmapd session over pipes (fd 0 / fd 1) kept open across requests.

    s = PipeSession(cfg); s.ask("recipient", "a@b") -> payload; s.close() -> exit status.
    `prefix` runs the binary under another program (e.g. valgrind argv).
    Stopped after the test (or at exit) if still running.
    """

    def __init__(self, config_path, args=(), env=None, prefix=(), stderr=None, timeout=10.0):
        self.timeout = scaled(timeout)
        self.stderr_path = stderr or tmpfile("stderr", content=b"")
        errf = open(self.stderr_path, "ab")
        try:
            self.popen = subprocess.Popen(list(prefix) + _argv(config_path, args), stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=errf, env=sockmapd_env(env))
        finally:
            errf.close()
        self._entry = _Proc(self.popen)
        self.buf = b""
        self.eof = False

    @property
    def pid(self):
        return self.popen.pid

    def send_raw(self, data):
        self.popen.stdin.write(to_bytes(data))
        self.popen.stdin.flush()

    def read_reply(self, timeout=None):
        """The next reply payload; EOFError if sockmapd closed its output first."""
        import select
        deadline = time.monotonic() + (scaled(timeout) if timeout is not None else self.timeout)
        fd = self.popen.stdout.fileno()
        while True:
            r = parse_netstring(self.buf)
            if r is not None:
                payload, self.buf = r
                return payload
            if self.eof:
                raise EOFError("sockmapd closed its output (pending %r)" % self.buf[:60])
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no reply within %gs" % (scaled(timeout) if timeout is not None else self.timeout))
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.eof = True
                self.buf += chunk

    def ask(self, mapname, key, timeout=None):
        self.send_raw(encode(to_bytes(mapname) + b" " + to_bytes(key)))
        return self.read_reply(timeout)

    def ask_timed(self, mapname, key, timeout=None):
        """(payload, seconds the reply took)."""
        started = time.monotonic()
        payload = self.ask(mapname, key, timeout)
        return payload, time.monotonic() - started

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def close(self, timeout=10.0):
        """Close stdin (EOF), wait for the exit; returns the exit status (AssertionError if it hangs)."""
        try:
            self.popen.stdin.close()
        except OSError:
            pass
        try:
            rc = self.popen.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            self._entry.stop()
            raise AssertionError("sockmapd did not exit within %gs after EOF" % scaled(timeout))
        finally:
            try:
                self.popen.stdout.close()
            except OSError:
                pass
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.popen.poll() is None:
            self.close()


class PeakRss:
    """Samples the peak RSS (VmHWM, kB) of processes in a background thread.

    `pids`: a pid, a list, or a callable returning the current pids (e.g.
    SocketActivated.children).  .peak_kb is the highest value seen for any
    one process; .per_pid maps pid -> its highest value.  Stop with .stop().
    """

    def __init__(self, pids, interval=0.005):
        self._source = pids if callable(pids) else (lambda: [pids] if isinstance(pids, int) else list(pids))
        self.interval = interval
        self.per_pid = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self):
        for pid in self._source():
            v = vm_hwm_kb(pid)
            if v:
                self.per_pid[pid] = max(self.per_pid.get(pid, 0), v)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:
                pass
            self._stop.wait(self.interval)

    @property
    def peak_kb(self):
        return max(self.per_pid.values()) if self.per_pid else 0

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        return self.peak_kb


class FakeDbHost:
    """A TCP listener on 127.0.0.1 that accepts connections and never says a word.

    A database host that hangs in the handshake.  .port, .host_entry,
    .accepted (count); stop() closes everything (after the test by default).
    """

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._conns = []
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        _register(self)

    @property
    def host_entry(self):
        return "127.0.0.1:%d" % self.port

    def _accept(self):
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)

    def stop(self):
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass
        self._thread.join(2)
        _unregister(self)


def sql_rows(db, text, timeout=60):
    """Rows of the last result of `text` (root over the unix socket) as dicts keyed by column name."""
    cmd = [a for a in db.client_argv() if a != "--skip-column-names"]
    r = subprocess.run(cmd, input=to_bytes(text), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=scaled(timeout))
    if r.returncode != 0:
        raise SqlError("mariadb client failed (%d): %s" % (r.returncode, r.stderr.decode(errors="replace").strip()))
    lines = r.stdout.decode("utf-8", "replace").splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def time_prefix():
    """argv prefix running sockmapd under GNU time; (prefix, file that will hold its max RSS in kB).

    A child's ru_maxrss counts the RSS of the Python process that forked it (kept across exec):
    GNU time's %M counts only its own small footprint besides sockmapd's."""
    out = tmpfile("maxrss")
    return [require_tool("time"), "-f", "%M", "-o", out], out


def maxrss_from(path, timeout=5):
    """The %M figure GNU time wrote (waits for the file)."""
    def read():
        try:
            with open(path) as f:
                lines = f.read().split()
            return int(lines[-1]) if lines and lines[-1].isdigit() else None
        except OSError:
            return None
    return wait_for(read, timeout=timeout, msg="GNU time's report in %s" % path)


def percentile(values, p):
    """The p-th percentile (0..100) of `values`, nearest-rank."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(-(-len(ordered) * p // 100)))
    return ordered[min(rank, len(ordered)) - 1]


def wait_stopped(pid, timeout=5.0):
    """Wait until every thread of `pid` is stopped (state T): SIGSTOP takes effect asynchronously,
    and a thread still running may answer one more request."""
    def stopped():
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except OSError:
            return False
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                    stat = f.read()
            except OSError:
                continue  # a thread that just ended
            if stat[stat.rfind(")") + 2:].split()[0] not in ("T", "t"):
                return False
        return True
    return wait_for(stopped, timeout=timeout, interval=0.005, msg="process %d stopped" % pid)


__all__ += ["status_word", "PipeSession", "PeakRss", "FakeDbHost", "sql_rows", "percentile", "wait_stopped",
            "time_prefix", "maxrss_from"]


def expect(s, mapname, cases):
    """cases: [(key, expected payload)] asked of a PipeSession; all compared at once so one failure shows them all."""
    got = [(k, s.ask(mapname, k)) for k, _ in cases]
    want = [(k, to_bytes(v)) for k, v in cases]
    eq(got, want, "map %s" % mapname)


def global_status(db, name):
    """A MariaDB global status counter, e.g. Com_stmt_execute."""
    return int(db.sql("SHOW GLOBAL STATUS LIKE '%s'" % name).split()[1])


__all__ += ["expect", "global_status"]


# ---------------------------------------------------------------- a network of the test's own

_NETNS_PROBE = r"""
import socket, subprocess, sys, time
listen, timeout, sources, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(","), sys.argv[4:]
port = int(listen.rsplit(":", 1)[1])
server = subprocess.Popen(["systemd-socket-activate", "-l", listen, "-a", "-E", "RUNTIME_DIRECTORY"] + argv,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def listening():
    with open("/proc/net/tcp") as f:  # this namespace's sockets
        return any(l.split()[1].endswith(":%04X" % port) and l.split()[3] == "0A" for l in f.readlines()[1:])
try:
    deadline = time.monotonic() + timeout
    while not listening():
        if time.monotonic() > deadline or server.poll() is not None:
            sys.exit("not listening on " + listen)
        time.sleep(0.02)
    for src in sources:
        s = socket.socket()
        s.settimeout(timeout / 4)
        s.bind((src, 0))
        try:
            s.connect((listen.rsplit(":", 1)[0], port))
            s.sendall(b"10:nosuch key,")
            print(src, s.recv(100).decode())
        except OSError as e:
            print(src, type(e).__name__)
        s.close()
finally:
    server.terminate()
    server.wait(timeout)
"""


def in_network_namespace(setup, listen, sources, args, timeout=8):
    """sockmapd ARGS behind systemd-socket-activate -a on `listen` ("127.0.0.1:2224"), in a network
    namespace of its own (unshare --net, as root): a loopback that is up and nothing else, so addresses,
    ports and firewall rules touch no other test.  The shell lines `setup` run first (an address, nft
    rules); then a client from each of `sources` sends "nosuch key".  Returns (exit status, lines
    "SOURCE REPLY" or "SOURCE ErrorName" such as TimeoutError); a connect waits scaled(timeout)/4."""
    script = "set -e\nip link set lo up\n" + setup + '\nexec %s -c "$PROBE" "$@"\n' % sys.executable
    argv = [listen, scaled(timeout), ",".join(sources), sockmapd_path()] + [str(a) for a in args]
    r = subprocess.run([require_tool("unshare"), "--net", "bash", "-c", script, "netns"] + [str(a) for a in argv],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=sockmapd_env({"PROBE": _NETNS_PROBE}),
                       timeout=scaled(timeout) * 4)
    return r.returncode, r.stdout.decode(errors="replace").splitlines()


__all__ += ["in_network_namespace"]


# ---------------------------------------------------------------- listeners and unit files

def listening_on(port):
    """Local addresses (hex, as in /proc/net/tcp*) with a socket listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in (l.split() for l in f.readlines()[1:]):
                if row[1].endswith(":%04X" % port) and row[3] == "0A":
                    found.append(row[1])
    return found


def unit_settings(path):
    """{(section, key): [values]} of a unit file."""
    out, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            k, _, v = line.partition("=")
            out.setdefault((section, k.strip()), []).append(v.strip())
    return out
