#!/usr/bin/python3
"""bb_core — black-box tests of build/sockmapd that need no database.

Protocol framing, reply policy without a database (unknown maps, --query on
an unreachable host), activation modes (pipe, systemd fd 3, xinetd-style fd
0/1/2 on one socket), timeouts, memory bound, a broken config in a session
and the command line (what --check-config says about a file: bb_config).  Concurrent clients under socket activation are bb_deploy's; a database
outage in each mode, bb_faults's.
Run: SOCKMAPD=build/sockmapd tests/bb_core.py [test-name-or-glob ...]
"""

import os
import select
import socket
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F401,F403

EX_USAGE, EX_TEMPFAIL, EX_CONFIG = 64, 75, 78
STATUS_WORDS = (b"OK ", b"NOTFOUND ", b"PERM ", b"TEMP ", b"TIMEOUT ")
UNKNOWN = encode(b"nosuch somekey")


def config(**sysconfig):
    """A config whose database is a closed local port; `sysconfig` overrides merged."""
    return temp_config(base_config(None, sysconfig=sysconfig, database={"connect_timeout": 1}))


_shared = {}


def shared_config():
    if "cfg" not in _shared:
        _shared["cfg"] = config()
    return _shared["cfg"]


def status(payload):
    return payload.split(b" ", 1)[0]



def read_until_exit(p, timeout):
    """Read p.stdout until EOF and wait for exit, stdin left as the caller has it.

    Returns (stdout bytes, seconds until EOF); AssertionError if it stays open.
    """
    started = time.monotonic()
    deadline = started + scaled(timeout)
    fd = p.stdout.fileno()
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("sockmapd still running after %gs; got %r" % (scaled(timeout), b"".join(chunks)[:300]))
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    elapsed = time.monotonic() - started
    p.wait(timeout=scaled(5))
    return b"".join(chunks), elapsed


# ---------------------------------------------------------------- pipe sessions

@test
def pipe_unknown_map_is_perm():
    rc, out, err = run_pipe(shared_config(), b"14:nosuch somekey,")
    got = replies(out)
    eq(len(got), 1, "one reply")
    startswith(got[0], b"PERM ")
    ok(len(got[0]) > len(b"PERM "), "PERM carries a reason")
    eq(rc, 0, "exit status at EOF")


@test
def pipe_eof_without_requests():
    rc, out, err = run_pipe(shared_config(), b"")
    eq(out, b"")
    eq(rc, 0)


@test
def pipe_many_requests_one_session():
    keys = [b"k%d" % i for i in range(150)] + [b"with space", b"a,b,c", b"nul\0byte", b"3:abc,", b"\xff\xfe"]
    stream = b"".join(encode(b"nosuch " + k) for k in keys)
    rc, out, err = run_pipe(shared_config(), stream)
    got = replies(out)
    eq(len(got), len(keys), "one reply per request")
    for payload in got:
        startswith(payload, b"PERM ")
    eq(rc, 0)


@test
def pipe_request_without_space_then_valid():
    rc, out, err = run_pipe(shared_config(), encode(b"nosuch") + UNKNOWN + encode(b"") + UNKNOWN)
    got = replies(out)
    eq(len(got), 4, "the session goes on after a request without a space")
    for payload in got:
        startswith(payload, b"PERM ")
    eq(rc, 0)


@test
def pipe_request_of_max_length_accepted():
    body = b"n" * MAX_MAP_NAME + b" " + b"k" * MAX_KEY
    eq(len(body), MAX_REQUEST)
    rc, out, err = run_pipe(shared_config(), encode(body) + UNKNOWN)
    got = replies(out)
    eq(got, [b"PERM unknown map", b"PERM unknown map"], "the longest request is no framing error")
    eq(rc, 0)


# Each framing error: a PERM reply (if still writable), then the end of the
# session; a valid request after the error is not answered.
FRAMING_ERRORS = [
    ("empty_length", b":abc,", True),
    ("non_digit_length", b"x:abc,", True),
    ("digit_then_letter", b"1x:abc,", True),
    ("leading_zero", b"01:a,", True),
    ("negative_length", b"-1:a,", True),
    ("length_over_limit", b"%d:" % (MAX_REQUEST + 1) + b"n" * (MAX_REQUEST + 1) + b",", True),
    ("length_overflow", b"99999999999999999999:abc,", True),
    ("missing_comma", b"3:abcX", True),
    ("space_before_colon", b"3 :abc,", True),
    ("eof_inside_length", b"12", False),
    ("eof_after_colon", b"5:", False),
    ("eof_inside_payload", b"10:abc", False),
    ("eof_before_comma", b"3:abc", False),
]


