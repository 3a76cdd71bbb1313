#!/usr/bin/python3
"""bb_load — 200 concurrent connections x 200 lookups through socket activation, real mariadbd.

systemd-socket-activate -a starts one sockmapd per connection (as systemd's
Accept=yes would); the MariaDB server's max_connections is raised to 400.
The client is one asyncio loop (no GIL hand-offs between 200 threads to
inflate the latencies), one request in flight per connection.  Every reply
is checked against the fixtures: zero errors, zero TEMP.  Prints throughput
and latency percentiles; bounded by a hard time cap.
Run: SOCKMAPD=build/sockmapd tests/bb_load.py [test-name-or-glob ...]
"""

import asyncio
import os
import resource
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F401,F403

pytestmark = pytest.mark.slow  # 200 connections x 200 lookups

CONNECTIONS = int(os.environ.get("LOAD_CONNECTIONS", "200"))
LOOKUPS = int(os.environ.get("LOAD_LOOKUPS", "200"))
TIME_CAP = 60.0  # seconds for the whole run, hard

# Maps of one schema (one database connection per handler).
TABLE = [(("%s %s" % (m, k)).encode(), fixture_reply(m, k)) for m, k in (
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

_db = {}


def server():
    if "db" not in _db:
        _db["db"] = MariaDB(fixtures=True, max_connections=CONNECTIONS * 2, name="load",
                            extra_args=["--thread-cache-size=%d" % CONNECTIONS]).keep_for_suite().start()
    return _db["db"]


async def client(i, address, gate, latencies, errors, counts):
    """One connection: LOOKUPS requests, one at a time, each reply checked."""
    try:
        reader, writer = await asyncio.open_connection(*address)
    except OSError as e:
        errors.append("connection %d: connect: %s" % (i, e))
        return
    try:
        await gate.wait()
        for j in range(LOOKUPS):
            body, want = TABLE[(i + j) % len(TABLE)]
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
    tasks = [asyncio.ensure_future(client(i, sa.address, gate, latencies, errors, counts)) for i in range(CONNECTIONS)]
    deadline = time.monotonic() + scaled(30)
    handlers = []
    while time.monotonic() < deadline:
        handlers = sa.children()
        if len(handlers) >= CONNECTIONS:
            break
        await asyncio.sleep(0.2)
    eq(len(handlers), CONNECTIONS, "handlers running before the lookups start")
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


@test(timeout=150)
def load_200_connections_x_200_lookups():
    db = server()
    cfg = temp_config(base_config(db, sysconfig={"loglevel": "info", "idle_timeout": 60, "max_session": 300},
                                  database={"connect_timeout": 5, "read_timeout": 10, "write_timeout": 10}))
    sa = SocketActivated(["-c", cfg])
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    elapsed, latencies, errors, counts, handlers = asyncio.run(run_load(sa, scaled(TIME_CAP)))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    total = len(latencies)
    used = sql_rows(db, "SHOW GLOBAL STATUS LIKE 'Max_used_connections';")[0]["Value"]
    if total:
        print("    %d connections x %d lookups: %d replies in %.2fs = %.0f lookups/s; "
              "latency p50 %.2f ms, p99 %.2f ms, max %.2f ms; %d handlers, Max_used_connections %s; "
              "the Python client used %.1fs CPU of %.1fs x 2 cores"
              % (CONNECTIONS, LOOKUPS, total, elapsed, total / elapsed, percentile(latencies, 50) * 1000,
                 percentile(latencies, 99) * 1000, max(latencies) * 1000, len(handlers), used, client_cpu, elapsed),
              flush=True)
    eq(errors[:20], [], "errors (%d in all; by status %r)" % (len(errors), counts))
    eq(counts.get(b"TEMP", 0), 0, "TEMP replies")
    eq(total, CONNECTIONS * LOOKUPS, "replies")
    ok(elapsed < scaled(TIME_CAP), "took %.1fs" % elapsed)
    ok(int(used) >= CONNECTIONS // 2, "only %s database connections at once: the load was not concurrent" % used)
    wait_for(lambda: not sa.children(), timeout=30, msg="every handler exited")
    log = read_log(cfg)
    eq(log.count("session end (client closed): %d requests, " % LOOKUPS), CONNECTIONS,
       "sessions logged as ended cleanly with %d requests" % LOOKUPS)
    eq(log.count(" 0 errors, "), CONNECTIONS, "sessions without errors")
    not_contains(log, "TEMP")

if __name__ == "__main__":
    main()
