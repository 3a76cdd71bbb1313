#!/usr/bin/python3
"""bb_features — query templates, key handling and result formats of the real sockmapd on a real mariadbd.

`query` maps with %s / %u / %d (always bound parameters: keys that try to
break out of the template match exactly or not at all), Postfix-style
quoted templates, the second column as reason, `result_format`, the
`domain` list, `lowercase`, `strip_extension` (the full key first, the
reduced key only after a NOTFOUND), --check-config on query maps, and the
doc/postfix.md's recipes through Postfix's own postmap.

Lookups that must not reach the database are checked against a config whose
database is a closed port: there any query is TEMP, so NOTFOUND proves no
query was tried.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F403

# ---------------------------------------------------------------- helpers


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


@test
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


@test
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


@test
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


@test
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


@test
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


@test
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


@test
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


@test
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


@test
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


@test
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


@test
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


@test
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


@test
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


@test
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
@test(timeout=120)
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
@test
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


def check_online(cfg):
    rc, out, err = run_pipe(temp_config(cfg), b"", args=["--check-config"], timeout=60)
    return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


@pytest.mark.slow
@test
def check_config_prepares_query_maps():
    db = shared_mariadb()
    good = [qmap("virtual", "SELECT goto FROM alias WHERE address = '%s' AND active = 1"),
            qmap("mailbox", "SELECT maildir, 'r' FROM mailbox WHERE local_part = %u AND domain = %d")]
    rc, out, err = check_online(base_config(db, extra_maps=good))
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
        rc, out, err = check_online(base_config(db, extra_maps=[m] + good))
        eq(rc, 78, m["service"] + ": " + out + err)
        contains(out, "virtual: ok\n")
        line = [l for l in out.splitlines() if l.startswith(m["service"] + ": ")]
        eq(len(line), 1, out)
        contains(line[0], message)

    # A template the lookups would refuse is refused when the file loads,
    # before any database work, naming the map.
    m = qmap("incomment", "SELECT goto FROM alias WHERE address = %s -- %u")
    rc, out, err = check_online(base_config(db, extra_maps=[m] + good))
    eq(rc, 78, out + err)
    contains(err, "inside a comment")
    contains(err, 'map "incomment"')


@test
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
@test
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


if __name__ == "__main__":
    main()