def _framing_test(bad, then_valid):
    def run():
        prefix = UNKNOWN  # a good request first: the error ends a session in progress
        stream = prefix + bad + (UNKNOWN if then_valid else b"")
        rc, out, err = run_pipe(shared_config(), stream)
        got = replies(out)
        eq(len(got), 2, "a reply to the good request, one PERM for the error, nothing after")
        startswith(got[0], b"PERM ")
        startswith(got[1], b"PERM ")
        eq(rc, 0, "exit status after a framing error")
    return run


for _name, _bad, _then in FRAMING_ERRORS:
    test(name="framing_" + _name)(_framing_test(_bad, _then))


@test
def framing_error_answered_without_waiting_for_eof():
    for bad in (b"%d:" % (MAX_REQUEST + 1), b"x", b"01:", b"99999999999999999999"):
        p = spawn(shared_config())
        p.stdin.write(bad)
        p.stdin.flush()  # stdin stays open: the error must be seen on arrival
        out, secs = read_until_exit(p, 5)
        got = replies(out)
        eq(len(got), 1, "one PERM for %r" % bad)
        startswith(got[0], b"PERM ")
        ok(secs < scaled(2), "closed %.2fs after %r" % (secs, bad))
        p.stdin.close()


@test
def framing_zero_length_is_valid():
    rc, out, err = run_pipe(shared_config(), b"0:," + UNKNOWN)
    got = replies(out)
    eq(len(got), 2, "0:, is an (empty) request, the session goes on")
    startswith(got[0], b"PERM ")
    startswith(got[1], b"PERM ")


def _flood(prefix, total=50 * 1024 * 1024):
    """Write prefix + `total` bytes without a comma; check a quick PERM, close and small peak RSS.

    sockmapd runs under GNU time, which reports its peak RSS (its own ru_maxrss would count ours)."""
    timed, report = time_prefix()
    p = spawn(shared_config(), prefix=timed)
    pid = p.pid  # GNU time's: its exit status is sockmapd's
    kid = wait_for(lambda: proc_children(pid), msg="sockmapd started under GNU time")[0]
    written = [0]
    peak = [0]

    def writer():
        chunk = (b"1" if prefix == b"" else b"a") * 65536
        try:
            p.stdin.write(prefix)
            while written[0] < total:
                p.stdin.write(chunk)
                written[0] += len(chunk)
            p.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def sampler():
        # Not p.poll(): the loop below reaps GNU time with waitpid().
        while pid_alive(kid):
            v = vm_hwm_kb(kid)
            if v:
                peak[0] = max(peak[0], v)
            time.sleep(0.01)

    t = threading.Thread(target=writer, daemon=True)
    s = threading.Thread(target=sampler, daemon=True)
    started = time.monotonic()
    t.start()
    s.start()
    fd = p.stdout.fileno()
    out = b""
    deadline = started + scaled(10)
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out += chunk
    while True:
        wpid, wstatus = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            break
        if time.monotonic() > deadline:
            stop_pid(kid)
            stop_pid(pid, popen=p)
            raise AssertionError("sockmapd still running %gs into a %d-byte stream without a comma"
                                 % (scaled(10), total))
        time.sleep(0.02)
    p.returncode = os.waitstatus_to_exitcode(wstatus)
    elapsed = time.monotonic() - started
    t.join(5)
    s.join(1)
    peak_kb = max(peak[0], maxrss_from(report))
    got = replies(out)
    eq(len(got), 1, "one reply")
    startswith(got[0], b"PERM ")
    eq(p.returncode, 0, "exit status")
    ok(elapsed < scaled(3), "took %.2fs to give up on a %d-byte stream" % (elapsed, total))
    ok(written[0] < total, "sockmapd read the whole %d-byte stream instead of closing" % total)
    limit_kb = 20 * 1024 * (3 if "san" in os.environ.get("SOCKMAPD", "") else 1)
    ok(peak_kb < limit_kb, "peak RSS %d kB (limit %d kB)" % (peak_kb, limit_kb))
    print("    flood %r...: closed after %.2fs, %d bytes written, peak RSS %d kB" % (prefix[:8], elapsed, written[0], peak_kb))


@test
def flood_digits_without_colon():
    _flood(b"")


@test
def flood_payload_without_comma():
    _flood(b"9999:")


@test
def pipe_stdout_holds_only_netstrings_with_debug_log_to_syslog():
    cfg = temp_config(base_config(None, sysconfig={"logfile": "", "loglevel": "debug"},
                                  database={"connect_timeout": 1}))
    stream = UNKNOWN + encode(b"nospace") + encode(b"recipient alice@example.org") + b"x:"
    rc, out, err = run_pipe(cfg, stream, timeout=20)
    got = replies(out)
    eq([status(g) for g in got], [b"PERM", b"PERM", b"TEMP", b"PERM"])


# ---------------------------------------------------------------- no database: TEMP, never OK/NOTFOUND

