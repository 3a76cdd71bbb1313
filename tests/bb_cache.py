#!/usr/bin/python3
"""bb_cache — a map's "cache": answers reused for ttl, served stale through a database outage.

The accept loop (`sockmapd --listen`) with maps that set "cache", on the
real binary and a real mariadbd of the suite's own: a real Postfix smtpd
(lib/postfix.py; smtpd max_use 1, so no Postfix process keeps an answer of
its own) gets 250/554/550 for warmed senders and recipients once the
database is stopped, for stale_if_error; 451 past it and for keys never
asked. A row changed is seen after ttl, not before, and a cached answer
costs no statement execution; a reload that changes a map answers from the
new map at once while an unchanged map keeps its entries; handlers killed
with SIGKILL in the middle of their work leave the cache usable and right
for the next; a bad "cache" key is a config error naming it (exit 78); a
handler per connection (Accept=yes, xinetd) has no cache. The cache module
itself (bounds, eviction, a writer killed holding the lock) is
tests/cache_tests.cc's.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness  # noqa: E402
import readme  # noqa: E402
from harness import *  # noqa: E402,F403
from postfix import PostfixInstance  # noqa: E402

GUIDE = "doc/cache.md"


def guide_line(name):
    """The one line of doc/cache.md's block `name`, as a pattern: its numbers and map name stand for any."""
    body = re.escape(readme.block(GUIDE, name)[1].strip())
    return re.compile(re.sub(r"\d+", lambda _: r"\d+", body.replace(r"map\ recipient:", r"map\ \S+:")))


def cached(m, ttl, stale, negative_ttl=None):
    m = dict(m)
    m["cache"] = {"ttl": ttl, "stale_if_error": stale}
    if negative_ttl is not None:
        m["cache"]["negative_ttl"] = negative_ttl
    return m


def access_map(service="access", **kw):
    m = {"service": service, "database": "mail", "table": "access_rules", "key": "k", "value": "action",
         "reason": "reason", "search": "access"}
    m.update(kw)
    return m


def virtual_map(**kw):
    m = {"service": "virtual", "database": "mail", "table": "virtual_alias", "key": "address", "value": "goto",
         "search": "virtual"}
    m.update(kw)
    return m


