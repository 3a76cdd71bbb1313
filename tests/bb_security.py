#!/usr/bin/python3
"""bb_security — what a local user or a network client can do, tried on the built binary.

Each case reproduces a finding of the security review (issue 21) and
checks that it no longer works: the log file as root (links, forged
lines, the reload after the privilege drop), commands root runs beside
the handlers' failover state, core dumps of a process holding the
password, and the per-peer limit of the accept loop.  The suite runs as
root and switches to the user "nobody" for the local user's side; run as
another user it fails.  Everything listens on 127.0.0.0/8 only.
"""

import os
import pwd
import re
import select
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F403

# A map name that, logged raw, appends a cron line and a line of its own.
FORGED_MAP = b"x\n*\t*\t*\t*\t*\troot\ttouch\t/tmp/pwned\n2026-01-01T00:00:00+0000\tsockmapd[1]:\terror:\t\x1b[2Jforged"


def nobody():
    if os.geteuid() != 0:
        raise AssertionError("bb_security needs root (it switches to nobody for a local user's side)")
    return pwd.getpwnam("nobody")


def config(**kw):
    return temp_config(base_config(shared_mariadb(), **kw))


def readable_config(**kw):
    """A config the user nobody can read (it holds the test database's password)."""
    path = config(**kw)
    os.chmod(path, 0o644)
    return path


def nobody_dir(prefix):
    """A directory that belongs to nobody, as the service user's own would."""
    d = tmpdir(prefix)
    os.chown(d, nobody().pw_uid, nobody().pw_gid)
    os.chmod(d, 0o750)
    return d


def wait_listening(port, proc, timeout=10):
    def up():
        if proc.poll() is not None:
            raise AssertionError("exited with %s: %s" % (proc.returncode, proc.stderr.read().decode(errors="replace")))
        return listening_on(port)
    wait_for(up, timeout=timeout, msg="listening on port %d" % port)


def listen(cfg, port, *extra):
    p = spawn(cfg, ["--listen", "127.0.0.1:%d" % port] + list(extra), stdin=subprocess.DEVNULL)
    wait_listening(port, p)
    return p


def stop(p):
    os.kill(p.pid, signal.SIGTERM)
    try:
        return p.wait(scaled(10))
    except subprocess.TimeoutExpired:
        raise AssertionError("sockmapd --listen did not stop within %gs" % scaled(10))


