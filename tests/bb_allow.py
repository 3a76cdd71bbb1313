#!/usr/bin/python3
"""bb_allow — sysconfig.allow: who may connect, in every mode.

Loopback gives several source addresses: a client bound to 127.0.0.2
against "allow": ["127.0.0.1/32"] is refused (no reply, the connection
closed, one warning naming 127.0.0.2 however often it tries, no database
work, no handler forked in the accept loop), one from 127.0.0.1 is
served.  The same for ::1 and for unix sockets, and for an IPv4 client of
a dual-stack socket (::ffff:127.0.0.2).  Modes: a pipe (never refused),
the Accept=yes handler on fd 3 and --inetd on stdin (systemd-socket-
activate -a), the Accept=no service (systemd-socket-activate without -a)
and --listen.  A malformed entry exits 78 naming its key path.  Without a
list, a socket on a non-loopback address is warned about at start: a
listening one, and a handler's connection on 192.0.2.1 (an address on the
loopback of a network namespace of the test's own), once a minute.
"""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness  # noqa: E402
from harness import *  # noqa: E402,F403

REFUSED = "not in sysconfig.allow"


def config(allow, **sysconfig):
    """A config whose database is a closed port: a served lookup is TEMP and logs a failed connect."""
    sysconfig = dict(sysconfig)
    if allow is not None:
        sysconfig["allow"] = allow
    return temp_config(base_config(None, sysconfig=sysconfig, database={"connect_timeout": 1}))


def connect_from(source, address, timeout=10):
    """A Client bound to `source` ("127.0.0.2", "::1"), connected to `address` ((host, port) or a unix path)."""
    if isinstance(address, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM)
        s.bind((source, 0))
    s.settimeout(scaled(timeout))
    s.connect(address)
    return Client(s, timeout=timeout)


def served(source, address):
    """A lookup from `source` gets a reply (TEMP: the database is a closed port)."""
    with connect_from(source, address) as c:
        reply = c.ask("recipient", "someone@example.org")
        startswith(reply, b"TEMP ", "a lookup from %s is answered" % source)


def refused(source, address):
    """A lookup from `source` gets nothing; the server closes the connection."""
    with connect_from(source, address) as c:
        try:
            c.send_raw(encode(b"recipient someone@example.org"))
        except (BrokenPipeError, ConnectionResetError):
            return
        eq(c.read_until_eof(timeout=10), b"", "no reply to %s, then the connection is closed" % source)


def refusals_logged_once(cfg, who, times=4):
    """After `times` refusals of `who`: one warning naming it, and no database work for any of them."""
    log = read_log(cfg)
    lines = [l for l in log.splitlines() if REFUSED in l]
    eq(len(lines), 1, "one warning for %d refusals: %s" % (times, log[-2000:]))
    contains(lines[0], "warning: refused a connection from %s: " % who)
    return log


def fresh():
    """Each test starts with no memory of refusals (the handlers share it in the runtime directory)."""
    reset_runtime_dir()


def check_modes(make, allow, good, bad, who):
    """`make(cfg)` starts a server and returns its address: `good` served, `bad` refused (several times)."""
    fresh()
    cfg = config(allow)
    address = make(cfg)
    for _ in range(4):
        refused(bad, address)
    served(good, address)
    log = refusals_logged_once(cfg, who)
    eq(log.count("cannot connect to database"), 1, "database work for the served client only: " + log[-2000:])


# ---------------------------------------------------------------- the handler: fd 3 and stdin

def activated(**kw):
    def make(cfg):
        return SocketActivated(["-c", cfg] + (["--inetd"] if kw.get("inetd") else []), **kw).address
    return make


@test(timeout=90)
def fd3_ipv4():
    check_modes(activated(), ["127.0.0.1/32"], "127.0.0.1", "127.0.0.2", "127.0.0.2")


@test(timeout=90)
def inetd_ipv4():
    check_modes(activated(inetd=True), ["127.0.0.1/32"], "127.0.0.1", "127.0.0.2", "127.0.0.2")


@test(timeout=90)
def fd3_ipv6():
    # ::1 is the only IPv6 loopback address: the list decides for it.
    fresh()
    cfg = config(["127.0.0.1/32"])
    with SocketActivated(["-c", cfg], host="::1") as sa:
        for _ in range(3):
            refused("::1", sa.address)
    refusals_logged_once(cfg, "::1", times=3)
    fresh()
    cfg = config(["::1/128"])
    with SocketActivated(["-c", cfg], host="::1") as sa:
        served("::1", sa.address)
    not_contains(read_log(cfg), REFUSED)


@test(timeout=90)
def inetd_unix_socket():
    fresh()
    path = os.path.join(tmpdir("sock"), "s")
    cfg = config(["127.0.0.1/32", "::1"])
    with SocketActivated(["-c", cfg, "--inetd"], inetd=True, unix=path) as sa:
        for _ in range(3):
            refused(None, sa.address)
    refusals_logged_once(cfg, "unix", times=3)
    cfg = config(["127.0.0.1/32", "unix"])
    path = os.path.join(tmpdir("sock"), "s")
    with SocketActivated(["-c", cfg, "--inetd"], inetd=True, unix=path) as sa:
        served(None, sa.address)


