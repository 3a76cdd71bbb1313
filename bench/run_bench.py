#!/usr/bin/python3
"""run_bench — sockmapd against its physical floor, side by side, on loopback.

    bench/run_bench.py --build build [--rounds 5] [--seconds 2] [--cold-count 200]
                       [--json FILE] [--markdown FILE] [--variant NAME=PATH ...]

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
  search orders    the first binary, one persistent connection: the same
                   table as an exact map and as "search": "access", on keys
                   all present (one query each), all absent (access walks
                   address, domain, parent, user@: four queries) and absent
                   addresses of a listed domain's subdomain (three queries)
  service          the first binary again as the Accept=no service:
                   systemd-socket-activate without -a passes the listening
                   socket, sockmapd's handlers serve one connection after
                   another (max_use 100); the same measures, plus new
                   connections/s against the Accept=yes handler's, a new
                   connection's first answer against a lookup on an open
                   connection, and the database logins 300 new connections
                   one after another make
  service max_use 1  the same with "max_use": 1, a process per connection
  service, counting off  with --counting-off PATH: the service again, of a
                   build without counters (SOCKMAPD_NO_STATS), its steady
                   throughput against the first binary's service
  answer cache     the first binary as the Accept=no service with the same
                   table twice, without "cache" and with {"ttl": 60}: one
                   connection's lookups/s on the usual keys for each, a hot
                   key answered from the cache against the null answerer
                   (target >= 0.8), and 10000 lookups over 1000 keys drawn
                   Zipf-like (s = 1.1), new keys each round, counted in the
                   server's statement executions (target <= 1200); with
                   --baseline PATH (today's binary), the map without a
                   cache on it too, in the same slices (cache off, target:
                   no lower)
  go               the Go sockmapd (github.com/ezplanet/sockmapd), which this
                   project replaces, when GO_SOCKMAPD names its binary: one
                   process with a database pool; the same steady and cold
                   measures and its process's memory (it serves one
                   connection at a time, so no 16-connection figure).  It
                   binds every IPv4 address (it has no address setting); the
                   bench talks to it over 127.0.0.1 only.
  allow-list       the first binary with "allow": ["127.0.0.1/32"]: in the
                   service's accept loop, new connections/s from 127.0.0.1
                   (served: handed to a handler, database, answer) against
                   connections from 127.0.0.2 (refused: closed without a
                   reply, no handler involved), and
                   those against the floor of an accept loop that closes
                   every connection at once (the null answerer given the
                   listening socket); the Accept=yes handler refusing too
                   (an exec and a config read per refused connection)

Prints the medians over the rounds as a table, then the ratios against the
targets (each ratio is taken within a round, from interleaved slices, then
the median over the rounds).  Several sockmapd binaries (--variant before=... --variant after=...)
are measured in the same rounds, in turn, against the same floors.  Every process is started through the harness and stopped by pid.
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
                     stop_pid, pid_alive, vm_hwm_kb, free_port, _tcp_listening)

ROWS = 100000
KEYS = 20000
MAP = "bench"
COUNTING_OFF = "service, counting off"
MAP_ACCESS = "bench_access"  # the same table with "search": "access" (issue 19)
MAP_CACHED = "bench_cached"  # the same table with "cache" (issue 35)
CACHE = {"ttl": 60, "negative_ttl": 60}
ZIPF_LOOKUPS, ZIPF_KEYS, ZIPF_S = 10000, 1000, 1.1
# The key sets of the search-order measurement: (name, map, key file).
SEARCH_CASES = [("exact, hits", MAP, "hits"), ("exact, misses", MAP, "misses"),
                ("access, hits", MAP_ACCESS, "hits"), ("access, misses", MAP_ACCESS, "misses"),
                ("access, domain hits", MAP_ACCESS, "domain_hits")]
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
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), r.returncode,
                                                   r.stderr.decode(errors="replace").strip()[-2000:]))
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def established(port):
    """Client connections open to local TCP `port`."""
    want = ":%04X" % port
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            n += sum(1 for line in f if line.split()[1].endswith(want) and line.split()[3] == "01")
    return n


def wait_no_children(act, timeout=30.0):
    """Until `act` is quiet: every handler exited (an exec'd handler exits at
    EOF), or, where handlers are reused and wait for the next connection,
    no client connection left open."""
    deadline = time.monotonic() + timeout
    while (act.children() if getattr(act, "accept", True) else established(act.port)):
        if time.monotonic() > deadline:
            raise RuntimeError("handlers still busy after %gs: %s" % (timeout, act.children()))
        time.sleep(0.01)


class GoSockmapd:
    """The Go sockmapd on a port of its own: `GO_SOCKMAPD -c CFG -p PORT`, one
    process (it takes no socket from systemd).  Looks like a SocketActivated
    to the bench: port, client(), children() (none: it forks nothing)."""

    accept = False

    def __init__(self, binary, db):
        # Its config schema: every value a string, the database over TCP only.
        cfg = {"database": {"host": ["127.0.0.1"], "port": str(db.port), "username": MariaDB.APP_USER,
                            "password": MariaDB.APP_PASSWORD},
               "sysconfig": {"logfile": tmpfile("go-log", content="")},
               "postmaps": [{"service": MAP, "database": "dbmail", "table": "bench_kv", "key": "k", "value": "v"}]}
        path = tmpfile("go-config.json", content=json.dumps(cfg))
        for _ in range(3):
            self.port = free_port()
            if self.port < 1025:  # it refuses those
                continue
            self.proc = subprocess.Popen([binary, "-c", path, "-p", str(self.port)], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
            self.pid = self.proc.pid
            deadline = time.monotonic() + 10
            while self.proc.poll() is None and not _tcp_listening(self.port, self.pid):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            if _tcp_listening(self.port, self.pid):
                return
            self.stop()
        raise RuntimeError("the Go sockmapd did not start: %s" % self.proc.stderr.read().decode(errors="replace"))

    def client(self, timeout=5.0):
        return Client(("127.0.0.1", self.port), timeout=timeout)

    def children(self):
        return []

    def stop(self):
        if self.proc.poll() is None:
            stop_pid(self.pid, grace=5.0, popen=self.proc)


def wait_children(act, n, timeout=30.0):
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


def merge(parts):
    """One figure from slices of the same measurement: total requests over
    total time; the latency percentiles are the medians of the slices'."""
    reqs = sum(p["requests"] for p in parts)
    secs = sum(p["seconds"] for p in parts)
    return {"requests": reqs, "seconds": secs, "rps": reqs / secs if secs > 0 else 0.0,
            "p50_us": statistics.median(p["p50_us"] for p in parts),
            "p99_us": statistics.median(p["p99_us"] for p in parts)}


