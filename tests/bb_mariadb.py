#!/usr/bin/python3
"""bb_mariadb — the MariaDB lookup path of the real sockmapd against a real mariadbd.

Result shapes and awkward keys (the replies of tests/fixtures.replies.json),
prepared-statement reuse, laziness, failover past a refusing or hung host
and the shared retry state, idle connection closing, statement errors, the
Go sockmapd's config format, and the exit codes of --query and
--check-config; valgrind's memcheck (LeakSanitizer on a sanitizer build) on
those sessions and commands (marker memcheck).  Faults under live sessions (killed, restarted, hung
servers, refused logins) are bb_faults'; the failover policy itself is
pool_tests'.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F403

# ---------------------------------------------------------------- helpers

def shared_db():
    """The suite's server with fixtures: never stopped or paused by a test."""
    return shared_mariadb()



def query(cfg_path, mapname, key, env=None, timeout=30):
    """sockmapd --query: (rc, stdout text, stderr text, seconds)."""
    t0 = time.monotonic()
    rc, out, err = run_pipe(cfg_path, b"", args=["--query", mapname, key], timeout=timeout, env=env)
    return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), time.monotonic() - t0


def handler_lookup(cfg_path, mapname, key, env=None, timeout=30):
    """One request to a handler serving a pipe, as the service's handlers do (root's --query keeps its
    failover marks to itself): (rc, reply payload + newline, stderr text, seconds)."""
    t0 = time.monotonic()
    rc, out, err = run_pipe(cfg_path, encode(to_bytes(mapname) + b" " + to_bytes(key)), timeout=timeout, env=env)
    payloads = decode_stream(out)
    reply = payloads[0].decode("utf-8", "replace") + "\n" if payloads else ""
    return rc, reply, err.decode("utf-8", "replace"), time.monotonic() - t0


def check_online(cfg_path, timeout=60):
    rc, out, err = run_pipe(cfg_path, b"", args=["--check-config"], timeout=timeout)
    return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def status(db, name):
    """A global status counter of the server (the query's own connection included)."""
    out = db.sql("SHOW GLOBAL STATUS LIKE '%s'" % name)
    return int(out.split()[1])


