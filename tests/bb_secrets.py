#!/usr/bin/python3
"""bb_secrets — the database password and the looked-up keys stay where they belong.

The password never shows in the log (even at debug), in --check-config or
--query output (even on failure, even when the password itself is wrong), in a
handler's /proc/PID/cmdline or environment, or in TEMP replies.  A config file
that holds a password and is readable by others gets a warning.  password_file
(absolute, relative to the config, or in $CREDENTIALS_DIRECTORY as systemd's
LoadCredential= provides it) works.  Below debug level the log holds no keys.
Run: SOCKMAPD=build/sockmapd tests/bb_secrets.py [test-name-or-glob ...]
"""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F401,F403

USER = "secretuser"
PASSWORD = "Zx9-pw-5eCr3t-41f7"          # the real one
WRONG = "Wr0ng-pw-8c2e-distinct"         # a wrong one, just as secret
KEY_MARK = "kq7zz"                       # in every key that must not be logged
BROKEN_MAP = {"service": "broken", "database": "dbmail", "table": "no_such_table", "key": "k", "value": "v"}

_state = {}


def server():
    if "db" not in _state:
        db = shared_mariadb()
        db.sql("CREATE USER IF NOT EXISTS '%s'@'%%' IDENTIFIED BY '%s';"
               "GRANT SELECT ON dbmail.* TO '%s'@'%%'; GRANT SELECT ON other.* TO '%s'@'%%';"
               "INSERT INTO dbmail.dbmail_aliases (alias, deliver_to) VALUES ('%s-found@example.org', 'kept@example.org');"
               % (USER, PASSWORD, USER, USER, KEY_MARK))
        _state["db"] = db
    return _state["db"]


def cfg_dict(password=PASSWORD, hosts=None, loglevel="debug", broken=True, **database):
    """A config for USER; `broken` adds a map whose table does not exist (its lookups are TEMP)."""
    db = {"username": USER, "password": password, "connect_timeout": 1, "read_timeout": 3, "write_timeout": 3,
          "retry_interval": 0}
    db.update(database)
    return base_config(hosts if hosts is not None else server(), sysconfig={"loglevel": loglevel},
                       database=db, extra_maps=[BROKEN_MAP] if broken else [])


def write(cfg, mode=0o600, directory=None):
    path = os.path.join(directory, "config.json") if directory else tmpfile("config") + ".json"
    write_config(path, cfg)
    os.chmod(path, mode)
    return path


def no_secret(text, label, secrets=(PASSWORD, WRONG)):
    data = text if isinstance(text, bytes) else to_bytes(text)
    for s in secrets:
        not_contains(data, s.encode(), label)


SESSION = b"".join(encode(x) for x in (
    "recipient postmaster@example.org",   # found
    "recipient nobody@example.org",       # not found
    "broken somekey",                     # query fails: TEMP
    "nosuch key",                         # unknown map: PERM
    "nospace",                            # malformed: PERM
)) + b"01:x,"                             # framing error: PERM, close


@test
def password_not_in_debug_log_or_replies():
    cfg = write(cfg_dict())
    rc, out, err = run_pipe(cfg, SESSION)
    words = [status_word(r) for r in decode_stream(out)]
    eq(words, [b"OK", b"NOTFOUND", b"TEMP", b"PERM", b"PERM", b"PERM"])
    no_secret(out + err, "replies and stderr")
    log = read_log(cfg)
    contains(log, "connected to database host", "the debug log is there")
    no_secret(log, "debug log")


@test
def wrong_password_not_in_temp_reasons_log_or_output():
    cfg = write(cfg_dict(password=WRONG))
    rc, out, err = run_pipe(cfg, SESSION)
    replies = decode_stream(out)
    eq([status_word(r) for r in replies], [b"TEMP", b"TEMP", b"TEMP", b"PERM", b"PERM", b"PERM"])
    no_secret(out + err, "TEMP replies")
    log = read_log(cfg)
    contains(log, "Access denied")
    no_secret(log, "log after access denied")
    for args in (["--check-config"], ["--query", "recipient", "postmaster@example.org"]):
        rc, out, err = run_pipe(cfg, b"", args=args)
        ne(rc, 0, "%s with a wrong password" % args)
        ok(out + err, "%s says something" % args)
        no_secret(out + err, "%s output" % args)