def ids(pid, which="Uid"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(which + ":"):
                return [int(x) for x in line.split()[1:]]
    raise AssertionError("no %s line for %d" % (which, pid))


def dumpable(pid):
    """The kernel gives /proc/PID of a non-dumpable process to root (proc(5))."""
    return os.stat("/proc/%d/status" % pid).st_uid != 0


class NobodyPipe:
    """sockmapd serving one connection on pipes, as the user nobody."""

    def __init__(self, cfg, env=None):
        self.popen = spawn_as(nobody(), cfg, env=env)
        self.buf = b""

    @property
    def pid(self):
        return self.popen.pid

    def ask(self, mapname, key):
        self.popen.stdin.write(encode(to_bytes(mapname) + b" " + to_bytes(key)))
        self.popen.stdin.flush()
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + scaled(10)
        while True:
            r = parse_netstring(self.buf)
            if r is not None:
                payload, self.buf = r
                return payload
            left = deadline - time.monotonic()
            ok(left > 0, "no reply within %gs" % scaled(10))
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError("sockmapd closed its output (exit %s)" % self.popen.wait(scaled(10)))
                self.buf += chunk

    def close(self):
        self.popen.stdin.close()
        return self.popen.wait(scaled(10))


# ---------------------------------------------------------------- the log file

@test(timeout=60)
def log_path_planted_link_is_not_followed_as_root():
    user = nobody()
    logdir = nobody_dir("logdir")  # the service user may write the log's directory
    target = tmpfile("root-only", content=b"root's own data\n", mode=0o600)
    logfile = os.path.join(logdir, "sockmapd.log")
    os.symlink(target, logfile)
    os.lchown(logfile, user.pw_uid, user.pw_gid)
    cfg = config(sysconfig={"run_as_user": "nobody", "logfile": logfile, "loglevel": "debug"})
    port = free_port()
    p = listen(cfg, port)
    with Client(port) as c:
        eq(c.ask(FORGED_MAP, b"k"), b"PERM unknown map")
        eq(c.ask("othermap", "ping"), b"OK pong")
    eq(stop(p), 0)
    with open(target, "rb") as f:
        eq(f.read(), b"root's own data\n", "the link's target is untouched")
    contains(p.stderr.read().decode(errors="replace"), "cannot open log file %s: it is a symbolic link" % logfile)


@test(timeout=60)
def log_file_belongs_to_run_as_user_survives_reload_and_has_no_forged_lines():
    user = nobody()
    logfile = os.path.join(tmpdir("logdir"), "sockmapd.log")  # root's directory
    # Readable by the user dropped to, who reads it again on the reload.
    cfg = readable_config(sysconfig={"run_as_user": "nobody", "logfile": logfile, "loglevel": "debug"})
    port = free_port()
    p = listen(cfg, port)
    st = os.stat(logfile)
    eq((st.st_uid, st.st_gid, st.st_mode & 0o777), (user.pw_uid, user.pw_gid, 0o640),
       "created before the drop, for the user dropped to")
    with Client(port) as c:
        eq(c.ask(FORGED_MAP, b"k"), b"PERM unknown map")
    os.kill(p.pid, signal.SIGHUP)
    wait_for(lambda: "reload: configuration read" in read_log(cfg), timeout=10, msg="reload logged")
    with Client(port) as c:
        eq(c.ask("othermap", "after-reload"), b"NOTFOUND ")
    wait_for(lambda: "after-reload" in read_log(cfg), timeout=10, msg="a lookup after the reload logged")
    eq(stop(p), 0)
    text = read_log(cfg)
    not_contains(text, "cannot open log file")
    not_contains(text, "\x1b")
    for line in text.splitlines():
        ok(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} sockmapd\[\d+\]: \w+: ", line),
           "a line sockmapd did not write: %r" % line)
    contains(text, "map x\\x0a*\\x09*\\x09")


# ---------------------------------------------------------------- failover state

@test(timeout=60)
def query_as_root_leaves_the_handlers_state_alone():
    user = nobody()
    rundir = nobody_dir("run")  # RuntimeDirectory=sockmapd, owned by the service user
    cfg = temp_config(base_config(None, sysconfig={"logfile": None}))  # no database: TEMP, a host marked down
    os.chmod(cfg, 0o644)
    rc, out, err = run_pipe(cfg, args=["--query", "recipient", "a@example.org"], env={"RUNTIME_DIRECTORY": rundir})
    eq(rc, 75, "TEMP: %r %r" % (out, err))
    eq(sorted(os.listdir(rundir)), [], "root's --query wrote nothing into the handlers' directory")
    rc, out, err = run_pipe(cfg, args=["--check-config"], env={"RUNTIME_DIRECTORY": rundir})
    eq(rc, 75, "--check-config: %r %r" % (out, err))
    eq(sorted(os.listdir(rundir)), [], "nor did --check-config")
    # The handlers still share their marks there.
    h = NobodyPipe(cfg, env={"RUNTIME_DIRECTORY": rundir})
    startswith(h.ask("recipient", "a@example.org"), b"TEMP ")
    eq(h.close(), 0)
    st = os.stat(os.path.join(rundir, "failover.state"))
    eq(st.st_uid, user.pw_uid, "the handler's state file")
    not_contains(h.popen.stderr.read().decode(errors="replace"), "unreadable")


# ---------------------------------------------------------------- core dumps

@test(timeout=60)
def handler_holding_the_password_is_not_dumpable():
    user = nobody()
    rundir = nobody_dir("run")
    h = NobodyPipe(readable_config(sysconfig={"logfile": None}), env={"RUNTIME_DIRECTORY": rundir})
    eq(h.ask("othermap", "ping"), b"OK pong")
    eq(ids(h.pid)[0], user.pw_uid)
    ok(not dumpable(h.pid), "a handler of nobody is dumpable: its core (or nobody's ptrace) shows the password")
    eq(h.close(), 0)
    # The administrator may ask for core dumps.
    h = NobodyPipe(readable_config(sysconfig={"logfile": None, "core_dumps": True}), env={"RUNTIME_DIRECTORY": rundir})
    eq(h.ask("othermap", "ping"), b"OK pong")
    ok(dumpable(h.pid), "core_dumps: true")
    eq(h.close(), 0)


