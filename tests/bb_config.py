#!/usr/bin/python3
"""bb_config — what an administrator reads about a config file, and the exit status.

The file is checked whole: every problem in one run, a line each with its
key path; JSON syntax errors with line and column, once; a directory or a
top-level array named as such, a missing file by its path; the Go
sockmapd's file of strings (and a single host as a string) accepted;
run_as_user/run_as_group looked up by --check-config; numbers too large
for their field are config errors (78) in every mode, never an internal error (70); keys match without regard to
case, as the Go sockmapd's did, and an unknown key names the nearest known one.
The database password never shows in logs, output, replies or a handler's
/proc; password_file and credentials; keys logged only at debug (marker
secrets).
Run: SOCKMAPD=build/sockmapd tests/bb_config.py [test-name-or-glob ...]
"""

import json
import os
import socket
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F401,F403
from allowlist import allow_config  # noqa: E402

EX_CONFIG, EX_SOFTWARE = 78, 70


def check_offline(text, online=False):
    """(status, stderr lines) of --check-config [--offline] on a file holding `text`."""
    path = temp_config(text)
    args = ["--check-config"] + ([] if online else ["--offline"])
    rc, out, err = run_pipe(path, b"", args=args, timeout=30)
    return rc, path, err.decode("utf-8", "replace").splitlines()


def good_config(**sysconfig):
    return base_config(None, sysconfig=sysconfig)


@test
def every_problem_of_the_file_in_one_run():
    rc, path, lines = check_offline('{"postmaps":[{"service":"x","tabel":"t"}]}')
    eq(rc, EX_CONFIG)
    eq(lines, ["sockmapd: %s: database: missing (required)" % path,
               'sockmapd: %s: postmaps[0].database: missing (required); map "x"' % path,
               'sockmapd: %s: postmaps[0].tabel: unknown key (did you mean "table"?); map "x"' % path,
               'sockmapd: %s: postmaps[0].table: missing (required); map "x"' % path,
               'sockmapd: %s: postmaps[0].key: missing (required); map "x"' % path])


@test
def problems_in_several_sections_all_named():
    cfg = good_config(idle_timeout="soon", colour="red")
    cfg["database"]["port"] = "33o6"
    cfg["postmaps"][2]["vaule"] = "x"
    cfg["postmaps"][4]["table"] = "a b"
    cfg["postmaps"][1]["table"] = "recipients; DROP TABLE x"
    rc, path, lines = check_offline(cfg)
    eq(rc, EX_CONFIG)
    text = "\n".join(lines)
    for want in ('sysconfig.idle_timeout: must be a whole number, not "soon"',
                 "sysconfig.colour: unknown key",
                 'database.port: must be a whole number, not "33o6"',
                 'postmaps[2].vaule: unknown key (did you mean "value"?); map "sender"',
                 'postmaps[1].table: "recipients; DROP TABLE x" is not a valid identifier',
                 'postmaps[4].table: "a b" is not a valid identifier'):
        contains(text, "sockmapd: %s: %s" % (path, want))
    eq(len(lines), 6, "one line per problem: %r" % lines)


@test
def json_syntax_error_gives_line_and_column_once():
    text = '{\n  "database": {"host": "127.0.0.1"},\n  "postmaps": [ {"service": "a",} ]\n}\n'
    rc, path, lines = check_offline(text)
    eq(rc, EX_CONFIG)
    eq(lines, ["sockmapd: %s: not valid JSON: line 3, column 33: Missing '}' or object member name" % path])
    rc, path, lines = check_offline('{"a": "\\q"}')
    eq(lines, ["sockmapd: %s: not valid JSON: line 1, column 7: Bad escape sequence in string" % path],
       "no second 'See Line' pointer")


@test
def missing_file_directory_top_level_array_and_empty_file():
    missing = os.path.join(tmpdir("missing"), "none.json")
    rc, out, err = run_pipe(missing, b"", args=["--check-config", "--offline"])
    eq(rc, EX_CONFIG, "a missing file")
    contains(err.decode(), missing)
    d = tmpdir("confdir")
    rc, out, err = run_pipe(d, b"", args=["--check-config", "--offline"])
    eq((rc, err.decode()), (EX_CONFIG, "sockmapd: config: %s is a directory, not a file\n" % d))
    rc, path, lines = check_offline("[" + json.dumps(good_config()) + "]")
    eq(rc, EX_CONFIG)
    eq(lines, ['sockmapd: %s: the top level must be a JSON object, {"database": {...}, "postmaps": [...]}, '
               "not an array" % path])
    rc, path, lines = check_offline("")
    eq((rc, lines), (EX_CONFIG, ['sockmapd: %s: the file is empty (a JSON object with "database" and "postmaps" '
                                 'is needed)' % path]))