@pytest.mark.slow
@test
def password_not_in_check_config_output():
    db = server()
    cases = [
        ("ok", cfg_dict(broken=False), None, 0),
        ("ok offline", cfg_dict(), ["--offline"], 0),
        ("a map that cannot be prepared", cfg_dict(), None, 78),
        ("unreachable host", cfg_dict(hosts="127.0.0.1:%d" % closed_port()), None, 75),
        ("unknown key", dict(cfg_dict(), extra={"x": 1}), None, 78),
        ("misspelt password key", None, None, 78),
        ("password and password_file", cfg_dict(password_file="/nonexistent"), None, 78),
        ("password not a string", None, None, 78),
    ]
    for label, cfg, extra, want in cases:
        if label == "misspelt password key":
            cfg = cfg_dict()
            cfg["database"]["pasword"] = cfg["database"].pop("password")
        if label == "password not a string":
            cfg = cfg_dict()
            cfg["database"]["password"] = [PASSWORD]
        rc, out, err = run_pipe(write(cfg), b"", args=["--check-config"] + (extra or []))
        eq(rc, want, "%s: exit status (%r)" % (label, (out + err)[-300:]))
        no_secret(out + err, label)
    # Broken JSON right at the password.
    text = json.dumps(cfg_dict(), indent=2)
    for label, broken in (
            ("unterminated string", text.replace('"%s"' % PASSWORD, '"%s' % PASSWORD)),
            ("missing comma", text.replace('"%s",' % PASSWORD, '"%s"' % PASSWORD)),
            ("bare word", text.replace('"%s"' % PASSWORD, PASSWORD)),
            ("control character", text.replace('"%s"' % PASSWORD, '"%s\t"' % PASSWORD))):
        ne(broken, text, label)
        path = write(broken)
        rc, out, err = run_pipe(path, b"", args=["--check-config"])
        eq(rc, 78, "%s: exit status (%r)" % (label, err[-300:]))
        no_secret(out + err, "JSON error: " + label)
        # The same broken file in a session: TEMP, nothing secret.
        rc, out, err = run_pipe(path, encode("recipient postmaster@example.org"))
        eq([status_word(r) for r in decode_stream(out)], [b"TEMP"], label)
        no_secret(out + err, "session with broken JSON: " + label)


@test
def password_not_in_handler_cmdline_or_environment():
    cfg = write(cfg_dict())
    s = PipeSession(cfg)
    eq(s.ask("recipient", "postmaster@example.org"), b"OK root@example.org")
    sa = SocketActivated(["-c", cfg])
    c = sa.client()
    eq(c.ask("recipient", "postmaster@example.org"), b"OK root@example.org")
    pids = [s.pid] + sa.children()
    eq(len(pids), 2, "a pipe handler and a socket handler")
    for pid in pids:
        for name in ("cmdline", "environ", "comm"):
            with open("/proc/%d/%s" % (pid, name), "rb") as f:
                no_secret(f.read(), "/proc/%d/%s" % (pid, name))
    c.close()
    eq(s.close(), 0)


@test
def world_readable_config_with_password_warns():
    for mode, want in ((0o644, True), (0o604, True), (0o640, False), (0o600, False)):
        cfg = write(cfg_dict(loglevel="info"), mode=mode)
        rc, out, err = run_pipe(cfg, encode("recipient postmaster@example.org"))
        eq(decode_stream(out), [b"OK root@example.org"], "mode %o" % mode)
        log = read_log(cfg)
        no_secret(log, "log, mode %o" % mode)
        (contains if want else not_contains)(log, "readable by others", "log, mode %o" % mode)
        rc, out, err = run_pipe(cfg, b"", args=["--check-config", "--offline"])
        eq(rc, 0)
        (contains if want else not_contains)(err, b"readable by others", "--check-config, mode %o" % mode)
        no_secret(out + err, "--check-config, mode %o" % mode)
    # A password_file instead: nothing secret in the config, no warning.
    pwfile = tmpfile("pw", content=PASSWORD + "\n")
    cfg = write(cfg_dict(password=None, password_file=pwfile), mode=0o644)
    rc, out, err = run_pipe(cfg, b"", args=["--check-config", "--offline"])
    eq(rc, 0)
    not_contains(err, b"readable by others", "password_file, config 0644")


