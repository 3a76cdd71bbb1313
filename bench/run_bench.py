#!/usr/bin/python3
"""run_bench — sockmapd against its physical floor, side by side, on loopback.

    bench/run_bench.py --build build [--rounds 5] [--seconds 2] [--cold-count 200]
                       [--json FILE] [--markdown FILE]

Starts a throwaway mariadbd (tests/lib/harness.py) with a 100000-row table,
writes a key file (about half of the keys present) and measures, in every
round and on the same keys:

  db floor         build/bench/dbfloor: one libmariadb connection running
                   sockmapd's prepared SELECT in a loop, in-process
  transport floor  build/bench/nullanswer (replies NOTFOUND, no work) behind
                   systemd-socket-activate -a: one connection's round trips/s,
                   and the first-answer latency of a new connection
  sockmapd         behind systemd-socket-activate -a: one persistent
                   connection, a new connection per lookup, 16 connections,
                   one handler's peak RSS (VmHWM) and the Pss of 50 handlers
                   held open and idle after one lookup each

Prints the medians over the rounds as a table, then the ratios against the
targets.  Every process is started through the harness and stopped by pid.
Exit status 1 if a measurement failed (not if a target was missed).
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
from harness import (MariaDB, SocketActivated, Client, base_config, temp_config, tmpfile,  # noqa: E402
                     stop_pid, pid_alive, vm_hwm_kb)

ROWS = 100000
KEYS = 20000
MAP = "bench"
TABLE_SQL = """
CREATE DATABASE IF NOT EXISTS dbmail;
CREATE TABLE IF NOT EXISTS dbmail.bench_kv (
  k VARCHAR(255) NOT NULL PRIMARY KEY,
  v VARCHAR(255) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
SET SESSION max_recursive_iterations = 1000000;
INSERT INTO dbmail.bench_kv (k, v)
  WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < %d)
  SELECT CONCAT('user', n, '@example.org'), CONCAT('mbox', n, '@mail.example.net') FROM s;
