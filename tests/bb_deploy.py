#!/usr/bin/python3
"""bb_deploy — sockmapd the way it is deployed, with the real programs on both ends.

Socket activation (fd 3 and --inetd) and the --listen accept loop with
concurrent clients against a real mariadbd; Postfix's own client (`postmap
-q`, one key and many keys on one connection); the shipped xinetd file's
settings (under the real xinetd: bb_system); the systemd units (verify, security score <= 2.0); `make
install`/`uninstall` with DESTDIR and PREFIX; the man pages and the example
config; 200 clients x 200 lookups under socket activation (marker load);
the security review's findings, as root (marker security); sysconfig.allow
in the handler and in --listen (marker allow);
and, last, the Debian package built in a temporary copy of the tree
and checked with lintian.  Everything listens on 127.0.0.1/::1 only.
"""

import asyncio
import json
import os
import pwd
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness  # noqa: E402
from harness import *  # noqa: E402,F403
from allowlist import REFUSED, allow_config, check_modes, fresh, refusals_logged_once, refused, served  # noqa: E402
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
    # one per concurrent client, and a spare if they were all busy 50 ms after
    # the last connection) and end at SIGTERM; the parent logs each.
    wait_for(lambda: len(session_ends(cfg)) == 10, timeout=10, msg="10 session summaries")

    def started_pids():
        return sorted(re.findall(r"handler (\d+) (?:for 127\.0\.0\.1:\d+ started|started as a spare)", read_log(cfg)))
    wait_for(lambda: sorted(str(k) for k in proc_children(p.pid)) == started_pids(), timeout=10,
             msg="every handler started is waiting")
    started = started_pids()
    ok(1 <= len(started) <= 11, "started lines: %d" % len(started))
    contains(read_log(cfg), "listening on 127.0.0.1:%d" % port)
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
    kids = wait_for(lambda: len(proc_children(p.pid)) == 5 and proc_children(p.pid), msg="4 handlers and a spare")
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
        kids = wait_for(lambda: len(proc_children(p.pid)) == 2 and proc_children(p.pid), msg="the handler and a spare")
        for kid in kids:
            eq(uid_of(kid), [nobody.pw_uid] * 4, "handler uids (real, effective, saved, fs)")
            eq(gid_of(kid), [nobody.pw_gid] * 4, "handler gids")
            ne(uid_of(kid)[0], 0)
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

# The shipped file under the real xinetd is bb_system.py's xinetd_with_the_shipped_file
# (the guide's steps in a booted Debian); here, what the file says.

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


# ---------------------------------------------------------------- sysconfig.allow (marker allow)
# sysconfig.allow in the handler (fd 3, --inetd, a unix socket) and in the --listen
# accept loop: a client from a source address not on the list gets no reply and a
# closed connection, one warning however often it tries, no database work; a
# socket on a non-loopback address without a list is warned about.

ALLOW = (pytest.mark.allow,)  # the marks of this section's cases

def activated(**kw):
    def make(cfg):
        return SocketActivated(["-c", cfg] + (["--inetd"] if kw.get("inetd") else []), **kw).address
    return make


@test(timeout=90, marks=ALLOW)
def fd3_ipv4():
    check_modes(activated(), ["127.0.0.1/32"], "127.0.0.1", "127.0.0.2", "127.0.0.2")


@test(timeout=90, marks=ALLOW)
def inetd_ipv4():
    check_modes(activated(inetd=True), ["127.0.0.1/32"], "127.0.0.1", "127.0.0.2", "127.0.0.2")


@test(timeout=90, marks=ALLOW)
def fd3_ipv6():
    # ::1 is the only IPv6 loopback address: the list decides for it.
    fresh()
    cfg = allow_config(["127.0.0.1/32"])
    with SocketActivated(["-c", cfg], host="::1") as sa:
        for _ in range(3):
            refused("::1", sa.address)
    refusals_logged_once(cfg, "::1", times=3)
    fresh()
    cfg = allow_config(["::1/128"])
    with SocketActivated(["-c", cfg], host="::1") as sa:
        served("::1", sa.address)
    not_contains(read_log(cfg), REFUSED)