@test
def password_file_absolute_and_relative():
    pwfile = tmpfile("pw", content=PASSWORD + "\n")  # a trailing newline, as editors leave it
    cfg = write(cfg_dict(password=None, password_file=pwfile))
    rc, out, err = run_pipe(cfg, encode("recipient postmaster@example.org"))
    eq(decode_stream(out), [b"OK root@example.org"], "absolute password_file")
    no_secret(read_log(cfg), "log with password_file")
    d = tmpdir("etc")
    with open(os.path.join(d, "db.pass"), "w") as f:
        f.write(PASSWORD)
    cfg = write(cfg_dict(password=None, password_file="db.pass", broken=False), directory=d)
    rc, out, err = run_pipe(cfg, encode("recipient postmaster@example.org"))
    eq(decode_stream(out), [b"OK root@example.org"], "password_file relative to the config's directory")
    rc, out, err = run_pipe(cfg, b"", args=["--check-config"])
    eq(rc, 0, "--check-config (%r)" % err)
    no_secret(out + err, "--check-config with password_file")
    wrong = tmpfile("pw", content=WRONG)
    cfg = write(cfg_dict(password=None, password_file=wrong))
    rc, out, err = run_pipe(cfg, encode("recipient postmaster@example.org"))
    eq([status_word(r) for r in decode_stream(out)], [b"TEMP"], "wrong password in password_file")
    no_secret(out + err + to_bytes(read_log(cfg)), "wrong password_file")


@test
def password_file_from_credentials_directory():
    creds = tmpdir("credentials")
    with open(os.path.join(creds, "sockmapd-db"), "w") as f:
        f.write(PASSWORD + "\n")
    d = tmpdir("etc")
    with open(os.path.join(d, "sockmapd-db"), "w") as f:  # a decoy next to the config
        f.write(WRONG)
    cfg = write(cfg_dict(password=None, password_file="sockmapd-db", broken=False), directory=d)
    env = {"CREDENTIALS_DIRECTORY": creds}
    rc, out, err = run_pipe(cfg, encode("recipient postmaster@example.org"), env=env)
    eq(decode_stream(out), [b"OK root@example.org"], "pipe session with $CREDENTIALS_DIRECTORY")
    rc, out, err = run_pipe(cfg, b"", args=["--check-config"], env=env)
    eq(rc, 0, "--check-config with $CREDENTIALS_DIRECTORY (%r)" % err)
    # Through socket activation, the environment systemd gives a handler.
    sa = SocketActivated(["-c", cfg], env=env)
    with sa.client() as c:
        eq(c.ask("recipient", "team@example.org"), b"OK alice@example.org,bob@example.org,carol@example.org")
    # Without it the name is relative to the config: the decoy, a wrong password.
    rc, out, err = run_pipe(cfg, encode("recipient postmaster@example.org"))
    eq([status_word(r) for r in decode_stream(out)], [b"TEMP"], "without $CREDENTIALS_DIRECTORY")
    # Missing credential: a config error, TEMP in a session, never an answer.
    empty = tmpdir("nocreds")
    rc, out, err = run_pipe(cfg, encode("recipient postmaster@example.org"), env={"CREDENTIALS_DIRECTORY": empty})
    eq([status_word(r) for r in decode_stream(out)], [b"TEMP"], "credential missing")
    rc, out, err = run_pipe(cfg, b"", args=["--check-config"], env={"CREDENTIALS_DIRECTORY": empty})
    eq(rc, 78, "--check-config with the credential missing")
    contains(err, b"sockmapd-db", "the message names the file")
    no_secret(out + err, "missing credential")


def _keyed_session():
    return b"".join(encode(x) for x in (
        "recipient %s-found@example.org" % KEY_MARK,
        "recipient %s-miss@example.org" % KEY_MARK,
        "broken %s-broken" % KEY_MARK,
        "nosuch %s-nomap" % KEY_MARK,
        "%s-nospace" % KEY_MARK,
        "awkward %s-awk\0ward" % KEY_MARK,
    )) + b"%d:" % (MAX_REQUEST + 1) + (KEY_MARK * 3000).encode()


@pytest.mark.slow
@test
def keys_logged_only_at_debug():
    expected = [b"OK", b"NOTFOUND", b"TEMP", b"PERM", b"PERM", b"NOTFOUND", b"PERM"]
    for level in ("info", "warning", "error", "debug"):
        cfg = write(cfg_dict(loglevel=level))
        rc, out, err = run_pipe(cfg, _keyed_session())
        eq([status_word(r) for r in decode_stream(out)], expected, level)
        log = read_log(cfg)
        if level == "debug":
            contains(log, KEY_MARK + "-found", "keys do show at debug (so the grep below means something)")
            continue
        if level == "info":
            contains(log, "session end", "the info log is there")
        not_contains(log, KEY_MARK, "log at %s" % level)
    # The database down: warnings about hosts, still no keys.
    cfg = write(cfg_dict(hosts="127.0.0.1:%d" % closed_port(), loglevel="info"))
    rc, out, err = run_pipe(cfg, encode("recipient %s-down@example.org" % KEY_MARK))
    eq([status_word(r) for r in decode_stream(out)], [b"TEMP"])
    log = read_log(cfg)
    contains(log, "cannot connect")
    not_contains(log, KEY_MARK, "log at info with the database down")


if __name__ == "__main__":
    main()
