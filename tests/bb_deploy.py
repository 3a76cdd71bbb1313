#!/usr/bin/python3
"""bb_deploy — sockmapd the way it is deployed, with the real programs on both ends.

Socket activation (fd 3 and --inetd) and the --listen accept loop with
concurrent clients against a real mariadbd; Postfix's own client (`postmap
-q`, one key and many keys on one connection); the shipped xinetd file under
the real xinetd; the systemd units (verify, security score <= 2.0); `make
install`/`uninstall` with DESTDIR and PREFIX; the man pages and the example
config; 200 clients x 200 lookups under socket activation (marker load);
and, last, the Debian package built in a temporary copy of the tree
and checked with lintian.  Everything listens on 127.0.0.1/::1 only.
"""

import asyncio
import os
import pwd
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F403
import debpkg  # noqa: E402

UNITS = os.path.join(REPO, "units")

# ---------------------------------------------------------------- helpers

def config(**kw):
    return temp_config(base_config(shared_mariadb(), **kw))


# (map, key, expected reply): the replies of tests/fixtures.replies.json
LOOKUPS = [(m.encode(), k.encode(), fixture_reply(m, k)) for m, k in (
    ("recipient", "postmaster@example.org"),
    ("recipient", "team@example.org"),
    ("recipient", "nobody@example.org"),
    ("exists", "BOB.SMITH@example.org"),
    ("sender", "spammer@bad.example"),
    ("transport", "example.net"),
    ("othermap", "ping"),
)] + [(b"nosuch", b"key", b"PERM unknown map")]


def concurrent_lookups(address, n_clients=10, rounds=3, malformed=False):
    """n_clients connections at once, each asking every LOOKUPS entry `rounds` times (and, if
    `malformed`, a request without a space each round: PERM, the session goes on)."""
    barrier = threading.Barrier(n_clients)

    def one(i, errors):
        with Client(address, timeout=15) as c:
            barrier.wait(scaled(15))  # all connected before anyone asks
            for r in range(rounds):
                for mapname, key, want in LOOKUPS:
                    got = c.ask(mapname, key)
                    if got != want:
                        errors.append("client %d round %d %s %s: %r" % (i, r, mapname, key, got))
                if malformed:
                    c.send_raw(encode(b"nospace%d" % r))
                    got = c.read_reply()
                    if not got.startswith(b"PERM "):
                        errors.append("client %d round %d, a request without a space: %r" % (i, r, got))
            finish_conversation(c, i, errors, timeout=10)

    eq(run_clients(n_clients, one, timeout=60), [])


def session_ends(cfg_path):
    """The per-connection summary lines of a config's log."""
    return [l for l in read_log(cfg_path).splitlines() if "session end" in l]


def wait_listening(port, proc, timeout=10):
    """Until something listens on `port` (without connecting: no handler is started)."""
    def up():
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError("exited with %s: %s" % (proc.returncode, err))
        return listening_on(port)
    wait_for(up, timeout=timeout, msg="listening on port %d" % port)


def listen(cfg_path, arg, *extra):
    """sockmapd --listen ARG (stdout/stderr to pipes); stopped after the test."""
    return spawn(cfg_path, ["--listen", arg] + list(extra), stdin=subprocess.DEVNULL)


def uid_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:]]
    raise AssertionError("no Uid line for %d" % pid)


def gid_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Gid:"):
                return [int(x) for x in line.split()[1:]]
    raise AssertionError("no Gid line for %d" % pid)


def stop_and_wait(p, sig=signal.SIGTERM, timeout=10):
    os.kill(p.pid, sig)
    try:
        return p.wait(scaled(timeout))
    except subprocess.TimeoutExpired:
        raise AssertionError("sockmapd --listen did not exit within %gs of %s" % (scaled(timeout), sig.name))


def installed_service(sbindir="/usr/sbin"):
    """units/ copied to a temp dir with @SBINDIR@ replaced, as `make install` does."""
    d = tmpdir("units")
    with open(os.path.join(UNITS, "sockmapd@.service")) as f:
        text = f.read()
    with open(os.path.join(d, "sockmapd@.service"), "w") as f:
        f.write(text.replace("@SBINDIR@", sbindir))
    shutil.copy(os.path.join(UNITS, "sockmapd.socket"), d)
    return d


# ---------------------------------------------------------------- socket activation

@pytest.mark.timeout(120)
@pytest.mark.parametrize("variant", ["fd3", "inetd", "inetd_option", "unix"])
def test_socket_activation_concurrent_lookups(variant):
    """A handler per connection (systemd-socket-activate -a): the connection on fd 3 (fd3), on fd 0/1
    as inetd gives it without and with --inetd (inetd, inetd_option), or on a unix socket.  Ten
    clients at once, each asking every fixture lookup, an unknown map and a request without a
    space three times; one session per connection, logged with its count; no handler left."""
    cfg = config()
    unix = os.path.join(tmpdir("sock"), "sockmapd.sock") if variant == "unix" else None
    args = (["--inetd"] if variant == "inetd_option" else []) + ["-c", cfg]
    with SocketActivated(args, inetd=variant.startswith("inetd"), unix=unix) as sa:
        concurrent_lookups(sa.address, malformed=True)
        wait_for(lambda: not sa.children(), timeout=10, msg="all handlers exited")
    ends = session_ends(cfg)
    eq(len(ends), 10, "one session per connection")
    for line in ends:
        contains(line, "%d requests" % (3 * (len(LOOKUPS) + 1)))


# ---------------------------------------------------------------- --listen