@test
def query_unreachable_database_exit_75():
    rc, out, err = run_pipe(shared_config(), b"", args=["--query", "recipient", "alice@example.org"], timeout=20)
    eq(rc, EX_TEMPFAIL, "exit status (stderr %r)" % err[:300])
    startswith(out, b"TEMP ")


@test
def database_not_contacted_for_unknown_maps():
    # A listener that counts connections and never answers (a hung server).
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(16)
    port = lst.getsockname()[1]
    defer(lst.close)
    cfg = temp_config(base_config("127.0.0.1:%d" % port,
                                  database={"connect_timeout": 1, "read_timeout": 1, "write_timeout": 1}))
    rc, out, err = run_pipe(cfg, UNKNOWN + encode(b"nospace") + UNKNOWN)
    eq([status(g) for g in replies(out)], [b"PERM"] * 3)
    lst.settimeout(0.2)
    try:
        conn, _ = lst.accept()
        conn.close()
        raise AssertionError("sockmapd connected to the database for unknown maps only")
    except socket.timeout:
        pass
    # A configured map does connect, and a server that never answers is TEMP/TIMEOUT.
    started = time.monotonic()
    rc, out, err = run_pipe(cfg, encode(b"recipient alice@example.org"), timeout=30)
    got = replies(out)
    eq(len(got), 1)
    ok(status(got[0]) in (b"TEMP", b"TIMEOUT"), "hung database gave %r" % got[0])
    ok(time.monotonic() - started < scaled(12), "bounded by the timeouts")


# ---------------------------------------------------------------- activation modes

def _no_handlers_left(sa):
    wait_for(lambda: not sa.children(), timeout=5, msg="all handler processes exited")


@test
def socket_activation_framing_error_closes():
    with SocketActivated(["-c", shared_config()]) as sa:
        with sa.client() as c:
            startswith(c.ask("nosuch", "k"), b"PERM ")
            c.send_raw(b"01:a,")
            data = c.read_until_eof(5)
            got = replies(data)
            eq(len(got), 1)
            startswith(got[0], b"PERM ")
        _no_handlers_left(sa)


@test
def socket_activation_only_netstrings_on_socket():
    cfg = temp_config(base_config(None, sysconfig={"loglevel": "debug", "logfile": "/nonexistent-dir/sockmapd.log"},
                                  database={"connect_timeout": 1}))
    for inetd in (False, True):
        with SocketActivated(["-c", cfg], inetd=inetd) as sa:
            with sa.client(timeout=15) as c:
                c.send_raw(UNKNOWN + encode(b"nospace") + encode(b"recipient bob@example.org") + b"01:")
                got = replies(c.read_until_eof(15))
                eq([status(g) for g in got], [b"PERM", b"PERM", b"TEMP", b"PERM"], "inetd=%s" % inetd)


@test
def xinetd_style_stderr_is_the_socket():
    """fd 0, 1 and 2 all on the client socket: logs must never reach it."""
    cases = [
        ("unwritable logfile", {"loglevel": "debug", "logfile": "/nonexistent-dir/sockmapd.log"}),
        ("syslog", {"loglevel": "debug", "logfile": ""}),
    ]
    for label, sysconfig in cases:
        cfg = temp_config(base_config(None, sysconfig=sysconfig, database={"connect_timeout": 1}))
        p, c = xinetd_style(cfg)
        with c:
            c.send_raw(UNKNOWN + encode(b"nospace") + encode(b"sender x@y") + b"x:")
            data = c.read_until_eof(15)
        got = replies(data)
        eq([status(g) for g in got], [b"PERM", b"PERM", b"TEMP", b"PERM"], label)
        eq(p.wait(timeout=scaled(5)), 0, label)


@test
def xinetd_style_broken_config_answers_temp_only():
    cfg = temp_config('{"sysconfig": {"loglevel": "debug"}, "postmaps": [{"service": "a", "tabel": "x"}]}')
    p, c = xinetd_style(cfg)
    with c:
        reply = c.ask("recipient", "alice@example.org")
        startswith(reply, b"TEMP ")
        c.shutdown_write()
        eq(c.read_until_eof(5), b"", "nothing but replies on the socket")
    ok(p.wait(timeout=scaled(5)) in (0, EX_CONFIG), "exit status %s" % p.returncode)


@test
def xinetd_style_bad_option_writes_nothing():
    p, c = xinetd_style(None, args=["--no-such-option"])
    with c:
        c.shutdown_write()
        eq(c.read_until_eof(5), b"", "a usage error must not be written to the client socket")
    eq(p.wait(timeout=scaled(5)), EX_USAGE)


# ---------------------------------------------------------------- timeouts