@test
def check_config_looks_up_run_as_accounts():
    rc, path, lines = check_offline(good_config(run_as_user="nosuchuser-sockmapd", run_as_group="nosuchgroup-sockmapd"))
    eq(rc, EX_CONFIG)
    eq(lines, ['sockmapd: %s: sysconfig.run_as_user: no user "nosuchuser-sockmapd" on this system' % path,
               'sockmapd: %s: sysconfig.run_as_group: no group "nosuchgroup-sockmapd" on this system' % path])
    # Without --offline too, before any database is asked.
    rc, path, lines = check_offline(good_config(run_as_user="nosuchuser-sockmapd"), online=True)
    eq((rc, lines), (EX_CONFIG, ['sockmapd: %s: sysconfig.run_as_user: no user "nosuchuser-sockmapd" on this system'
                                 % path]))
    # Accounts that exist (by name and by number) pass.
    rc, path, lines = check_offline(good_config(run_as_user="nobody", run_as_group="0"))
    eq((rc, lines), (0, []))


@test(timeout=60)
def number_too_large_is_a_config_error_in_every_mode():
    huge = "99999999999999999999"
    for key, field, message in (
            ("sysconfig", "run_as_user", '"%s" is too large for a user id (at most 4294967294)' % huge),
            ("sysconfig", "port", 'must be a port number 1-65535, not "%s"' % huge),
            ("sysconfig", "idle_timeout", "must be between 1 and 86400, not %s" % huge),
            ("database", "port", "must be between 1 and 65535, not %s" % huge),
            ("database", "read_timeout", "must be between 1 and 3600, not %s" % huge)):
        cfg = good_config()
        cfg[key][field] = huge
        path = temp_config(cfg)
        want = "%s: %s.%s: %s" % (path, key, field, message)
        for args in (["--check-config", "--offline"], ["--query", "recipient", "a@example.org"]):
            rc, out, err = run_pipe(path, b"", args=args, timeout=30)
            eq((rc, err.decode()), (EX_CONFIG, "sockmapd: %s\n" % want), "%s %s" % (field, args))
        # --listen: refused before binding.
        rc, out, err = run_pipe(path, b"", args=["--listen", "127.0.0.1:%d" % free_port()], timeout=30)
        eq(rc, EX_CONFIG, "--listen with %s (%r)" % (field, err))
        contains(err.decode(), want)
        not_contains(err.decode(), "internal error")
        # A handler answers TEMP and logs the problem.
        rc, out, err = run_pipe(path, encode(b"recipient a@example.org"), timeout=30)
        eq((rc, decode_stream(out)), (EX_CONFIG, [b"TEMP sockmapd configuration error"]), field)
        contains(err.decode(), want)


@pytest.mark.slow
@test(timeout=120)
def go_config_with_capitalised_keys_answers():
    db = shared_mariadb()
    # Go's encoding/json matched field names without regard to case; files
    # written for it may say "Database" or "Host".
    text = json.dumps({
        "Sysconfig": {"Port": "2224", "LogLevel": "info"},
        "Database": {"Host": [db.host_entry], "Port": "3306", "Username": MariaDB.APP_USER,
                     "Password": MariaDB.APP_PASSWORD},
        "Postmaps": [{"Service": "recipient", "Database": "dbmail", "Table": "dbmail_aliases",
                      "Key": "alias", "Value": "deliver_to"}],
    })
    path = temp_config(text)
    os.chmod(path, 0o600)
    rc, out, err = run_pipe(path, b"", args=["--query", "recipient", "postmaster@example.org"], timeout=30)
    eq((rc, out, err), (0, b"OK root@example.org\n", b""))
    # The same key twice in two spellings is refused, not "the last one wins".
    rc, path, lines = check_offline(text.replace('"Port": "3306"', '"Port": "3306", "port": "3307"'))
    eq((rc, lines), (EX_CONFIG, ['sockmapd: %s: database.Port: the same key as "port" (keys match without regard '
                                 'to case): give it once' % path]))