def app_connections(db):
    """Connections the sockmapd user holds open right now."""
    return int(db.sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'sockmapd'").strip())


def state_text():
    path = os.path.join(runtime_dir(), "failover.state")
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def config(db, **kw):
    return temp_config(base_config(db, **kw))


# ---------------------------------------------------------------- result shapes

@test
def result_shapes():
    db = shared_db()
    cfg = base_config(db, extra_maps=[
        {"service": "quota", "database": "dbmail", "table": "quota", "key": "address", "value": "bytes"}])
    s = PipeSession(temp_config(cfg))
    # Every row of the table beside the fixtures, for the maps configured here.
    cases = fixture_replies("recipient", "exists", "sender", "transport", "othermap", "quota")
    for m, k, want in cases:
        eq(s.ask(m, k), want, "%s %s" % (m, k))
    eq(s.close(), 0)


@test
def reply_size_limit():
    db = shared_db()
    cfg = base_config(db)
    s = PipeSession(temp_config(cfg))
    r = s.ask("awkward", "max-ok")
    eq(len(r), 100000, "max-ok reply length")
    eq(r, b"OK " + b"x" * 99997)
    eq(s.ask("awkward", "max-over"), b"PERM result too long")
    eq(s.ask("awkward", "big"), b"PERM result too long")
    eq(s.ask("recipient", "postmaster@example.org"), b"OK root@example.org", "session goes on")
    eq(s.close(), 0)
    contains(read_log(cfg), "result longer than")


@test
def awkward_keys():
    db = shared_db()
    s = PipeSession(config(db))
    # Byte-exact keys found, near misses and injection attempts NOTFOUND
    # (the table beside the fixtures), and a key that is not UTF-8.
    cases = [(k, want) for _, k, want in fixture_replies("awkward")]
    cases.append((b"\xff\xfe not utf-8", b"NOTFOUND "))
    for key, want in cases:
        eq(s.ask("awkward", key), want, "key %r" % key)
    # The table is still whole.
    eq(db.sql("SELECT COUNT(*) FROM dbmail.awkward").strip(), "15")
    eq(s.close(), 0)


@test
def statements_prepared_once_per_map():
    db = shared_db()
    s = PipeSession(config(db))
    before_prep = status(db, "Com_stmt_prepare")
    before_exec = status(db, "Com_stmt_execute")
    for i in range(5):
        eq(s.ask("recipient", "postmaster@example.org"), b"OK root@example.org")
    for i in range(3):
        eq(s.ask("sender", "nobody%d@x" % i), b"NOTFOUND ")
    eq(status(db, "Com_stmt_prepare") - before_prep, 2, "prepares")
    eq(status(db, "Com_stmt_execute") - before_exec, 8, "executions")
    eq(s.close(), 0)


@test
def one_connection_per_schema():
    db = shared_db()
    s = PipeSession(config(db))
    eq(app_connections(db), 0)
    s.ask("recipient", "postmaster@example.org")
    s.ask("sender", "spammer@bad.example")
    s.ask("transport", "example.org")
    eq(app_connections(db), 1, "dbmail maps share one connection")
    eq(s.ask("othermap", "alpha"), b"OK beta")
    eq(app_connections(db), 2, "a second schema, a second connection")
    eq(s.close(), 0)
    wait_for(lambda: app_connections(db) == 0, 5, msg="connections closed at exit")


@test
def unix_socket_host():
    db = shared_db()
    rc, out, err, _ = query(config(db.unix_entry), "recipient", "postmaster@example.org")
    eq((rc, out), (0, "OK root@example.org\n"), err)


# ---------------------------------------------------------------- laziness and idle close

@test
def lazy_no_connection_without_a_known_map():
    db = shared_db()
    cfg = config(db)
    c0 = status(db, "Connections")
    rc, out, _ = run_pipe(cfg, b"")  # EOF at once
    eq(rc, 0)
    rc, out, _ = run_pipe(cfg, encode("nosuchmap key") + encode("other x") + encode("nospace"))
    eq(rc, 0)
    eq([r[:5] for r in decode_stream(out)], [b"PERM "] * 3)
    c1 = status(db, "Connections")
    eq(c1 - c0, 1, "only the status query itself connected")
    rc, out, _ = run_pipe(cfg, encode("nosuchmap key") + encode("recipient postmaster@example.org"))
    eq(decode_stream(out)[1], b"OK root@example.org")
    eq(status(db, "Connections") - c1, 2, "the known map connected once")


@test
def idle_database_connection_closed_while_client_stays():
    db = shared_db()
    cfg = base_config(db, database={"db_idle_timeout": 1})
    s = PipeSession(temp_config(cfg))
    eq(s.ask("recipient", "postmaster@example.org"), b"OK root@example.org")
    eq(app_connections(db), 1)
    t0 = time.monotonic()
    wait_for(lambda: app_connections(db) == 0, 6, msg="idle connection closed")
    waited = time.monotonic() - t0
    ok(s.popen.poll() is None, "the handler stays for its client")
    ok(waited < scaled(4), "closed %.1fs after the lookup" % waited)
    eq(s.ask("recipient", "postmaster@example.org"), b"OK root@example.org", "reconnects on demand")
    eq(app_connections(db), 1)
    eq(s.close(), 0)
    contains(read_log(cfg), "closing idle database connection")


# ---------------------------------------------------------------- failover

@test
def failover_first_host_refusing():
    db = shared_db()
    reset_runtime_dir()
    dead = "127.0.0.1:%d" % closed_port()
    cfg = base_config([dead, db])
    path = temp_config(cfg)
    rc, out, _ = run_pipe(path, encode("recipient postmaster@example.org"))
    eq((rc, decode_stream(out)), (0, [b"OK root@example.org"]))
    log = read_log(cfg)
    contains(log, "cannot connect to database host " + dead)
    contains(log, "connected to database host " + db.host_entry)
    contains(state_text(), " " + dead + "\n")
    not_contains(state_text(), db.host_entry)
    # --query talks to a person: the failed host is named on stderr.
    reset_runtime_dir()
    rc, out, err, _ = query(path, "recipient", "postmaster@example.org")
    eq((rc, out), (0, "OK root@example.org\n"), err)
    contains(err, dead)


@pytest.mark.slow
@test
def retry_state_shared_between_processes():
    db = shared_db()
    reset_runtime_dir()
    hung = FakeDbHost()
    cfg = base_config([hung.host_entry, db], database={"connect_timeout": 1})
    path = temp_config(cfg)
    rc, out, err, first = handler_lookup(path, "recipient", "postmaster@example.org")
    eq((rc, out), (0, "OK root@example.org\n"), err)
    ok(first >= 0.9, "first process waited for the hung host (%.2fs)" % first)
    contains(state_text(), " " + hung.host_entry + "\n")
    rc, out, err, second = handler_lookup(path, "recipient", "postmaster@example.org")
    eq((rc, out), (0, "OK root@example.org\n"), err)
    ok(second < first - 0.5, "second process skipped the hung host (%.2fs, first %.2fs)" % (second, first))
    # Without the shared file the next process pays again.
    other = tmpdir("rt")
    rc, out, err, third = handler_lookup(path, "recipient", "postmaster@example.org", env={"RUNTIME_DIRECTORY": other})
    eq(rc, 0, err)
    ok(third >= 0.9, "a process with its own state tries the hung host first (%.2fs)" % third)
    print("    timing: hung first host %.2fs, skipped %.2fs" % (first, second))


@test
def all_hosts_marked_down_are_still_tried():
    db = shared_db()
    reset_runtime_dir()
    # Mark the one good host down, as another process would have.
    with open(os.path.join(runtime_dir(), "failover.state"), "w") as f:
        f.write("%d %s\n" % (int(time.time()) + 600, db.host_entry))
    rc, out, err, _ = handler_lookup(config(db), "recipient", "postmaster@example.org")
    eq((rc, out), (0, "OK root@example.org\n"), err)
    not_contains(state_text(), db.host_entry, "a success clears the mark")


@test
def corrupt_state_file_is_harmless():
    db = shared_db()
    reset_runtime_dir()
    with open(os.path.join(runtime_dir(), "failover.state"), "wb") as f:
        f.write(b"\x00\xff garbage\n99999999999999999999999 " + db.host_entry.encode() + b"\nno newline")
    rc, out, err, _ = query(config(db), "recipient", "postmaster@example.org")
    eq((rc, out), (0, "OK root@example.org\n"), err)
    reset_runtime_dir()


@test
def unwritable_runtime_dir_is_not_fatal():
    db = shared_db()
    dead = "127.0.0.1:%d" % closed_port()
    rc, out, err, _ = query(config([dead, db]), "recipient", "postmaster@example.org",
                            env={"RUNTIME_DIRECTORY": "/proc/no-such-dir"})
    eq((rc, out), (0, "OK root@example.org\n"), err)


# ---------------------------------------------------------------- statement errors

@test
def statement_error_is_temp_and_logged():
    db = shared_db()
    cfg = base_config(db, extra_maps=[
        {"service": "badcol", "database": "dbmail", "table": "dbmail_aliases", "key": "alias", "value": "nope"},
        {"service": "badtable", "database": "dbmail", "table": "nosuchtable", "key": "k", "value": "v"}])
    s = PipeSession(temp_config(cfg))
    startswith(s.ask("badcol", "postmaster@example.org"), b"TEMP ")
    startswith(s.ask("badtable", "x"), b"TEMP ")
    eq(s.ask("recipient", "postmaster@example.org"), b"OK root@example.org", "the connection serves other maps")
    startswith(s.ask("badcol", "postmaster@example.org"), b"TEMP ", "still TEMP, never NOTFOUND")
    eq(s.close(), 0)
    log = read_log(cfg)
    contains(log, "map badcol")
    contains(log, "Unknown column 'nope'")
    contains(log, "map badtable")
    contains(log, "nosuchtable' doesn't exist")


# ---------------------------------------------------------------- configs and command line

@test
def go_format_config():
    db = shared_db()
    logfile = os.path.join(tmpdir("log"), "go.log")
    go = {
        "sysconfig": {"port": "2224", "listen": "127.0.0.1", "logfile": logfile, "loglevel": "info",
                      "run_as_user": "", "run_as_group": "", "idle_timeout": "60", "max_session": "600"},
        "database": {"host": ["127.0.0.1"], "port": str(db.port), "username": MariaDB.APP_USER,
                     "password": MariaDB.APP_PASSWORD, "connect_timeout": "2", "read_timeout": "5",
                     "write_timeout": "5"},
        "postmaps": [
            {"service": "recipient", "database": "dbmail", "table": "dbmail_aliases", "key": "alias",
             "value": "deliver_to", "reason": ""},
            {"service": "sender", "database": "dbmail", "table": "sender_access", "key": "sender",
             "value": "action", "reason": "reason"},
        ],
    }
    path = temp_config(go)
    rc, out, _ = run_pipe(path, encode("recipient team@example.org") + encode("sender spammer@bad.example")
                          + encode("recipient nobody@example.org"))
    eq(rc, 0)
    eq(decode_stream(out), [b"OK alice@example.org,bob@example.org,carol@example.org",
                            b"OK REJECT spam source", b"NOTFOUND "])
    rc, text, err = check_online(path)
    eq(rc, 0, text + err)


@test
def query_exit_codes():
    db = shared_db()
    good = config(db)
    rc, out, err, _ = query(good, "recipient", "postmaster@example.org")
    eq((rc, out), (0, "OK root@example.org\n"), err)
    rc, out, err, _ = query(good, "recipient", "nobody@example.org")
    eq((rc, out), (1, "NOTFOUND \n"), err)
    reset_runtime_dir()
    rc, out, err, _ = query(config(None), "recipient", "postmaster@example.org")
    eq(rc, 75, out + err)
    startswith(out, "TEMP ")
    broken = temp_config('{"database": {"host": ["127.0.0.1"]}, "postmaps": [{"service": "x", "tabel": "t"}]}')
    rc, out, err, _ = query(broken, "recipient", "postmaster@example.org")
    eq(rc, 78, out + err)
    eq(out, "", "no reply for a broken config")


@pytest.mark.slow
@test
def check_config_online():
    db = shared_db()
    rc, out, err = check_online(config(db))
    eq(rc, 0, out + err)
    for m in FIXTURE_MAPS:
        contains(out, "%s: ok\n" % m["service"])
    not_contains(out + err, MariaDB.APP_PASSWORD)

    # A map the database refuses: 78, its line carries the server's words.
    for service, table, value, words in (("badmap", "dbmail_aliases", "nope", "Unknown column 'nope'"),
                                         ("gone", "vanished", "v", "vanished' doesn't exist")):
        bad = base_config(db, extra_maps=[
            {"service": service, "database": "dbmail", "table": table, "key": "alias", "value": value}])
        rc, out, err = check_online(temp_config(bad))
        eq(rc, 78, out + err)
        contains(out, "recipient: ok\n")
        contains(out, service + ": ")
        contains(out, words)

    reset_runtime_dir()
    rc, out, err = check_online(config(None))
    eq(rc, 75, out + err)
    contains(out, "recipient: no database host answered")

    wrongpw = base_config(db, database={"password": "Wrong-Pass-123"})
    rc, out, err = check_online(temp_config(wrongpw))
    eq(rc, 78, out + err)
    contains(out, "Access denied")
    not_contains(out + err, "Wrong-Pass-123")

    reset_runtime_dir()
    dead = "127.0.0.1:%d" % closed_port()
    rc, out, err = check_online(config([dead, db]))
    eq(rc, 0, out + err)


# ---------------------------------------------------------------- memcheck: valgrind (or LeakSanitizer) on real sessions (marker memcheck)
#
# memory errors and leaks in real sessions: valgrind memcheck (or LeakSanitizer).
#
# Runs sockmapd under `valgrind --leak-check=full --error-exitcode=99
# --errors-for-leak-kinds=definite,indirect` on pipe sessions with found,
# not-found, TEMP (failing query, unreachable and silent hosts), PERM, large
# and too-large results, a second schema, an idle database connection closed
# and reopened, and a framing error; also --check-config and --query.  No
# errors and no definite or indirect leaks are allowed; the summaries are
# printed.  A binary built with AddressSanitizer cannot run under valgrind:
# then the same sessions run with LeakSanitizer (ASAN_OPTIONS detect_leaks=1)
# as the checker instead.


BROKEN_MAP = {"service": "broken", "database": "dbmail", "table": "no_such_table", "key": "k", "value": "v"}


SANITIZED = sanitized()


class Checked:
    """A checker run: argv prefix and environment, then verdict() on its report."""

    def __init__(self, label):
        self.label = label
        # No spaces or colons: the path goes into ASAN_OPTIONS.
        self.report = tmpfile("memcheck-" + re.sub(r"[^A-Za-z0-9_-]", "-", label), content=b"")
        if SANITIZED:
            self.prefix = []
            self.env = {"ASAN_OPTIONS": "detect_leaks=1:exitcode=99:log_path=" + self.report,
                        "LSAN_OPTIONS": "exitcode=99"}
        else:
            self.prefix = [require_tool("valgrind"), "--tool=memcheck", "--leak-check=full",
                           "--error-exitcode=99", "--errors-for-leak-kinds=definite,indirect",
                           "--show-leak-kinds=definite,indirect", "--track-origins=yes",
                           "--child-silent-after-fork=yes", "--log-file=" + self.report]
            self.env = {}

    def text(self):
        out = []
        d = os.path.dirname(self.report)
        base = os.path.basename(self.report)
        for name in sorted(os.listdir(d)):
            if name.startswith(base):  # ASan's log_path appends .PID
                with open(os.path.join(d, name), "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
        return "".join(out)

    def verdict(self, rc):
        text = self.text()
        if SANITIZED:
            ok("ERROR: " not in text, "%s: sanitizer report:\n%s" % (self.label, text[-4000:]))
            ne(rc, 99, "%s: sanitizer exit status" % self.label)
            print("    %-28s LeakSanitizer/ASan: clean (exit %d)" % (self.label, rc))
            return
        ne(rc, 99, "%s: valgrind found errors or leaks:\n%s" % (self.label, text[-6000:]))
        m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
        ok(m, "%s: no valgrind summary in its log:\n%s" % (self.label, text[-2000:]))
        eq(m.group(1), "0", "%s: valgrind errors:\n%s" % (self.label, text[-6000:]))
        definite = re.search(r"definitely lost: ([\d,]+) bytes", text)
        indirect = re.search(r"indirectly lost: ([\d,]+) bytes", text)
        for what, mm in (("definitely", definite), ("indirectly", indirect)):
            if mm:
                eq(mm.group(1), "0", "%s: %s lost" % (self.label, what))
        heap = re.search(r"total heap usage: ([\d,]+) allocs, ([\d,]+) frees, ([\d,]+) bytes allocated", text)
        still = re.search(r"still reachable: ([\d,]+) bytes in ([\d,]+) blocks", text)
        print("    %-28s valgrind: 0 errors, definitely lost %s, indirectly lost %s, still reachable %s; heap %s"
              % (self.label, definite.group(1) if definite else "0", indirect.group(1) if indirect else "0",
                 still.group(1) if still else "0",
                 "%s allocs / %s frees / %s bytes" % heap.groups() if heap else "?"), flush=True)


def memcheck_config(hosts, **database):
    db = {"connect_timeout": 1, "read_timeout": 5, "write_timeout": 5, "db_idle_timeout": 1, "retry_interval": 30}
    db.update(database)
    return temp_config(base_config(hosts, sysconfig={"loglevel": "debug", "idle_timeout": 60},
                                   database=db, extra_maps=[BROKEN_MAP]))


def memcheck_session(label, cfg, steps, timeout=60):
    """Run `steps` [(payload bytes | float seconds to sleep, expected status word or None)] in one pipe session."""
    chk = Checked(label)
    s = PipeSession(cfg, prefix=chk.prefix, env=chk.env, timeout=timeout)
    for item, want in steps:
        if isinstance(item, float):
            time.sleep(item)
            continue
        s.send_raw(item)
        if want is None:
            continue
        reply = s.read_reply(timeout)
        eq(status_word(reply), want, "%s: reply to %r (%r)" % (label, item[:60], reply[:80]))
    rc = s.close(timeout=timeout)
    chk.verdict(rc)
    return rc


@pytest.mark.slow
@pytest.mark.memcheck
@test(timeout=180)
def memcheck_session_with_lookups_failover_and_idle_reconnect():
    db = shared_mariadb()
    fake = FakeDbHost()
    reset_runtime_dir()
    cfg = memcheck_config(["127.0.0.1:%d" % closed_port(), fake.host_entry, db])
    E = encode
    steps = [
        (E("recipient team@example.org"), b"OK"),         # failover past a refused and a silent host
        (E("recipient nobody@example.org"), b"NOTFOUND"),
        (E("exists Bob.Smith@example.org"), b"OK"),
        (E("sender spammer@bad.example"), b"OK"),
        (E("awkward nul\0byte"), b"OK"),
        (E("awkward max-ok"), b"OK"),                      # 100000-byte reply: buffers grow
        (E("awkward max-over"), b"PERM"),                  # too long
        (E("awkward big"), b"PERM"),
        (E("othermap ping"), b"OK"),                       # a second schema, a second connection
        (E("broken somekey"), b"TEMP"),                    # the query fails
        (E("broken again"), b"TEMP"),
        (E("nosuch key"), b"PERM"),
        (E("nospace"), b"PERM"),
        (1.6, None),                                       # db_idle_timeout 1: connections closed
        (E("recipient postmaster@example.org"), b"OK"),    # and opened again
        (E("transport example.org") * 50, None),
    ]
    steps += [(b"", b"OK")] * 49 + [(b"", b"OK")]
    steps += [(b"01:x,", b"PERM")]                         # framing error: PERM, then the end
    memcheck_session("lookups", cfg, steps, timeout=60)


@pytest.mark.slow
@pytest.mark.memcheck
@test(timeout=120)
def memcheck_session_with_every_host_down():
    reset_runtime_dir()
    cfg = memcheck_config(["127.0.0.1:%d" % closed_port(), "127.0.0.1:%d" % closed_port()])
    steps = [(encode("recipient team@example.org"), b"TEMP"), (encode("othermap ping"), b"TEMP"),
             (encode("recipient x@example.org"), b"TEMP"), (encode("nosuch k"), b"PERM")]
    memcheck_session("all hosts down", cfg, steps)


@pytest.mark.slow
@pytest.mark.memcheck
@test(timeout=120)
def memcheck_check_config_and_query():
    db = shared_mariadb()
    reset_runtime_dir()
    good = temp_config(base_config(db))
    for label, cfg, args, want in (
            ("--check-config", good, ["--check-config"], 0),
            ("--check-config failing", memcheck_config([db]), ["--check-config"], 78),
            ("--query found", good, ["--query", "recipient", "team@example.org"], 0),
            ("--query not found", good, ["--query", "recipient", "nobody@example.org"], 1),
            ("--query down", temp_config(base_config(None, database={"connect_timeout": 1})),
             ["--query", "recipient", "team@example.org"], 75)):
        chk = Checked(label.strip("-"))
        s = PipeSession(cfg, args=args, prefix=chk.prefix, env=chk.env, timeout=60)
        rc = s.close(timeout=60)
        eq(rc, want, "%s exit status (%s)" % (label, s.stderr_text()[-500:]))
        chk.verdict(rc)


@pytest.mark.slow
@pytest.mark.memcheck
@test(timeout=120)
def memcheck_broken_config_session():
    cfg = temp_config('{"postmaps": [{"service": "recipient", "tabel": "x"}]}')
    chk = Checked("broken config")
    s = PipeSession(cfg, prefix=chk.prefix, env=chk.env, timeout=60)
    eq(status_word(s.ask("recipient", "a@b")), b"TEMP")
    rc = s.close(timeout=60)
    eq(rc, 78, "exit status")
    chk.verdict(rc)


if __name__ == "__main__":
    main()
