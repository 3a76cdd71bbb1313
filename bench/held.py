#!/usr/bin/python3
"""A new connection beside many held ones: ms to its first answer, with and without a spare handler.

    bench/held.py [--build build] [--held 1000] [--rounds 3] [--spares 0,1]

Each round, for each --spare-handlers value in turn (alternating, so that both
see the same machine): `sockmapd --listen` on a loopback port with
--max-children (held + 100) against a throwaway MariaDB (max_connections sized
for it); `held` connections opened, one lookup on each, and kept open, as
Postfix's processes keep theirs; once their handlers have closed their
database connections (db_idle_timeout), three new connections one after
another, each timed from connect to its answer.  Before the held ones, the
same three with none held: the machine's floor.  Prints the medians per value
and the JSON of every figure.  Stops every process it started, by pid.
"""

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

import harness as h  # noqa: E402

REQUEST = h.encode("recipient postmaster@example.org")


def probe(port):
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(REQUEST)
        data = s.recv(100)
    ms = (time.monotonic() - t0) * 1000
    if b"OK root@" not in data:
        raise AssertionError("unexpected answer %r" % data)
    return round(ms, 2)


def app_connections(db):
    out = db.sql("SELECT COUNT(*) FROM information_schema.processlist WHERE user = '%s'" % h.MariaDB.APP_USER)
    return int(out.strip().splitlines()[-1])


def one(binary, db, held, spares):
    port = h.free_port()
    cfg = h.temp_config(h.base_config(db, sysconfig={"loglevel": "warning"}))
    p = subprocess.Popen([binary, "-c", cfg, "--listen", "127.0.0.1:%d" % port, "--max-children", str(held + 100),
                          "--spare-handlers", str(spares)], stdin=subprocess.DEVNULL)
    conns = []
    try:
        h.wait_for(lambda: h.listening_on(port), timeout=10, msg="listening")
        floor = [probe(port) for _ in range(3)]
        for _ in range(held):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(REQUEST)
            conns.append(s)
        for s in conns:
            if b"OK root@" not in s.recv(100):
                raise AssertionError("a held connection was not answered")
        h.wait_for(lambda: app_connections(db) == 0, timeout=60, interval=0.5, msg="database connections closed idle")
        after = [probe(port) for _ in range(3)]
        return {"none held, ms": floor, "with %d held, ms" % held: after}
    finally:
        for s in conns:
            s.close()
        h.stop_pid(p.pid, popen=p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--held", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--spares", default="0,1")
    ap.add_argument("--json")
    a = ap.parse_args()
    binary = os.path.abspath(os.path.join(a.build, "sockmapd"))
    need = 2 * a.held + 300
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    values = [int(v) for v in a.spares.split(",")]
    db = h.MariaDB(fixtures=True, max_connections=a.held + 200)
    db.start()
    runs = {v: [] for v in values}
    try:
        for r in range(a.rounds):
            for v in values:
                res = one(binary, db, a.held, v)
                runs[v].append(res)
                print("round %d, --spare-handlers %d: %s" % (r + 1, v, res), flush=True)
    finally:
        db.stop()
    key = "with %d held, ms" % a.held
    print("\n| `--spare-handlers` | none held: the first new connection, median ms | %d held: the next one (connection "
          "%d), median ms | %d held: all three new ones, median ms |" % (a.held, a.held + 1, a.held))
    print("|---|---|---|---|")
    for v in values:
        first_none = statistics.median(x["none held, ms"][0] for x in runs[v])
        first = statistics.median(x[key][0] for x in runs[v])
        every = statistics.median(t for x in runs[v] for t in x[key])
        print("| %d | %.2f | %.2f | %.2f |" % (v, first_none, first, every))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({str(v): runs[v] for v in values}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