@test(timeout=60)
def listen_handlers_follow_core_dumps_after_the_drop():
    user = nobody()
    for wanted in (False, True):
        cfg = config(sysconfig={"run_as_user": "nobody", "core_dumps": wanted})
        port = free_port()
        p = listen(cfg, port)
        with Client(port) as c:
            eq(c.ask("othermap", "ping"), b"OK pong")
            kids = proc_children(p.pid)
            eq(len(kids), 1)
            eq(ids(kids[0])[1], user.pw_uid)
            eq(dumpable(kids[0]), wanted, "handler, core_dumps %s" % wanted)
            eq(dumpable(p.pid), wanted, "accept loop, core_dumps %s" % wanted)
        eq(stop(p), 0)


# ---------------------------------------------------------------- a pipelined batch

SLOW_MAP = {"service": "slow", "database": "other", "query": "SELECT CONCAT(val, SLEEP(1)) FROM things WHERE name = %s"}


@test(timeout=90)
def batch_of_slow_lookups_from_a_vanished_client_is_cut_short():
    """The review's case: 30 requests to a map whose query takes 1 s, sent at once by a client that closed."""
    cfg = config(sysconfig={"max_session": 3, "loglevel": "info"}, extra_maps=[SLOW_MAP])
    with SocketActivated(["-c", cfg]) as sa:
        with socket.create_connection(("127.0.0.1", sa.port), timeout=scaled(10)) as s:
            s.sendall(b"".join(encode(b"slow ping") for _ in range(30)))
        wait_for(lambda: "session end" in read_log(cfg), timeout=20, msg="the session's end")
    line = [l for l in read_log(cfg).splitlines() if "session end" in l][0]
    m = re.search(r"session end \(([^)]*)\): (\d+) requests, .* (\d+) ms", line)
    ok(m, line)
    print("    %s" % line.split(": ", 2)[-1])
    ok(m.group(1) in ("connection lost", "session time limit"), line)
    ok(int(m.group(2)) <= 3, "answered %s of 30 for a client that had gone" % m.group(2))
    ok(int(m.group(3)) < scaled(5) * 1000, "the handler lived %s ms (max_session 3 s)" % m.group(3))


# ---------------------------------------------------------------- one client, every handler

def connect_from(source, port):
    """A connection to 127.0.0.1:port from the loopback address `source` (another host, as far as sockmapd sees)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(10), source_address=(source, 0))
    defer(s.close)
    return s


def ask_raw(s, request):
    s.sendall(encode(to_bytes(request)))
    buf = b""
    while True:
        r = parse_netstring(buf)
        if r is not None:
            return r[0]
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            chunk = b""  # closed with the request unread
        if not chunk:
            return None  # closed without a reply
        buf += chunk


@test(timeout=60)
def one_client_cannot_hold_every_handler():
    """Slow clients of one address (each sends a request now and then) hold at most --max-per-peer handlers."""
    cfg = config()
    port = free_port()
    p = listen(cfg, port, "--max-children", "4", "--max-per-peer", "2")
    slow = [connect_from("127.0.0.3", port) for _ in range(2)]
    for s in slow:
        eq(ask_raw(s, "othermap ping"), b"OK pong")
    for _ in range(3):
        eq(ask_raw(connect_from("127.0.0.3", port), "othermap ping"), None, "past the limit: closed at once")
    # The MTA, elsewhere, is served; so is another host, up to its own limit.
    with Client(port) as c:
        eq(c.ask("othermap", "ping"), b"OK pong")
    other = connect_from("127.0.0.4", port)
    eq(ask_raw(other, "othermap ping"), b"OK pong")
    other.close()
    text = read_log(cfg)
    eq(text.count("closing new connections from 127.0.0.3 (127.0.0.3:"), 1, "a flood is logged once: " + text)
    contains(text, "it has 2 handlers, the most --max-per-peer allows")
    # One of its connections ends: the address is served again.
    slow[0].close()
    wait_for(lambda: ask_raw(connect_from("127.0.0.3", port), "othermap ping") == b"OK pong", timeout=10,
             msg="served again once a connection of its ended")
    eq(stop(p), 0)


if __name__ == "__main__":
    main()