class Variant:
    """One sockmapd binary under test, behind its own activators: a process
    exec'd per connection (accept), one service forking handlers (with
    `sysconfig` added to its config), or the Go sockmapd (go)."""

    def __init__(self, name, path, accept=True, sysconfig=None, go=False):
        self.name, self.path, self.accept, self.sysconfig, self.go = name, path, accept, sysconfig or {}, go
        self.act = self.act_unix = None


class Bench:
    def __init__(self, args):
        self.args = args
        build = os.path.abspath(args.build)
        self.loadclient = os.path.join(build, "bench", "loadclient")
        self.nullanswer = os.path.join(build, "bench", "nullanswer")
        self.dbfloor = os.path.join(build, "bench", "dbfloor")
        specs = args.variant or ["sockmapd=" + os.path.join(build, "sockmapd")]
        self.variants = []
        for spec in specs:
            name, sep, path = spec.partition("=")
            if not sep or not name:
                raise RuntimeError("--variant wants NAME=PATH, not %r" % spec)
            self.variants.append(Variant(name, os.path.abspath(path)))
        if not args.no_service:
            self.variants.append(Variant("service", self.variants[0].path, accept=False))
            if args.counting_off:
                # The same service built without its counters (SOCKMAPD_NO_STATS):
                # what counting costs, measured in the same rounds (issue 34).
                self.variants.append(Variant(COUNTING_OFF, os.path.abspath(args.counting_off), accept=False))
            self.variants.append(Variant("service max_use 1", self.variants[0].path, accept=False,
                                         sysconfig={"max_use": 1}))
        go = os.environ.get("GO_SOCKMAPD")
        if go:
            self.variants.append(Variant("go", os.path.abspath(go), accept=False, go=True))
            self.go_note = "the Go sockmapd: %s (GO_SOCKMAPD)" % go
        else:
            self.go_note = ("GO_SOCKMAPD is not set: the Go sockmapd is not measured (build "
                            "github.com/ezplanet/sockmapd with Go and set GO_SOCKMAPD to the binary)")
        log(self.go_note)
        for p in [self.loadclient, self.nullanswer, self.dbfloor] + [v.path for v in self.variants]:
            if not os.access(p, os.X_OK):
                raise RuntimeError("%s missing: run make bench" % p)
        os.environ["SOCKMAPD"] = self.variants[0].path  # the harness's default binary
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
        # One domain row for the access order's domain hits (after the count).
        self.db.sql("INSERT INTO dbmail.bench_kv (k, v) VALUES ('listed.example', 'REJECT')")

        rnd = random.Random(6)
        keys = ["user%d@example.org" % rnd.randint(1, 2 * ROWS) for _ in range(KEYS)]
        self.present = sum(1 for k in keys if int(k[4:k.index("@")]) <= ROWS) / len(keys)
        self.steady_keys = set(keys)  # the Zipf runs use none of these (the cache has them)
        self.keyfile = tmpfile("keys", content="\n".join(keys) + "\n")

        bench_map = [{"service": MAP, "database": "dbmail", "table": "bench_kv", "key": "k", "value": "v"},
                     {"service": MAP_ACCESS, "database": "dbmail", "table": "bench_kv", "key": "k", "value": "v",
                      "search": "access"}]
        rnd = random.Random(19)
        self.search_keys = {
            "hits": tmpfile("keys-hits", content="".join(
                "user%d@example.org\n" % rnd.randint(1, ROWS) for _ in range(KEYS))),
            "misses": tmpfile("keys-misses", content="".join(
                "user%d@example.org\n" % rnd.randint(ROWS + 1, 2 * ROWS) for _ in range(KEYS))),
            "domain_hits": tmpfile("keys-domain", content="".join(
                "user%d@mail.listed.example\n" % rnd.randint(1, 2 * ROWS) for _ in range(KEYS))),
        }
        logfile = tmpfile("sockmapd-log", content="")
        common = dict(sysconfig={"loglevel": "info", "logfile": logfile, "idle_timeout": 60},
                      postmaps=bench_map)
        self.cfg_tcp = temp_config(base_config(self.db, **common))
        self.cfg_unix = temp_config(base_config(self.db.unix_entry, **common))

        self.null = SocketActivated([], binary=self.nullanswer)
        self.addr_null = "127.0.0.1:%d" % self.null.port
        for v in self.variants:
            if v.go:
                v.act = GoSockmapd(v.path, self.db)
                v.addr = "127.0.0.1:%d" % v.act.port
                with v.act.client() as c:
                    reply = c.ask(MAP, "user1@example.org")
                    if reply != b"mbox1@mail.example.net":  # a found value, sent raw
                        raise RuntimeError("the Go sockmapd answered %r" % reply)
                wait_no_children(v.act)
                continue
            cfg_tcp, cfg_unix = self.cfg_tcp, self.cfg_unix
            if v.sysconfig:
                sysconfig = dict(common["sysconfig"], **v.sysconfig)
                cfg_tcp = temp_config(base_config(self.db, **dict(common, sysconfig=sysconfig)))
                cfg_unix = temp_config(base_config(self.db.unix_entry, **dict(common, sysconfig=sysconfig)))
            v.act = SocketActivated(["-c", cfg_tcp], binary=v.path, accept=v.accept)
            v.act_unix = SocketActivated(["-c", cfg_unix], binary=v.path, accept=v.accept)
            v.addr = "127.0.0.1:%d" % v.act.port
            v.addr_unix = "127.0.0.1:%d" % v.act_unix.port
            # One answer from each, so a broken set-up fails before the rounds.
            for act in (v.act, v.act_unix):
                with act.client() as c:
                    reply = c.ask(MAP, "user1@example.org")
                    if reply != b"OK mbox1@mail.example.net":
                        raise RuntimeError("%s answered %r: %s" % (v.name, reply, act.log_text()[-2000:]))
                wait_no_children(act)
        # sysconfig.allow: 127.0.0.1 served, 127.0.0.2 refused.
        allow = dict(common, sysconfig=dict(common["sysconfig"], allow=["127.0.0.1/32"]))
        self.cfg_allow = temp_config(base_config(self.db, **allow))
        first = self.variants[0].path
        self.allow_service = SocketActivated(["-c", self.cfg_allow], binary=first, accept=False)
        self.allow_handler = SocketActivated(["-c", self.cfg_allow], binary=first)
        self.accept_close = SocketActivated([], binary=self.nullanswer, accept=False)
        for act in (self.allow_service, self.allow_handler):
            addr = "127.0.0.1:%d" % act.port
            self.load("cold", addr, count=1, gap_us=0)
            self.load("refused", addr, count=1, gap_us=0, source="127.0.0.2")
        wait_no_children(self.allow_handler)
        # The answer cache: the bench map without and with "cache", in one service.
        cached_maps = bench_map[:1] + [dict(bench_map[0], service=MAP_CACHED, cache=CACHE)]
        self.cfg_cache = temp_config(base_config(self.db, **dict(common, postmaps=cached_maps)))
        self.cache_service = SocketActivated(["-c", self.cfg_cache], binary=first, accept=False)
        self.hot_keys = tmpfile("keys-hot", content="user1@example.org\n")
        self.baseline = None
        if self.args.baseline:
            self.cfg_baseline = temp_config(base_config(self.db, **common))
            self.baseline = SocketActivated(["-c", self.cfg_baseline], binary=os.path.abspath(self.args.baseline),
                                            accept=False)
        for act in [self.cache_service] + ([self.baseline] if self.baseline else []):
            with act.client() as c:
                for mapname in ([MAP, MAP_CACHED] if act is self.cache_service else [MAP]):
                    reply = c.ask(mapname, "user1@example.org")
                    if reply != b"OK mbox1@mail.example.net":
                        raise RuntimeError("cache service answered %r: %s" % (reply, act.log_text()[-2000:]))
            wait_no_children(act)
        self.conn_tcp = "tcp:127.0.0.1:%d:%s:%s:dbmail" % (self.db.port, MariaDB.APP_USER, MariaDB.APP_PASSWORD)
        self.conn_unix = "unix:%s:%s:%s:dbmail" % (self.db.socket, MariaDB.APP_USER, MariaDB.APP_PASSWORD)

    # ---------------------------------------------------------------- measures
    def load(self, mode, addr, mapname=MAP, keyfile=None, raw=False, **opt):
        argv = [self.loadclient, mode, addr, mapname, keyfile or self.keyfile] + (["--raw-values"] if raw else [])
        for k, v in opt.items():
            argv += ["--" + k.replace("_", "-"), str(v)]
        return run_json(argv, timeout=60)

    def logins(self, v, count=300):
        """Database logins (the server's Connections count) while `count` new
        connections, one after another, each make one lookup."""
        status = "SHOW GLOBAL STATUS LIKE 'Connections'"
        before = int(self.db.sql(status).split()[-1])
        self.load("cold", v.addr, raw=v.go, count=count)
        wait_no_children(v.act)
        return int(self.db.sql(status).split()[-1]) - before - 1  # less the query asking

    def floor(self, mode, conn, **opt):
        argv = [self.dbfloor, mode, conn, self.keyfile, SELECT_SQL]
        for k, v in opt.items():
            argv += ["--" + k, str(v)]
        return run_json(argv, timeout=60)

    @staticmethod
    def peak_rss(act):
        """VmHWM of one handler after a few hundred lookups (hits and misses);
        the largest when handlers are reused (the one serving is among them)."""
        wait_no_children(act)
        with act.client(timeout=30) as c:
            for i in range(300):
                c.ask(MAP, "user%d@example.org" % (i * 677 % (2 * ROWS) + 1))
            kids = wait_children(act, 1)
            hwm = max(vm_hwm_kb(k) or 0 for k in kids)
        wait_no_children(act)
        return hwm

    @staticmethod
    def idle_pss(act, n=50):
        """Mean Pss/Rss/private memory of `n` handlers held open after one lookup each."""
        wait_no_children(act)
        clients = []
        try:
            for i in range(n):
                c = act.client(timeout=30)
                clients.append(c)
                reply = c.ask(MAP, "user%d@example.org" % (i * 1999 + 7))
                if not (reply.startswith(b"OK ") or reply == b"NOTFOUND "):
                    raise RuntimeError("idle handler answered %r" % reply)
            kids = wait_children(act, n)
            rollups = [smaps_rollup(pid) for pid in kids]
        finally:
            for c in clients:
                c.close()
        wait_no_children(act)
        mean = lambda k: statistics.mean(r.get(k, 0) for r in rollups)  # noqa: E731
        return {"pss_kb": mean("Pss"), "rss_kb": mean("Rss"),
                "private_kb": mean("Private_Clean") + mean("Private_Dirty"), "handlers": len(rollups)}

    def one_round(self, i):
        """Everything once.  The steady and cold measurements are cut into
        slices taken in turn (floor, answerer, each sockmapd), so that all of
        them see the same machine: on a shared, noisy host the load changes
        from one second to the next, and a ratio of figures taken minutes
        apart measures the neighbours, not sockmapd."""
        a = self.args
        n = a.slices
        r = {"variants": {v.name: {} for v in self.variants}}
        t0 = time.monotonic()
        # Variants in a different order each round, so none always runs first.
        k = i % len(self.variants)
        order = self.variants[k:] + self.variants[:k]
        steady = {"db": [], "null": []}
        cold = {"null": []}
        for v in order:
            steady[v.name] = []
            cold[v.name] = []
        for _ in range(n):
            steady["db"].append(self.floor("steady", self.conn_tcp, seconds=a.seconds / n))
            steady["null"].append(self.load("steady", self.addr_null, seconds=a.seconds / n))
            for v in order:
                steady[v.name].append(self.load("steady", v.addr, raw=v.go, seconds=a.seconds / n))
                wait_no_children(v.act)
            cold["null"].append(self.load("cold", self.addr_null, count=max(1, a.cold_count // n)))
            wait_no_children(self.null)
            for v in order:
                cold[v.name].append(self.load("cold", v.addr, raw=v.go, count=max(1, a.cold_count // n)))
                wait_no_children(v.act)
        r["db"] = merge(steady["db"])
        r["null"] = merge(steady["null"])
        r["null_cold"] = merge(cold["null"])
        for v in order:
            m = r["variants"][v.name]
            m["smd"] = merge(steady[v.name])
            m["smd_cold"] = merge(cold[v.name])
            m["ratio_first"] = m["smd_cold"]["p50_us"] / m["smd"]["p50_us"]
            if not v.accept:
                m["logins_300"] = self.logins(v)
            if v.go:
                # One process, one connection at a time: its own memory, no 16-connection figure.
                m["rss_kb"] = vm_hwm_kb(v.act.pid)
                roll = smaps_rollup(v.act.pid)
                m["idle"] = {"pss_kb": roll.get("Pss", 0), "rss_kb": roll.get("Rss", 0),
                             "private_kb": roll.get("Private_Clean", 0) + roll.get("Private_Dirty", 0),
                             "handlers": 1}
                continue
            m["smd16"] = self.load("steady", v.addr, conns=16, seconds=a.seconds)
            wait_no_children(v.act)
            m["smd_cold_unix"] = self.load("cold", v.addr_unix, count=a.cold_count)
            wait_no_children(v.act_unix)
            m["rss_kb"] = self.peak_rss(v.act)
            m["idle"] = self.idle_pss(v.act)
            composed = 1.0 / (1.0 / r["db"]["rps"] + 1.0 / r["null"]["rps"])
            m["ratio_steady"] = m["smd"]["rps"] / composed
            m["ratio_cold"] = m["smd_cold"]["p50_us"] / r["null_cold"]["p50_us"]
            m["ratio_16"] = m["smd16"]["rps"] / m["smd"]["rps"]
        # The services against the first per-connection binary and the Go
        # sockmapd, in the same round.
        yes = r["variants"][self.variants[0].name]
        gos = [r["variants"][v.name] for v in self.variants if v.go]
        for v in self.variants:
            if not v.accept and not v.go:
                m = r["variants"][v.name]
                m["ratio_conn_rate"] = m["smd_cold"]["rps"] / yes["smd_cold"]["rps"]
                m["ratio_cold_vs_yes"] = m["smd_cold"]["p50_us"] / yes["smd_cold"]["p50_us"]
                if gos:
                    m["ratio_cold_vs_go"] = m["smd_cold"]["p50_us"] / gos[0]["smd_cold"]["p50_us"]
                    m["ratio_steady_vs_go"] = m["smd"]["rps"] / gos[0]["smd"]["rps"]
        if COUNTING_OFF in r["variants"] and "service" in r["variants"]:
            on, off = r["variants"]["service"], r["variants"][COUNTING_OFF]
            on["ratio_counting"] = on["smd"]["rps"] / off["smd"]["rps"]
        # Search orders: one persistent connection to the first binary, each
        # key set in turn (issue 19: each extra key is one more execution).
        # The cases take turns in short slices, so that all of them see the
        # same machine.
        first_v = self.variants[0]
        parts = {name: [] for name, _, _ in SEARCH_CASES}
        for _ in range(2 * n):
            for name, mapname, keys in SEARCH_CASES:
                parts[name].append(self.load("steady", first_v.addr, mapname=mapname,
                                             keyfile=self.search_keys[keys], seconds=a.seconds / (2 * n)))
                wait_no_children(first_v.act)
        r["search"] = {name: merge(p) for name, p in parts.items()}
        r["search_ratio_hits"] = r["search"]["access, hits"]["rps"] / r["search"]["exact, hits"]["rps"]
        r["search_ratio_misses"] = r["search"]["access, misses"]["rps"] / r["search"]["exact, misses"]["rps"]
        r["allow"] = self.allow_round()
        r["cache"] = self.cache_round(i)
        r["null16"] = self.load("steady", self.addr_null, conns=16, seconds=a.seconds / 2)
        wait_no_children(self.null)
        # Explanatory extras: the database part of a cold lookup over TCP and the unix socket.
        r["db_cold"] = self.floor("cold", self.conn_tcp, count=a.cold_count)
        r["db_cold_unix"] = self.floor("cold", self.conn_unix, count=a.cold_count)
        first = r["variants"][self.variants[0].name]
        log("round %d done in %.1fs: db %.0f q/s, null %.0f rt/s, %s %.0f/s (%.2f of the floor), "
            "cold p50 %.0f us vs %.0f us"
            % (i + 1, time.monotonic() - t0, r["db"]["rps"], r["null"]["rps"], self.variants[0].name,
               first["smd"]["rps"], first["ratio_steady"], first["smd_cold"]["p50_us"], r["null_cold"]["p50_us"]))
        return r

    def allow_round(self):
        """sysconfig.allow's cost: served against refused connections, in interleaved slices."""
        n, count = self.args.slices, max(1, self.args.cold_count // self.args.slices)
        service = "127.0.0.1:%d" % self.allow_service.port
        handler = "127.0.0.1:%d" % self.allow_handler.port
        floor = "127.0.0.1:%d" % self.accept_close.port
        parts = {k: [] for k in ("served", "refused", "floor", "handler_served", "handler_refused")}
        # A refused connection takes tens of microseconds: more of them, for a measurable slice.
        for _ in range(n):
            # The service's handlers stay for the next connection (max_use, max_idle).
            parts["served"].append(self.load("cold", service, count=count, gap_us=0))
            parts["refused"].append(self.load("refused", service, count=10 * count, gap_us=0, source="127.0.0.2"))
            parts["floor"].append(self.load("refused", floor, count=10 * count, gap_us=0, source="127.0.0.2"))
            parts["handler_served"].append(self.load("cold", handler, count=max(1, count // 4), gap_us=0))
            wait_no_children(self.allow_handler)
            parts["handler_refused"].append(self.load("refused", handler, count=max(1, count // 4), gap_us=0,
                                                      source="127.0.0.2"))
            wait_no_children(self.allow_handler)
        r = {k: merge(p) for k, p in parts.items()}
        r["ratio_refused_served"] = r["refused"]["rps"] / r["served"]["rps"]
        r["ratio_refused_floor"] = r["refused"]["rps"] / r["floor"]["rps"]
        r["ratio_handler_refused_served"] = r["handler_refused"]["rps"] / r["handler_served"]["rps"]
        return r

    def executions(self):
        return int(self.db.sql("SHOW GLOBAL STATUS LIKE 'Com_stmt_execute'").split()[-1])

    def zipf_keys(self, i):
        """ZIPF_LOOKUPS keys drawn from ZIPF_KEYS by rank with weight 1/rank^s; keys no other
        measurement asks and new each round (the cache is cold for them), about half of them
        absent from the table."""
        rnd = random.Random(35 + i)
        weights = [1.0 / (r ** ZIPF_S) for r in range(1, ZIPF_KEYS + 1)]
        keys = []
        n = 1 + i * 3 * ZIPF_KEYS
        while len(keys) < ZIPF_KEYS:
            k = "user%d@example.org" % (n if len(keys) % 2 == 0 else ROWS + n)
            n += 1
            if k not in self.steady_keys:
                keys.append(k)
        return rnd.choices(keys, weights=weights, k=ZIPF_LOOKUPS)

    def cache_round(self, i):
        """The answer cache: lookups/s with and without it, a hot cached key against the null
        answerer, in interleaved slices; then the Zipf run's statement executions."""
        n, secs = self.args.slices, self.args.seconds / self.args.slices
        addr = "127.0.0.1:%d" % self.cache_service.port
        parts = {k: [] for k in ("null_hot", "hot", "off", "on", "baseline_off")}
        for _ in range(n):
            parts["null_hot"].append(self.load("steady", self.addr_null, keyfile=self.hot_keys, seconds=secs))
            parts["hot"].append(self.load("steady", addr, mapname=MAP_CACHED, keyfile=self.hot_keys, seconds=secs))
            parts["off"].append(self.load("steady", addr, mapname=MAP, seconds=secs))
            parts["on"].append(self.load("steady", addr, mapname=MAP_CACHED, seconds=secs))
            if self.baseline:
                parts["baseline_off"].append(self.load("steady", "127.0.0.1:%d" % self.baseline.port, seconds=secs))
            wait_no_children(self.cache_service)
        r = {k: merge(p) for k, p in parts.items() if p}
        r["ratio_hot_null"] = r["hot"]["rps"] / r["null_hot"]["rps"]
        if self.baseline:
            r["ratio_off_baseline"] = r["off"]["rps"] / r["baseline_off"]["rps"]
        keys = self.zipf_keys(i)
        before = self.executions()
        t0 = time.monotonic()
        with Client(("127.0.0.1", self.cache_service.port), timeout=30) as c:
            for k in keys:
                reply = c.ask(MAP_CACHED, k)
                if not (reply.startswith(b"OK ") or reply == b"NOTFOUND "):
                    raise RuntimeError("cache service answered %r" % reply)
        r["zipf_seconds"] = time.monotonic() - t0
        r["zipf_executions"] = self.executions() - before
        r["zipf_distinct"] = len(set(keys))
        wait_no_children(self.cache_service)
        return r

    def cache_rows(self):
        """(name, value) rows and (name, value, target, met) ratios of the cache measurement."""
        m = self.med
        rows = [("bare answerer (null), hot key, 1 conn", "%.0f /s" % m("cache", "null_hot", "rps")),
                ("cache on, hot key, 1 conn", "%.0f /s" % m("cache", "hot", "rps")),
                ("cache on (ttl 60), the usual keys, 1 conn", "%.0f /s" % m("cache", "on", "rps")),
                ("cache off, the usual keys, 1 conn", "%.0f /s" % m("cache", "off", "rps"))]
        if self.baseline:
            rows.append(("cache off, --baseline binary, 1 conn", "%.0f /s" % m("cache", "baseline_off", "rps")))
        rows.append(("Zipf run: %d lookups over %d keys, distinct drawn" % (ZIPF_LOOKUPS, ZIPF_KEYS),
                     "%.0f" % m("cache", "zipf_distinct")))
        hot = m("cache", "ratio_hot_null")
        execs = m("cache", "zipf_executions")
        ratios = [("hot key from the cache / bare answerer", hot, ">= 0.8", hot >= 0.8),
                  ("Zipf run: statement executions", execs, "<= 1200", execs <= 1200)]
        if self.baseline:
            off = m("cache", "ratio_off_baseline")
            ratios.append(("cache off / baseline binary", off, ">= 0.97", off >= 0.97))
        return rows, ratios

    def allow_rows(self):
        """(name, connections/s, p50, p99) and the ratios of the allow-list measurement; medians over the rounds."""
        m = self.med
        names = [("served, accept loop (handler, db, answer)", "served"),
                 ("refused, accept loop (closed, no handler)", "refused"),
                 ("floor: accept and close, nothing else", "floor"),
                 ("served, Accept=yes handler (exec)", "handler_served"),
                 ("refused, Accept=yes handler (exec, config)", "handler_refused")]
        rows = [(name, m("allow", k, "rps"), m("allow", k, "p50_us"), m("allow", k, "p99_us")) for name, k in names]
        refused_floor = m("allow", "ratio_refused_floor")
        ratios = [("accept loop: refused / served", m("allow", "ratio_refused_served"), "", True),
                  ("accept loop: refused / accept-and-close floor", refused_floor, ">= 0.8", refused_floor >= 0.8),
                  ("Accept=yes: refused / served", m("allow", "ratio_handler_refused_served"), "", True)]
        return rows, ratios

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
        """(floor rows, per-variant rows, per-variant ratios); values are medians over the rounds."""
        m = self.med
        composed = 1.0 / (1.0 / m("db", "rps") + 1.0 / m("null", "rps"))
        floors = [
            ("db floor: libmariadb in-process, 1 conn", "%.0f q/s" % m("db", "rps"),
             m("db", "p50_us"), m("db", "p99_us")),
            ("transport floor: null answerer, 1 conn", "%.0f rt/s" % m("null", "rps"),
             m("null", "p50_us"), m("null", "p99_us")),
            ("transport floor: null answerer, cold", "first answer", m("null_cold", "p50_us"),
             m("null_cold", "p99_us")),
            ("composed floor 1/(1/db + 1/transport)", "%.0f /s" % composed, None, None),
            ("null answerer, 16 conns", "%.0f rt/s" % m("null16", "rps"), m("null16", "p50_us"),
             m("null16", "p99_us")),
            ("db connect+prepare+query, TCP", "per lookup", m("db_cold", "p50_us"), m("db_cold", "p99_us")),
            ("db connect+prepare+query, unix socket", "per lookup", m("db_cold_unix", "p50_us"),
             m("db_cold_unix", "p99_us")),
        ]
        per_variant = {}
        ratios = {}
        dash = ("-", None, None)
        for v in self.variants:
            def mv(*path, _n=v.name):
                return m("variants", _n, *path)
            rows = [
                ("sockmapd: 1 conn, sequential", "%.0f /s" % mv("smd", "rps"), mv("smd", "p50_us"),
                 mv("smd", "p99_us")),
                ("sockmapd: new conn per lookup (cold)", "first answer", mv("smd_cold", "p50_us"),
                 mv("smd_cold", "p99_us")),
                ("sockmapd: new connections/s, one at a time", "%.0f /s" % mv("smd_cold", "rps"), None, None),
            ]
            if v.go:
                rows += [("sockmapd: 16 conns",) + dash, ("sockmapd: cold, database over unix socket",) + dash]
            else:
                rows += [
                    ("sockmapd: 16 conns", "%.0f /s" % mv("smd16", "rps"), mv("smd16", "p50_us"),
                     mv("smd16", "p99_us")),
                    ("sockmapd: cold, database over unix socket", "first answer", mv("smd_cold_unix", "p50_us"),
                     mv("smd_cold_unix", "p99_us")),
                ]
            rows += [
                ("sockmapd: handler peak RSS (VmHWM)", "%.2f MiB" % (mv("rss_kb") / 1024.0), None, None),
                ("sockmapd: Pss per idle handler (50 held; go: its process)", "%.0f KiB" % mv("idle", "pss_kb"),
                 None, None),
                ("sockmapd: Rss / private per idle handler", "%.0f / %.0f KiB" % (mv("idle", "rss_kb"),
                                                                                 mv("idle", "private_kb")), None, None),
                ("sockmapd: db logins per 300 new connections",
                 "-" if v.accept else "%.0f" % mv("logins_300"), None, None),
            ]
            per_variant[v.name] = rows
            # Ratios are taken within each round (same machine state), then the median.
            first = mv("ratio_first")
            if v.go:
                ratios[v.name] = [("first answer / warm lookup (p50)", first, "", None)]
                continue
            steady = mv("ratio_steady")
            cold = mv("ratio_cold")
            conc = mv("ratio_16")
            rss = mv("rss_kb") / 1024.0
            pss = mv("idle", "pss_kb") / 1024.0
            if v.accept:
                ratios[v.name] = [
                    ("steady / composed floor", steady, ">= 0.95", steady >= 0.95),
                    ("cold p50 / null answerer cold p50", cold, "<= 1.5", cold <= 1.5),
                    ("16 conns / 1 conn", conc, ">= 1.5", conc >= 1.5),
                    ("peak RSS, MiB", rss, "<= 6", rss <= 6),
                    ("Pss per idle handler, MiB", pss, "<= 1", pss <= 1),
                ]
                continue
            # The Accept=no service (issue 13's targets; "vs Accept=yes" is the
            # unsandboxed per-connection handler here, the hardened unit under
            # a real systemd in the system suite), and issue 22's: handlers
            # reused as Postfix's master reuses its daemons (not for max_use 1,
            # whose figures stand beside them).
            reused = v.sysconfig.get("max_use", 100) > 1
            rate = mv("ratio_conn_rate")
            cold_yes = mv("ratio_cold_vs_yes")
            logins = mv("logins_300")
            ratios[v.name] = [
                ("steady / composed floor", steady, ">= 0.97", steady >= 0.97),
                ("cold p50 / null answerer cold p50", cold, "<= 1.0", cold <= 1.0),
                ("cold p50 / Accept=yes cold p50", cold_yes, "<= 0.1", cold_yes <= 0.1),
                ("new conns/s / Accept=yes", rate, ">= 10", rate >= 10),
                ("16 conns / 1 conn", conc, ">= 1.5", conc >= 1.5),
                ("Pss per idle handler, MiB", pss, "<= 0.5", pss <= 0.5),
                ("first answer / warm lookup (p50)", first, "<= 3", first <= 3 if reused else None),
                ("db logins per 300 new connections", logins, "<= 10", logins <= 10 if reused else None),
            ]
            if v.name == "service" and any(x.name == COUNTING_OFF for x in self.variants):
                counting = mv("ratio_counting")
                ratios[v.name].append(("1 conn steady / counting compiled out", counting, ">= 0.98",
                                       counting >= 0.98))
            if any(x.go for x in self.variants):
                cold_go = mv("ratio_cold_vs_go")
                steady_go = mv("ratio_steady_vs_go")
                ratios[v.name] += [
                    ("first answer / Go's (p50)", cold_go, "<= 1", cold_go <= 1 if reused else None),
                    ("1 conn steady / Go's", steady_go, ">= 1", steady_go >= 1),
                ]
        return floors, per_variant, ratios

    def search_rows(self):
        """(name, lookups/s, p50, p99) per search case, then the access/exact ratios; medians over the rounds."""
        m = self.med
        rows = [(name, m("search", name, "rps"), m("search", name, "p50_us"), m("search", name, "p99_us"))
                for name, _, _ in SEARCH_CASES]
        return rows, m("search_ratio_hits"), m("search_ratio_misses")

    def report(self):
        floors, per_variant, ratios = self.summary()
        fmt = lambda v: "-" if v is None else "%.0f" % v  # noqa: E731
        lines = ["", "sockmapd benchmark: median of %d rounds, %d-row table, %d keys (%.0f%% present), loopback"
                 % (len(self.rounds), ROWS, KEYS, self.present * 100), self.go_note, ""]
        lines.append("%-44s %16s %9s %9s" % ("measure", "value", "p50 us", "p99 us"))
        for name, value, p50, p99 in floors:
            lines.append("%-44s %16s %9s %9s" % (name, value, fmt(p50), fmt(p99)))
        for v in self.variants:
            lines.append("")
            lines.append("[%s] %s" % (v.name, v.path))
            for name, value, p50, p99 in per_variant[v.name]:
                lines.append("%-44s %16s %9s %9s" % (name, value, fmt(p50), fmt(p99)))
            lines.append("%-44s %8s %8s" % ("  ratio", "value", "target"))
            for name, val, target, met in ratios[v.name]:
                verdict = "" if met is None else "met" if met else "MISSED"
                lines.append("  %-42s %8.2f %8s  %s" % (name, val, target, verdict))
        rows, hits, misses = self.search_rows()
        lines += ["", "[search orders] %s, 1 conn, sequential" % self.variants[0].name]
        for name, rps, p50, p99 in rows:
            lines.append("%-44s %16s %9s %9s" % (name, "%.0f lookups/s" % rps, fmt(p50), fmt(p99)))
        lines.append("  %-42s %8.2f" % ("access / exact, hits", hits))
        lines.append("  %-42s %8.2f" % ("access / exact, misses", misses))
        rows, allow_ratios = self.allow_rows()
        lines += ["", "[allow-list] %s, \"allow\": [\"127.0.0.1/32\"], new connections one at a time, "
                  "refused ones from 127.0.0.2" % self.variants[0].name]
        for name, rps, p50, p99 in rows:
            lines.append("%-44s %16s %9s %9s" % (name, "%.0f conns/s" % rps, fmt(p50), fmt(p99)))
        for name, val, target, met in allow_ratios:
            lines.append("  %-42s %8.2f %8s  %s" % (name, val, target, ("met" if met else "MISSED") if target else ""))
        rows, cache_ratios = self.cache_rows()
        lines += ["", "[answer cache] %s as the Accept=no service, map %s with \"cache\": %s"
                  % (self.variants[0].name, MAP_CACHED, json.dumps(CACHE))]
        for name, value in rows:
            lines.append("%-44s %16s" % (name, value))
        for name, val, target, met in cache_ratios:
            lines.append("  %-42s %8.2f %8s  %s" % (name, val, target, "met" if met else "MISSED"))
        print("\n".join(lines), flush=True)

    def markdown(self):
        floors, per_variant, ratios = self.summary()
        names = [v.name for v in self.variants]
        fmt = lambda v: "" if v is None else "%.0f" % v  # noqa: E731
        out = ["| floor | value | p50 µs | p99 µs |", "|---|---:|---:|---:|"]
        for name, value, p50, p99 in floors:
            out.append("| %s | %s | %s | %s |" % (name, value, fmt(p50), fmt(p99)))
        head = "| sockmapd | " + " | ".join("%s: value | p50 µs | p99 µs" % n for n in names) + " |"
        out += ["", head, "|---|" + "---:|---:|---:|" * len(names)]
        for i, row in enumerate(per_variant[names[0]]):
            cells = []
            for n in names:
                _, value, p50, p99 = per_variant[n][i]
                cells += [value, fmt(p50), fmt(p99)]
            out.append("| %s | %s |" % (row[0].replace("sockmapd: ", ""), " | ".join(cells)))
        out += ["", "| ratio | target | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
        rows = []
        for n in names:
            for row in ratios[n]:
                if (row[0], row[2]) not in rows:
                    rows.append((row[0], row[2]))
        for name, target in rows:
            cells = []
            for n in names:
                hit = [r for r in ratios[n] if (r[0], r[2]) == (name, target)]
                mark = "" if not hit or hit[0][3] is None else "✓" if hit[0][3] else "✗"
                cells.append("%.2f %s" % (hit[0][1], mark) if hit else "")
            out.append("| %s | %s | %s |" % (name, target.replace(">=", "≥").replace("<=", "≤"), " | ".join(cells)))
        rows, hits, misses = self.search_rows()
        out += ["", "| search order (%s, 1 conn) | lookups/s | p50 µs | p99 µs |" % names[0], "|---|---:|---:|---:|"]
        for name, rps, p50, p99 in rows:
            out.append("| %s | %.0f | %s | %s |" % (name, rps, fmt(p50), fmt(p99)))
        out.append("| access / exact, hits | %.2f | | |" % hits)
        out.append("| access / exact, misses | %.2f | | |" % misses)
        rows, allow_ratios = self.allow_rows()
        out += ["", "| allow-list (%s, `\"allow\": [\"127.0.0.1/32\"]`) | connections/s | p50 µs | p99 µs |" % names[0],
                "|---|---:|---:|---:|"]
        for name, rps, p50, p99 in rows:
            out.append("| %s | %.0f | %s | %s |" % (name, rps, fmt(p50), fmt(p99)))
        for name, val, target, met in allow_ratios:
            out.append("| %s | %.2f%s | | |" % (name, val, " (target %s) %s" % (target.replace(">=", "≥"),
                                                                                   "✓" if met else "✗")
                                                 if target else ""))
        rows, cache_ratios = self.cache_rows()
        out += ["", "| answer cache (%s, Accept=no service) | value |" % names[0], "|---|---:|"]
        for name, value in rows:
            out.append("| %s | %s |" % (name, value))
        for name, val, target, met in cache_ratios:
            out.append("| %s | %.2f (target %s) %s |" % (name, val, target.replace(">=", "≥").replace("<=", "≤"),
                                                         "✓" if met else "✗"))
        return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of each throughput measurement")
    ap.add_argument("--cold-count", type=int, default=150, help="new connections per cold measurement")
    ap.add_argument("--slices", type=int, default=3,
                    help="steady and cold measurements are taken in this many interleaved slices")
    ap.add_argument("--no-service", action="store_true",
                    help="leave out the Accept=no service (the first binary forking its handlers)")
    ap.add_argument("--counting-off", metavar="PATH",
                    help="sockmapd built with SOCKMAPD_NO_STATS: measured as the service beside the first binary's")
    ap.add_argument("--baseline", metavar="PATH",
                    help="today's sockmapd binary: its lookups/s without a cache beside this one's")
    ap.add_argument("--json", help="write every round's raw figures to this file")
    ap.add_argument("--markdown", help="write the summary tables as Markdown to this file")
    ap.add_argument("--variant", action="append", metavar="NAME=PATH",
                    help="a sockmapd binary to measure (repeatable; default: BUILD/sockmapd), "
                         "all in the same rounds, e.g. before=old/sockmapd after=build/sockmapd")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    t0 = time.monotonic()
    b = Bench(args)
    try:
        b.run()
    except (RuntimeError, AssertionError, OSError, subprocess.TimeoutExpired) as e:
        log("FAILED: %s: %s" % (type(e).__name__, e))
        return 1
    finally:
        for v in b.variants:
            if v.go and v.act:
                v.act.stop()
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
