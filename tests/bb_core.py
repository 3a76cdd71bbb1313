#!/usr/bin/python3
"""bb_core — black-box tests of build/sockmapd that need no database.

Protocol framing, reply policy without a database (unknown maps, --query on
an unreachable host), activation modes (pipe, systemd fd 3, xinetd-style fd
0/1/2 on one socket), timeouts, memory bound, a broken config in a session
and the command line (what --check-config says about a file: bb_config);
hostile clients (malformed framing, 50 MB streams, stalled clients, a
client that never reads) with the handler's peak RSS, against the suite's
MariaDB (marker hostile).  Concurrent clients under socket activation are bb_deploy's; a database
outage in each mode, bb_faults's.
Run: SOCKMAPD=build/sockmapd tests/bb_core.py [test-name-or-glob ...]
"""

import errno
import glob
import os
import select
import socket
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F401,F403
from allowlist import REFUSED, allow_config  # noqa: E402

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


# ---------------------------------------------------------------- hostile clients, with the handler's peak RSS (marker hostile)
#
# hostile clients against a handler with a live database connection.
#
# Malformed framing, a key one byte over the limit, 50 MB streams without a comma, half a
# frame then silence, a client that never reads its replies, 1000 requests in
# one write.  Each case must end in bounded time with PERM or a clean close as
# doc/DESIGN.md says ("The protocol and the reply policy"), and the handler's
# peak RSS must stay under RSS_LIMIT_KB; the measured figures are printed.  The peak is the larger of GNU time's maximum
# resident set size (%M: the handler runs under /usr/bin/time, whose small
# footprint is all the fork leaves behind; Python's own would be counted if we
# forked the handler directly) and VmHWM sampled from /proc/PID/status.

HOSTILE = (pytest.mark.slow, pytest.mark.hostile)  # the marks of this section's cases


HOSTILE_IDLE = 2
MiB = 1024


RSS_LIMIT_KB = 16 * MiB * (8 if sanitized() else 1)
HOSTILE_FIGURES = []

HOSTILE_FOUND = (b"recipient postmaster@example.org", fixture_reply("recipient", "postmaster@example.org"))


def hostile_config():
    if "cfg" not in _hostile_cfg:
        _hostile_cfg["cfg"] = temp_config(base_config(shared_mariadb(), sysconfig={"loglevel": "info", "idle_timeout": HOSTILE_IDLE,
                                                                          "max_session": 120}))
    return _hostile_cfg["cfg"]


_hostile_cfg = {}


def record(case, peak_kb, secs, extra=""):
    line = "%-40s peak RSS %6d kB  %6.2fs%s" % (case, peak_kb, secs, ("  " + extra) if extra else "")
    HOSTILE_FIGURES.append(line)
    print("    " + line, flush=True)
    ok(peak_kb > 0, "%s: no RSS sample" % case)
    ok(peak_kb < RSS_LIMIT_KB, "%s: peak RSS %d kB over %d kB" % (case, peak_kb, RSS_LIMIT_KB))


def measured_socket_session():
    """systemd-socket-activate --inetd running each handler under GNU time; (SocketActivated, PeakRss, report path)."""
    prefix, out = time_prefix()
    sa = SocketActivated(prefix[1:] + [sockmapd_path(), "--inetd", "-c", hostile_config()], inetd=True, binary=prefix[0])
    return sa, PeakRss(sa.children), out


def handler_gone(sa, report):
    """Wait for the handler to exit; its peak RSS in kB (GNU time's figure)."""
    wait_for(lambda: not sa.children(), timeout=10, msg="the handler exited")
    return maxrss_from(report)