@test(timeout=90, marks=ALLOW)
def inetd_unix_socket():
    fresh()
    path = os.path.join(tmpdir("sock"), "s")
    cfg = allow_config(["127.0.0.1/32", "::1"])
    with SocketActivated(["-c", cfg, "--inetd"], inetd=True, unix=path) as sa:
        for _ in range(3):
            refused(None, sa.address)
    refusals_logged_once(cfg, "unix", times=3)
    cfg = allow_config(["127.0.0.1/32", "unix"])
    path = os.path.join(tmpdir("sock"), "s")
    with SocketActivated(["-c", cfg, "--inetd"], inetd=True, unix=path) as sa:
        served(None, sa.address)


@test(marks=ALLOW)
def without_a_list_nobody_is_refused():
    cfg = allow_config(None)
    with SocketActivated(["-c", cfg]) as sa:
        served("127.0.0.2", sa.address)
    log = read_log(cfg)
    not_contains(log, REFUSED)
    not_contains(log, "not a loopback address", "a connection on 127.0.0.1 is not open to other hosts")


def on_routable_address(cfg):
    """Three connections to a handler on 192.0.2.1:2224, an address on the loopback of a network
    namespace of the test's own: a socket there is one other hosts could reach."""
    rc, lines = in_network_namespace("ip addr add 192.0.2.1/32 dev lo", "192.0.2.1:2224", ["192.0.2.1"] * 3,
                                     ["-c", cfg])
    eq((rc, lines), (0, ["192.0.2.1 16:PERM unknown map,"] * 3))
    return read_log(cfg)


@pytest.mark.root
@test(timeout=60, marks=ALLOW)
def handler_on_a_routable_address_warns_without_a_list():
    fresh()
    log = on_routable_address(allow_config(None))
    warnings = [l for l in log.splitlines() if "not a loopback address" in l]
    eq(len(warnings), 1, "one warning for three handlers (once a minute): " + log[-2000:])
    contains(warnings[0], "warning: a connection came in on 192.0.2.1:2224, not a loopback address, and "
                          "sysconfig.allow is not set: every host that reaches it may query every map")
    fresh()
    log = on_routable_address(allow_config(["192.0.2.1"]))
    not_contains(log, "not a loopback address", "no warning with an allow-list")
    not_contains(log, REFUSED)


def listening(cfg, where, port):
    p = spawn(cfg, ["--listen", where], stdin=subprocess.DEVNULL)
    wait_for(lambda: harness._tcp_listening(port, p.pid) or p.poll() is not None, timeout=scaled(10),
             msg="sockmapd --listen %s" % where)
    ok(p.poll() is None, "sockmapd --listen %s exited: %s" % (where, read_log(cfg)[-1500:]))
    return p


@test(timeout=90, marks=ALLOW)
def listen_ipv4():
    port = free_port()
    check_modes(lambda cfg: (listening(cfg, "127.0.0.1:%d" % port, port), ("127.0.0.1", port))[1],
                ["127.0.0.1/32"], "127.0.0.1", "127.0.0.2", "127.0.0.2")


@test(timeout=90, marks=ALLOW)
def listen_dual_stack_maps_ipv4_clients():
    # "::" alone takes IPv4 too: an IPv4 client is ::ffff:127.0.0.x to the socket.
    fresh()
    port = free_port()
    cfg = allow_config(["127.0.0.1/32"])
    listening(cfg, "[::]:%d" % port, port)
    for _ in range(3):
        refused("127.0.0.2", ("127.0.0.1", port))
    refused("::1", ("::1", port))
    served("127.0.0.1", ("127.0.0.1", port))
    log = read_log(cfg)
    lines = [l for l in log.splitlines() if REFUSED in l]
    eq(len(lines), 2, "one warning per address: " + log[-2000:])
    contains(lines[0], "refused a connection from 127.0.0.2: ", "logged as IPv4")
    contains(lines[1], "refused a connection from ::1: ")
    not_contains(log, "not a loopback address", "no warning with an allow-list")


