"""allowlist — helpers of the sysconfig.allow cases (marker allow) in bb_deploy, bb_service, bb_core.

Loopback gives several source addresses: a client bound to 127.0.0.2 against
"allow": ["127.0.0.1/32"] is refused (no reply, the connection closed, one
warning naming 127.0.0.2 however often it tries, no database work), one from
127.0.0.1 is served.  The configs' database is a closed port: a served lookup
is TEMP and logs a failed connect.
"""

import socket

from harness import *  # noqa: F401,F403

__all__ = ["REFUSED", "allow_config", "served", "refused", "refusals_logged_once", "fresh", "check_modes"]


REFUSED = "not in sysconfig.allow"


def allow_config(allow, **sysconfig):
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
    cfg = allow_config(allow)
    address = make(cfg)
    for _ in range(4):
        refused(bad, address)
    served(good, address)
    log = refusals_logged_once(cfg, who)
    eq(log.count("cannot connect to database"), 1, "database work for the served client only: " + log[-2000:])