def pipe_case(stream, timeout=10):
    """Feed `stream` to a pipe session (stdin then closed); (replies, exit status, peak kB, seconds)."""
    prefix, report = time_prefix()
    s = PipeSession(hostile_config(), prefix=prefix)
    rss = PeakRss(lambda: [s.pid] + proc_children(s.pid))
    started = time.monotonic()
    err = None
    try:
        s.send_raw(stream)
    except BrokenPipeError as e:  # it closed early: fine, the replies tell
        err = e
    out = b""
    try:
        s.popen.stdin.close()
    except OSError:
        pass
    fd = s.popen.stdout.fileno()
    deadline = started + scaled(timeout)
    while True:
        left = deadline - time.monotonic()
        ok(left > 0, "the handler did not finish within %gs" % scaled(timeout))
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out += chunk
    rc = s.popen.wait(timeout=scaled(5))
    secs = time.monotonic() - started
    peak = max(rss.stop(), maxrss_from(report))
    return replies(out), rc, peak, secs


# ---------------------------------------------------------------- malformed framing

MALFORMED = [
    ("empty length", b":abc,"),
    ("non-digit length", b"x:abc,"),
    ("digit then letter", b"1x:abc,"),
    ("leading zero", b"01:a,"),
    ("negative length", b"-1:a,"),
    ("length over the limit", b"%d:" % (MAX_REQUEST + 1) + b"n" * (MAX_REQUEST + 1) + b","),
    ("20-digit length", b"99999999999999999999:abc,"),
    ("missing comma", b"3:abcX"),
    ("space before colon", b"3 :abc,"),
    ("NUL in length", b"1\x002:abc,"),
    ("plus sign", b"+3:abc,"),
    ("hex length", b"0x3:abc,"),
    ("binary garbage", bytes(range(256)) * 4),
]
TRUNCATED = [
    ("EOF inside length", b"12"),
    ("EOF after colon", b"5:"),
    ("EOF inside payload", b"10:abc"),
    ("EOF before comma", b"3:abc"),
]


@test(marks=HOSTILE)
def malformed_framing_corpus_perm_then_close():
    peak = 0
    started = time.monotonic()
    for label, bad in MALFORMED:
        got, rc, p, secs = pipe_case(encode(HOSTILE_FOUND[0]) + bad + encode(HOSTILE_FOUND[0]))
        eq(got[0], HOSTILE_FOUND[1], label + ": the good request before")
        eq(len(got), 2, label + ": one PERM for the error, nothing answered after it")
        startswith(got[1], b"PERM ", label)
        eq(rc, 0, label + ": exit status")
        peak = max(peak, p)
    for label, bad in TRUNCATED:
        got, rc, p, secs = pipe_case(encode(HOSTILE_FOUND[0]) + bad)
        eq(len(got), 2, label)
        eq(got[0], HOSTILE_FOUND[1], label)
        startswith(got[1], b"PERM ", label)
        eq(rc, 0, label + ": exit status")
        peak = max(peak, p)
    record("malformed framing (%d cases)" % (len(MALFORMED) + len(TRUNCATED)), peak, time.monotonic() - started)


@test(marks=HOSTILE)
def fuzz_seed_corpus_streams_answered_or_closed():
    files = sorted(glob.glob(os.path.join(REPO, "tests", "fuzz", "corpus", "netstring", "*")))
    ok(files, "no seed corpus in tests/fuzz/corpus/netstring")
    peak = 0
    started = time.monotonic()
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        got, rc, p, secs = pipe_case(data)
        for g in got:
            ok(status_word(g) in (b"OK", b"NOTFOUND", b"PERM", b"TEMP"), "%s: reply %r" % (path, g))
        eq(rc, 0, os.path.basename(path))
        peak = max(peak, p)
    record("fuzz seed corpus (%d files)" % len(files), peak, time.monotonic() - started)


# ---------------------------------------------------------------- size limits

