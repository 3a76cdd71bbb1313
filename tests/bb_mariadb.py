#!/usr/bin/python3
"""bb_mariadb — the MariaDB lookup path of the real sockmapd against a real mariadbd.

Result shapes and awkward keys (the replies of tests/fixtures.replies.json),
prepared-statement reuse, laziness, failover past a refusing or hung host
and the shared retry state, idle connection closing, statement errors, the
Go sockmapd's config format, and the exit codes of --query and
--check-config; what a map's keys make of a query: templates, key handling,
result formats (marker features); the `search` orders, through postmap, a
Postfix smtpd and virtual(8) too (marker search); valgrind's memcheck
(LeakSanitizer on a sanitizer build) on those sessions and commands (marker
memcheck). Faults under live sessions (killed, restarted, hung servers,
refused logins) are bb_faults'; the failover policy itself is pool_tests'.
"""

import json
import os
import re
import smtplib
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F403
from postfix import PostfixInstance  # noqa: E402

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


# ---------------------------------------------------------------- map features (marker features)
#
# query templates, key handling and result formats of the real sockmapd on a real mariadbd.
#
# `query` maps with %s / %u / %d (always bound parameters: keys that try to
# break out of the template match exactly or not at all), Postfix-style
# quoted templates, the second column as reason, `result_format`, the
# `domain` list, `lowercase`, `strip_extension` (the full key first, the
# reduced key only after a NOTFOUND), --check-config on query maps, and the
# doc/postfix.md's recipes through Postfix's own postmap.
#
# Lookups that must not reach the database are checked against a config whose
# database is a closed port: there any query is TEMP, so NOTFOUND proves no
# query was tried.

FEATURES = (pytest.mark.features,)  # the marks of this section's cases


# ---------------------------------------------------------------- map features: helpers


def qmap(service, query, database="mail", **kw):
    m = {"service": service, "database": database, "query": query}
    m.update(kw)
    return m


def tmap(service, table, key, value=None, database="mail", **kw):
    m = {"service": service, "database": database, "table": table, "key": key}
    if value:
        m["value"] = value
    m.update(kw)
    return m


def session(db, *maps, **kw):
    """A PipeSession on a config with the fixture maps plus `maps` (db None: a closed port)."""
    path = temp_config(base_config(db, extra_maps=list(maps), **kw))
    return PipeSession(path)


NF = b"NOTFOUND "

# The keys of the `hostile` fixture table and their labels.
HOSTILE = [
    (b"it's@example.org", b"single-quote"),
    (b'say "hi"@example.org', b"double-quote"),
    (b"back\\slash@example.org", b"backslash"),
    (b"nul\0byte@example.org", b"nul-byte"),
    (b"%s%d@example.org", b"percent-escapes"),
    (b"100%@example.org", b"percent"),
    (b"what?@example.org", b"question-mark"),
    (b"??@?", b"question-marks"),
    (b"a@b@example.org", b"two-ats"),
    (b"x' OR '1'='1@example.org", b"injection-literal"),
    (b"it's@ex'ample.org", b"quote-in-domain"),
]

HOSTILE_OK = [(k, b"OK " + label) for k, label in HOSTILE]

# Keys that would find rows if they were pasted into SQL, read as LIKE
# patterns, cut at a NUL or had their escapes expanded: all must be NOTFOUND.
HOSTILE_MISSES = [
    b"nobody' OR '1'='1@example.org",
    b"nobody@example.org' OR '1'='1",
    b"nobody@example.org' -- ",
    b"' UNION SELECT label FROM hostile -- @example.org",
    b"nobody@example.org\\",
    b"it\\'s@example.org",
    b"it''s@example.org",
    b"back\\\\slash@example.org",
    b"%@example.org",
    b"%s@example.org",
    b"%u@%d",
    b"%s%d@%",
    b"100_@example.org",
    b"_%@example.org",
    b"?@example.org",
    b"?@?",
    b"nul\0@example.org",
    b"nul\0other@example.org",
    b"%",
    b"?",
    b"\\",
    b"'",
    b"",
]

# ---------------------------------------------------------------- query templates


@test(marks=FEATURES)
def query_with_the_whole_key():
    db = shared_mariadb()
    s = session(db, qmap("virtual", "SELECT goto FROM alias WHERE address = %s AND active = 1"))
    expect(s, "virtual", [
        ("info@example.org", "OK alice@example.org"),
        ("sales@example.org", "OK bob@example.org,carol@example.org"),
        ("old@example.org", NF),          # active = 0
        ("nobody@example.org", NF),
        ("INFO@example.org", NF),         # utf8mb4_bin and no lowercase
        ("info@example.com", "OK other-domain@example.com"),
    ])
    eq(s.close(), 0)


@test(marks=FEATURES)
def query_with_local_part_and_domain():
    db = shared_mariadb()
    m = qmap("mailbox", "SELECT maildir FROM mailbox WHERE local_part = %u AND domain = %d AND active = 1")
    s = session(db, m)
    expect(s, "mailbox", [
        ("alice@example.org", "OK example.org/alice/"),
        ("bob@example.com", "OK example.com/bob/"),
        ("gone@example.org", NF),
        ("alice@example.com", NF),
        ("alice", NF),                    # no '@': the query is not run
        ("@example.org", NF),             # empty local part for %u
        ("alice@", NF),                   # empty domain for %d
    ])
    eq(s.close(), 0)


@test(marks=FEATURES)
def keys_without_the_needed_part_never_reach_the_database():
    # A closed port: whatever reaches for the database is TEMP.
    s = session(None,
                qmap("mailbox", "SELECT maildir FROM mailbox WHERE local_part = %u AND domain = %d"),
                qmap("bydomain", "SELECT nexthop FROM domains WHERE domain = %d"),
                qmap("byuser", "SELECT maildir FROM mailbox WHERE local_part = %u"),
                qmap("whole", "SELECT goto FROM alias WHERE address = %s"))
    expect(s, "mailbox", [("alice", NF), ("@example.org", NF), ("alice@", NF), ("@", NF), ("", NF)])
    expect(s, "bydomain", [("example.org", NF), ("alice@", NF)])
    expect(s, "byuser", [("alice", NF), ("@example.org", NF)])
    for mapname, key in [("mailbox", "alice@example.org"), ("bydomain", "@example.org"), ("byuser", "alice@"),
                         ("whole", "alice"), ("whole", "@example.org")]:
        eq(status_word(s.ask(mapname, key)), b"TEMP", "%s %s reaches for the database" % (mapname, key))
    eq(s.close(), 0)


