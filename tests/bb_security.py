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

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F403

pytestmark = pytest.mark.root  # switches to the user nobody for a local user's side

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


# ---------------------------------------------------------------- one request, how many queries
# The second review (issue 29): a key of 255 dots made 256 queries, and 40
# of them pipelined 10,240.  Queries are counted in MariaDB's general log.

BOUND = 36           # mapkey.hh max_candidate_keys: the key, its bare form, 32 labels, user@ of both
BUDGET = 2048        # dblookup.hh QueryBudget: a session's executions sent ahead of the replies
BUDGET_PER_SECOND = 1024

SEARCH_MAPS = [
    {"service": "access", "database": "mail", "table": "access_rules", "key": "k", "value": "action",
     "reason": "reason", "search": "access", "strip_extension": "+"},
    {"service": "transport_search", "database": "mail", "table": "transport_rules", "key": "k",
     "value": "nexthop", "search": "transport", "strip_extension": "+"},
]


class GeneralLog:
    """The shared MariaDB's general log, on for one test: a line per statement executed."""

    def __init__(self, db):
        self.db = db
        self.path = tmpfile("general") + ".log"
        db.sql("SET GLOBAL general_log_file = '%s'; SET GLOBAL general_log = 1;" % self.path)
        defer(self.off)
        self.mark()

    def off(self):
        self.db.sql("SET GLOBAL general_log = 0;")

    def _lines(self):
        try:
            with open(self.path, "rb") as f:
                return f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []

    def mark(self):
        """Count from here on."""
        self.start = len(self._lines())

    def executed(self):
        """The statements executed on the map tables since mark(): the text of each Execute line."""
        return [l for l in self._lines()[self.start:]
                if re.search(r"\sExecute\t", l) and ("access_rules" in l or "transport_rules" in l)]


def deep_key(i, labels=32):
    """The key with the most candidates (BOUND): an extension, and a domain of `labels` labels, all marked i."""
    return "u%d+x@%st%d" % (i, "a." * (labels - 1), i)


@test(timeout=120)
def one_request_never_makes_more_queries_than_the_bound():
    db = shared_mariadb()
    glog = GeneralLog(db)
    cfg = config(sysconfig={"loglevel": "info"}, extra_maps=SEARCH_MAPS)
    dots = "u@" + "." * 255
    cases = [
        ("transport_search", dots, b"NOTFOUND ", 2),            # the review's 256: the key, the name
        ("access", dots, b"NOTFOUND ", 3),                       # its 130: the key, the name, u@
        ("access", deep_key(0), b"NOTFOUND ", BOUND),            # the most one request tries
        ("transport_search", deep_key(0), b"NOTFOUND ", BOUND - 2),
        ("access", deep_key(0, 33), b"PERM domain has too many labels to search", 0),
        ("access", "u@" + "x" * 64 + ".bad.example", b"PERM domain label too long to search", 0),
        ("access", "x@sub..bad.example", b"NOTFOUND ", 3),      # not a domain: no parents
        ("access", "x@mail.bad.example", b"OK REJECT domain blacklisted", 3),
    ]
    worst = 0
    for mapname, key, want, queries in cases:
        glog.mark()
        rc, out, err = run_pipe(cfg, encode("%s %s" % (mapname, key)))
        eq(rc, 0, err)
        eq(replies(out), [want], "%s %s" % (mapname, key[:40]))
        wait_for(lambda: len(glog.executed()) >= queries, timeout=5, msg="%d queries logged" % queries)
        time.sleep(0.2)
        n = len(glog.executed())
        eq(n, queries, "queries for %s %s" % (mapname, key[:40]))
        worst = max(worst, n)
    print("    most queries for one request: %d (bound %d)" % (worst, BOUND))


def per_request(executed, n):
    """How many of `executed` each deep_key(i) made: every key it tries carries its marks."""
    counts = [0] * n
    for line in executed:
        m = re.search(r"'u(\d+)(?:\+x)?@", line) or re.search(r"t(\d+)'", line)
        ok(m, "a query of no request: " + line)
        counts[int(m.group(1))] += 1
    return counts


