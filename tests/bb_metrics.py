#!/usr/bin/python3
"""bb_metrics — the counters every process of one service shares, and their report.

Each test gives its service a runtime directory of its own, so that the
counters it reads are the lookups and connections it made: by map and
result, across handlers reused, retired (max_use), killed and a reload
that drops a map; Accept=yes handlers (each a process started afresh)
counting into the same file; refusals (allow-list, --max-per-peer); a
database outage as TEMP counts and a host-down gauge, back to 0 when it
ends; `sockmapd --stats FILE` written for node_exporter's textfile
collector; `promtool check metrics` on the report and `promtool check
rules` on the shipped alert rules.  Clients connect over loopback only.
"""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F403

RULES = os.path.join(REPO, "doc", "sockmapd-alerts.yml")
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, frozenset(labels)): value} of a text-format report."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        ok(m, "not a sample line: %r" % line)
        labels = frozenset(LABEL.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def stats_text(rundir, args=()):
    p = subprocess.run([sockmapd_path(), "--stats"] + list(args), env=sockmapd_env({"RUNTIME_DIRECTORY": rundir}),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=scaled(20))
    eq(p.returncode, 0, "sockmapd --stats: %s" % p.stderr.decode(errors="replace"))
    return p.stdout.decode()


def stats(rundir):
    return parse(stats_text(rundir))


def sessions_ended(rundir):
    return sum(v for (n, l), v in stats(rundir).items() if n == "sockmapd_sessions_total")


def promtool(*args, stdin=None):
    tool = require_tool("promtool")
    return subprocess.run([tool] + list(args), input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=scaled(30))


def listener(cfg, rundir, args=()):
    """systemd-socket-activate without --accept: the Accept=no service; (process, port)."""
    tool = require_tool("systemd-socket-activate")
    port = free_port()
    log = tmpfile("service", content=b"")
    with open(log, "ab") as f:
        proc = subprocess.Popen([tool, "-l", "127.0.0.1:%d" % port, "-E", "RUNTIME_DIRECTORY=" + rundir,
                                 sockmapd_path(), "-c", cfg] + [str(a) for a in args],
                                stdin=subprocess.DEVNULL, stdout=f, stderr=f, env=sockmapd_env(),
                                start_new_session=True)

    def stop():
        kids = proc_children(proc.pid) if proc.poll() is None else []
        stop_pid(proc.pid, grace=10.0, popen=proc)
        for k in kids:
            stop_pid(k, grace=1.0)
    defer(stop)
    wait_for(lambda: harness_listening(port, proc.pid), timeout=scaled(10), msg="listening")
    return proc, port


def harness_listening(port, pid):
    import harness
    return harness._tcp_listening(port, pid)


def ask(port, mapname, key):
    with Client(("127.0.0.1", port)) as c:
        return c.ask(mapname, key)


def log_text(cfg_dict):
    try:
        with open(cfg_dict["sysconfig"]["logfile"], "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


@pytest.mark.slow
@test(timeout=180)
def counters_equal_the_lookups_across_reused_retired_killed_handlers_and_a_reload():
    rundir = tmpdir("run")
    cfg_dict = base_config(shared_mariadb(), sysconfig={"loglevel": "info", "max_use": 3})
    cfg = temp_config(cfg_dict)
    proc, port = listener(cfg, rundir, args=["--max-children", "16"])
    made = {}

    def count(mapname, result, n=1):
        made[(mapname, result)] = made.get((mapname, result), 0) + n

    connections = 0
    # One lookup per connection, as Postfix makes them: handlers reused, and
    # retired after max_use 3.
    for i in range(7):
        eq(ask(port, "recipient", "postmaster@example.org"), b"OK root@example.org")
        count("recipient", "OK")
        connections += 1
    for i in range(4):
        eq(ask(port, "recipient", "nobody-%d@example.org" % i), b"NOTFOUND ")
        count("recipient", "NOTFOUND")
        connections += 1
    # Several lookups on one connection, and requests for no configured map.
    with Client(("127.0.0.1", port)) as c:
        for _ in range(5):
            eq(c.ask("othermap", "ping"), b"OK pong")
            count("othermap", "OK")
        eq(c.ask("nosuchmap", "x"), b"PERM unknown map")
        eq(c.ask("recipient", "k" * 10001), b"PERM key too long")
        count("recipient", "PERM")
    connections += 1
    # A handler killed while idle (every session so far has ended): what it counted stays.
    wait_for(lambda: sessions_ended(rundir) == connections, timeout=scaled(20), msg="sessions ended")
    idle = proc_children(proc.pid)
    # The last handler may have retired at max_use: a fresh one serves once and waits.
    while not idle and connections < 20:
        eq(ask(port, "othermap", "ping"), b"OK pong")
        count("othermap", "OK")
        connections += 1
        wait_for(lambda: sessions_ended(rundir) == connections, timeout=scaled(20), msg="sessions ended")
        idle = proc_children(proc.pid)
    ok(idle, "idle handlers")
    os.kill(idle[0], signal.SIGKILL)
    wait_for(lambda: "killed by" in log_text(cfg_dict), msg="the killed handler reaped")
    eq(ask(port, "othermap", "ping"), b"OK pong")
    count("othermap", "OK")
    connections += 1
    # A reload that drops othermap and keeps recipient: sums go on.
    cfg_dict["postmaps"] = [m for m in cfg_dict["postmaps"] if m["service"] != "othermap"]
    write_config(cfg + ".new", cfg_dict)
    os.rename(cfg + ".new", cfg)
    os.kill(proc.pid, signal.SIGHUP)
    wait_for(lambda: "reload: configuration read" in log_text(cfg_dict), msg="reloaded")
    for _ in range(3):
        eq(ask(port, "recipient", "postmaster@example.org"), b"OK root@example.org")
        count("recipient", "OK")
        connections += 1
    eq(ask(port, "othermap", "ping"), b"PERM unknown map", "othermap is gone")
    connections += 1

    wait_for(lambda: sessions_ended(rundir) == connections, timeout=scaled(20),
             msg="a session end counted for each connection")
    s = stats(rundir)
    for (mapname, result), n in sorted(made.items()):
        eq(value(s, "sockmapd_lookups_total", map=mapname, result=result), n, "%s %s" % (mapname, result))
    for mapname in ("recipient", "othermap"):
        total = sum(n for (m, r), n in made.items() if m == mapname)
        eq(sum(v for (n, l), v in s.items() if n == "sockmapd_lookups_total" and ("map", mapname) in l), total,
           "every %s lookup, each result" % mapname)
        eq(value(s, "sockmapd_lookup_duration_seconds_count", map=mapname), total, "%s latency count" % mapname)
        eq(value(s, "sockmapd_lookup_duration_seconds_bucket", map=mapname, le="+Inf"), total)
    eq(value(s, "sockmapd_other_requests_total", result="PERM"), 2, "unknown map twice (one after the reload)")
    # recipient's search walk tries the key and its rewrites: several statements per lookup.
    eq(value(s, "sockmapd_statement_executions_total", map="othermap"),
       sum(n for (m, r), n in made.items() if m == "othermap"), "one statement per othermap lookup")
    ok(value(s, "sockmapd_statement_executions_total", map="recipient") >= 10, "statements of recipient")
    eq(value(s, "sockmapd_connections_accepted_total"), connections)
    eq(value(s, "sockmapd_sessions_total", end="client_closed"), connections)
    eq(value(s, "sockmapd_reloads_total", result="ok"), 1)
    eq(value(s, "sockmapd_handlers_exited_total", how="killed"), 1)
    ok(value(s, "sockmapd_handlers_started_total") >= 6, "handlers retired after max_use 3 were replaced")
    eq(value(s, "sockmapd_handlers_max"), 16)
    ok(value(s, "sockmapd_handlers_running") >= 1, "handlers running")
    ok(value(s, "sockmapd_db_connects_total", host=cfg_dict["database"]["host"][0]) >= 1, "database connects")
    contains(stats_text(rundir), 'sockmapd_build_info{version="')
    r = promtool("check", "metrics", stdin=stats_text(rundir).encode())
    eq(r.returncode, 0, "promtool check metrics: %s" % r.stdout.decode(errors="replace"))
    print("    " + "\n    ".join(l for l in stats_text(rundir).splitlines()
                                   if l.startswith("sockmapd_lookups_total") and not l.endswith(" 0")), flush=True)


@test(timeout=120)
def handlers_started_afresh_count_into_the_same_file():
    """Accept=yes: a process per connection, each adding to the runtime directory's counters."""
    rundir = tmpdir("run")
    cfg = temp_config(base_config(shared_mariadb()))
    sa = SocketActivated(["-c", cfg], env={"RUNTIME_DIRECTORY": rundir})
    defer(sa.stop)
    for _ in range(4):
        with Client(sa.address) as c:
            eq(c.ask("othermap", "ping"), b"OK pong")
            eq(c.ask("recipient", "nobody@example.org"), b"NOTFOUND ")
    wait_for(lambda: value(stats(rundir), "sockmapd_sessions_total", end="client_closed") == 4, timeout=scaled(20),
             msg="four sessions ended")
    s = stats(rundir)
    eq(value(s, "sockmapd_lookups_total", map="othermap", result="OK"), 4)
    eq(value(s, "sockmapd_lookups_total", map="recipient", result="NOTFOUND"), 4)
    eq(value(s, "sockmapd_connections_accepted_total"), 4)


@test(timeout=120)
def refusals_are_counted_by_reason():
    rundir = tmpdir("run")
    cfg = temp_config(base_config(shared_mariadb(), sysconfig={"allow": ["192.0.2.0/24"]}))
    proc, port = listener(cfg, rundir)
    for _ in range(2):
        with Client(("127.0.0.1", port)) as c:
            c.send_raw(encode(b"othermap ping"))
            eq(c.read_until_eof(scaled(10)), b"", "refused: nothing sent back")
    wait_for(lambda: value(stats(rundir), "sockmapd_connections_refused_total", reason="allow") == 2,
             msg="two refusals by the allow-list")
    rundir2 = tmpdir("run")
    cfg2 = temp_config(base_config(shared_mariadb()))
    proc2, port2 = listener(cfg2, rundir2, args=["--max-per-peer", "1"])
    held = Client(("127.0.0.1", port2))
    defer(held.close)
    eq(held.ask("othermap", "ping"), b"OK pong")
    with Client(("127.0.0.1", port2)) as c:
        c.send_raw(encode(b"othermap ping"))
        eq(c.read_until_eof(scaled(10)), b"", "past --max-per-peer: closed")
    s = stats(rundir2)
    eq(value(s, "sockmapd_connections_refused_total", reason="per_peer"), 1)
    eq(value(s, "sockmapd_connections_accepted_total"), 1)


@pytest.mark.slow
@test(timeout=180)
def outage_is_temp_counts_and_a_host_down_gauge_back_to_zero():
    rundir = tmpdir("run")
    mdb = MariaDB(fixtures=True, name="outage")
    mdb.start()
    cfg_dict = base_config(mdb, database={"retry_interval": 60, "connect_timeout": 1})
    host = cfg_dict["database"]["host"][0]
    proc, port = listener(temp_config(cfg_dict), rundir)
    eq(ask(port, "othermap", "ping"), b"OK pong")
    eq(value(stats(rundir), "sockmapd_db_host_down", host=host), 0)
    mdb.stop()
    for _ in range(3):
        startswith(ask(port, "othermap", "ping"), b"TEMP ")
    s = stats(rundir)
    eq(value(s, "sockmapd_lookups_total", map="othermap", result="TEMP"), 3)
    eq(value(s, "sockmapd_db_host_down", host=host), 1, "the host is marked down")
    ok(value(s, "sockmapd_db_marked_down_total", host=host) >= 1)
    ok(value(s, "sockmapd_db_connect_failures_total", host=host) >= 1)
    mdb.start()
    wait_for(lambda: ask(port, "othermap", "ping") == b"OK pong", timeout=scaled(20), msg="answers again")
    eq(value(stats(rundir), "sockmapd_db_host_down", host=host), 0, "the mark cleared with the first success")


@test(timeout=60)
def stats_file_is_written_whole_for_the_textfile_collector():
    rundir = tmpdir("run")
    cfg = temp_config(base_config(shared_mariadb()))
    proc, port = listener(cfg, rundir)
    eq(ask(port, "othermap", "ping"), b"OK pong")
    out = os.path.join(tmpdir("textfile"), "sockmapd.prom")
    stats_text(rundir, [out])
    eq(os.stat(out).st_mode & 0o777, 0o644, "node_exporter (another user) reads it")
    with open(out) as f:
        text = f.read()
    eq(value(parse(text), "sockmapd_lookups_total", map="othermap", result="OK"), 1)
    eq([n for n in os.listdir(os.path.dirname(out))], ["sockmapd.prom"], "no temporary file left")
    r = promtool("check", "metrics", stdin=text.encode())
    eq(r.returncode, 0, "promtool check metrics: %s" % r.stdout.decode(errors="replace"))
    # Without a counters' file: zeros, and why on stderr.
    p = subprocess.run([sockmapd_path(), "--stats"], env=sockmapd_env({"RUNTIME_DIRECTORY": tmpdir("empty")}),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=scaled(20))
    eq(p.returncode, 0)
    contains(p.stderr.decode(), "no counters in")
    eq(value(parse(p.stdout.decode()), "sockmapd_connections_accepted_total"), 0)


@test(timeout=60)
def alert_rules_pass_promtool():
    r = promtool("check", "rules", RULES)
    eq(r.returncode, 0, "promtool check rules: %s" % r.stdout.decode(errors="replace"))
    contains(r.stdout.decode(), "SUCCESS: 3 rules found")


if __name__ == "__main__":
    sys.exit(main())