ANALYZE TABLE dbmail.bench_kv;
""" % ROWS
# What sockmapd's build_statement() makes of the bench map.
SELECT_SQL = "SELECT `v` FROM `dbmail`.`bench_kv` WHERE `k` = ?"


def log(msg):
    sys.stderr.write("bench: %s\n" % msg)
    sys.stderr.flush()


def run_json(argv, timeout):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (os.path.basename(argv[0]), r.returncode,
                                                   r.stderr.decode(errors="replace").strip()[-2000:]))
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def wait_no_children(act, timeout=10.0):
    """Until every handler of `act` has exited (they exit at EOF)."""
    deadline = time.monotonic() + timeout
    while act.children():
        if time.monotonic() > deadline:
            raise RuntimeError("handlers still running after %gs: %s" % (timeout, act.children()))
        time.sleep(0.01)


def wait_children(act, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        kids = act.children()
        if len(kids) >= n:
            return kids
        if time.monotonic() > deadline:
            raise RuntimeError("expected %d handlers, found %d" % (n, len(kids)))
        time.sleep(0.01)


def smaps_rollup(pid):
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


class Bench:
    def __init__(self, args):
        self.args = args
        build = os.path.abspath(args.build)
        self.sockmapd = os.path.join(build, "sockmapd")
        self.loadclient = os.path.join(build, "bench", "loadclient")
        self.nullanswer = os.path.join(build, "bench", "nullanswer")
        self.dbfloor = os.path.join(build, "bench", "dbfloor")
        for p in (self.sockmapd, self.loadclient, self.nullanswer, self.dbfloor):
            if not os.access(p, os.X_OK):
                raise RuntimeError("%s missing: run make bench" % p)
        os.environ["SOCKMAPD"] = self.sockmapd  # the harness's binary
        self.rounds = []

    # ---------------------------------------------------------------- set-up
    def setup(self):
        t0 = time.monotonic()
        self.db = MariaDB()
        self.db.start()
        self.db.sql(TABLE_SQL)
        n = int(self.db.sql("SELECT COUNT(*) FROM dbmail.bench_kv").strip())
        if n != ROWS:
            raise RuntimeError("bench table has %d rows, not %d" % (n, ROWS))
        log("mariadbd with %d rows ready in %.1fs" % (n, time.monotonic() - t0))

        rnd = random.Random(6)
        keys = ["user%d@example.org" % rnd.randint(1, 2 * ROWS) for _ in range(KEYS)]
        self.present = sum(1 for k in keys if int(k[4:k.index("@")]) <= ROWS) / len(keys)
        self.keyfile = tmpfile("keys", content="\n".join(keys) + "\n")

        bench_map = [{"service": MAP, "database": "dbmail", "table": "bench_kv", "key": "k", "value": "v"}]
        logfile = tmpfile("sockmapd-log", content="")
        common = dict(sysconfig={"loglevel": "info", "logfile": logfile, "idle_timeout": 60},
                      postmaps=bench_map)
        self.cfg_tcp = temp_config(base_config(self.db, **common))
        self.cfg_unix = temp_config(base_config(self.db.unix_entry, **common))

        self.null = SocketActivated([], binary=self.nullanswer)
        self.smd = SocketActivated(["-c", self.cfg_tcp])
        self.smd_unix = SocketActivated(["-c", self.cfg_unix])
        self.addr_null = "127.0.0.1:%d" % self.null.port
        self.addr_smd = "127.0.0.1:%d" % self.smd.port
        self.addr_smd_unix = "127.0.0.1:%d" % self.smd_unix.port
        self.conn_tcp = "tcp:127.0.0.1:%d:%s:%s:dbmail" % (self.db.port, MariaDB.APP_USER, MariaDB.APP_PASSWORD)
        self.conn_unix = "unix:%s:%s:%s:dbmail" % (self.db.socket, MariaDB.APP_USER, MariaDB.APP_PASSWORD)

        # One answer from each, so a broken set-up fails before the rounds.
        for act in (self.smd, self.smd_unix):
            with act.client() as c:
                reply = c.ask(MAP, "user1@example.org")
                if reply != b"OK mbox1@mail.example.net":
                    raise RuntimeError("sockmapd answered %r: %s" % (reply, act.log_text()[-2000:]))
            wait_no_children(act)

    # ---------------------------------------------------------------- measures
    def load(self, mode, addr, **opt):
        argv = [self.loadclient, mode, addr, MAP, self.keyfile]
        for k, v in opt.items():
            argv += ["--" + k.replace("_", "-"), str(v)]
        return run_json(argv, timeout=60)

    def floor(self, mode, conn, **opt):
        argv = [self.dbfloor, mode, conn, self.keyfile, SELECT_SQL]
        for k, v in opt.items():
            argv += ["--" + k, str(v)]
        return run_json(argv, timeout=60)

    def peak_rss(self):
        """VmHWM of one handler after a few hundred lookups (hits and misses)."""
        wait_no_children(self.smd)
        with self.smd.client() as c:
            for i in range(300):
                c.ask(MAP, "user%d@example.org" % (i * 677 % (2 * ROWS) + 1))
            kids = wait_children(self.smd, 1)
            hwm = vm_hwm_kb(kids[0])
        wait_no_children(self.smd)
        return hwm

    def idle_pss(self, n=50):
        """Mean Pss/Rss/private memory of `n` handlers held open after one lookup each."""
        wait_no_children(self.smd)
        clients = []
        try:
            for i in range(n):
                c = self.smd.client()
                clients.append(c)
                reply = c.ask(MAP, "user%d@example.org" % (i * 1999 + 7))
                if not (reply.startswith(b"OK ") or reply == b"NOTFOUND "):
                    raise RuntimeError("idle handler answered %r" % reply)
            kids = wait_children(self.smd, n)
            rollups = [smaps_rollup(pid) for pid in kids]
        finally:
            for c in clients:
                c.close()
        wait_no_children(self.smd)
        mean = lambda k: statistics.mean(r.get(k, 0) for r in rollups)  # noqa: E731
        return {"pss_kb": mean("Pss"), "rss_kb": mean("Rss"),
                "private_kb": mean("Private_Clean") + mean("Private_Dirty"), "handlers": len(rollups)}

    def one_round(self, i):
        a = self.args
        r = {}
        t0 = time.monotonic()
        r["db"] = self.floor("steady", self.conn_tcp, seconds=a.seconds)
        r["null"] = self.load("steady", self.addr_null, seconds=a.seconds)
        r["null_cold"] = self.load("cold", self.addr_null, count=a.cold_count)
        wait_no_children(self.null)
        r["smd"] = self.load("steady", self.addr_smd, seconds=a.seconds)
        wait_no_children(self.smd)
        r["smd_cold"] = self.load("cold", self.addr_smd, count=a.cold_count)
        wait_no_children(self.smd)
        r["smd16"] = self.load("steady", self.addr_smd, conns=16, seconds=a.seconds)
        wait_no_children(self.smd)
        r["null16"] = self.load("steady", self.addr_null, conns=16, seconds=a.seconds / 2)
        wait_no_children(self.null)
        # Explanatory extras: the database part of a cold lookup, and the unix-socket connect path.
        r["db_cold"] = self.floor("cold", self.conn_tcp, count=a.cold_count)
        r["db_cold_unix"] = self.floor("cold", self.conn_unix, count=a.cold_count)
        r["smd_cold_unix"] = self.load("cold", self.addr_smd_unix, count=a.cold_count)
        wait_no_children(self.smd_unix)
        r["rss_kb"] = self.peak_rss()
        r["idle"] = self.idle_pss()
        log("round %d done in %.1fs: db %.0f q/s, null %.0f rt/s, sockmapd %.0f/s, cold p50 %.0f us vs %.0f us"
            % (i + 1, time.monotonic() - t0, r["db"]["rps"], r["null"]["rps"], r["smd"]["rps"],
               r["smd_cold"]["p50_us"], r["null_cold"]["p50_us"]))
        return r

    def run(self):
        self.setup()
        for i in range(self.args.rounds):
            self.rounds.append(self.one_round(i))

    # ---------------------------------------------------------------- report
    def med(self, *path):
        vals = []
        for r in self.rounds:
            v = r
            for p in path:
                v = v[p]
            vals.append(v)
        return statistics.median(vals)

    def summary(self):
        m = self.med
        composed = 1.0 / (1.0 / m("db", "rps") + 1.0 / m("null", "rps"))
        rows = [
            ("db floor: libmariadb in-process, 1 conn", "%.0f q/s" % m("db", "rps"),
             m("db", "p50_us"), m("db", "p99_us")),
            ("transport floor: null answerer, 1 conn", "%.0f rt/s" % m("null", "rps"),
             m("null", "p50_us"), m("null", "p99_us")),
            ("transport floor: null answerer, cold", "first answer", m("null_cold", "p50_us"),
             m("null_cold", "p99_us")),
            ("composed floor 1/(1/db + 1/transport)", "%.0f /s" % composed, None, None),
            ("sockmapd: 1 conn, sequential", "%.0f /s" % m("smd", "rps"), m("smd", "p50_us"), m("smd", "p99_us")),
            ("sockmapd: new conn per lookup (cold)", "first answer", m("smd_cold", "p50_us"),
             m("smd_cold", "p99_us")),
            ("sockmapd: 16 conns", "%.0f /s" % m("smd16", "rps"), m("smd16", "p50_us"), m("smd16", "p99_us")),
            ("sockmapd: handler peak RSS (VmHWM)", "%.2f MiB" % (m("rss_kb") / 1024.0), None, None),
            ("sockmapd: Pss per idle handler (50 held)", "%.0f KiB" % m("idle", "pss_kb"), None, None),
            ("  (Rss / private per idle handler)", "%.0f / %.0f KiB" % (m("idle", "rss_kb"),
                                                                        m("idle", "private_kb")), None, None),
            ("extra: null answerer, 16 conns", "%.0f rt/s" % m("null16", "rps"), m("null16", "p50_us"),
             m("null16", "p99_us")),
            ("extra: db connect+prepare+query, TCP", "per lookup", m("db_cold", "p50_us"), m("db_cold", "p99_us")),
            ("extra: db connect+prepare+query, unix", "per lookup", m("db_cold_unix", "p50_us"),
             m("db_cold_unix", "p99_us")),
            ("extra: sockmapd cold, db over unix socket", "first answer", m("smd_cold_unix", "p50_us"),
             m("smd_cold_unix", "p99_us")),
        ]
        ratios = [
            ("steady / composed floor", m("smd", "rps") / composed, ">= 0.95", m("smd", "rps") / composed >= 0.95),
            ("cold p50 / null answerer cold p50", m("smd_cold", "p50_us") / m("null_cold", "p50_us"), "<= 1.5",
             m("smd_cold", "p50_us") / m("null_cold", "p50_us") <= 1.5),
            ("16 conns / 1 conn", m("smd16", "rps") / m("smd", "rps"), ">= 1.5",
             m("smd16", "rps") / m("smd", "rps") >= 1.5),
            ("peak RSS MiB", m("rss_kb") / 1024.0, "<= 6", m("rss_kb") / 1024.0 <= 6),
            ("Pss per idle handler MiB", m("idle", "pss_kb") / 1024.0, "<= 1", m("idle", "pss_kb") / 1024.0 <= 1),
        ]
        return rows, ratios, composed

    def report(self):
        rows, ratios, _ = self.summary()
        fmt = lambda v: "-" if v is None else "%.0f" % v  # noqa: E731
        lines = ["", "sockmapd benchmark: median of %d rounds, %d-row table, %d keys (%.0f%% present), loopback"
                 % (len(self.rounds), ROWS, KEYS, self.present * 100), ""]
        lines.append("%-44s %16s %9s %9s" % ("measure", "value", "p50 us", "p99 us"))
        for name, value, p50, p99 in rows:
            lines.append("%-44s %16s %9s %9s" % (name, value, fmt(p50), fmt(p99)))
        lines.append("")
        lines.append("%-44s %8s %8s" % ("ratio", "value", "target"))
        for name, v, target, met in ratios:
            lines.append("%-44s %8.2f %8s  %s" % (name, v, target, "met" if met else "MISSED"))
        print("\n".join(lines), flush=True)

    def markdown(self):
        rows, ratios, _ = self.summary()
        fmt = lambda v: "" if v is None else "%.0f" % v  # noqa: E731
        out = ["| measure | value | p50 µs | p99 µs |", "|---|---:|---:|---:|"]
        for name, value, p50, p99 in rows:
            out.append("| %s | %s | %s | %s |" % (name.strip(), value, fmt(p50), fmt(p99)))
        out += ["", "| ratio | value | target | |", "|---|---:|---:|---|"]
        for name, v, target, met in ratios:
            out.append("| %s | %.2f | %s | %s |" % (name, v, target.replace(">=", "≥").replace("<=", "≤"),
                                                     "met" if met else "missed"))
        return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of each throughput measurement")
    ap.add_argument("--cold-count", type=int, default=200, help="new connections per cold measurement")
    ap.add_argument("--json", help="write every round's raw figures to this file")
    ap.add_argument("--markdown", help="write the summary tables as Markdown to this file")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    t0 = time.monotonic()
    b = Bench(args)
    try:
        b.run()
    except (RuntimeError, AssertionError, subprocess.TimeoutExpired) as e:
        log("FAILED: %s" % e)
        return 1
    b.report()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(b.rounds, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(b.markdown())
    log("total %.1fs" % (time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