@test(marks=FEATURES)
def second_column_is_the_reason():
    db = shared_mariadb()
    s = session(db,
                qmap("access", "SELECT action, reason FROM sender_access WHERE sender = %s", database="dbmail"),
                qmap("constant", "SELECT goto, 'from the alias table' FROM alias WHERE address = %s"))
    expect(s, "access", [
        ("spammer@bad.example", "OK REJECT spam source"),
        ("friend@good.example", "OK OK"),       # NULL reason
        ("partner@good.example", "OK DUNNO"),   # empty reason
        ("nobody@bad.example", NF),
    ])
    expect(s, "constant", [("sales@example.org", "OK bob@example.org,carol@example.org from the alias table")])
    eq(s.close(), 0)


@test(marks=FEATURES)
def postfix_style_quoted_templates_are_still_bound():
    db = shared_mariadb()
    s = session(db,
                qmap("quoted", "SELECT goto FROM alias WHERE address='%s' AND active=1"),
                qmap("dquoted", 'SELECT goto FROM alias WHERE address="%s" AND active=1'),
                qmap("joined", "SELECT maildir FROM mailbox WHERE CONCAT(local_part, '@', domain) = '%u@%d'"))
    expect(s, "quoted", [("info@example.org", "OK alice@example.org"), ("x' OR '1'='1", NF)])
    expect(s, "dquoted", [("sales@example.org", "OK bob@example.org,carol@example.org"), ('x" OR "1"="1', NF)])
    expect(s, "joined", [("alice@example.org", "OK example.org/alice/"), ("alice", NF)])
    eq(s.close(), 0)


@test(marks=FEATURES)
def hostile_keys_match_exactly_or_not_at_all():
    db = shared_mariadb()
    maps = {
        "h_s": "SELECT label FROM hostile WHERE address = %s",
        "h_quoted": "SELECT label FROM hostile WHERE address = '%s'",
        "h_ud": "SELECT label FROM hostile WHERE local_part = %u AND domain = %d",
        "h_concat": "SELECT label FROM hostile WHERE address = '%u@%d'",
        "h_like": "SELECT label FROM hostile WHERE address LIKE '%%' AND address = %s",
    }
    s = session(db, *[qmap(name, q) for name, q in maps.items()])
    for name in maps:
        expect(s, name, HOSTILE_OK)
        expect(s, name, [(k, NF) for k in HOSTILE_MISSES])
    eq(s.close(), 0)
    # The table is still there and whole: nothing was executed as SQL.
    eq(db.sql("SELECT COUNT(*) FROM mail.hostile").strip(), "12")


@test(marks=FEATURES)
def hostile_keys_through_every_key_feature():
    # strip_extension and the domain list work on the bytes of the key; none
    # of them may turn a hostile key into SQL or into a match.
    db = shared_mariadb()
    s = session(db, qmap("h_all", "SELECT label FROM hostile WHERE local_part = %u AND domain = %d",
                         strip_extension="+", domain=["example.org", "?", "ex'ample.org"]))
    expect(s, "h_all", HOSTILE_OK + [
        (b"it's+tag@example.org", b"OK single-quote"),
        (b"%s%d+x@example.org", b"OK percent-escapes"),
        (b"nul\0byte+x@example.org", b"OK nul-byte"),
        (b"what?+%s@example.org", b"OK question-mark"),
        (b"x' OR '1'='1+' OR 1=1 -- @example.org", b"OK injection-literal"),
        (b"it's@example.org' OR '1'='1", NF),
        (b"%+@example.org", NF),
        (b"?+?@?", NF),
    ])
    eq(s.close(), 0)
    # lowercase folds ASCII letters only: quotes, '%', '?', '\\' and NUL pass as they are.
    s = session(db, qmap("h_lc", "SELECT label FROM hostile WHERE address = %s", lowercase=True))
    expect(s, "h_lc", [
        (b"IT'S@EXAMPLE.ORG", b"OK single-quote"),
        (b"%S%D@Example.Org", b"OK percent-escapes"),
        (b"BACK\\SLASH@example.org", b"OK backslash"),
        (b"NUL\0BYTE@example.org", b"OK nul-byte"),
        (b"WHAT?@example.org", b"OK question-mark"),
        (b"X' OR '1'='1@example.org", NF),   # stored with upper-case OR
    ])
    eq(s.close(), 0)


# ---------------------------------------------------------------- lowercase


@test(marks=FEATURES)
def lowercase_folds_ascii_before_the_lookup():
    db = shared_mariadb()
    s = session(db,
                qmap("folded", "SELECT goto FROM virtual_alias WHERE address = %s", lowercase=True),
                qmap("asis", "SELECT goto FROM virtual_alias WHERE address = %s"),
                qmap("utf8", "SELECT v FROM awkward WHERE k = %s", database="dbmail", lowercase=True),
                tmap("transport_lc", "transport", "domain", "nexthop", database="dbmail", lowercase="true"))
    expect(s, "folded", [
        ("LIST@Example.ORG", "OK list-members@example.org"),
        ("list@example.org", "OK list-members@example.org"),
        ("MixedCase@example.org", NF),    # folded to mixedcase@, the stored key is mixed case
    ])
    expect(s, "asis", [("LIST@Example.ORG", NF), ("MixedCase@example.org", "OK mixed@example.org")])
    # ASCII only: UTF-8 bytes pass unchanged.
    expect(s, "utf8", [
        ("M\u00fcller@Ex\u00e4mple.ORG".encode(), "OK utf8 m\u00fcller".encode()),
        ("M\u00dcLLER@EX\u00c4MPLE.ORG".encode(), NF),
    ])
    expect(s, "transport_lc", [("EXAMPLE.Org", "OK smtp:[mx.example.org]")])
    eq(s.close(), 0)