@test(timeout=120)
def pipelined_requests_share_one_query_budget():
    """Two hundred of the costliest requests in one write: each within the bound, all within the budget.

    The budget refills at BUDGET_PER_SECOND: a database slower than that
    answers every request, which is then no sign of a missing budget.
    """
    db = shared_mariadb()
    glog = GeneralLog(db)
    cfg = config(sysconfig={"loglevel": "info"}, extra_maps=SEARCH_MAPS)
    n = 200
    warned = 0
    stream = b"".join(encode("access %s" % deep_key(i)) for i in range(n))
    for how in ("pipe", "socket"):
        glog.mark()
        started = time.monotonic()
        if how == "pipe":
            rc, out, err = run_pipe(cfg, stream, timeout=60)
            eq(rc, 0, err)
            got = replies(out)
        else:
            with SocketActivated(["-c", cfg]) as sa:
                c = sa.client(timeout=scaled(30))
                c.send_raw(stream)
                got = [c.read_reply(30) for _ in range(n)]
                c.close()
        secs = time.monotonic() - started
        eq(len(got), n)
        answered = got.count(b"NOTFOUND ")
        temp = got.count(b"TEMP query budget spent: read the replies before sending more")
        eq(answered + temp, n, "every reply NOTFOUND or the budget's TEMP: %r" % set(got))
        if BUDGET + BUDGET_PER_SECOND * secs < (n - 1) * BOUND:
            ok(temp > 0, "%d requests of %d queries each, all answered in %.2fs: no budget" % (n, BOUND, secs))
        else:
            print("    %s: the database took %.2fs, the budget's refill covered every request" % (how, secs))
        warned += temp > 0
        wait_for(lambda: len(glog.executed()) >= answered * BOUND, timeout=10, msg="the queries logged")
        time.sleep(0.3)
        executed = glog.executed()
        counts = per_request(executed, n)
        eq(max(counts), BOUND, "%s: the most queries one request made" % how)
        ok(len(executed) <= BUDGET + BUDGET_PER_SECOND * secs + BOUND,
           "%s: %d queries in %.2fs, past the budget" % (how, len(executed), secs))
        print("    %s: %d requests pipelined: %d answered, %d TEMP, %d queries in %.2fs (before: %d)"
              % (how, n, answered, temp, len(executed), secs, n * BOUND))
    text = read_log(cfg)
    eq(text.count("spent the session's query budget"), warned, "warned once per session: " + text[-2000:])


@test(timeout=60)
def a_client_that_waits_for_each_reply_is_never_out_of_budget():
    cfg = config(sysconfig={"loglevel": "info"}, extra_maps=SEARCH_MAPS)
    with SocketActivated(["-c", cfg]) as sa:
        with sa.client(timeout=scaled(10)) as c:
            for i in range(2 * BUDGET // BOUND):  # twice the budget, a request at a time
                eq(c.ask("access", deep_key(i % 100)), b"NOTFOUND ")
    not_contains(read_log(cfg), "query budget")


# ---------------------------------------------------------------- logs a client cannot flood

@test(timeout=60)
def five_thousand_malformed_requests_make_a_few_log_lines():
    cfg = config(sysconfig={"loglevel": "info"})
    rc, out, err = run_pipe(cfg, b"1:x," * 5000 + encode("othermap ping"))
    eq(rc, 0, err)
    got = replies(out)
    eq(len(got), 5001)
    eq(set(got[:5000]), {b"PERM request without map name and key"})
    eq(got[-1], b"OK pong")
    lines = read_log(cfg).splitlines()
    print("    %d log lines for 5,000 malformed requests: %s" % (len(lines), [l.split(": ", 2)[-1][:70] for l in lines]))
    ok(len(lines) <= 3, "%d lines" % len(lines))
    eq(len([l for l in lines if "request without map name and key" in l]), 1)
    contains([l for l in lines if "session end" in l][0], "5000 errors, 5000 malformed, ")


@test(timeout=120)
def the_address_past_256_decoys_is_logged():
    """Decoys from one network share a line; 256 networks fill the refusal log's table, the 257th's address is named."""
    cfg = config(sysconfig={"loglevel": "info", "allow": ["192.0.2.1"]})
    port = free_port()
    p = listen(cfg, port)
    def refused(source):
        s = connect_from(source, port)
        try:
            eq(s.recv(16), b"", "closed without a word")
        except ConnectionResetError:
            pass
        s.close()
    for i in range(300):
        refused("127.0.0.%d" % (i % 250 + 2))   # one /24: one line, the rest counted
    for i in range(255):
        refused("127.1.%d.1" % i)                # 255 more networks: the table is full
    refused("127.9.9.9")
    wait_for(lambda: "127.9.9.9" in read_log(cfg), timeout=10, msg="the 257th network's address in the log")
    eq(stop(p), 0)
    text = read_log(cfg)
    eq(text.count("refused a connection from"), 257)
    contains(text, "refused a connection from 127.9.9.9: not in sysconfig.allow (one line a minute")
    print("    %d refusals from 556 addresses of 257 networks: %d log lines" % (556, text.count("refused a connection")))


# ---------------------------------------------------------------- stopping

@test(timeout=90)
def a_stop_with_50_waiting_starts_no_handler_past_the_cap():
    cfg = config(sysconfig={"loglevel": "info"})
    port = free_port()
    p = listen(cfg, port, "--max-children", "2")
    held = []
    for _ in range(2):
        c = Client(port)
        defer(c.close)
        eq(c.ask("othermap", "ping"), b"OK pong")
        held.append(c)
    waiting = [socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) for _ in range(50)]
    for s in waiting:
        defer(s.close)
        s.sendall(encode("othermap ping"))
    time.sleep(0.3)
    eq(stop(p), 0)
    started = [l for l in read_log(cfg).splitlines() if re.search(r"handler \d+ for .* started", l)]
    eq(len(started), 2, "handlers started: %r" % started)


if __name__ == "__main__":
    main()