class Listener:
    """sockmapd -c CFG --listen 127.0.0.1:PORT, stopped by pid after the test."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.port = free_port()
        self.proc = spawn(cfg, ["--listen", "127.0.0.1:%d" % self.port], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        wait_for(lambda: harness._tcp_listening(self.port, self.pid), timeout=scaled(10),
                 msg="listening on %d" % self.port)

    def ask(self, mapname, key):
        with Client(("127.0.0.1", self.port), timeout=scaled(10)) as c:
            return c.ask(mapname, key)

    def handlers(self):
        return proc_children(self.pid)

    def log(self):
        return read_log(self.cfg)


def executions(db):
    return global_status(db, "Com_stmt_execute")


# ---------------------------------------------------------------- a real smtpd through an outage

@pytest.mark.slow
@pytest.mark.root
@test(timeout=600)
def postfix_keeps_its_answers_through_an_outage_for_stale_if_error():
    db = MariaDB(fixtures=True, name="outage").start()
    stale = max(30, int(scaled(15)))  # the warming and outage sessions fit in it on a loaded machine
    maps = [cached(access_map(), 1, stale), cached(access_map("access_exact", search="exact"), 1, stale),
            cached(virtual_map(), 1, stale)]
    cfg = temp_config(base_config(db, extra_maps=maps, database={"retry_interval": 1, "connect_timeout": 1}))
    sm = Listener(cfg)
    table = lambda name: "socketmap:inet:127.0.0.1:%d:%s" % (sm.port, name)
    pf = PostfixInstance([
        "max_use = 1",  # a new smtpd per session: nothing cached on Postfix's side
        "virtual_alias_domains = example.org, example.com",
        "virtual_alias_maps = " + table("virtual"),
        "smtpd_sender_restrictions = check_sender_access " + table("access"),
        "smtpd_recipient_restrictions = check_recipient_access " + table("access_exact"),
    ])
    defer(pf.stop)
    sessions = [
        ("spammer@bad.example", ["list@example.org"], [250, 554]),        # the sender's own row
        ("other@bad.example", ["list@example.org"], [250, 554]),          # its domain's row, found by the walk
        ("friend@bad.example", ["list@example.org"], [250, 250]),
        ("someone@good.example", ["anyone@example.org", "nobody@example.com", "spammer@bad.example"],
         [250, 250, 550, 554]),                                            # catch-all, unknown, blacklisted
    ]
    warming = time.monotonic()
    for sender, rcpts, want in sessions:
        codes, text = pf.codes(sender, *rcpts)
        eq(codes, want, "warming: " + text)
    warmed = time.monotonic()  # every answer is at least as old as this from here on

    db.stop()
    for sender, rcpts, want in sessions:
        codes, text = pf.codes(sender, *rcpts)
        eq(codes, want, "the database stopped, within stale_if_error: " + text)
    ok(time.monotonic() - warming < stale, "the outage sessions ran within stale_if_error; slow machine?")
    ok(guide_line("cache-stale-line").search(sm.log()), "doc/cache.md's stale line in the log: " + sm.log()[-2000:])
    # Keys never asked: TEMP, as without a cache.
    codes, text = pf.codes("newcomer@bad.example", "list@example.org")
    eq(codes, [250, 451], "a sender never seen: " + text)
    codes, text = pf.codes("someone@good.example", "other@example.com")
    eq(codes, [250, 451], "a recipient never seen: " + text)

    # Past stale_if_error: 451, as without a cache.
    time.sleep(max(0.0, warmed + stale + 1 - time.monotonic()))
    for sender, rcpts, want in sessions:
        codes, text = pf.codes(sender, *rcpts)
        eq(codes, [250] + [451] * len(rcpts), "past stale_if_error: " + text)

    db.start()
    for sender, rcpts, want in sessions:
        codes, text = pf.codes(sender, *rcpts)
        eq(codes, want, "the database back: " + text)
    not_contains(pf.maillog(), "fatal")


# ---------------------------------------------------------------- ttl, and what a hit costs

@pytest.mark.slow
@test(timeout=120)
def a_row_changed_is_seen_after_ttl_and_a_hit_costs_no_execution():
    db = MariaDB(fixtures=True, name="ttl").start()
    ttl = max(3, int(scaled(2)))  # long enough for the lookups below on a loaded machine
    cfg = temp_config(base_config(db, extra_maps=[cached(access_map(), ttl, 0, negative_ttl=ttl)]))
    sm = Listener(cfg)
    eq(sm.ask("access", "spammer@bad.example"), b"OK REJECT spam source")
    eq(sm.ask("access", "nobody@good.example"), b"NOTFOUND ")
    changed_at = time.monotonic()
    db.sql("UPDATE access_rules SET reason = 'changed' WHERE k = 'spammer@bad.example';"
               "INSERT INTO access_rules (k, action) VALUES ('nobody@good.example', 'HOLD')", db="mail")
    before = executions(db)
    # The walk for nobody@good.example tried five keys the first time; now none.
    for _ in range(10):
        eq(sm.ask("access", "spammer@bad.example"), b"OK REJECT spam source")
        eq(sm.ask("access", "nobody@good.example"), b"NOTFOUND ")
    ok(time.monotonic() - changed_at < ttl, "the cached answers were asked within ttl; slow machine?")
    eq(executions(db) - before, 0, "statement executions for cached answers")
    time.sleep(max(0.0, changed_at + ttl + 0.5 - time.monotonic()))
    eq(sm.ask("access", "spammer@bad.example"), b"OK REJECT changed")
    eq(sm.ask("access", "nobody@good.example"), b"OK HOLD")
    # Maps without "cache" still ask every time.
    before = executions(db)
    for _ in range(3):
        eq(sm.ask("othermap", "ping"), b"OK pong")
    eq(executions(db) - before, 3)


# ---------------------------------------------------------------- reload

@pytest.mark.slow
@test(timeout=120)
def a_reload_that_changes_a_map_answers_from_the_new_map_at_once():
    db = MariaDB(fixtures=True, name="reload").start()
    # virtual's ttl is 1 s: its entry, kept, is stale by the time the database stops.
    first = base_config(db, extra_maps=[cached(access_map(), 3600, 3600), cached(virtual_map(), 1, 3600)])
    cfg = temp_config(first)
    sm = Listener(cfg)
    eq(sm.ask("access", "spammer@bad.example"), b"OK REJECT spam source")
    eq(sm.ask("virtual", "list@example.org"), b"OK list-members@example.org")
    asked = time.monotonic()
    # The map now answers without its reason column: a new answer, at once.
    second = json.loads(json.dumps(first))
    del second["postmaps"][-2]["reason"]
    write_config(cfg + ".new", second)
    os.rename(cfg + ".new", cfg)
    os.kill(sm.pid, signal.SIGHUP)
    wait_for(lambda: "reload: configuration read" in sm.log(), timeout=scaled(10), msg="reloaded")
    eq(sm.ask("access", "spammer@bad.example"), b"OK REJECT")
    # The unchanged map kept its entries: they answer through an outage,
    # logged as doc/cache.md shows; a key never asked is TEMP.
    time.sleep(max(0.0, asked + 1.5 - time.monotonic()))
    db.stop()
    eq(sm.ask("virtual", "list@example.org"), b"OK list-members@example.org")
    startswith(sm.ask("virtual", "anyone@example.com"), b"TEMP ")
    ok(guide_line("cache-stale-line").search(sm.log()), "doc/cache.md's stale line in the log: " + sm.log()[-2000:])


# ---------------------------------------------------------------- handlers killed

@pytest.mark.slow
@test(timeout=180)
def handlers_killed_in_the_middle_of_their_work_leave_the_cache_usable():
    db = MariaDB(fixtures=True, name="kill").start()
    cfg = temp_config(base_config(db, extra_maps=[cached(access_map(), 3600, 3600)],
                                  sysconfig={"loglevel": "info"}))
    sm = Listener(cfg)
    stop = threading.Event()
    wrong = []

    def writer(n):
        # Distinct keys: every lookup is a store into the cache.
        i = 0
        while not stop.is_set():
            i += 1
            try:
                with Client(("127.0.0.1", sm.port), timeout=scaled(10)) as c:
                    for j in range(20):
                        r = c.ask("access", "u%d.%d.%d@h%d.bad.example" % (n, i, j, i % 50))
                        if r not in (b"OK REJECT domain blacklisted",) and not r.startswith(b"TEMP "):
                            wrong.append(r)
            except (OSError, EOFError, ValueError, AssertionError):
                pass  # its handler was killed under it

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(3)]
    for t in threads:
        t.start()
    killed = 0
    deadline = time.monotonic() + scaled(8)
    while time.monotonic() < deadline:
        for pid in sm.handlers():
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join(scaled(20))
    ok(killed >= 5, "handlers killed: %d" % killed)
    eq(wrong, [], "answers while handlers were killed")
    # The next handlers use the cache: it stores and serves, right, and
    # through an outage.
    eq(sm.ask("access", "spammer@bad.example"), b"OK REJECT spam source")
    eq(sm.ask("access", "x@mail.bad.example"), b"OK REJECT domain blacklisted")
    before = executions(db)
    t0 = time.monotonic()
    eq(sm.ask("access", "spammer@bad.example"), b"OK REJECT spam source")
    ok(time.monotonic() - t0 < scaled(2), "no lock left held (a cache hit took %.2fs)" % (time.monotonic() - t0))
    eq(executions(db) - before, 0)
    db.stop()
    eq(sm.ask("access", "x@mail.bad.example"), b"OK REJECT domain blacklisted")
    ok(pid_alive(sm.pid), "the listener lives")


# ---------------------------------------------------------------- config, and where there is no cache

@test(timeout=60)
def the_guides_map_loads_and_its_start_line_is_the_listeners():
    m = json.loads(readme.block(GUIDE, "cache-map")[1])
    eq(m["cache"], {"ttl": 60, "negative_ttl": 60, "stale_if_error": 3600})
    m["service"] = "guide_recipient"  # the base config has a map "recipient" of its own
    cfg = temp_config(base_config(None, extra_maps=[m]))
    rc, out, err = run_pipe(cfg, args=["--check-config", "--offline"])
    eq(rc, 0, err.decode(errors="replace"))
    sm = Listener(cfg)
    line = readme.block(GUIDE, "cache-start-line")[1].strip()
    wait_for(lambda: line in sm.log(), timeout=scaled(10), msg="%r in the log: %s" % (line, sm.log()[-1500:]))
    # Without a map that sets "cache", nothing is said.
    cfg = temp_config(base_config(None))
    sm = Listener(cfg)
    wait_for(lambda: "listening on" in sm.log(), timeout=scaled(10), msg="started")
    not_contains(sm.log(), "answer cache")


@test
def bad_cache_keys_are_config_errors_naming_them():
    for cache, message in [({"tll": 60}, 'postmaps[6].cache.tll: unknown key (did you mean "ttl"?)'),
                           ({"ttl": -5}, "postmaps[6].cache.ttl: "),
                           ({"stale_if_error": 10 ** 7}, "postmaps[6].cache.stale_if_error: "),
                           ("60", "postmaps[6].cache: must be an object")]:
        m = access_map()
        m["cache"] = cache
        cfg = temp_config(base_config(None, extra_maps=[m]))
        rc, out, err = run_pipe(cfg, args=["--check-config", "--offline"])
        eq(rc, 78, err)
        contains(err.decode(), message)


@pytest.mark.slow
@test(timeout=60)
def a_handler_per_connection_has_no_cache():
    db = MariaDB(fixtures=True, name="accept").start()
    cfg = temp_config(base_config(db, extra_maps=[cached(access_map(), 3600, 3600)]))
    sa = SocketActivated(["-c", cfg])
    with sa.client() as c:
        eq(c.ask("access", "spammer@bad.example"), b"OK REJECT spam source")
    db.stop()
    with sa.client() as c:
        startswith(c.ask("access", "spammer@bad.example"), b"TEMP ")
    sa.stop()


if __name__ == "__main__":
    main()