# ---------------------------------------------------------------- strip_extension


@test(marks=FEATURES)
def strip_extension_tries_the_full_key_first():
    db = shared_mariadb()
    s = session(db,
                qmap("ext", "SELECT goto FROM virtual_alias WHERE address = %s", strip_extension="+"),
                qmap("ext2", "SELECT goto FROM virtual_alias WHERE address = %s", strip_extension="+-",
                     lowercase=True),
                qmap("noext", "SELECT goto FROM virtual_alias WHERE address = %s"),
                tmap("bare", "things", "name", "val", database="other", strip_extension="+"))
    expect(s, "ext", [
        ("list+vip@example.org", "OK vip-desk@example.org"),       # full key found: only its answer
        ("list+other@example.org", "OK list-members@example.org"),  # then the reduced key
        ("list+@example.org", "OK list-members@example.org"),
        ("list+a+b@example.org", "OK list-members@example.org"),   # cut at the first delimiter
        ("list@example.org", "OK list-members@example.org"),
        ("nobody+x@example.org", NF),
        ("+list@example.org", NF),                                 # delimiter first: not stripped
        ("list-other@example.org", NF),                            # '-' is not a delimiter here
    ])
    expect(s, "ext2", [
        ("LIST-Other@Example.ORG", "OK list-members@example.org"),
        ("List+VIP@example.org", "OK vip-desk@example.org"),
    ])
    expect(s, "noext", [("list+other@example.org", NF)])
    expect(s, "bare", [("ping+tag", "OK pong"), ("ping", "OK pong"), ("pong+ping", NF)])
    eq(s.close(), 0)


@test(marks=FEATURES)
def strip_extension_never_follows_a_failure():
    db = shared_mariadb()
    # The statement fails at run time for keys with a '+' (a scalar subquery
    # returning two rows) and works for the reduced key: a TEMP on the full
    # key must be the answer, never the reduced key's OK.
    failing = ("SELECT goto FROM virtual_alias WHERE address = %s "
               "UNION ALL SELECT (SELECT 1 UNION SELECT 2) FROM DUAL WHERE %s LIKE '%%+%%'")
    s = session(db, qmap("fragile", failing, strip_extension="+"))
    eq(s.ask("fragile", "list@example.org"), b"OK list-members@example.org")
    eq(status_word(s.ask("fragile", "list+other@example.org")), b"TEMP")
    eq(s.ask("fragile", "list@example.org"), b"OK list-members@example.org", "the map still works")
    eq(s.close(), 0)
    # The database unreachable: TEMP, the same.
    s = session(None, qmap("ext", "SELECT goto FROM virtual_alias WHERE address = %s", strip_extension="+"))
    eq(status_word(s.ask("ext", "list+other@example.org")), b"TEMP")
    eq(s.close(), 0)


# ---------------------------------------------------------------- domain


@test(marks=FEATURES)
def domain_list_filters_before_the_query():
    db = shared_mariadb()
    listed = qmap("listed", "SELECT goto FROM virtual_alias WHERE address = %s", domain=["Example.ORG"])
    s = session(db, listed, qmap("open", "SELECT goto FROM virtual_alias WHERE address = %s"))
    expect(s, "listed", [
        ("list@example.org", "OK list-members@example.org"),
        ("list@example.com", NF),      # the row exists, the domain is not listed
        ("@example.org", NF),          # empty local part: not looked up (Postfix)
        ("example.org", NF),           # no '@': not looked up
    ])
    expect(s, "open", [("list@example.com", "OK other-list@example.com"), ("@example.org", "OK catchall@example.org")])
    eq(s.close(), 0)

    # Proof that filtered keys never reach the database: a closed port.
    s = session(None, listed, tmap("tlisted", "domains", "domain", "nexthop", domain=["example.org", "example.net"]))
    expect(s, "listed", [("list@example.com", NF), ("@example.org", NF), ("example.org", NF),
                         ("list@sub.example.org", NF), ("list@example.org.", NF), ("a@example.org@evil", NF)])
    for key in ["list@example.org", "LIST@EXAMPLE.ORG", "a@b@example.org"]:
        eq(status_word(s.ask("listed", key)), b"TEMP", key + " is looked up")
    expect(s, "tlisted", [("example.org", NF)])   # a bare domain is no address
    eq(status_word(s.ask("tlisted", "x@example.net")), b"TEMP")
    eq(s.close(), 0)


# ---------------------------------------------------------------- result_format


@test(marks=FEATURES)
def result_format_applies_to_each_value():
    db = shared_mariadb()
    s = session(db,
                tmap("nexthop", "domains", "domain", "nexthop", result_format="smtp:[%s]"),
                qmap("formatted", "SELECT goto, 'listed' FROM alias WHERE address = %s", result_format="<%s>"),
                tmap("percent", "domains", "domain", "nexthop", result_format="relay:[%s]:25 100%%"),
                qmap("valuepct", "SELECT address FROM hostile WHERE address = %s", result_format="[%s]"),
                tmap("known", "recipients", "address", database="dbmail", result_format="REJECT %s is known"))
    expect(s, "nexthop", [("example.org", "OK smtp:[mx.example.org]"), ("example.net", NF)])
    expect(s, "formatted", [("sales@example.org", "OK <bob@example.org>,<carol@example.org> listed")])
    expect(s, "percent", [("example.com", "OK relay:[mx.example.com]:25 100%")])
    expect(s, "valuepct", [("%s%d@example.org", "OK [%s%d@example.org]")])   # the value is not a template
    expect(s, "known", [("bob.smith@example.org", "OK REJECT Bob.Smith@Example.org is known")])
    eq(s.close(), 0)