@test
def pipe_is_never_refused():
    cfg = config(["192.0.2.25"])
    rc, out, err = run_pipe(cfg, encode(b"nosuch key"))
    eq((rc, decode_stream(out)), (0, [b"PERM unknown map"]))
    not_contains(read_log(cfg), REFUSED)


@test
def without_a_list_nobody_is_refused():
    cfg = config(None)
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
@test(timeout=60)
def handler_on_a_routable_address_warns_without_a_list():
    fresh()
    log = on_routable_address(config(None))
    warnings = [l for l in log.splitlines() if "not a loopback address" in l]
    eq(len(warnings), 1, "one warning for three handlers (once a minute): " + log[-2000:])
    contains(warnings[0], "warning: a connection came in on 192.0.2.1:2224, not a loopback address, and "
                          "sysconfig.allow is not set: every host that reaches it may query every map")
    fresh()
    log = on_routable_address(config(["192.0.2.1"]))
    not_contains(log, "not a loopback address", "no warning with an allow-list")
    not_contains(log, REFUSED)


# ---------------------------------------------------------------- the accept loop: Accept=no and --listen

def service(cfg, **kw):
    return SocketActivated(["-c", cfg], accept=False, **kw)


@test(timeout=90)
def service_ipv4_no_fork_for_a_refused_peer():
    fresh()
    cfg = config(["127.0.0.1/32"])
    sa = service(cfg)
    for _ in range(4):
        refused("127.0.0.2", sa.address)
    served("127.0.0.1", sa.address)
    log = refusals_logged_once(cfg, "127.0.0.2")
    not_contains(log, "for 127.0.0.2:", "no handler forked for a refused peer")
    contains(log, "for 127.0.0.1:")
    eq(log.count("cannot connect to database"), 1)


@test(timeout=90)
def service_unix_socket():
    fresh()
    cfg = config(["127.0.0.1/32"])
    sa = service(cfg, unix=os.path.join(tmpdir("sock"), "s"))
    for _ in range(3):
        refused(None, sa.address)
    refusals_logged_once(cfg, "unix", times=3)
    cfg = config(["unix"])
    sa = service(cfg, unix=os.path.join(tmpdir("sock"), "s"))
    served(None, sa.address)


def listening(cfg, where, port):
    p = spawn(cfg, ["--listen", where], stdin=subprocess.DEVNULL)
    wait_for(lambda: harness._tcp_listening(port, p.pid) or p.poll() is not None, timeout=scaled(10),
             msg="sockmapd --listen %s" % where)
    ok(p.poll() is None, "sockmapd --listen %s exited: %s" % (where, read_log(cfg)[-1500:]))
    return p


@test(timeout=90)
def listen_ipv4():
    port = free_port()
    check_modes(lambda cfg: (listening(cfg, "127.0.0.1:%d" % port, port), ("127.0.0.1", port))[1],
                ["127.0.0.1/32"], "127.0.0.1", "127.0.0.2", "127.0.0.2")


@test(timeout=90)
def listen_dual_stack_maps_ipv4_clients():
    # "::" alone takes IPv4 too: an IPv4 client is ::ffff:127.0.0.x to the socket.
    fresh()
    port = free_port()
    cfg = config(["127.0.0.1/32"])
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


@test(timeout=60)
def listen_open_without_a_list_warns():
    port = free_port()
    cfg = config(None)
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
    cfg = config(None)
    p = listening(cfg, "127.0.0.1:%d" % port, port)
    served("127.0.0.1", ("127.0.0.1", port))
    not_contains(read_log(cfg), "not a loopback address", "loopback is not open to other hosts")


@test(timeout=60)
def reload_brings_a_new_list():
    fresh()
    port = free_port()
    path = config(["127.0.0.1/32"])
    p = listening(path, "127.0.0.1:%d" % port, port)
    refused("127.0.0.2", ("127.0.0.1", port))
    with open(path) as f:
        cfg = json.load(f)
    cfg["sysconfig"]["allow"] = ["127.0.0.0/8"]
    write_config(path, cfg)
    os.kill(p.pid, signal.SIGHUP)
    wait_for(lambda: "reload: configuration read" in read_log(path), timeout=10, msg="reloaded")
    served("127.0.0.2", ("127.0.0.1", port))


# ---------------------------------------------------------------- the config

@test
def malformed_entries_exit_78_naming_the_key():
    cfg = config(["127.0.0.1/32", "mta.example.org", "10.1.2.3/8"])
    r = subprocess.run([sockmapd_path(), "-c", cfg, "--check-config", "--offline"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=sockmapd_env(), timeout=scaled(10))
    err = r.stderr.decode()
    eq(r.returncode, 78, err)
    contains(err, "sysconfig.allow[1]: \"mta.example.org\": host names are not looked up")
    contains(err, "sysconfig.allow[2]: \"10.1.2.3/8\" has bits set past the /8 prefix")
    # A handler with that config answers TEMP (it cannot know whom to refuse) and exits 78.
    rc, out, _ = run_pipe(cfg, encode(b"recipient a@b"))
    eq(rc, 78)
    startswith(decode_stream(out)[0], b"TEMP ")


if __name__ == "__main__":
    main()
