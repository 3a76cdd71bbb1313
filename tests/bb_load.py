#!/usr/bin/python3
"""bb_load — 200 concurrent connections x 200 lookups through socket activation, real mariadbd.

systemd-socket-activate -a starts one sockmapd per connection (as systemd's
Accept=yes would); the MariaDB server's max_connections is raised to 400.
Every reply is checked against the fixtures: zero errors, zero TEMP.  Prints
throughput and latency percentiles; bounded by a hard time cap.
Run: SOCKMAPD=build/sockmapd tests/bb_load.py [test-name-or-glob ...]
"""

import os
import resource
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F401,F403

CONNECTIONS = int(os.environ.get("LOAD_CONNECTIONS", "200"))
LOOKUPS = int(os.environ.get("LOAD_LOOKUPS", "200"))
TIME_CAP = 60.0  # seconds for the whole run, hard

# Maps of one schema (one database connection per handler).
TABLE = [
    (b"recipient postmaster@example.org", b"OK root@example.org"),
    (b"recipient team@example.org", b"OK alice@example.org,bob@example.org,carol@example.org"),
    (b"recipient nobody@example.org", b"NOTFOUND "),
    (b"exists alice@example.org", b"OK alice@example.org"),
    (b"exists BOB.SMITH@example.org", b"OK Bob.Smith@Example.org"),
    (b"exists mallory@example.org", b"NOTFOUND "),
    (b"sender spammer@bad.example", b"OK REJECT spam source"),
    (b"sender friend@good.example", b"OK OK"),
    (b"transport example.org", b"OK smtp:[mx.example.org]"),
    (b"transport unknown.example", b"NOTFOUND "),
    (b"awkward it's", b"OK single-quote"),
    (b"awkward x' OR '1'='1", b"OK injection-literal"),
]

_db = {}


def server():
    if "db" not in _db:
        _db["db"] = MariaDB(fixtures=True, max_connections=CONNECTIONS * 2, name="load",
                            extra_args=["--thread-cache-size=%d" % CONNECTIONS]).keep_for_suite().start()
    return _db["db"]


def worker(i, address, start_gate, deadline, latencies, errors, counts):
    lat = []
    try:
        c = Client(address, timeout=30)
    except OSError as e:
        errors.append("connection %d: connect: %s" % (i, e))
        return
    try:
        start_gate.wait()
        for j in range(LOOKUPS):
            if time.monotonic() > deadline:
                errors.append("connection %d: time cap reached after %d lookups" % (i, j))
                return
            body, want = TABLE[(i + j) % len(TABLE)]
            t0 = time.perf_counter()
            c.send_raw(encode(body))
            reply = c.read_reply()
            lat.append(time.perf_counter() - t0)
            if reply != want:
                word = status_word(reply)
                counts[word] = counts.get(word, 0) + 1
                errors.append("connection %d lookup %d %r: %r" % (i, j, body, reply))
                if len(errors) > 50:
                    return
        c.shutdown_write()
        rest = c.read_until_eof(10)
        if rest:
            errors.append("connection %d: bytes after EOF: %r" % (i, rest[:60]))
    except Exception as e:
        errors.append("connection %d: %s: %s" % (i, type(e).__name__, e))
    finally:
        c.close()
        latencies.extend(lat)


@test(timeout=150)
def load_200_connections_x_200_lookups():
    db = server()
    cfg = temp_config(base_config(db, sysconfig={"loglevel": "info", "idle_timeout": 60, "max_session": 300},
                                  database={"connect_timeout": 5, "read_timeout": 10, "write_timeout": 10}))
    sa = SocketActivated(["-c", cfg])
    latencies, errors, counts = [], [], {}
    gate = threading.Barrier(CONNECTIONS + 1)
    hard_deadline = time.monotonic() + scaled(TIME_CAP)
    threads = [threading.Thread(target=worker, args=(i, sa.address, gate, hard_deadline, latencies, errors, counts),
                                daemon=True) for i in range(CONNECTIONS)]
    for t in threads:
        t.start()
    handlers = wait_for(lambda: len(sa.children()) >= CONNECTIONS and sa.children(), timeout=30, interval=0.5,
                        msg="%d handlers running" % CONNECTIONS)
    started = time.monotonic()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    gate.wait(timeout=30)
    for t in threads:
        t.join(max(0.1, hard_deadline - time.monotonic()))
    elapsed = time.monotonic() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    alive = [t for t in threads if t.is_alive()]
    total = len(latencies)
    used = sql_rows(db, "SHOW GLOBAL STATUS LIKE 'Max_used_connections';")[0]["Value"]
    if total:
        p50, p99, worst = percentile(latencies, 50), percentile(latencies, 99), max(latencies)
        print("    %d connections x %d lookups: %d replies in %.2fs = %.0f lookups/s; "
              "latency p50 %.2f ms, p99 %.2f ms, max %.2f ms; %d handlers seen, Max_used_connections %s; "
              "the Python client itself used %.1fs CPU of the %.1fs x 2 cores"
              % (CONNECTIONS, LOOKUPS, total, elapsed, total / elapsed, p50 * 1000, p99 * 1000, worst * 1000,
                 len(handlers), used, client_cpu, elapsed), flush=True)
    eq(alive, [], "clients still running at the time cap")
    eq(errors[:20], [], "errors (%d in all; by status %r)" % (len(errors), counts))
    eq(counts.get(b"TEMP", 0), 0, "TEMP replies")
    eq(total, CONNECTIONS * LOOKUPS, "replies")
    ok(elapsed < scaled(TIME_CAP), "took %.1fs" % elapsed)
    ok(int(used) >= CONNECTIONS // 2, "only %s database connections at once: the load was not concurrent" % used)
    wait_for(lambda: not sa.children(), timeout=30, msg="every handler exited")
    log = read_log(cfg)
    ends = log.count("session end (client closed): %d requests, " % LOOKUPS)
    eq(ends, CONNECTIONS, "sessions logged as ended cleanly with %d requests" % LOOKUPS)
    not_contains(log, "TEMP")
    eq(log.count(" 0 errors, "), CONNECTIONS, "sessions without errors")


if __name__ == "__main__":
    main()