@test(marks=FEATURES)
def result_format_counts_against_the_reply_limit():
    db = shared_mariadb()
    s = session(db,
                qmap("plain", "SELECT v FROM awkward WHERE k = %s", database="dbmail", result_format="%s"),
                qmap("wrapped", "SELECT v FROM awkward WHERE k = %s", database="dbmail", result_format="[%s]"))
    r = s.ask("plain", "max-ok")
    eq((len(r), r[:4]), (100000, b"OK x"))
    r = s.ask("wrapped", "max-ok")
    eq(status_word(r), b"PERM", r[:80])
    eq(s.ask("wrapped", "it's"), b"OK [single-quote]")
    eq(s.close(), 0)


# ---------------------------------------------------------------- doc/postfix.md's recipes


def blacklist_map():
    return qmap("blacklist",
                "SELECT action, reason FROM blacklist WHERE pattern IN (%s, CONCAT('@', %d)) "
                "ORDER BY pattern = %s DESC LIMIT 1")


@test(marks=FEATURES)
def domain_wide_blacklist():
    db = shared_mariadb()
    s = session(db, blacklist_map())
    expect(s, "blacklist", [
        ("anyone@spam.example", "OK REJECT domain blacklisted"),
        ("Anyone@SPAM.Example", "OK REJECT domain blacklisted"),   # utf8mb4_general_ci
        ("good@spam.example", "OK OK"),                            # the address row wins
        ("bad@example.net", "OK REJECT sender blacklisted"),
        ("fine@example.net", NF),
        ("spam.example", NF),        # Postfix's bare-domain access lookup: no '@', no query
        ("@spam.example", "OK REJECT domain blacklisted"),
    ])
    eq(s.close(), 0)


@pytest.mark.slow
@test(timeout=120, marks=FEATURES)
def postfix_examples_through_postmap():
    db = shared_mariadb()
    cfg = temp_config(base_config(db, postmaps=[
        qmap("virtual", "SELECT maildir FROM mailbox WHERE local_part = %u AND domain = %d AND active = 1",
             lowercase=True, strip_extension="+", domain=["example.org", "example.com"]),
        tmap("transport", "domains", "domain", "nexthop", result_format="smtp:[%s]", search="transport"),
        tmap("blacklist", "blacklist", "pattern", "action", reason="reason", search="access"),
    ]))
    pdir = postfix_dir()
    with SocketActivated(["-c", cfg]) as sa:
        table = lambda name: "socketmap:inet:127.0.0.1:%d:%s" % (sa.port, name)
        eq(postmap(pdir, ["-q", "Alice+News@Example.ORG", table("virtual")]), (0, "example.org/alice/\n", ""))
        eq(postmap_outcome(*postmap(pdir, ["-q", "alice@example.net", table("virtual")])), ("notfound", ""))
        eq(postmap(pdir, ["-q", "alice@example.com", table("transport")]), (0, "smtp:[mx.example.com]\n", ""))
        eq(postmap(pdir, ["-q", "anyone@mail.spam.example", table("blacklist")]),
           (0, "REJECT domain blacklisted\n", ""))
        eq(postmap(pdir, ["-q", "good@spam.example", table("blacklist")]), (0, "OK\n", ""))
        eq(postmap_outcome(*postmap(pdir, ["-q", "x@example.net", table("blacklist")])), ("notfound", ""))


# ---------------------------------------------------------------- statements and --check-config


@pytest.mark.slow
@test(marks=FEATURES)
def query_statement_prepared_once_per_session():
    db = shared_mariadb()
    s = session(db, qmap("virtual", "SELECT goto FROM alias WHERE address = %s AND active = 1",
                         strip_extension="+"))
    eq(s.ask("virtual", "info@example.org"), b"OK alice@example.org")   # connects and prepares
    p0, e0 = global_status(db, "Com_stmt_prepare"), global_status(db, "Com_stmt_execute")
    for key in ["info@example.org", "sales@example.org", "nobody@example.org", "info+x@example.org"]:
        ok(status_word(s.ask("virtual", key)) in (b"OK", b"NOTFOUND"))
    eq(global_status(db, "Com_stmt_prepare") - p0, 0, "no new prepare")
    eq(global_status(db, "Com_stmt_execute") - e0, 5, "one execution per candidate key")
    eq(s.close(), 0)


@pytest.mark.slow
@test(marks=FEATURES)
def check_config_prepares_query_maps():
    db = shared_mariadb()
    good = [qmap("virtual", "SELECT goto FROM alias WHERE address = '%s' AND active = 1"),
            qmap("mailbox", "SELECT maildir, 'r' FROM mailbox WHERE local_part = %u AND domain = %d")]
    rc, out, err = check_online(temp_config(base_config(db, extra_maps=good)))
    eq(rc, 0, out + err)
    contains(out, "virtual: ok\n")
    contains(out, "mailbox: ok\n")

    bad = [
        (qmap("badcolumn", "SELECT nope FROM alias WHERE address = %s"), "Unknown column 'nope'"),
        (qmap("badtable", "SELECT goto FROM vanished WHERE address = %s"), "vanished' doesn't exist"),
        (qmap("badsyntax", "SELEKT goto FROM alias WHERE address = %s"), "SQL syntax"),
        (qmap("threecols", "SELECT goto, address, active FROM alias WHERE address = %s"), "returns 3 columns"),
        (qmap("hiddenparam", "SELECT goto FROM alias WHERE address = %s /*! AND goto <> ? */"),
         "server counts 2 parameters"),
    ]
    for m, message in bad:
        rc, out, err = check_online(temp_config(base_config(db, extra_maps=[m] + good)))
        eq(rc, 78, m["service"] + ": " + out + err)
        contains(out, "virtual: ok\n")
        line = [l for l in out.splitlines() if l.startswith(m["service"] + ": ")]
        eq(len(line), 1, out)
        contains(line[0], message)

    # A template the lookups would refuse is refused when the file loads,
    # before any database work, naming the map.
    m = qmap("incomment", "SELECT goto FROM alias WHERE address = %s -- %u")
    rc, out, err = check_online(temp_config(base_config(db, extra_maps=[m] + good)))
    eq(rc, 78, out + err)
    contains(err, "inside a comment")
    contains(err, 'map "incomment"')