@test(timeout=120)
def listen_lookups_concurrent_and_sigterm():
    cfg = config()
    port = free_port()
    p = listen(cfg, "127.0.0.1:%d" % port)
    wait_listening(port, p)
    concurrent_lookups(("127.0.0.1", port))
    # A session per connection; the handlers wait for the next ones (at most
    # one per concurrent client) and end at SIGTERM; the parent logs each.
    wait_for(lambda: len(session_ends(cfg)) == 10, timeout=10, msg="10 session summaries")
    log = read_log(cfg)
    started = re.findall(r"handler (\d+) for 127\.0\.0\.1:\d+ started", log)
    ok(1 <= len(started) <= 10, "started lines: %d" % len(started))
    eq(sorted(proc_children(p.pid)), sorted(int(pid) for pid in started), "the handlers wait")
    contains(log, "listening on 127.0.0.1:%d" % port)
    eq(stop_and_wait(p), 0, "exit status after SIGTERM")
    stopped = re.findall(r"handler (\d+) stopped \(exit 0", read_log(cfg))
    eq(sorted(stopped), sorted(started), "stopped lines")
    contains(read_log(cfg), "stopping on")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_listen_stop_signal_ends_running_handlers(sig):
    """SIGTERM (systemctl stop) or SIGINT (Ctrl-C): exit 0, every handler gone, each client's
    connection ended cleanly (FIN, not a reset), the port closed."""
    cfg = config(sysconfig={"listen": "127.0.0.1"})
    port = free_port()
    p = listen(cfg, str(port), "--max-children", "8")  # address from sysconfig.listen
    wait_listening(port, p)
    clients = [Client(port) for _ in range(4)]
    for c in clients:
        defer(c.close)
        eq(c.ask("recipient", "postmaster@example.org"), b"OK root@example.org")
    kids = wait_for(lambda: len(proc_children(p.pid)) == 4 and proc_children(p.pid), msg="4 handlers")
    eq(stop_and_wait(p, sig, timeout=10), 0, "exit status after " + sig.name)
    for k in kids:
        wait_for(lambda: not pid_alive(k), timeout=5, msg="handler %d gone" % k)
    for c in clients:
        eq(c.read_until_eof(5, reset_ok=False), b"", "client sees the connection closed")
    # Nobody listens any more.
    with socket.socket() as s:
        ne(s.connect_ex(("127.0.0.1", port)), 0, "port closed after exit")


@pytest.mark.slow
@test(timeout=60)
def listen_max_children_caps_handlers():
    cfg = config()
    port = free_port()
    p = listen(cfg, "127.0.0.1:%d" % port, "--max-children", "2")
    wait_listening(port, p)
    a, b = Client(port), Client(port)
    defer(a.close)
    defer(b.close)
    eq(a.ask("othermap", "ping"), b"OK pong")
    eq(b.ask("othermap", "alpha"), b"OK beta")
    # The third connection is queued by the kernel, nobody answers it yet.
    c = Client(port)
    defer(c.close)
    c.send_raw(encode("othermap ping"))
    try:
        got = c.read_reply(timeout=1.5)
        raise AssertionError("a third handler answered while two were running: %r" % got)
    except socket.timeout:
        pass
    eq(len(proc_children(p.pid)), 2, "handlers running")
    contains(read_log(cfg), "all 2 handlers busy")
    a.close()
    eq(c.read_reply(timeout=10), b"OK pong", "answered once a handler ended")
    ok(len(proc_children(p.pid)) <= 2, "never more than 2 handlers")
    eq(stop_and_wait(p), 0)


@test(timeout=60)
def listen_ipv6_loopback():
    cfg = config(sysconfig={"listen": "::1"})
    port = free_port()
    p = listen(cfg, "[::1]:%d" % port)
    wait_listening(port, p)
    with Client(("::1", port)) as c:
        eq(c.ask("recipient", "postmaster@example.org"), b"OK root@example.org")
    contains(read_log(cfg), "listening on [::1]:%d" % port)
    eq(listening_on(port), ["00000000000000000000000001000000:%04X" % port], "bound to ::1 only")
    # Port from the command line, address from sysconfig.listen.
    eq(stop_and_wait(p), 0)
    port2 = free_port()
    p2 = listen(cfg, str(port2))
    wait_listening(port2, p2)
    eq(stop_and_wait(p2), 0)


@test(timeout=60)
def listen_defaults_from_sysconfig_go_style():
    port = free_port()
    # The Go sockmapd's config: every value a string; no --listen argument.
    cfg = config(sysconfig={"port": str(port), "listen": "127.0.0.1", "idle_timeout": "30"})
    p = spawn(cfg, ["--listen"], stdin=subprocess.DEVNULL)
    wait_listening(port, p)
    with Client(port) as c:
        eq(c.ask("sender", "spammer@bad.example"), b"OK REJECT spam source")
    eq(stop_and_wait(p), 0)


