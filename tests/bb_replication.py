#!/usr/bin/python3
"""bb_replication — a MariaDB primary and a replica (MariaDB's own replication) as database hosts.

Two mariadbd instances on loopback: the primary with a binary log
(server_id 1), the replica (server_id 2, read-only) replicating from it
through CHANGE MASTER TO ... MASTER_HOST='127.0.0.1' with a replication user.
Both are listed as hosts, primary first.  Rows written to the primary become
visible through sockmapd (the replica too, once it caught up); when the
primary dies, lookups keep answering from the replica, rows written before
the kill included.
Run: SOCKMAPD=build/sockmapd tests/bb_replication.py [test-name-or-glob ...]
"""

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F401,F403

pytestmark = pytest.mark.slow  # a primary and a replica, writes waited for

REPL_USER = "repl"
REPL_PASSWORD = "replpw"
CATCH_UP = 20  # seconds the replica may take to apply a write

_pair = {}


def pair():
    """(primary, replica) replicating, kept for the suite; the primary is started again if a test killed it."""
    if not _pair:
        primary = MariaDB(name="primary", extra_args=[
            "--server-id=1", "--log-bin=mysql-bin", "--binlog-format=ROW"]).keep_for_suite()
        replica = MariaDB(name="replica", extra_args=[
            "--server-id=2", "--relay-log=relay-bin", "--read-only", "--skip-slave-start"]).keep_for_suite()
        primary.start()
        replica.start()
        eq(primary.sql("SELECT @@log_bin, @@server_id;").split(), ["1", "1"], "primary binary log and server_id")
        eq(replica.sql("SELECT @@server_id, @@read_only;").split(), ["2", "1"], "replica server_id, read_only")
        # The same snapshot on both, then replication from the primary's current position.
        primary.load_fixtures()
        replica.load_fixtures()
        primary.sql("CREATE USER '%s'@'127.0.0.1' IDENTIFIED BY '%s';"
                    "GRANT REPLICATION SLAVE ON *.* TO '%s'@'127.0.0.1';" % (REPL_USER, REPL_PASSWORD, REPL_USER))
        status = sql_rows(primary, "SHOW MASTER STATUS;")
        eq(len(status), 1, "SHOW MASTER STATUS on the primary")
        replica.sql("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='%s', "
                    "MASTER_PASSWORD='%s', MASTER_LOG_FILE='%s', MASTER_LOG_POS=%s, MASTER_USE_GTID=no, "
                    "MASTER_CONNECT_RETRY=1; START SLAVE;"
                    % (primary.port, REPL_USER, REPL_PASSWORD, status[0]["File"], status[0]["Position"]))
        _pair["primary"], _pair["replica"] = primary, replica
        wait_for(lambda: replica_running(replica), timeout=CATCH_UP, msg="replica threads running")
    primary, replica = _pair["primary"], _pair["replica"]
    if not primary.running():
        primary.start()
    return primary, replica


def replica_status(replica):
    rows = sql_rows(replica, "SHOW SLAVE STATUS;")
    return rows[0] if rows else {}


def replica_running(replica):
    st = replica_status(replica)
    return st.get("Slave_IO_Running") == "Yes" and st.get("Slave_SQL_Running") == "Yes"


def wait_replicated(replica, alias, timeout=CATCH_UP):
    """Until the replica holds `alias` in dbmail_aliases (bounded); returns the seconds it took."""
    started = time.monotonic()
    wait_for(lambda: replica.sql("SELECT COUNT(*) FROM dbmail.dbmail_aliases WHERE alias='%s';" % alias).strip() == "1",
             timeout=timeout, interval=0.05, msg="%s replicated" % alias)
    return time.monotonic() - started


def config(hosts):
    return temp_config(base_config(list(hosts), database={"connect_timeout": 1, "read_timeout": 2,
                                                          "write_timeout": 2, "retry_interval": 30}))