@test(marks=FEATURES)
def broken_query_maps_answer_temp_not_notfound():
    db = shared_mariadb()
    s = session(db,
                qmap("badcolumn", "SELECT nope FROM alias WHERE address = %s"),
                qmap("hiddenparam", "SELECT goto FROM alias WHERE address = %s /*! AND goto <> ? */"),
                qmap("threecols", "SELECT goto, address, active FROM alias WHERE address = %s"),
                qmap("virtual", "SELECT goto FROM alias WHERE address = %s"))
    for name in ["badcolumn", "hiddenparam", "threecols", "badcolumn"]:
        eq(status_word(s.ask(name, "info@example.org")), b"TEMP", name)
    eq(s.ask("virtual", "info@example.org"), b"OK alice@example.org", "other maps still answer")
    eq(s.close(), 0)


@pytest.mark.slow
@test(marks=FEATURES)
def template_errors_are_config_errors_naming_the_map():
    cases = [
        ("SELECT goto FROM alias WHERE address = %x", "unknown escape %x"),
        ("SELECT goto FROM alias WHERE address = %s AND x = 5%", "lone '%'"),
        ("SELECT goto FROM alias WHERE address = 'x'", "uses none of"),
    ]
    for query, message in cases:
        cfg = base_config(None, extra_maps=[qmap("oddmap", query)])
        rc, out, err = run_pipe(temp_config(cfg), b"", args=["--check-config", "--offline"])
        eq(rc, 78, err)
        contains(err, b"postmaps[6].query")
        contains(err, to_bytes(message))
        contains(err, b'map "oddmap"')


# ---------------------------------------------------------------- search (marker search)
#
# a map's `search` order (access, transport, virtual) on the real sockmapd and a real mariadbd.
#
# Postfix asks a socketmap table for the full key only (it marks socketmap
# tables DICT_FLAG_PATTERN); `search` makes sockmapd try the keys Postfix
# tries for its own tables.  Here: each order over pipes, with the rewrites
# (lowercase, strip_extension, the domain list) and on `query` maps; the
# statement prepared once and run once per key tried; a failure at any step
# is TEMP, never the answer of a shorter key; a domain too long to walk is
# PERM; --check-config's warning for exact maps holding domain rows; and the
# same through Postfix's own client, postmap -q, and through a real Postfix
# smtpd: a private Postfix instance (its own config and queue directories,
# master on a free loopback port, stopped by pid) answering SMTP from this
# suite; and a real virtual(8) refusing a socketmap for its delivery tables (doc/postfix.md).  (bb_system runs the documented configuration in a booted Debian.)

SEARCH = (pytest.mark.search,)  # the marks of this section's cases


def _map(m, kw):
    m.update(kw)
    return {k: v for k, v in m.items() if v is not None}


def access_map(service="access", **kw):
    return _map({"service": service, "database": "mail", "table": "access_rules", "key": "k", "value": "action",
                 "reason": "reason", "search": "access"}, kw)


def transport_map(**kw):
    return _map({"service": "transport_search", "database": "mail", "table": "transport_rules", "key": "k",
                 "value": "nexthop", "search": "transport"}, kw)


def virtual_map(service="virtual", **kw):
    return _map({"service": service, "database": "mail", "table": "virtual_alias", "key": "address", "value": "goto",
                 "search": "virtual"}, kw)


ACCESS_ADDRESSES = [
    ("spammer@bad.example", "OK REJECT spam source"),
    ("friend@bad.example", "OK OK"),                        # the address row wins over bad.example
    ("other@bad.example", "OK REJECT domain blacklisted"),  # the domain row
    ("x@mail.bad.example", "OK REJECT domain blacklisted"), # a parent domain
    ("abuse@anywhere.example", "OK OK abuse desk"),         # "user@"
    ("x@dotted.example", "OK REJECT dotted itself"),
    ("nobody@good.example", NF),
]

ACCESS_HOSTS = [
    ("client.bad.example", "OK REJECT domain blacklisted"),  # check_client_access / check_helo_access
    ("bad.example", "OK REJECT domain blacklisted"),
    ("192.0.2.55", "OK REJECT network 192.0.2"),
    ("198.51.100.1", NF),
    ("2001:db8:1::7", "OK REJECT network 2001:db8:1"),
    ("2001:db8:2::7", NF),
    ("<>", NF),
]


@test(marks=SEARCH)
def access_order():
    db = shared_mariadb()
    s = session(db, access_map(), access_map("access_dot", parent_domain_matches_subdomains=False),
                access_map("access_exact", search="exact"))
    expect(s, "access", ACCESS_ADDRESSES + ACCESS_HOSTS + [
        ("x@sub.dotted.example", "OK REJECT dotted itself"),   # the bare parent, not ".dotted.example"
    ])
    # parent_domain_matches_subdomains false: ".parent" keys.
    expect(s, "access_dot", [
        ("x@sub.dotted.example", "OK REJECT subdomains only"),
        ("x@dotted.example", "OK REJECT dotted itself"),
        ("x@mail.bad.example", NF),     # "bad.example" matches bad.example only in this style
        ("other@bad.example", "OK REJECT domain blacklisted"),
        ("host.sub.dotted.example", "OK REJECT subdomains only"),
    ])
    # exact: what Postfix got before, the domain rows never match.
    expect(s, "access_exact", [
        ("spammer@bad.example", "OK REJECT spam source"),
        ("other@bad.example", NF),
        ("bad.example", "OK REJECT domain blacklisted"),
    ])
    eq(s.close(), 0)