@test(timeout=60)
def listen_drops_privileges():
    if os.geteuid() != 0:
        # Not root: run_as_user cannot be honoured; sockmapd says so and serves.
        me = pwd.getpwuid(os.geteuid()).pw_name
        cfg = config(sysconfig={"run_as_user": "nobody" if me != "nobody" else "root"})
        port = free_port()
        p = listen(cfg, "127.0.0.1:%d" % port)
        wait_listening(port, p)
        with Client(port) as c:
            eq(c.ask("othermap", "ping"), b"OK pong")
        contains(read_log(cfg), "not started as root")
        eq(stop_and_wait(p), 0)
        return
    nobody = pwd.getpwnam("nobody")
    cfg = config(sysconfig={"run_as_user": "nobody"})
    # The config and its log are root's: read and opened before the switch.
    port = free_port()
    p = listen(cfg, "127.0.0.1:%d" % port)
    wait_listening(port, p)
    with Client(port) as c:
        eq(c.ask("recipient", "postmaster@example.org"), b"OK root@example.org")
        kids = proc_children(p.pid)
        eq(len(kids), 1)
        eq(uid_of(kids[0]), [nobody.pw_uid] * 4, "handler uids (real, effective, saved, fs)")
        eq(gid_of(kids[0]), [nobody.pw_gid] * 4, "handler gids")
        ne(uid_of(kids[0])[0], 0)
    eq(uid_of(p.pid), [nobody.pw_uid] * 4, "the accept loop dropped root too")
    with open("/proc/%d/status" % p.pid) as f:
        groups = next(l for l in f if l.startswith("Groups:")).split()[1:]
    not_contains(groups, "0", "root's supplementary group dropped")
    contains(read_log(cfg), "running as uid %d" % nobody.pw_uid)
    eq(stop_and_wait(p), 0)


@test(timeout=60)
def listen_run_as_group_only_and_numeric_user():
    import grp
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() != 0:
        # Not root: nothing can be switched to, but numbers are still read
        # as the ids of existing accounts: the check accepts them and names
        # a number no account has; the listener says it cannot switch, and
        # serves.
        numeric = {"run_as_user": str(nobody.pw_uid), "run_as_group": str(grp.getgrnam("nogroup").gr_gid)}
        rc, out, err = run_pipe(config(sysconfig=numeric), b"", args=["--check-config", "--offline"])
        eq(rc, 0, err)
        rc, out, err = run_pipe(config(sysconfig={"run_as_user": "4000000000"}), b"",
                                args=["--check-config", "--offline"])
        eq(rc, 78, "a uid no account has")
        contains(err.decode(), 'sysconfig.run_as_user: no user "4000000000"')
        cfg = config(sysconfig=numeric)
        port = free_port()
        p = listen(cfg, "127.0.0.1:%d" % port)
        wait_listening(port, p)
        with Client(port) as c:
            eq(c.ask("othermap", "ping"), fixture_reply("othermap", "ping"))
            eq(uid_of(proc_children(p.pid)[0])[1], os.geteuid(), "the handler keeps the user it was started as")
        contains(read_log(cfg), "not started as root")
        eq(stop_and_wait(p), 0)
        return
    cfg = config(sysconfig={"run_as_user": str(nobody.pw_uid), "run_as_group": "nogroup"})
    port = free_port()
    p = listen(cfg, "127.0.0.1:%d" % port)
    wait_listening(port, p)
    with Client(port) as c:
        eq(c.ask("othermap", "ping"), b"OK pong")
        kid = proc_children(p.pid)[0]
        eq(uid_of(kid)[1], nobody.pw_uid)
        eq(gid_of(kid)[1], grp.getgrnam("nogroup").gr_gid)
    eq(stop_and_wait(p), 0)


@pytest.mark.slow
@test(timeout=60)
def listen_errors_exit_codes():
    cfg = config()
    # A malformed --listen argument: a usage error (64), nothing bound.
    for arg in ("127.0.0.1:0", "99999", "::1:2224", "[::1", "nosuchport"):
        rc, out, err = run_pipe(cfg, b"", args=["--listen", arg])
        eq(rc, 64, "--listen %s" % arg)
        contains(err.decode(), "--listen")
    # An unknown user: 78 before binding.
    rc, _, _ = run_pipe(config(sysconfig={"run_as_user": "no-such-user-here"}), b"",
                        args=["--listen", "127.0.0.1:%d" % free_port()])
    eq(rc, 78, "unknown run_as_user")
    # An address this host does not have (TEST-NET-1; bind() only, nothing is sent): 75.
    rc, _, _ = run_pipe(cfg, b"", args=["--listen", "192.0.2.1:%d" % free_port()])
    eq(rc, 75, "address not available")
    # The port is taken: 75 (temporary).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        rc, _, _ = run_pipe(cfg, b"", args=["--listen", "127.0.0.1:%d" % s.getsockname()[1]])
    eq(rc, 75, "address in use")
    # --listen excludes the other modes.
    rc, _, _ = run_pipe(cfg, b"", args=["--listen", "--check-config"])
    eq(rc, 64)


# ---------------------------------------------------------------- Postfix's client

@pytest.mark.slow
@test(timeout=120)
def postmap_single_keys():
    cfg = config()
    pdir = postfix_dir()
    with SocketActivated(["-c", cfg]) as sa:
        table = "socketmap:inet:127.0.0.1:%d:recipient" % sa.port
        eq(postmap(pdir, ["-q", "postmaster@example.org", table]), (0, "root@example.org\n", ""))
        eq(postmap(pdir, ["-q", "team@example.org", table]),
           (0, "alice@example.org,bob@example.org,carol@example.org\n", ""))
        eq(postmap_outcome(*postmap(pdir, ["-q", "nobody@example.org", table])), ("notfound", ""),
           "not found: exit 1, no output, nothing on stderr")
        eq(postmap_outcome(*postmap(pdir, ["-q", "nullonly@example.org", table])), ("notfound", ""))
        access = "socketmap:inet:127.0.0.1:%d:sender" % sa.port
        eq(postmap(pdir, ["-q", "spammer@bad.example", access]), (0, "REJECT spam source\n", ""))
        transport = "socketmap:inet:127.0.0.1:%d:transport" % sa.port
        eq(postmap(pdir, ["-q", "relay.example", transport]), (0, "relay:[192.0.2.1]:587\n", ""))
        # An unknown map is a permanent error for Postfix.
        rc, out, err = postmap(pdir, ["-q", "x@example.org", "socketmap:inet:127.0.0.1:%d:nosuch" % sa.port])
        eq((rc, out), (1, ""))
        contains(err, "permanent error: unknown map")
    # Over a unix socket.
    path = os.path.join(tmpdir("sock"), "s.sock")
    with SocketActivated(["-c", cfg], unix=path):
        eq(postmap(pdir, ["-q", "postmaster@example.org", "socketmap:unix:%s:recipient" % path]),
           (0, "root@example.org\n", ""))