def insert_alias(primary, alias, target):
    primary.sql("INSERT INTO dbmail.dbmail_aliases (alias, deliver_to) VALUES ('%s', '%s');" % (alias, target))


@test(timeout=120)
def replica_replicates_from_primary():
    primary, replica = pair()
    st = replica_status(replica)
    eq(st.get("Master_Host"), "127.0.0.1")
    eq(st.get("Master_Port"), str(primary.port))
    eq(st.get("Last_Error", ""), "", "replica SQL error")
    insert_alias(primary, "probe@example.org", "probe-target@example.org")
    secs = wait_replicated(replica, "probe@example.org")
    print("    replica applied a write after %.2fs; Seconds_Behind_Master=%s"
          % (secs, replica_status(replica).get("Seconds_Behind_Master")))
    ok(sql_rows(replica, "SELECT @@read_only AS ro;")[0]["ro"] == "1", "the replica is read-only")


@test(timeout=120)
def rows_written_to_primary_visible_through_sockmapd():
    reset_runtime_dir()
    primary, replica = pair()
    both = config([primary, replica])
    only_replica = config([replica])
    s = PipeSession(both)
    eq(s.ask("recipient", "new1@example.org"), b"NOTFOUND ", "before the write")
    insert_alias(primary, "new1@example.org", "first@example.org")
    # Through the primary (first host): visible at once, same session.
    eq(s.ask("recipient", "new1@example.org"), b"OK first@example.org", "right after the write")
    # Through the replica: visible once it has caught up (polled, bounded).
    r = PipeSession(only_replica)
    started = time.monotonic()
    deadline = started + scaled(CATCH_UP)
    while True:
        reply = r.ask("recipient", "new1@example.org")
        if reply == b"OK first@example.org":
            break
        eq(reply, b"NOTFOUND ", "the replica before catching up")
        ok(time.monotonic() < deadline, "the row never reached the replica within %ds" % CATCH_UP)
        time.sleep(0.05)
    print("    row visible through the replica %.2fs after the write" % (time.monotonic() - started))
    eq(s.close(), 0)
    eq(r.close(), 0)


@test(timeout=120)
def primary_killed_lookups_answer_from_replica():
    reset_runtime_dir()
    primary, replica = pair()
    cfg = config([primary, replica])
    s = PipeSession(cfg)
    sa = SocketActivated(["-c", cfg])
    c = sa.client(timeout=15)
    eq(s.ask("recipient", "postmaster@example.org"), b"OK root@example.org")
    eq(c.ask("recipient", "postmaster@example.org"), b"OK root@example.org")
    written = {}
    for i in range(5):
        alias = "before-kill-%d@example.org" % i
        insert_alias(primary, alias, "kept%d@example.org" % i)
        written[alias] = b"OK kept%d@example.org" % i
    for alias, want in written.items():
        eq(s.ask("recipient", alias), want, "from the primary")
    # The last write has reached the replica (so every earlier one has).
    wait_replicated(replica, "before-kill-4@example.org")
    primary.kill()
    for label, ask in (("pipe", s.ask), ("socket", c.ask)):
        for alias, want in written.items():
            eq(ask("recipient", alias), want, "%s session, after the primary died" % label)
        eq(ask("recipient", "team@example.org"), b"OK alice@example.org,bob@example.org,carol@example.org", label)
        eq(ask("exists", "carol@example.org"), b"OK carol@example.org", label)
        eq(ask("recipient", "never-written@example.org"), b"NOTFOUND ", label + ": the replica is up, a miss is a miss")
    rc, out, err = run_pipe(cfg, b"".join(encode("recipient " + a) for a in written))
    eq(decode_stream(out), list(written.values()), "a new session after the primary died")
    contains(read_log(cfg), "connected to database host %s" % replica.host_entry)
    eq(s.close(), 0)
    c.shutdown_write()
    eq(c.read_until_eof(5), b"")
    c.close()


if __name__ == "__main__":
    main()