@test(marks=SEARCH)
def access_with_rewrites_and_query_maps():
    db = shared_mariadb()
    s = session(db,
                access_map("access_lc", lowercase=True, strip_extension="+"),
                {"service": "access_query", "database": "mail", "search": "access",
                 "query": "SELECT action, reason FROM access_rules WHERE k = %s"},
                {"service": "access_parts", "database": "mail", "search": "access",
                 "query": "SELECT action, reason FROM access_rules WHERE k = CONCAT(%u, '@', %d)"})
    expect(s, "access_lc", [
        ("Spammer+Tag@Bad.Example", "OK REJECT spam source"),   # folded, then without the extension
        ("Friend@BAD.example", "OK OK"),
        ("Other+x@Mail.Bad.Example", "OK REJECT domain blacklisted"),
        ("Abuse+x@Anywhere.Example", "OK OK abuse desk"),     # user+ext@ missed, then user@
    ])
    expect(s, "access_query", ACCESS_ADDRESSES + ACCESS_HOSTS)
    # %u and %d need both parts: only the full address is asked.
    expect(s, "access_parts", [
        ("spammer@bad.example", "OK REJECT spam source"),
        ("other@bad.example", NF),
        ("bad.example", NF),
    ])
    eq(s.close(), 0)


@test(marks=SEARCH)
def transport_order():
    db = shared_mariadb()
    s = session(db, transport_map(), transport_map(service="transport_bare", parent_domain_matches_subdomains=True))
    expect(s, "transport_search", [
        ("special@example.net", "OK lmtp:unix:private/special"),
        ("alice@example.net", "OK smtp:[mx.example.net]"),
        ("alice@mail.example.net", "OK smtp:[sub.example.net]"),   # ".example.net"
        ("alice@example.org", NF),                                 # no ".org" row; "*" is Postfix's own lookup
        ("*", "OK smtp:[fallback.example]"),
        ("example.net", "OK smtp:[mx.example.net]"),
        ("mail.example.net", NF),                                  # no '@': as it is
    ])
    expect(s, "transport_bare", [
        ("alice@mail.example.net", "OK smtp:[mx.example.net]"),    # parent "example.net"
    ])
    eq(s.close(), 0)


@test(marks=SEARCH)
def virtual_order_and_the_domain_list():
    db = shared_mariadb()
    s = session(db, virtual_map(strip_extension="+"),
                virtual_map("virtual_listed", domain=["example.org"]),
                virtual_map("virtual_exact", search="exact"),
                {"service": "virtual_parts", "database": "mail", "search": "virtual",
                 "query": "SELECT maildir FROM mailbox WHERE local_part = %u AND domain = %d AND active = 1"})
    expect(s, "virtual", [
        ("list+vip@example.org", "OK vip-desk@example.org"),
        ("list+other@example.org", "OK list-members@example.org"),
        ("nobody@example.org", "OK catchall@example.org"),      # the @domain catch-all
        ("nobody@example.com", NF),                             # no catch-all for example.com
        ("list@example.com", "OK other-list@example.com"),
    ])
    # A domain list leaves out "@domain", as Postfix's own mysql tables do.
    expect(s, "virtual_listed", [
        ("list@example.org", "OK list-members@example.org"),
        ("nobody@example.org", NF),
    ])
    expect(s, "virtual_exact", [("nobody@example.org", NF)])
    expect(s, "virtual_parts", [("alice@example.org", "OK example.org/alice/"), ("nobody@example.org", NF)])
    eq(s.close(), 0)


@pytest.mark.slow
@test(marks=SEARCH)
def prepared_once_run_once_per_key_tried():
    db = shared_mariadb()
    s = session(db, access_map(), virtual_map("virtual_parts", table=None, key=None, value=None,
                                              query="SELECT maildir FROM mailbox WHERE local_part = %u AND "
                                                    "domain = %d AND active = 1"))
    eq(s.ask("access", "spammer@bad.example"), b"OK REJECT spam source")   # connects and prepares
    eq(s.ask("virtual_parts", "alice@example.org"), b"OK example.org/alice/")
    p0, e0 = global_status(db, "Com_stmt_prepare"), global_status(db, "Com_stmt_execute")
    # nobody@x.bad.example: the address, x.bad.example, bad.example (found): 3 executions.
    eq(s.ask("access", "nobody@x.bad.example"), b"OK REJECT domain blacklisted")
    eq(global_status(db, "Com_stmt_execute") - e0, 3)
    # A miss walks the whole order.
    e1 = global_status(db, "Com_stmt_execute")
    eq(s.ask("access", "nobody@a.b.good.test"), NF)
    eq(global_status(db, "Com_stmt_execute") - e1, 6, "address, a.b.good.test, b.good.test, good.test, test, nobody@")
    # %u/%d: "@example.org" has no local part, so the catch-all step costs no query.
    e2 = global_status(db, "Com_stmt_execute")
    eq(s.ask("virtual_parts", "nobody@example.org"), NF)
    eq(global_status(db, "Com_stmt_execute") - e2, 1)
    eq(global_status(db, "Com_stmt_prepare") - p0, 0, "no new prepare")
    eq(s.close(), 0)


@test(marks=SEARCH)
def a_failure_at_any_step_is_temp():
    db = shared_mariadb()
    # The REGEXP cannot compile for the step that asks for boom.invalid: the
    # statement fails there, after two misses, and 'invalid' below it holds
    # a row that a fall-through would answer.
    failing = access_map("failing", table=None, key=None, value=None, reason=None,
                         query="SELECT action, reason FROM access_rules WHERE k = %s "
                               "AND 'x' REGEXP IF(%s = 'boom.invalid', '(', 'x')")
    path = temp_config(base_config(db, extra_maps=[failing]))
    s = PipeSession(path)
    eq(s.ask("failing", "spammer@bad.example"), b"OK REJECT spam source")
    eq(s.ask("failing", "x@other.invalid"), b"OK OK fell through to a shorter key")  # the row is there
    for key in ["x@sub.boom.invalid", "x@boom.invalid", "sub.boom.invalid"]:
        eq(status_word(s.ask("failing", key)), b"TEMP", key)
    eq(s.ask("failing", "friend@bad.example"), b"OK OK", "the map answers again")
    eq(s.close(), 0)
    contains(read_log(path), "query failed")

    # No database at all: every order, every kind of key.
    s = PipeSession(temp_config(base_config(None, database={"connect_timeout": 1},
                                            extra_maps=[access_map(), transport_map(), virtual_map()])))
    for mapname, key in [("access", "other@bad.example"), ("access", "192.0.2.1"), ("access", "client.bad.example"),
                         ("transport_search", "alice@example.net"), ("transport_search", "*"),
                         ("virtual", "nobody@example.org")]:
        eq(status_word(s.ask(mapname, key)), b"TEMP", "%s %s" % (mapname, key))
    eq(s.close(), 0)