@test
def idle_timeout_closes_silent_client_pipe():
    p = spawn(config(idle_timeout=1))
    out, secs = read_until_exit(p, 6)  # stdin stays open and silent
    eq(out, b"")
    ok(0.8 <= secs <= scaled(3.0), "closed after %.2fs (idle_timeout 1)" % secs)
    eq(p.returncode, 0)


@test
def idle_timeout_closes_silent_client_socket():
    with SocketActivated(["-c", config(idle_timeout=1)]) as sa:
        with sa.client() as c:
            startswith(c.ask("nosuch", "k"), b"PERM ")
            started = time.monotonic()
            data = c.read_until_eof(6)
            secs = time.monotonic() - started
        replies(data)
        ok(0.8 <= secs <= scaled(3.0), "closed after %.2fs (idle_timeout 1)" % secs)
        _no_handlers_left(sa)


@test
def idle_timeout_closes_dribbling_client():
    with SocketActivated(["-c", config(idle_timeout=1)]) as sa:
        with sa.client() as c:
            started = time.monotonic()
            c.send_raw(b"9999:")
            closed = None
            while time.monotonic() - started < scaled(8):
                try:
                    c.send_raw(b"a")
                except (BrokenPipeError, ConnectionResetError):
                    closed = time.monotonic() - started
                    break
                r, _, _ = select.select([c.sock], [], [], 0.3)
                if r:
                    data = c.read_until_eof(2)
                    closed = time.monotonic() - started
                    got = replies(data)
                    ok(all(g.startswith((b"PERM ", b"TEMP ")) for g in got), "replies %r" % got)
                    break
            ok(closed is not None, "a client dribbling one byte per 0.3s was never closed")
            ok(0.8 <= closed <= scaled(3.5), "dribbler closed after %.2fs (idle_timeout 1)" % closed)
        _no_handlers_left(sa)


@pytest.mark.slow
@test
def idle_timeout_not_hit_by_steady_requests():
    with SocketActivated(["-c", config(idle_timeout=1)]) as sa:
        with sa.client() as c:
            for i in range(6):  # 3 s in all, a request every 0.5 s
                startswith(c.ask("nosuch", "k%d" % i), b"PERM ", "request %d" % i)
                time.sleep(0.5)


@pytest.mark.slow
@test
def max_session_ends_busy_client():
    with SocketActivated(["-c", config(idle_timeout=10, max_session=2)]) as sa:
        with sa.client() as c:
            started = time.monotonic()
            closed = None
            while time.monotonic() - started < scaled(8):
                try:
                    c.ask("nosuch", "k", timeout=2)
                except (EOFError, ConnectionResetError, BrokenPipeError):
                    closed = time.monotonic() - started
                    break
                time.sleep(0.2)
            ok(closed is not None, "max_session 2 never ended the session")
            ok(1.5 <= closed <= scaled(4), "ended after %.2fs (max_session 2)" % closed)


# ---------------------------------------------------------------- a broken config in a session
# (what --check-config says about a file, and its exit status: bb_config)

@test
def broken_config_session_answers_temp():
    cfg = temp_config('{"postmaps": [{"service": "recipient", "tabel": "x"}]}')
    rc, out, err = run_pipe(cfg, encode(b"recipient alice@example.org") + UNKNOWN)
    got = replies(out)
    eq(len(got), 2, "a reply per request")
    for g in got:
        startswith(g, b"TEMP ")
    ok(rc in (0, EX_CONFIG), "exit status %d" % rc)


# ---------------------------------------------------------------- command line

@test
def cli_version_and_help():
    rc, out, err = run_pipe(None, b"", args=["--version"])
    eq(rc, 0)
    contains(out + err, b"sockmapd")
    rc, out, err = run_pipe(None, b"", args=["--help"])
    eq(rc, 0)
    contains(out, b"--check-config")
    contains(out, b"--query")


@test
def cli_usage_errors_exit_64():
    for args in (["--no-such-option"], ["--offline"], ["--query", "onlymap"], ["-c"]):
        rc, out, err = run_pipe(None, b"", args=args)
        eq(rc, EX_USAGE, "exit status for %s (stderr %r)" % (args, err[:200]))
        eq(out, b"", "nothing on stdout for %s" % args)
    # Modes that exclude each other, said by the command-line parser itself.
    for args, said in ((["--offline"], b"--offline requires --check-config"),
                       (["--listen", "--query", "m", "k"], b"--query excludes --listen"),
                       (["-p", "2225", "--query", "m", "k"], b"--query excludes -p"),
                       (["--listen", "--check-config"], b"excludes")):
        rc, out, err = run_pipe(shared_config(), b"", args=args)
        eq(rc, EX_USAGE, "exit status for %s (stderr %r)" % (args, err[:200]))
        contains(err, said, "%s" % args)


if __name__ == "__main__":
    main()