@test(marks=HOSTILE)
def key_over_the_limit_is_perm_and_the_session_goes_on():
    key = b"k" * (MAX_KEY + 1)
    got, rc, peak, secs = pipe_case(encode(HOSTILE_FOUND[0]) + encode(b"recipient " + key) + encode(HOSTILE_FOUND[0]))
    eq(got, [HOSTILE_FOUND[1], b"PERM key too long", HOSTILE_FOUND[1]], "the good request, PERM, the good request again")
    eq(rc, 0)
    record("10001-byte key (PERM)", peak, secs)
    # A frame past the longest request is broken framing: PERM, then nothing.
    body = b"recipient " + b"k" * (MAX_REQUEST + 1 - len(b"recipient "))
    got, rc, peak, secs = pipe_case(encode(HOSTILE_FOUND[0]) + encode(body) + encode(HOSTILE_FOUND[0]))
    eq(got, [HOSTILE_FOUND[1], b"PERM netstring length over limit"], "the good request, then PERM, then nothing")
    eq(rc, 0)
    record("%d-byte request (PERM, close)" % (MAX_REQUEST + 1), peak, secs)
    # The longest key is a real lookup, whatever the map name's length.
    got, rc, peak, secs = pipe_case(encode(b"recipient " + b"k" * MAX_KEY) + encode(HOSTILE_FOUND[0]))
    eq(got, [b"NOTFOUND ", HOSTILE_FOUND[1]], "a 10000-byte key is looked up")
    record("10000-byte key (looked up)", peak, secs)