@test(timeout=60, marks=ALLOW)
def listen_open_without_a_list_warns():
    port = free_port()
    cfg = allow_config(None)
    p = listening(cfg, "0.0.0.0:%d" % port, port)
    wait_for(lambda: "listening on 0.0.0.0:%d, not a loopback address" % port in read_log(cfg), timeout=10,
             msg="the warning: " + read_log(cfg)[-1500:])
    line = [l for l in read_log(cfg).splitlines() if "not a loopback address" in l][0]
    contains(line, "warning: ")
    contains(line, "every host that reaches it may query every map")
    contains(line, "sysconfig.allow")
    served("127.0.0.1", ("127.0.0.1", port))
    stop_pid(p.pid, popen=p)
    port = free_port()
    cfg = allow_config(None)
    p = listening(cfg, "127.0.0.1:%d" % port, port)
    served("127.0.0.1", ("127.0.0.1", port))
    not_contains(read_log(cfg), "not a loopback address", "loopback is not open to other hosts")


@test(timeout=60, marks=ALLOW)
def reload_brings_a_new_list():
    fresh()
    port = free_port()
    path = allow_config(["127.0.0.1/32"])
    p = listening(path, "127.0.0.1:%d" % port, port)
    refused("127.0.0.2", ("127.0.0.1", port))
    with open(path) as f:
        cfg = json.load(f)
    cfg["sysconfig"]["allow"] = ["127.0.0.0/8"]
    write_config(path, cfg)
    os.kill(p.pid, signal.SIGHUP)
    wait_for(lambda: "reload: configuration read" in read_log(path), timeout=10, msg="reloaded")
    served("127.0.0.2", ("127.0.0.1", port))


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

LOAD = (pytest.mark.slow, pytest.mark.load)  # the marks of this section's cases


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


@test(timeout=150, marks=LOAD)
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


# ---------------------------------------------------------------- security review findings (markers security, root)
#
# what a local user or a network client can do, tried on the built binary.
#
# Each case reproduces a finding of the security review (issue 21) and
# checks that it no longer works: the log file as root (links, forged
# lines, the reload after the privilege drop), commands root runs beside
# the handlers' failover state, core dumps of a process holding the
# password, and the per-peer limit of the accept loop.  The suite runs as
# root and switches to the user "nobody" for the local user's side; run as
# another user it fails.  Everything listens on 127.0.0.0/8 only.

SECURITY = (pytest.mark.root, pytest.mark.security)  # the marks of this section's cases


# A map name that, logged raw, appends a cron line and a line of its own.
FORGED_MAP = b"x\n*\t*\t*\t*\t*\troot\ttouch\t/tmp/pwned\n2026-01-01T00:00:00+0000\tsockmapd[1]:\terror:\t\x1b[2Jforged"


def nobody():
    if os.geteuid() != 0:
        raise AssertionError("the security cases need root (they switch to nobody for a local user's side)")
    return pwd.getpwnam("nobody")


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


def listen_port(cfg, port, *extra):
    """--listen on 127.0.0.1:PORT, once it listens."""
    p = listen(cfg, "127.0.0.1:%d" % port, *extra)
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

@test(timeout=60, marks=SECURITY)
def log_path_planted_link_is_not_followed_as_root():
    user = nobody()
    logdir = nobody_dir("logdir")  # the service user may write the log's directory
    target = tmpfile("root-only", content=b"root's own data\n", mode=0o600)
    logfile = os.path.join(logdir, "sockmapd.log")
    os.symlink(target, logfile)
    os.lchown(logfile, user.pw_uid, user.pw_gid)
    cfg = config(sysconfig={"run_as_user": "nobody", "logfile": logfile, "loglevel": "debug"})
    port = free_port()
    p = listen_port(cfg, port)
    with Client(port) as c:
        eq(c.ask(FORGED_MAP, b"k"), b"PERM unknown map")
        eq(c.ask("othermap", "ping"), b"OK pong")
    eq(stop(p), 0)
    with open(target, "rb") as f:
        eq(f.read(), b"root's own data\n", "the link's target is untouched")
    contains(p.stderr.read().decode(errors="replace"), "cannot open log file %s: it is a symbolic link" % logfile)


