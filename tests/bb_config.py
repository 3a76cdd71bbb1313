#!/usr/bin/python3
"""bb_config — what an administrator reads about a config file, and the exit status.

The file is checked whole: every problem in one run, a line each with its
key path; JSON syntax errors with line and column, once; a directory or a
top-level array named as such, a missing file by its path; the Go
sockmapd's file of strings (and a single host as a string) accepted;
run_as_user/run_as_group looked up by --check-config; numbers too large
for their field are config errors (78) in every mode, never an internal error (70); keys match without regard to
case, as the Go sockmapd's did, and an unknown key names the nearest known one.
Run: SOCKMAPD=build/sockmapd tests/bb_config.py [test-name-or-glob ...]
"""

import json
import os
import socket
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F401,F403

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


if __name__ == "__main__":
    main()
