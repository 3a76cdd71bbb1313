#!/usr/bin/python3
"""bb_search — a map's `search` order (access, transport, virtual) on the real sockmapd and a real mariadbd.

Postfix asks a socketmap table for the full key only (it marks socketmap
tables DICT_FLAG_PATTERN); `search` makes sockmapd try the keys Postfix
tries for its own tables.  Here: each order over pipes, with the rewrites
(lowercase, strip_extension, the domain list) and on `query` maps; the
statement prepared once and run once per key tried; a failure at any step
is TEMP, never the answer of a shorter key; a domain too long to walk is
PERM; --check-config's warning for exact maps holding domain rows; and the
same through Postfix's own client, postmap -q, and through a real Postfix
smtpd: a private Postfix instance (its own config and queue directories,
master on a free loopback port, stopped by pid) answering SMTP from this
suite; and a real virtual(8) refusing a socketmap for its delivery tables (doc/postfix.md).  (bb_system runs the documented configuration in a booted Debian.)
"""

import os
import re
import smtplib
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F403
from postfix import PostfixInstance  # noqa: E402

NF = b"NOTFOUND "


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


def session(db, *maps):
    return PipeSession(temp_config(base_config(db, extra_maps=list(maps))))


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


@test
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


@test
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


@test
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


@test
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
@test
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


@test
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


@test
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


@test
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


@test
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
@test(timeout=120)
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
@test(timeout=300)
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
@test(timeout=300)
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


if __name__ == "__main__":
    main()