@pytest.mark.slow
@test(timeout=120)
def postmap_database_down_is_a_temporary_error():
    cfg = temp_config(base_config(None))  # a closed port: every lookup TEMP
    pdir = postfix_dir()
    with SocketActivated(["-c", cfg]) as sa:
        rc, out, err = postmap(pdir, ["-q", "postmaster@example.org", "socketmap:inet:127.0.0.1:%d:recipient" % sa.port])
    eq((rc, out), (1, ""), "no answer")
    contains(err, "temporary error")
    eq(postmap_outcome(rc, out, err)[0], "error", "exit 1 with a warning is not 'not found'")


@pytest.mark.slow
@test(timeout=120)
def postmap_many_keys_one_connection():
    cfg = config()
    pdir = postfix_dir()
    keys = []
    expected = []
    for i in range(60):
        keys += ["postmaster@example.org", "nobody%d@example.org" % i, "team@example.org", "abuse@example.org"]
        expected += ["postmaster@example.org\troot@example.org",
                     "team@example.org\talice@example.org,bob@example.org,carol@example.org",
                     "abuse@example.org\tpostmaster@example.org"]
    stdin = ("\n".join(keys) + "\n").encode()
    for inetd in (False, True):
        with SocketActivated(["-c", cfg], inetd=inetd) as sa:
            before = len(session_ends(cfg))
            rc, out, err = postmap(pdir, ["-q", "-", "socketmap:inet:127.0.0.1:%d:recipient" % sa.port], stdin=stdin)
            eq(rc, 0, "postmap -q - status (stderr %r)" % err)
            eq(out.splitlines(), expected)
            eq(err, "")
            wait_for(lambda: len(session_ends(cfg)) == before + 1, timeout=10, msg="the session's summary")
            last = session_ends(cfg)[-1]
            contains(last, "%d requests, %d found, %d not found, 0 errors" % (len(keys), 180, 60),
                     "all keys on one connection")


@pytest.mark.slow
@test(timeout=120)
def postmap_against_listen_mode():
    cfg = config()
    pdir = postfix_dir()
    port = free_port()
    p = listen(cfg, "127.0.0.1:%d" % port)
    wait_listening(port, p)
    table = "socketmap:inet:127.0.0.1:%d:exists" % port
    eq(postmap(pdir, ["-q", "carol@example.org", table]), (0, "carol@example.org\n", ""))
    rc, out, _ = postmap(pdir, ["-q", "-", table], stdin=b"alice@example.org\nzed@example.org\nBOB.SMITH@EXAMPLE.ORG\n")
    eq((rc, out), (0, "alice@example.org\talice@example.org\nBOB.SMITH@EXAMPLE.ORG\tBob.Smith@Example.org\n"))
    eq(stop_and_wait(p), 0)


# ---------------------------------------------------------------- xinetd

def xinetd_config(cfg_path, port, logfile):
    """A complete xinetd config: units/sockmapd.xinetd with our port, binary, config and user."""
    with open(os.path.join(UNITS, "sockmapd.xinetd")) as f:
        text = f.read()
    me = pwd.getpwuid(os.geteuid())
    subst = {
        "port": str(port),
        "server": sockmapd_path(),
        "server_args": "--inetd -c %s" % cfg_path,
        "user": me.pw_name,
        "group": __import__("grp").getgrgid(os.getegid()).gr_name,
        # The handlers get RUNTIME_DIRECTORY like every sockmapd in the suite.
        "env": "RUNTIME_DIRECTORY=%s" % runtime_dir(),
    }
    lines = []
    for line in text.splitlines():
        m = re.match(r"^(\s*)(\w+)(\s*)=(\s*)(.*)$", line)
        if m and m.group(2) in subst:
            line = "%s%s%s= %s" % (m.group(1), m.group(2), m.group(3), subst[m.group(2)])
        lines.append(line)
    body = "\n".join(lines)
    eq(body.count("= %s" % port), 1, "the port line was replaced")
    defaults = ("defaults\n{\n\tlog_type = FILE %s\n\tinstances = 50\n}\n\n" % logfile)
    return defaults + body + "\n"