@test(marks=SEARCH)
def a_domain_too_long_to_walk_is_perm():
    db = shared_mariadb()
    s = session(db, access_map(), transport_map(), virtual_map())
    domain = "a." * 127 + "example"           # 261 bytes: past the 255 a DNS name can have
    for mapname in ("access", "transport_search"):
        eq(s.ask(mapname, "x@" + domain), b"PERM domain too long to search", mapname)
    eq(s.ask("access", domain), b"PERM domain too long to search")
    eq(s.ask("virtual", "x@" + domain), NF, "virtual walks no domain")
    eq(s.ask("access", "x@" + "a." * 30 + "bad.example"), b"OK REJECT domain blacklisted", "32 labels: walked")
    for mapname in ("access", "transport_search"):
        eq(s.ask(mapname, "x@" + "a." * 31 + "bad.example"), b"PERM domain has too many labels to search", mapname)
        eq(s.ask(mapname, "x@" + "a" * 64 + ".bad.example"), b"PERM domain label too long to search", mapname)
    eq(s.ask("access", "x@sub..bad.example"), NF, "not a domain name: no parents")
    eq(s.close(), 0)


@test(marks=SEARCH)
def check_config_warns_for_domain_rows_in_exact_maps():
    db = shared_mariadb()
    cfg = base_config(db, extra_maps=[access_map("access_exact", search="exact"), access_map(),
                                      virtual_map("virtual_exact", search="exact")])
    rc, out, err = run_pipe(temp_config(cfg), b"", args=["--check-config"], timeout=60)
    out, err = out.decode(), err.decode()
    eq(rc, 0, out + err)
    for name in ("access_exact", "access", "virtual_exact", "recipient"):
        contains(out, "%s: ok\n" % name)
    warned = sorted(re.findall(r'^sockmapd: warning: postmaps "(\w+)": the table holds keys without a local part',
                               err, re.M))
    # The fixtures' own exact maps of bare keys are too.
    eq(warned, ["access_exact", "awkward", "othermap", "transport", "virtual_exact"], err)
    contains(err, 'set "search" to "access", "transport" or "virtual"')


@test(marks=SEARCH)
def a_bad_search_value_is_a_config_error():
    for extra, message in [({"search": "acces"},
                            b'postmaps[6].search: must be one of exact, access, transport, virtual, not "acces"'),
                           ({"search": "virtual", "parent_domain_matches_subdomains": True},
                            b"postmaps[6].parent_domain_matches_subdomains: only for"),
                           ({"serch": "access"}, b'postmaps[6].serch: unknown key (did you mean "search"?)')]:
        m = access_map()
        del m["search"]
        m.update(extra)
        path = temp_config(base_config(None, extra_maps=[m]))
        rc, out, err = run_pipe(path, b"", args=["--check-config", "--offline"])
        eq(rc, 78, err)
        contains(err, message)
        contains(err, b'map "access"')
        # A handler with that file answers TEMP, never a lookup's answer.
        rc, out, err = run_pipe(path, encode("access other@bad.example"))
        eq([status_word(r) for r in decode_stream(out)], [b"TEMP"])


@pytest.mark.slow
@test(timeout=120, marks=SEARCH)
def through_postmap():
    db = shared_mariadb()
    cfg = temp_config(base_config(db, extra_maps=[access_map(), transport_map(), virtual_map()]))
    pdir = postfix_dir()
    with SocketActivated(["-c", cfg]) as sa:
        table = lambda name: "socketmap:inet:127.0.0.1:%d:%s" % (sa.port, name)
        q = lambda key, name: postmap_outcome(*postmap(pdir, ["-q", key, table(name)]))
        eq(q("other@bad.example", "access"), ("found", "REJECT domain blacklisted"))
        eq(q("x@mail.bad.example", "access"), ("found", "REJECT domain blacklisted"))
        eq(q("friend@bad.example", "access"), ("found", "OK"))
        eq(q("192.0.2.9", "access"), ("found", "REJECT network 192.0.2"))
        eq(q("nobody@good.example", "access"), ("notfound", ""))
        eq(q("alice@example.net", "transport_search"), ("found", "smtp:[mx.example.net]"))
        eq(q("nobody@example.org", "virtual"), ("found", "catchall@example.org"))
        eq(q("nobody@example.com", "virtual"), ("notfound", ""))
        # Many keys on one connection, one reply each.
        rc, out, err = postmap(pdir, ["-q", "-", table("access")],
                               stdin=b"other@bad.example\nnobody@good.example\nfriend@bad.example\n")
        eq((rc, out, err), (0, "other@bad.example\tREJECT domain blacklisted\nfriend@bad.example\tOK\n", ""))


# ---------------------------------------------------------------- a real smtpd