@test
def go_style_all_strings_and_a_host_string_load():
    text = """{
  "sysconfig": {
    "port": "2224",
    "listen": "127.0.0.1",
    "logfile": "",
    "loglevel": "info",
    "idle_timeout": "120",
    "max_session": "3600"
  },
  "database": {
    "host": ["127.0.0.1"],
    "port": "3306",
    "username": "sockmapd",
    "password": "secret",
    "connect_timeout": "2",
    "read_timeout": "5",
    "write_timeout": "5"
  },
  "postmaps": [
    {"service": "recipient", "database": "dbmail", "table": "dbmail_aliases",
     "key": "alias", "value": "deliver_to"},
    {"service": "sender", "database": "dbmail", "table": "sender_access",
     "key": "sender", "value": "action", "reason": "reason"}
  ]
}
"""
    eq(check_offline(text)[::2], (0, []))
    # A single host as a plain string, as the Go sockmapd wrote it.
    eq(check_offline(text.replace('["127.0.0.1"]', '"127.0.0.1"'))[::2], (0, []), "host as a string")
    # And the config every suite starts from.
    eq(check_offline(good_config())[::2], (0, []), "base_config()")


@test
def unknown_key_names_the_nearest_known_one():
    cfg = good_config()
    cfg["postmaps"][2]["vaule"] = cfg["postmaps"][2].pop("value")
    cfg["database"]["conect_timeout"] = 3
    cfg["sysconfig"]["favourite_colour"] = "red"
    rc, path, lines = check_offline(cfg)
    eq(rc, EX_CONFIG)
    eq(sorted(lines), sorted([
        'sockmapd: %s: postmaps[2].vaule: unknown key (did you mean "value"?); map "sender"' % path,
        'sockmapd: %s: database.conect_timeout: unknown key (did you mean "connect_timeout"?)' % path,
        "sockmapd: %s: sysconfig.favourite_colour: unknown key" % path]))


# ---------------------------------------------------------------- sysconfig.allow's entries (marker allow)

ALLOW = (pytest.mark.allow,)  # the marks of this section's cases

@test(marks=ALLOW)
def malformed_entries_exit_78_naming_the_key():
    cfg = allow_config(["127.0.0.1/32", "mta.example.org", "10.1.2.3/8"])
    r = subprocess.run([sockmapd_path(), "-c", cfg, "--check-config", "--offline"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=sockmapd_env(), timeout=scaled(10))
    err = r.stderr.decode()
    eq(r.returncode, 78, err)
    contains(err, "sysconfig.allow[1]: \"mta.example.org\": host names are not looked up")
    contains(err, "sysconfig.allow[2]: \"10.1.2.3/8\" has bits set past the /8 prefix")
    # A handler with that config answers TEMP (it cannot know whom to refuse) and exits 78.
    rc, out, _ = run_pipe(cfg, encode(b"recipient a@b"))
    eq(rc, 78)
    startswith(decode_stream(out)[0], b"TEMP ")


# ---------------------------------------------------------------- secrets (marker secrets)
#
# the database password and the looked-up keys stay where they belong.
#
# The password never shows in the log (even at debug), in --check-config or
# --query output (even on failure, even when the password itself is wrong), in a
# handler's /proc/PID/cmdline or environment, or in TEMP replies.  A config file
# that holds a password and is readable by others gets a warning.  password_file
# (absolute, relative to the config, or in $CREDENTIALS_DIRECTORY as systemd's
# LoadCredential= provides it) works.  Below debug level the log holds no keys.

SECRETS = (pytest.mark.secrets,)  # the marks of this section's cases


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


@test(marks=SECRETS)
def password_not_in_debug_log_or_replies():
    cfg = write(cfg_dict())
    rc, out, err = run_pipe(cfg, SESSION)
    words = [status_word(r) for r in decode_stream(out)]
    eq(words, [b"OK", b"NOTFOUND", b"TEMP", b"PERM", b"PERM", b"PERM"])
    no_secret(out + err, "replies and stderr")
    log = read_log(cfg)
    contains(log, "connected to database host", "the debug log is there")
    no_secret(log, "debug log")


@test(marks=SECRETS)
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
@test(marks=SECRETS)
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


@test(marks=SECRETS)
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


@test(marks=SECRETS)
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


@test(marks=SECRETS)
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


@test(marks=SECRETS)
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
@test(marks=SECRETS)
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