class Xinetd:
    """xinetd -dontfork -f CONF, stopped by its pid."""

    def __init__(self, conf):
        d = tmpdir("xinetd")
        self.conf = os.path.join(d, "xinetd.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.pidfile = os.path.join(d, "xinetd.pid")
        self.out = os.path.join(d, "xinetd.out")
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen([require_tool("xinetd"), "-dontfork", "-f", self.conf,
                                          "-pidfile", self.pidfile], stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.kids = set()
        defer(self.stop)

    def children(self):
        kids = proc_children(self.proc.pid)
        self.kids.update(kids)
        return kids

    def output(self):
        with open(self.out, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        self.children()
        stop_pid(self.proc.pid, grace=5, popen=self.proc)
        for k in self.kids:
            stop_pid(k, grace=2)


@pytest.mark.slow
@test(timeout=120)
def xinetd_serves_with_the_shipped_file():
    cfg = config()
    port = free_port()
    xlog = os.path.join(tmpdir("xlog"), "xinetd.log")
    x = Xinetd(xinetd_config(cfg, port, xlog))
    wait_listening(port, x.proc, timeout=15)
    with open(x.pidfile) as f:
        eq(int(f.read().split()[0]), x.proc.pid, "pid file")
    with Client(port) as c:
        eq(c.ask("recipient", "postmaster@example.org"), b"OK root@example.org")
        eq(c.ask("nosuch", "k"), b"PERM unknown map")
    concurrent_lookups(port, n_clients=10, rounds=2)
    # postmap through xinetd, many keys on one connection.
    rc, out, _ = postmap(postfix_dir(), ["-q", "-", "socketmap:inet:127.0.0.1:%d:recipient" % port],
                         stdin=b"postmaster@example.org\nnone@example.org\n")
    eq((rc, out), (0, "postmaster@example.org\troot@example.org\n"))
    wait_for(lambda: not x.children(), timeout=10, msg="handlers exited")
    eq(len(session_ends(cfg)), 1 + 10 + 1)
    # Only the loopback address is bound.
    eq(listening_on(port), ["0100007F:%04X" % port], "xinetd listens on 127.0.0.1 only")
    x.stop()
    eq(x.proc.returncode is not None, True)


@test
def xinetd_file_settings():
    with open(os.path.join(UNITS, "sockmapd.xinetd")) as f:
        text = f.read()
    settings = dict(re.findall(r"^\s*(\w+)\s*=\s*(.*?)\s*$", text, re.M))
    for k, v in (("type", "UNLISTED"), ("socket_type", "stream"), ("wait", "no"), ("bind", "127.0.0.1"),
                 ("port", "2224"), ("user", "sockmapd"), ("server", "/usr/sbin/sockmapd"), ("disable", "no"),
                 # no rate limit that stops the service; the package's runtime directory
                 ("cps", "0 0"), ("env", "RUNTIME_DIRECTORY=/run/sockmapd")):
        eq(settings.get(k), v, k)
    startswith(settings["server_args"], "--inetd -c /etc/sockmapd/config.json")


# ---------------------------------------------------------------- systemd units

@test(timeout=60)
def units_verify():
    tool = require_tool("systemd-analyze")
    # The binary under test: verify checks that ExecStart= is executable.
    d = installed_service(os.path.dirname(os.path.abspath(sockmapd_path())))
    r = subprocess.run([tool, "verify", "--man=no", os.path.join(d, "sockmapd.socket"),
                        os.path.join(d, "sockmapd@.service")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=scaled(30), cwd=d)
    out = r.stdout.decode(errors="replace")
    eq((r.returncode, out), (0, ""), "systemd-analyze verify")


@test(timeout=60)
def units_security_score_at_most_1_1():
    tool = require_tool("systemd-analyze")
    d = installed_service()
    r = subprocess.run([tool, "security", "--offline=true", "--threshold=20", "--no-pager",
                        os.path.join(d, "sockmapd@.service")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=scaled(30), cwd=d)
    out = r.stdout.decode(errors="replace")
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    ok(m, "no exposure level in: %s %s" % (out[-500:], r.stderr.decode(errors="replace")))
    score = float(m.group(1))
    print("    systemd-analyze security: %.1f" % score)
    ok(score <= 1.1, "exposure %.1f > 1.1" % score)
    eq(r.returncode, 0, "--threshold=20")


@test
def units_settings():
    sock = unit_settings(os.path.join(UNITS, "sockmapd.socket"))
    eq(sock[("Socket", "Accept")], ["yes"])
    eq(sock[("Socket", "ListenStream")], ["127.0.0.1:2224"])
    ok(int(sock[("Socket", "MaxConnections")][0]) > 0)
    # A flood cannot put the socket into a failed state (bb_system floods it).
    eq(sock[("Socket", "TriggerLimitIntervalSec")], ["0"])
    eq(sock[("Install", "WantedBy")], ["sockets.target"])
    with open(os.path.join(UNITS, "sockmapd.socket")) as f:
        contains(f.read(), "#ListenStream=/run/", "commented unix socket alternative")
    svc = unit_settings(os.path.join(UNITS, "sockmapd@.service"))
    # No "-" and no CollectMode=inactive-or-failed: a handler systemd cannot start stays failed, visibly.
    eq(svc[("Service", "ExecStart")], ["@SBINDIR@/sockmapd -c /etc/sockmapd/config.json"])
    ok(("Unit", "CollectMode") not in svc, "failed handlers are kept for systemctl --failed")
    eq(svc[("Service", "User")], ["sockmapd"])
    eq(svc[("Service", "RuntimeDirectory")], ["sockmapd"])
    eq(svc[("Service", "RuntimeDirectoryPreserve")], ["yes"])
    # A credential is a mount per running unit, copied into every unit started: not per connection.
    ok(("Service", "LoadCredential") not in svc, "no credential per connection")
    for key in ("NoNewPrivileges", "PrivateTmp", "PrivateDevices", "PrivateUsers", "ProtectKernelModules",
                "ProtectHome", "ProtectKernelTunables", "ProtectKernelLogs", "ProtectControlGroups"):
        eq(svc[("Service", key)], ["yes"], key)
    eq(svc[("Service", "ProtectSystem")], ["strict"])
    eq(svc[("Service", "CapabilityBoundingSet")], [""])
    eq(svc[("Service", "RestrictAddressFamilies")], ["AF_UNIX AF_INET AF_INET6"])
    eq(svc[("Service", "SystemCallFilter")], ["@system-service", "~@privileged @resources"])
    ok(("Install", "WantedBy") not in svc, "the template is started by the socket, not enabled")


@test(timeout=120)
def unit_command_line_serves_fd3():
    """The service's ExecStart, as systemd runs it for a connection (fd 3), with the test config."""
    svc = unit_settings(os.path.join(UNITS, "sockmapd@.service"))
    argv = svc[("Service", "ExecStart")][0].split()
    eq(argv[1:], ["-c", "/etc/sockmapd/config.json"])
    cfg = config()
    with SocketActivated(["-c", cfg]) as sa:  # same arguments, our config path
        concurrent_lookups(sa.address, n_clients=3, rounds=1)


# ---------------------------------------------------------------- install, docs, example

def make(*args, timeout=120):
    build = os.path.dirname(sockmapd_path())
    cmd = ["make", "-C", REPO, "--no-print-directory", "BUILD=" + build,
           "-o", os.path.join(build, "sockmapd")] + list(args)  # install what was tested, never rebuild
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=scaled(timeout))
    return r.returncode, r.stdout.decode(errors="replace")


def tree(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            out["/" + os.path.relpath(full, root)] = os.stat(full).st_mode & 0o7777
    return out


@pytest.mark.slow
@test(timeout=120)
def make_install_and_uninstall_destdir_prefix():
    dest = tmpdir("destdir")
    rc, out = make("install", "DESTDIR=" + dest, "PREFIX=/usr")
    eq(rc, 0, "make install: " + out[-2000:])
    r = subprocess.run(["pkg-config", "--variable=systemdsystemunitdir", "systemd"], stdout=subprocess.PIPE)
    unitdir = r.stdout.decode().strip() or "/lib/systemd/system"
    files = tree(dest)
    want = {
        "/usr/sbin/sockmapd": 0o755,
        "/usr/share/man/man8/sockmapd.8": 0o644,
        "/usr/share/man/man5/sockmapd.json.5": 0o644,
        unitdir + "/sockmapd.socket": 0o644,
        unitdir + "/sockmapd@.service": 0o644,
        unitdir + "/sockmapd-listener.socket": 0o644,
        unitdir + "/sockmapd-listener.service": 0o644,
        unitdir + "/sockmapd-metrics.service": 0o644,
        unitdir + "/sockmapd-metrics.timer": 0o644,
        "/usr/share/doc/sockmapd/config.example.json": 0o644,
        "/usr/share/doc/sockmapd/examples/sockmapd.xinetd": 0o644,
        "/usr/share/doc/sockmapd/examples/sockmapd-alerts.yml": 0o644,
        "/etc/sockmapd/config.json": 0o640,
    }
    eq(files, want)
    with open(dest + "/etc/sockmapd/config.json") as f, open(os.path.join(REPO, "config.example.json")) as g:
        eq(f.read(), g.read(), "the config to start from is the example")
    with open(dest + unitdir + "/sockmapd@.service") as f:
        svc = f.read()
    contains(svc, "ExecStart=/usr/sbin/sockmapd -c /etc/sockmapd/config.json")
    not_contains(svc, "@SBINDIR@")
    r = subprocess.run([dest + "/usr/sbin/sockmapd", "--version"], stdout=subprocess.PIPE)
    startswith(r.stdout.decode(), "sockmapd ")
    rc, out = make("uninstall", "DESTDIR=" + dest, "PREFIX=/usr")
    eq(rc, 0, "make uninstall: " + out[-2000:])
    eq(tree(dest), {}, "uninstall leaves no files")


@pytest.mark.slow
@test(timeout=60)
def make_install_prefix_local():
    dest = tmpdir("destdir")
    rc, out = make("install", "DESTDIR=" + dest, "PREFIX=/usr/local")
    eq(rc, 0, out[-2000:])
    ok(os.path.exists(dest + "/usr/local/sbin/sockmapd"))
    svc = [p for p in tree(dest) if p.endswith("sockmapd@.service")]
    eq(len(svc), 1)
    with open(dest + svc[0]) as f:
        contains(f.read(), "ExecStart=/usr/local/sbin/sockmapd ")
    with open(dest + "/usr/local/share/doc/sockmapd/examples/sockmapd.xinetd") as f:
        servers = re.findall(r"^\s*server\s*=\s*(\S+)", f.read(), re.M)
    eq(servers, ["/usr/local/sbin/sockmapd"], "the xinetd example runs the installed program")


@pytest.mark.slow
@test(timeout=120)
def make_install_keeps_an_existing_config():
    dest = tmpdir("destdir")
    conf = dest + "/etc/sockmapd/config.json"
    os.makedirs(os.path.dirname(conf))
    with open(conf, "w") as f:
        f.write('{"edited": true}\n')
    os.chmod(conf, 0o600)
    rc, out = make("install", "DESTDIR=" + dest, "PREFIX=/usr")
    eq(rc, 0, out[-2000:])
    contains(out, "keeping " + conf)
    with open(conf) as f:
        eq(f.read(), '{"edited": true}\n', "never overwritten")
    eq(os.stat(conf).st_mode & 0o7777, 0o600, "mode left alone")
    rc, out = make("uninstall", "DESTDIR=" + dest, "PREFIX=/usr")
    eq(rc, 0, out[-2000:])
    eq(list(tree(dest)), ["/etc/sockmapd/config.json"], "uninstall keeps an edited config")


@test
def example_config_checks_offline():
    example = os.path.join(REPO, "config.example.json")
    rc, out, err = run_pipe(None, b"", args=["-c", example, "--check-config", "--offline"])
    eq((rc, err), (0, b""))
    contains(out.decode(), ": ok, ")


@test
def man_pages_render_and_cover_everything():
    groff = require_tool("groff")
    pages = {n: os.path.join(REPO, "doc", n) for n in ("sockmapd.8", "sockmapd.json.5")}
    for name, path in pages.items():
        r = subprocess.run([groff, "-man", "-ww", "-z", "-Tutf8", path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        eq((r.returncode, r.stderr.decode()), (0, ""), "groff warnings in " + name)
    with open(pages["sockmapd.8"]) as f:
        prog = f.read().replace("\\-", "-")
    rc, out, _ = run_pipe(None, b"", args=["--help"])
    eq(rc, 0)
    options = set(re.findall(r"(--[a-z][a-z-]+)", out.decode()))
    ok(len(options) >= 9, options)
    for opt in sorted(options):
        contains(prog, opt, "sockmapd(8) documents " + opt)
    for code in ("0", "1", "64", "65", "70", "71", "75", "78"):
        ok(re.search(r"^\.B %s$" % code, prog, re.M), "exit status %s documented" % code)
    for word in ("SIGTERM", "LISTEN_FDS", "CREDENTIALS_DIRECTORY", "RUNTIME_DIRECTORY", "journal", "syslog",
                 "postmap", "socketmap:inet:127.0.0.1:2224", "socket -T<TMPF> inet:2224@127.0.0.1"):
        contains(prog, word)
    with open(pages["sockmapd.json.5"]) as f:
        conf = f.read().replace("\\-", "-")
    keys = ["port", "listen", "logfile", "loglevel", "run_as_user", "run_as_group", "idle_timeout", "max_session",
            "max_use", "max_idle", "host", "username", "password", "password_file", "connect_timeout", "read_timeout", "write_timeout",
            "db_idle_timeout", "retry_interval", "tls", "ca", "cert", "key", "verify_server", "service", "database",
            "table", "value", "reason", "query", "result_format", "lowercase", "strip_extension", "domain",
            "CREDENTIALS_DIRECTORY"]
    for k in keys:
        ok(re.search(r"^\.(?:B|BR|TP|RB)\b[^\n]*\b%s\b" % re.escape(k), conf, re.M),
           "sockmapd.json(5) documents " + k)


# ---------------------------------------------------------------- load: 200 connections x 200 lookups (marker load)
#
# 200 concurrent connections x 200 lookups through socket activation, real mariadbd.
#
# systemd-socket-activate -a starts one sockmapd per connection (as systemd's
# Accept=yes would); the MariaDB server's max_connections is raised to 400.
# The client is one asyncio loop (no GIL hand-offs between 200 threads to
# inflate the latencies), one request in flight per connection.  Every reply
# is checked against the fixtures: zero errors, zero TEMP.  Prints throughput
# and latency percentiles; bounded by a hard time cap.


LOAD_CONNECTIONS = int(os.environ.get("LOAD_CONNECTIONS", "200"))
LOAD_LOOKUPS = int(os.environ.get("LOAD_LOOKUPS", "200"))
LOAD_TIME_CAP = 60.0  # seconds for the whole run, hard

# Maps of one schema (one database connection per handler).
LOAD_TABLE = [(("%s %s" % (m, k)).encode(), fixture_reply(m, k)) for m, k in (
    ("recipient", "postmaster@example.org"),
    ("recipient", "team@example.org"),
    ("recipient", "nobody@example.org"),
    ("exists", "alice@example.org"),
    ("exists", "BOB.SMITH@example.org"),
    ("exists", "mallory@example.org"),
    ("sender", "spammer@bad.example"),
    ("sender", "friend@good.example"),
    ("transport", "example.org"),
    ("transport", "unknown.example"),
    ("awkward", "it's"),
    ("awkward", "x' OR '1'='1"),
)]

_load_db = {}


def load_server():
    if "db" not in _load_db:
        _load_db["db"] = MariaDB(fixtures=True, max_connections=LOAD_CONNECTIONS * 2, name="load",
                                     extra_args=["--thread-cache-size=%d" % LOAD_CONNECTIONS]).keep_for_suite().start()
    return _load_db["db"]


async def load_client(i, address, gate, latencies, errors, counts):
    """One connection: LOOKUPS requests, one at a time, each reply checked."""
    try:
        reader, writer = await asyncio.open_connection(*address)
    except OSError as e:
        errors.append("connection %d: connect: %s" % (i, e))
        return
    try:
        await gate.wait()
        for j in range(LOAD_LOOKUPS):
            body, want = LOAD_TABLE[(i + j) % len(LOAD_TABLE)]
            t0 = time.perf_counter()
            writer.write(encode(body))
            head = await reader.readuntil(b":")
            n = int(head[:-1])
            frame = await reader.readexactly(n + 1)
            latencies.append(time.perf_counter() - t0)
            reply = frame[:-1]
            if frame[-1:] != b"," or reply != want:
                word = status_word(reply)
                counts[word] = counts.get(word, 0) + 1
                errors.append("connection %d lookup %d %r: %r" % (i, j, body, frame))
                if len(errors) > 50:
                    return
        writer.write_eof()
        rest = await reader.read()
        if rest:
            errors.append("connection %d: bytes after EOF: %r" % (i, rest[:60]))
    except Exception as e:
        errors.append("connection %d: %s: %s" % (i, type(e).__name__, e))
    finally:
        writer.close()


async def run_load(sa, cap):
    """All connections open (a handler each), then all lookups at once; (seconds, latencies, errors, counts, handlers)."""
    latencies, errors, counts = [], [], {}
    gate = asyncio.Event()
    tasks = [asyncio.ensure_future(load_client(i, sa.address, gate, latencies, errors, counts)) for i in range(LOAD_CONNECTIONS)]
    deadline = time.monotonic() + scaled(30)
    handlers = []
    while time.monotonic() < deadline:
        handlers = sa.children()
        if len(handlers) >= LOAD_CONNECTIONS:
            break
        await asyncio.sleep(0.2)
    eq(len(handlers), LOAD_CONNECTIONS, "handlers running before the lookups start")
    started = time.monotonic()
    gate.set()
    done, pending = await asyncio.wait(tasks, timeout=cap)
    elapsed = time.monotonic() - started
    for t in pending:
        t.cancel()
    if pending:
        errors.append("%d connections unfinished at the %gs time cap" % (len(pending), cap))
        await asyncio.wait(pending, timeout=5)
    return elapsed, latencies, errors, counts, handlers


@pytest.mark.slow
@pytest.mark.load
@test(timeout=150)
def load_200_connections_x_200_lookups():
    db = load_server()
    cfg = temp_config(base_config(db, sysconfig={"loglevel": "info", "idle_timeout": 60, "max_session": 300},
                                  database={"connect_timeout": 5, "read_timeout": 10, "write_timeout": 10}))
    sa = SocketActivated(["-c", cfg])
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    elapsed, latencies, errors, counts, handlers = asyncio.run(run_load(sa, scaled(LOAD_TIME_CAP)))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    total = len(latencies)
    used = sql_rows(db, "SHOW GLOBAL STATUS LIKE 'Max_used_connections';")[0]["Value"]
    if total:
        print("    %d connections x %d lookups: %d replies in %.2fs = %.0f lookups/s; "
              "latency p50 %.2f ms, p99 %.2f ms, max %.2f ms; %d handlers, Max_used_connections %s; "
              "the Python client used %.1fs CPU of %.1fs x 2 cores"
              % (LOAD_CONNECTIONS, LOAD_LOOKUPS, total, elapsed, total / elapsed, percentile(latencies, 50) * 1000,
                 percentile(latencies, 99) * 1000, max(latencies) * 1000, len(handlers), used, client_cpu, elapsed),
              flush=True)
    eq(errors[:20], [], "errors (%d in all; by status %r)" % (len(errors), counts))
    eq(counts.get(b"TEMP", 0), 0, "TEMP replies")
    eq(total, LOAD_CONNECTIONS * LOAD_LOOKUPS, "replies")
    ok(elapsed < scaled(LOAD_TIME_CAP), "took %.1fs" % elapsed)
    ok(int(used) >= LOAD_CONNECTIONS // 2, "only %s database connections at once: the load was not concurrent" % used)
    wait_for(lambda: not sa.children(), timeout=30, msg="every handler exited")
    log = read_log(cfg)
    eq(log.count("session end (client closed): %d requests, " % LOAD_LOOKUPS), LOAD_CONNECTIONS,
       "sessions logged as ended cleanly with %d requests" % LOAD_LOOKUPS)
    eq(log.count(" 0 errors, "), LOAD_CONNECTIONS, "sessions without errors")
    not_contains(log, "TEMP")


# ---------------------------------------------------------------- Debian package

@pytest.mark.slow
@test(timeout=600)
def debian_package_builds_and_is_lintian_clean():
    rc, out = make("deps-deb", timeout=540)
    eq(rc, 0, "make deps-deb: " + out[-2000:])
    for tool in ("dpkg-buildpackage", "lintian", "dh", "fakeroot"):
        require_tool(tool)
    # Built once per tree content and kept under build/deb/: bb_system installs the same file.
    deb, took, built = debpkg.tree_deb()
    print("    dpkg-buildpackage: %s" % ("%.0fs" % took if built else "reused " + os.path.relpath(deb, REPO)))
    contents = subprocess.run(["dpkg-deb", "-c", deb], stdout=subprocess.PIPE).stdout.decode()
    for path in ("./usr/sbin/sockmapd", "./lib/systemd/system/sockmapd.socket",
                 "./lib/systemd/system/sockmapd@.service", "./etc/sockmapd/config.json",
                 "./usr/share/man/man8/sockmapd.8.gz", "./usr/share/man/man5/sockmapd.json.5.gz",
                 "./usr/share/doc/sockmapd/config.example.json",
                 "./usr/share/doc/sockmapd/examples/sockmapd.xinetd"):
        contains(contents, path)
    ctrl = tmpdir("ctrl")
    subprocess.run(["dpkg-deb", "-e", deb, ctrl], check=True)
    with open(os.path.join(ctrl, "conffiles")) as f:
        contains(f.read(), "/etc/sockmapd/config.json")
    with open(os.path.join(ctrl, "postinst")) as f:
        postinst = f.read()
    contains(postinst, "adduser --system")
    contains(postinst, "sockmapd.socket")  # enabled by dh_installsystemd
    not_contains(postinst, "sockmapd@.service")
    x = tmpdir("x")
    subprocess.run(["dpkg-deb", "-x", deb, x], check=True)
    with open(os.path.join(x, "lib/systemd/system/sockmapd@.service")) as f:
        contains(f.read(), "ExecStart=/usr/sbin/sockmapd -c /etc/sockmapd/config.json")
    r = subprocess.run([os.path.join(x, "usr/sbin/sockmapd"), "-c", os.path.join(x, "etc/sockmapd/config.json"),
                        "--check-config", "--offline"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    eq(r.returncode, 0, "the packaged config checks: %r" % r.stderr)
    r = subprocess.run(["lintian", "--fail-on", "error,warning", deb], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=scaled(300))
    report = r.stdout.decode(errors="replace")
    bad = [l for l in report.splitlines() if re.match(r"^[EW]: ", l)]
    eq(bad, [], "lintian errors/warnings")
    eq(r.returncode, 0, "lintian: " + report)


if __name__ == "__main__":
    main()
