#!/usr/bin/python3
"""bb_hostile — hostile clients against a handler with a live database connection.

Malformed framing, a key one byte over the limit, 50 MB streams without a comma, half a
frame then silence, a client that never reads its replies, 1000 requests in
one write.  Each case must end in bounded time with PERM or a clean close as
doc/DESIGN.md says ("The protocol and the reply policy"), and the handler's
peak RSS must stay under RSS_LIMIT_KB; the measured figures are printed.  The peak is the larger of GNU time's maximum
resident set size (%M: the handler runs under /usr/bin/time, whose small
footprint is all the fork leaves behind; Python's own would be counted if we
forked the handler directly) and VmHWM sampled from /proc/PID/status.
Run: SOCKMAPD=build/sockmapd tests/bb_hostile.py [test-name-or-glob ...]
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

pytestmark = pytest.mark.slow  # 50 MB streams, stalled clients, peak RSS

IDLE = 2
MiB = 1024


RSS_LIMIT_KB = 16 * MiB * (8 if sanitized() else 1)
FIGURES = []

FOUND = (b"recipient postmaster@example.org", fixture_reply("recipient", "postmaster@example.org"))


def config():
    if "cfg" not in _cfg:
        _cfg["cfg"] = temp_config(base_config(shared_mariadb(), sysconfig={"loglevel": "info", "idle_timeout": IDLE,
                                                                          "max_session": 120}))
    return _cfg["cfg"]


_cfg = {}


def record(case, peak_kb, secs, extra=""):
    line = "%-40s peak RSS %6d kB  %6.2fs%s" % (case, peak_kb, secs, ("  " + extra) if extra else "")
    FIGURES.append(line)
    print("    " + line, flush=True)
    ok(peak_kb > 0, "%s: no RSS sample" % case)
    ok(peak_kb < RSS_LIMIT_KB, "%s: peak RSS %d kB over %d kB" % (case, peak_kb, RSS_LIMIT_KB))


def measured_socket_session():
    """systemd-socket-activate --inetd running each handler under GNU time; (SocketActivated, PeakRss, report path)."""
    prefix, out = time_prefix()
    sa = SocketActivated(prefix[1:] + [sockmapd_path(), "--inetd", "-c", config()], inetd=True, binary=prefix[0])
    return sa, PeakRss(sa.children), out


def handler_gone(sa, report):
    """Wait for the handler to exit; its peak RSS in kB (GNU time's figure)."""
    wait_for(lambda: not sa.children(), timeout=10, msg="the handler exited")
    return maxrss_from(report)


def pipe_case(stream, timeout=10):
    """Feed `stream` to a pipe session (stdin then closed); (replies, exit status, peak kB, seconds)."""
    prefix, report = time_prefix()
    s = PipeSession(config(), prefix=prefix)
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


@test
def malformed_framing_corpus_perm_then_close():
    peak = 0
    started = time.monotonic()
    for label, bad in MALFORMED:
        got, rc, p, secs = pipe_case(encode(FOUND[0]) + bad + encode(FOUND[0]))
        eq(got[0], FOUND[1], label + ": the good request before")
        eq(len(got), 2, label + ": one PERM for the error, nothing answered after it")
        startswith(got[1], b"PERM ", label)
        eq(rc, 0, label + ": exit status")
        peak = max(peak, p)
    for label, bad in TRUNCATED:
        got, rc, p, secs = pipe_case(encode(FOUND[0]) + bad)
        eq(len(got), 2, label)
        eq(got[0], FOUND[1], label)
        startswith(got[1], b"PERM ", label)
        eq(rc, 0, label + ": exit status")
        peak = max(peak, p)
    record("malformed framing (%d cases)" % (len(MALFORMED) + len(TRUNCATED)), peak, time.monotonic() - started)


@test
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

@test
def key_over_the_limit_is_perm_and_the_session_goes_on():
    key = b"k" * (MAX_KEY + 1)
    got, rc, peak, secs = pipe_case(encode(FOUND[0]) + encode(b"recipient " + key) + encode(FOUND[0]))
    eq(got, [FOUND[1], b"PERM key too long", FOUND[1]], "the good request, PERM, the good request again")
    eq(rc, 0)
    record("10001-byte key (PERM)", peak, secs)
    # A frame past the longest request is broken framing: PERM, then nothing.
    body = b"recipient " + b"k" * (MAX_REQUEST + 1 - len(b"recipient "))
    got, rc, peak, secs = pipe_case(encode(FOUND[0]) + encode(body) + encode(FOUND[0]))
    eq(got, [FOUND[1], b"PERM netstring length over limit"], "the good request, then PERM, then nothing")
    eq(rc, 0)
    record("%d-byte request (PERM, close)" % (MAX_REQUEST + 1), peak, secs)
    # The longest key is a real lookup, whatever the map name's length.
    got, rc, peak, secs = pipe_case(encode(b"recipient " + b"k" * MAX_KEY) + encode(FOUND[0]))
    eq(got, [b"NOTFOUND ", FOUND[1]], "a 10000-byte key is looked up")
    record("10000-byte key (looked up)", peak, secs)


def _socket_flood(prefix, filler, total=50 * 1024 * 1024):
    """A socket session: a good request, then `prefix` and `total` bytes of `filler`; PERM and a quick close."""
    sa, rss, report = measured_socket_session()
    c = sa.client(timeout=10)
    eq(c.ask(*FOUND[0].split(b" ", 1)), FOUND[1])
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


@test
def stream_of_50mb_without_comma_over_a_socket():
    peak, secs, sent, got = _socket_flood(b"10000:", b"a")
    eq(len(got), 1, "a PERM before the close")
    record("50 MB stream, no comma (socket)", peak, secs, "%d bytes accepted before the close" % sent)


@test
def stream_of_50mb_digits_over_a_socket():
    peak, secs, sent, got = _socket_flood(b"", b"9")
    eq(len(got), 1, "a PERM before the close")
    record("50 MB of length digits (socket)", peak, secs, "%d bytes accepted before the close" % sent)


@test
def stream_of_50mb_without_comma_over_a_pipe():
    got, rc, peak, secs = pipe_case(b"10000:" + b"a" * (50 * 1024 * 1024), timeout=20)
    eq(len(got), 1)
    startswith(got[0], b"PERM ")
    eq(rc, 0)
    record("50 MB stream, no comma (pipe)", peak, secs)


# ---------------------------------------------------------------- slow and stuck clients

@test
def half_a_frame_then_silence_closed_after_idle_timeout():
    sa, rss, report = measured_socket_session()
    c = sa.client(timeout=10)
    eq(c.ask(*FOUND[0].split(b" ", 1)), FOUND[1])
    frame = encode(b"recipient alice@example.org")
    c.send_raw(frame[: len(frame) // 2])
    started = time.monotonic()
    try:
        data = c.read_until_eof(IDLE + 5)
    except socket.timeout:
        raise AssertionError("a stalled half frame was never closed")
    secs = time.monotonic() - started
    c.close()
    peak = max(handler_gone(sa, report), rss.stop())
    for g in replies(data):
        startswith(g, b"PERM ")
    ok(IDLE - 0.3 <= secs <= scaled(IDLE + 1.5), "closed after %.2fs (idle_timeout %d)" % (secs, IDLE))
    record("half a frame, then silence", peak, secs)


@test(timeout=90)
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
    ok(secs < scaled(IDLE + 8), "handler gone after %.2fs" % secs)
    record("client never reads replies", peak, secs,
           "%d requests queued (%.0f MB of replies owed); gone %.2fs after the client stopped getting through"
           % (sent[0], sent[0] * 0.1, after_stuck))


@test(timeout=90)
def client_that_never_reads_its_replies_pipe():
    """The same over pipes: the handler's stdout pipe fills up and nobody drains it."""
    import fcntl
    prefix, report = time_prefix()
    s = PipeSession(config(), prefix=prefix)
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
    ok(gone - started < scaled(IDLE + 8), "handler gone after %.2fs" % (gone - started))
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


@test
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


@test
def thousand_requests_in_one_write_pipe():
    reqs = thousand_requests()
    stream = b"".join(encode(b) for b, _ in reqs)
    got, rc, peak, secs = pipe_case(stream, timeout=20)
    check_thousand(got, reqs, "pipe")
    eq(rc, 0)
    record("1000 requests in one write (pipe)", peak, secs)


@test
def figures():
    """Prints every peak RSS measured in this run (the suite's record).  Run
    alone, it measures a good request, broken framing and an oversized key
    itself, so it never depends on the order of the cases."""
    if not FIGURES:
        for label, stream in (("one good request", encode(FOUND[0])),
                              ("broken framing (PERM, close)", encode(FOUND[0]) + b"x:abc,"),
                              ("10001-byte key (PERM)", encode(b"recipient " + b"k" * (MAX_KEY + 1)))):
            got, rc, peak, secs = pipe_case(stream)
            eq(rc, 0, label)
            startswith(got[-1], b"OK " if label == "one good request" else b"PERM ", label)
            record(label, peak, secs)
    print("    peak RSS limit %d kB%s" % (RSS_LIMIT_KB, " (sanitizer build)" if sanitized() else ""))
    for line in FIGURES:
        print("    " + line)
    ok(len(FIGURES) >= 3, "only %d peak RSS figures were recorded" % len(FIGURES))


if __name__ == "__main__":
    main()
