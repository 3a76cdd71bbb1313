#!/usr/bin/python3
"""bb_cluster — database clusters: the `init_command` option for causal reads.

`database.init_command` runs on every new connection; a statement that
fails makes the connection fail with the server's words: TEMP for lookups,
exit 75 for --check-config, never NOTFOUND or OK.
Run: SOCKMAPD=build/sockmapd tests/bb_cluster.py [test-name-or-glob ...]
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F401,F403

CAUSAL = "SET SESSION wsrep_sync_wait = 1"

# A map whose answer is the session's wsrep_sync_wait: shows that the init
# command ran on the connection the lookups use.
SYNC_WAIT_MAP = {"service": "syncwait", "database": "dbmail",
                 "query": "SELECT @@SESSION.wsrep_sync_wait FROM DUAL WHERE %s <> ''"}


def check_config(cfg):
    rc, out, err = run_pipe(cfg, b"", args=["--check-config"], timeout=60)
    return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


# ---------------------------------------------------------------- init_command

@test
def init_command_runs_on_every_connection():
    db = shared_mariadb()
    reset_runtime_dir()
    plain = temp_config(base_config(db, extra_maps=[SYNC_WAIT_MAP]))
    rc, out, _ = run_pipe(plain, encode("syncwait x"))
    eq(decode_stream(out), [b"OK 0"], "without init_command")
    cfg = temp_config(base_config(db, database={"init_command": CAUSAL}, extra_maps=[SYNC_WAIT_MAP]))
    s = PipeSession(cfg)
    eq(s.ask("syncwait", "x"), b"OK 1")
    eq(s.ask("recipient", "postmaster@example.org"), b"OK root@example.org")
    eq(s.ask("othermap", "ping"), b"OK pong")  # the second schema's connection
    eq(s.close(), 0)
    # A list runs in order, on every connection.
    both = temp_config(base_config(db, database={"init_command": [CAUSAL, "SET SESSION wsrep_sync_wait = 3"]},
                                   extra_maps=[SYNC_WAIT_MAP]))
    rc, out, _ = run_pipe(both, encode("syncwait x"))
    eq(decode_stream(out), [b"OK 3"], "the last of two init commands")
    rc, out, err = check_config(cfg)
    eq((rc, err), (0, ""), out)
    contains(out, "syncwait: ok\n")


@test
def failing_init_command_is_temp_and_a_check_failure():
    db = shared_mariadb()
    for sql, words in (("SET SESSION wsrep_sync_waitt = 1", "Unknown system variable 'wsrep_sync_waitt'"),
                       (CAUSAL + "; SELECT 1", "SQL syntax")):
        reset_runtime_dir()
        cfg = temp_config(base_config(db, database={"init_command": sql}))
        rc, out, _ = run_pipe(cfg, encode("recipient postmaster@example.org") + encode("recipient nobody@example.org"))
        replies = decode_stream(out)
        eq([status_word(r) for r in replies], [b"TEMP", b"TEMP"], "%s: %r" % (sql, replies))
        contains(read_log(cfg), words)
        rc, out, err = check_config(cfg)
        eq(rc, 75, out + err)
        contains(out, "recipient: no database host answered (last error: ")
        contains(out, words)


if __name__ == "__main__":
    main()