def _socket_flood(prefix, filler, total=50 * 1024 * 1024):
    """A socket session: a good request, then `prefix` and `total` bytes of `filler`; PERM and a quick close."""
    sa, rss, report = measured_socket_session()
    c = sa.client(timeout=10)
    eq(c.ask(*HOSTILE_FOUND[0].split(b" ", 1)), HOSTILE_FOUND[1])
    chunk = filler * (65536 // len(filler))
    sent = 0
    started = time.monotonic()
    c.sock.settimeout(scaled(5))
    try:
        c.send_raw(prefix)
        while sent < total:
            c.sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass
    data = b""
    try:
        data = c.read_until_eof(5)
    except ConnectionResetError:
        pass
    secs = time.monotonic() - started
    c.close()
    peak = max(handler_gone(sa, report), rss.stop())
    got = replies(data) if data else []
    ok(len(got) <= 1, "at most one reply: %r" % got[:3])
    if got:
        startswith(got[0], b"PERM ")
    ok(sent < total, "the handler read all %d bytes instead of closing" % total)
    ok(secs < scaled(5), "closed after %.2fs" % secs)
    return peak, secs, sent, got


@test(marks=HOSTILE)
def stream_of_50mb_without_comma_over_a_socket():
    peak, secs, sent, got = _socket_flood(b"10000:", b"a")
    eq(len(got), 1, "a PERM before the close")
    record("50 MB stream, no comma (socket)", peak, secs, "%d bytes accepted before the close" % sent)


@test(marks=HOSTILE)
def stream_of_50mb_digits_over_a_socket():
    peak, secs, sent, got = _socket_flood(b"", b"9")
    eq(len(got), 1, "a PERM before the close")
    record("50 MB of length digits (socket)", peak, secs, "%d bytes accepted before the close" % sent)


@test(marks=HOSTILE)
def stream_of_50mb_without_comma_over_a_pipe():
    got, rc, peak, secs = pipe_case(b"10000:" + b"a" * (50 * 1024 * 1024), timeout=20)
    eq(len(got), 1)
    startswith(got[0], b"PERM ")
    eq(rc, 0)
    record("50 MB stream, no comma (pipe)", peak, secs)


# ---------------------------------------------------------------- slow and stuck clients

@test(marks=HOSTILE)
def half_a_frame_then_silence_closed_after_idle_timeout():
    sa, rss, report = measured_socket_session()
    c = sa.client(timeout=10)
    eq(c.ask(*HOSTILE_FOUND[0].split(b" ", 1)), HOSTILE_FOUND[1])
    frame = encode(b"recipient alice@example.org")
    c.send_raw(frame[: len(frame) // 2])
    started = time.monotonic()
    try:
        data = c.read_until_eof(HOSTILE_IDLE + 5)
    except socket.timeout:
        raise AssertionError("a stalled half frame was never closed")
    secs = time.monotonic() - started
    c.close()
    peak = max(handler_gone(sa, report), rss.stop())
    for g in replies(data):
        startswith(g, b"PERM ")
    ok(HOSTILE_IDLE - 0.3 <= secs <= scaled(HOSTILE_IDLE + 1.5), "closed after %.2fs (idle_timeout %d)" % (secs, HOSTILE_IDLE))
    record("half a frame, then silence", peak, secs)


@test(timeout=90, marks=HOSTILE)
def client_that_never_reads_its_replies():
    sa, rss, report = measured_socket_session()
    c = sa.client(timeout=10)
    eq(c.ask("awkward", "max-ok")[:5], b"OK xx", "a 100000-byte reply")
    handler = wait_for(lambda: sa.children(), timeout=5, msg="a handler")[0]  # GNU time: gone with its child
    # Pipelined requests for 100000-byte replies, never reading any reply.
    request = encode(b"awkward max-ok") * 64
    sent = [0]
    stuck_at = [None]
    c.sock.settimeout(0.5)

    def writer():
        while True:
            try:
                c.sock.sendall(request)
                sent[0] += 64
            except socket.timeout:
                if stuck_at[0] is None:
                    stuck_at[0] = time.monotonic()
                if not pid_alive(handler):
                    return
            except OSError:
                return

    started = time.monotonic()
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    gone = None
    deadline = started + scaled(30)
    while time.monotonic() < deadline:
        if not pid_alive(handler):
            gone = time.monotonic()
            break
        time.sleep(0.02)
    ok(gone is not None, "the handler was still writing to a client that never reads after %gs" % scaled(30))
    t.join(5)
    c.close()
    peak = max(handler_gone(sa, report), rss.stop())
    secs = gone - started
    after_stuck = gone - stuck_at[0] if stuck_at[0] else float("nan")
    ok(secs < scaled(HOSTILE_IDLE + 8), "handler gone after %.2fs" % secs)
    record("client never reads replies", peak, secs,
           "%d requests queued (%.0f MB of replies owed); gone %.2fs after the client stopped getting through"
           % (sent[0], sent[0] * 0.1, after_stuck))


@test(timeout=90, marks=HOSTILE)
def client_that_never_reads_its_replies_pipe():
    """The same over pipes: the handler's stdout pipe fills up and nobody drains it."""
    import fcntl
    prefix, report = time_prefix()
    s = PipeSession(hostile_config(), prefix=prefix)
    rss = PeakRss(lambda: [s.pid] + proc_children(s.pid))
    fd = s.popen.stdin.fileno()
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    request = encode(b"awkward max-ok") * 64
    pending = b""
    queued = 0
    stuck_at = None
    started = time.monotonic()
    deadline = started + scaled(30)
    while s.popen.poll() is None and time.monotonic() < deadline:
        if not pending:
            pending = request
        _, w, _ = select.select([], [fd], [], 0.2)
        if not w:
            stuck_at = stuck_at or time.monotonic()
            continue
        try:
            n = os.write(fd, pending)
            pending = pending[n:]
            queued += n
        except BlockingIOError:
            continue
        except BrokenPipeError:
            break
    try:
        rc = s.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
    except Exception:
        raise AssertionError("the handler was still writing to a pipe nobody reads after %gs" % scaled(30))
    gone = time.monotonic()
    peak = max(rss.stop(), maxrss_from(report))
    eq(rc, 0, "exit status")
    ok(gone - started < scaled(HOSTILE_IDLE + 8), "handler gone after %.2fs" % (gone - started))
    record("client never reads replies (pipe)", peak, gone - started,
           "%d bytes of requests queued; gone %.2fs after the client stopped getting through"
           % (queued, gone - stuck_at if stuck_at else float("nan")))


# ---------------------------------------------------------------- pipelining

def thousand_requests():
    table = [(("%s %s" % (m, k)).encode(), fixture_reply(m, k)) for m, k in (
        ("recipient", "postmaster@example.org"),
        ("recipient", "team@example.org"),
        ("recipient", "nullonly@example.org"),
        ("exists", "carol@example.org"),
        ("sender", "spammer@bad.example"),
        ("transport", "example.net"),
        ("awkward", "a,b,c"),
        ("awkward", "3:abc,"),
        ("othermap", "ping"),
    )] + [(b"nosuchmap key", b"PERM"), (b"nospace", b"PERM")]
    reqs = []
    for i in range(1000):
        body, want = table[i % len(table)]
        if i % 7 == 3:  # a unique miss now and then, so no two neighbours are alike
            body, want = b"recipient miss-%d@example.org" % i, b"NOTFOUND "
        reqs.append((body, want))
    return reqs


def check_thousand(got, reqs, label):
    eq(len(got), len(reqs), label + ": replies")
    for i, ((body, want), reply) in enumerate(zip(reqs, got)):
        if want == b"PERM":
            startswith(reply, b"PERM ", "%s: reply %d to %r" % (label, i, body))
        else:
            eq(reply, want, "%s: reply %d to %r" % (label, i, body))


@test(marks=HOSTILE)
def thousand_requests_in_one_write_socket():
    reqs = thousand_requests()
    stream = b"".join(encode(b) for b, _ in reqs)
    sa, rss, report = measured_socket_session()
    c = sa.client(timeout=20)
    started = time.monotonic()
    sent = c.sock.send(stream)
    eq(sent, len(stream), "one write() took the whole %d-byte batch" % len(stream))
    got = []
    while len(got) < len(reqs):
        got.append(c.read_reply(20))
    secs = time.monotonic() - started
    c.shutdown_write()
    eq(c.read_until_eof(5), b"")
    c.close()
    peak = max(handler_gone(sa, report), rss.stop())
    check_thousand(got, reqs, "socket")
    record("1000 requests in one write (socket)", peak, secs, "%d bytes in, %.0f replies/s" % (len(stream), 1000 / secs))


@test(marks=HOSTILE)
def thousand_requests_in_one_write_pipe():
    reqs = thousand_requests()
    stream = b"".join(encode(b) for b, _ in reqs)
    got, rc, peak, secs = pipe_case(stream, timeout=20)
    check_thousand(got, reqs, "pipe")
    eq(rc, 0)
    record("1000 requests in one write (pipe)", peak, secs)


@test(marks=HOSTILE)
def figures():
    """Prints every peak RSS measured in this run (the suite's record).  Run
    alone, it measures a good request, broken framing and an oversized key
    itself, so it never depends on the order of the cases."""
    if not HOSTILE_FIGURES:
        for label, stream in (("one good request", encode(HOSTILE_FOUND[0])),
                              ("broken framing (PERM, close)", encode(HOSTILE_FOUND[0]) + b"x:abc,"),
                              ("10001-byte key (PERM)", encode(b"recipient " + b"k" * (MAX_KEY + 1)))):
            got, rc, peak, secs = pipe_case(stream)
            eq(rc, 0, label)
            startswith(got[-1], b"OK " if label == "one good request" else b"PERM ", label)
            record(label, peak, secs)
    print("    peak RSS limit %d kB%s" % (RSS_LIMIT_KB, " (sanitizer build)" if sanitized() else ""))
    for line in HOSTILE_FIGURES:
        print("    " + line)
    ok(len(HOSTILE_FIGURES) >= 3, "only %d peak RSS figures were recorded" % len(HOSTILE_FIGURES))


# ---------------------------------------------------------------- sysconfig.allow and a pipe (marker allow)
# A pipe has no peer: the list never refuses it.

ALLOW = (pytest.mark.allow,)  # the marks of this section's cases

@test(marks=ALLOW)
def pipe_is_never_refused():
    cfg = allow_config(["192.0.2.25"])
    rc, out, err = run_pipe(cfg, encode(b"nosuch key"))
    eq((rc, decode_stream(out)), (0, [b"PERM unknown map"]))
    not_contains(read_log(cfg), REFUSED)


if __name__ == "__main__":
    main()