@test(timeout=60, marks=SECURITY)
def log_file_belongs_to_run_as_user_survives_reload_and_has_no_forged_lines():
    user = nobody()
    logfile = os.path.join(tmpdir("logdir"), "sockmapd.log")  # root's directory
    # Readable by the user dropped to, who reads it again on the reload.
    cfg = readable_config(sysconfig={"run_as_user": "nobody", "logfile": logfile, "loglevel": "debug"})
    port = free_port()
    p = listen_port(cfg, port)
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

@test(timeout=60, marks=SECURITY)
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

@test(timeout=60, marks=SECURITY)
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


@test(timeout=60, marks=SECURITY)
def listen_handlers_follow_core_dumps_after_the_drop():
    user = nobody()
    for wanted in (False, True):
        cfg = config(sysconfig={"run_as_user": "nobody", "core_dumps": wanted})
        port = free_port()
        p = listen_port(cfg, port)
        with Client(port) as c:
            eq(c.ask("othermap", "ping"), b"OK pong")
            kids = wait_for(lambda: len(proc_children(p.pid)) == 2 and proc_children(p.pid), msg="the handler and a spare")
            for kid in kids:
                eq(ids(kid)[1], user.pw_uid)
                eq(dumpable(kid), wanted, "handler, core_dumps %s" % wanted)
            eq(dumpable(p.pid), wanted, "accept loop, core_dumps %s" % wanted)
        eq(stop(p), 0)


# ---------------------------------------------------------------- a pipelined batch

SLOW_MAP = {"service": "slow", "database": "other", "query": "SELECT CONCAT(val, SLEEP(1)) FROM things WHERE name = %s"}


@test(timeout=90, marks=SECURITY)
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


@test(timeout=60, marks=SECURITY)
def one_client_cannot_hold_every_handler():
    """Slow clients of one address (each sends a request now and then) hold at most --max-per-peer handlers."""
    cfg = config()
    port = free_port()
    p = listen_port(cfg, port, "--max-children", "4", "--max-per-peer", "2")
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


@test(timeout=120, marks=SECURITY)
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


@test(timeout=120, marks=SECURITY)
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


@test(timeout=60, marks=SECURITY)
def a_client_that_waits_for_each_reply_is_never_out_of_budget():
    cfg = config(sysconfig={"loglevel": "info"}, extra_maps=SEARCH_MAPS)
    with SocketActivated(["-c", cfg]) as sa:
        with sa.client(timeout=scaled(10)) as c:
            for i in range(2 * BUDGET // BOUND):  # twice the budget, a request at a time
                eq(c.ask("access", deep_key(i % 100)), b"NOTFOUND ")
    not_contains(read_log(cfg), "query budget")


# ---------------------------------------------------------------- logs a client cannot flood

@test(timeout=60, marks=SECURITY)
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


@test(timeout=120, marks=SECURITY)
def the_address_past_256_decoys_is_logged():
    """Decoys from one network share a line; 256 networks fill the refusal log's table, the 257th's address is named."""
    cfg = config(sysconfig={"loglevel": "info", "allow": ["192.0.2.1"]})
    port = free_port()
    p = listen_port(cfg, port)
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

@test(timeout=90, marks=SECURITY)
def a_stop_with_50_waiting_starts_no_handler_past_the_cap():
    cfg = config(sysconfig={"loglevel": "info"})
    port = free_port()
    p = listen_port(cfg, port, "--max-children", "2")
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
    started = [l for l in read_log(cfg).splitlines() if re.search(r"handler \d+ (for .* started|started as a spare)", l)]
    eq(len(started), 2, "handlers started: %r" % started)


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