@pytest.mark.root
@test(timeout=300, marks=SEARCH)
def through_a_real_smtpd():
    """A domain blacklist, an address row over its domain's, an @domain catch-all, and 451 in an outage."""
    db = MariaDB(fixtures=True).start()
    cfg = temp_config(base_config(db, extra_maps=[access_map(), access_map("access_exact", search="exact"),
                                                  virtual_map()]))
    sa = SocketActivated(["-c", cfg])
    table = lambda name: "socketmap:inet:127.0.0.1:%d:%s" % (sa.port, name)
    pf = PostfixInstance([
        "virtual_alias_domains = example.org, example.com",
        "virtual_alias_maps = " + table("virtual"),
        "smtpd_sender_restrictions = check_sender_access " + table("access"),
        "smtpd_recipient_restrictions = check_recipient_access " + table("access_exact"),
    ])
    defer(pf.stop)
    rcpt = "list@example.org"
    # Postfix sends the sender's full address only; "search": "access" finds
    # the bad.example row for the domain and its subdomains.
    for sender, reason in [("spammer@bad.example", "spam source"), ("other@bad.example", "domain blacklisted"),
                           ("someone@mail.bad.example", "domain blacklisted")]:
        codes, text = pf.codes(sender, rcpt)
        eq(codes, [250, 554], text)
        contains(text, reason)
    codes, text = pf.codes("friend@bad.example", rcpt)
    eq(codes, [250, 250], "the address row wins: " + text)
    # The same table as an exact map (check_recipient_access): the address
    # row is found, the domain row never is - what Postfix got before.
    codes, text = pf.codes("someone@good.example", "spammer@bad.example", "other@bad.example")
    eq(codes, [250, 554, 250], text)
    # The @example.org catch-all ("search": "virtual"); example.com has none.
    codes, text = pf.codes("someone@good.example", "anyone@example.org", "nobody@example.com")
    eq(codes, [250, 250, 550], text)
    contains(text, "User unknown")
    # Postfix asked for the address; sockmapd walked to the domain itself.
    log = read_log(cfg)
    contains(log, "lookup in access: other@bad.example")
    contains(log, "lookup in access as: bad.example")
    not_contains(log, "lookup in access: bad.example")

    db.stop()
    for sender, rcpts in [("other@bad.example", [rcpt]), ("friend@bad.example", [rcpt]),
                          ("someone@good.example", ["anyone@example.org", "nobody@example.com"])]:
        codes, text = pf.codes(sender, *rcpts)
        eq(codes, [250] + [451] * len(rcpts), "in an outage: " + text)
    db.start()
    # New senders: smtpd keeps a resolved (sender, recipient) for the life of the process.
    codes, text = pf.codes("another@bad.example", rcpt)
    eq(codes, [250, 554], text)
    codes, text = pf.codes("someone.else@good.example", "anyone@example.org")
    eq(codes, [250, 250], text)
    maillog = pf.maillog()
    contains(maillog, "reject: RCPT from")
    not_contains(maillog, "fatal")
    pf.stop()
    sa.stop()


# ---------------------------------------------------------------- virtual(8) refuses a socketmap

@pytest.mark.slow
@test(timeout=300, marks=SEARCH)
def virtual8_refuses_socketmap_delivery_tables():
    """doc/postfix.md: smtpd accepts a recipient through virtual_mailbox_maps = socketmap:..., and the real
    virtual(8) refuses the same table ("not allowed for security-sensitive data"): the mail is deferred."""
    import readme
    db = shared_mariadb()
    cfg = temp_config(base_config(db, extra_maps=[{
        "service": "mailbox", "database": "mail",
        "query": "SELECT maildir FROM mailbox WHERE local_part = %u AND domain = %d AND active = 1"}]))
    sa = SocketActivated(["-c", cfg])
    table = "socketmap:inet:127.0.0.1:%d:mailbox" % sa.port
    pf = PostfixInstance([
        "virtual_mailbox_domains = example.org",
        "virtual_mailbox_maps = " + table,
        "virtual_mailbox_base = /nonexistent",
        "virtual_uid_maps = static:65534",
        "virtual_gid_maps = static:65534",
    ], delivery=True)
    defer(pf.stop)
    # smtpd opens the table without DICT_FLAG_NO_UNAUTH: the recipient is known, the mail accepted.
    s = smtplib.SMTP("127.0.0.1", pf.port, timeout=scaled(60))
    s.ehlo("client.test.invalid")
    eq(s.sendmail("someone@example.com", ["alice@example.org"],
                  "Subject: virtual(8)\r\n\r\nhello\r\n"), {}, "accepted")
    s.quit()
    wait_for(lambda: "status=deferred" in pf.maillog(), timeout=scaled(60), interval=0.5,
             msg="virtual(8)'s verdict in %s" % pf.log)
    got = [l for l in pf.maillog().splitlines() if "/virtual[" in l]
    lang, body = readme.block("doc/postfix.md", "postfix-virtual8-refused")
    want = body.splitlines()
    ok(want, "the guide's log lines")
    for line in want:
        pattern = re.escape(line).replace("4711", r"\d+").replace(re.escape("..."), ".*")
        pattern = pattern.replace(re.escape("127.0.0.1:2224"), re.escape("127.0.0.1:%d" % sa.port))
        pattern = pattern.replace("4E1F2A0C3B", "[0-9A-F]+")
        ok(any(re.search(pattern, g) for g in got), "virtual(8) logged %r:\n%s" % (line, "\n".join(got)))
    # The lookup never reached sockmapd from virtual(8): only smtpd's (and cleanup's) recipient check.
    not_contains(pf.maillog(), "status=sent")
    pf.stop()
    sa.stop()


# ---------------------------------------------------------------- memcheck (marker memcheck)
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

MEMCHECK = (pytest.mark.slow, pytest.mark.memcheck)  # the marks of this section's cases


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


@test(timeout=180, marks=MEMCHECK)
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


@test(timeout=120, marks=MEMCHECK)
def memcheck_session_with_every_host_down():
    reset_runtime_dir()
    cfg = memcheck_config(["127.0.0.1:%d" % closed_port(), "127.0.0.1:%d" % closed_port()])
    steps = [(encode("recipient team@example.org"), b"TEMP"), (encode("othermap ping"), b"TEMP"),
             (encode("recipient x@example.org"), b"TEMP"), (encode("nosuch k"), b"PERM")]
    memcheck_session("all hosts down", cfg, steps)


@test(timeout=120, marks=MEMCHECK)
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


@test(timeout=120, marks=MEMCHECK)
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
