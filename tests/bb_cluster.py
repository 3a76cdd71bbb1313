#!/usr/bin/python3
"""bb_cluster — a three-node MariaDB Galera cluster on loopback as sockmapd's database hosts.

Three mariadbd nodes (Debian's galera-4, rsync state transfer), formed once
for the suite: node1 bootstraps and loads the fixtures, and node2 and node3
start from a copy of its datadir, so they catch up by IST.  Short
group-communication timeouts make membership changes take seconds.  When
the suite runs as root the nodes run as `nobody`: the rsync daemon of a
state transfer drops to `nobody` when started by root and must be able to
write the joiner's datadir.
sockmapd runs as pipe handlers (a process per lookup batch), under
systemd-socket-activate, and as long-lived sessions kept open across the
faults.  Cases: `init_command` (causal reads, a failing statement), a row
written on node1 and looked up at once through node3, a desynced node, a
node in maintenance (wsrep_reject_queries), a node without quorum first in
the list (error 1047) with a healthy node after it and with none, a hung
node, a node thawed after being dropped from the group, a killed node
under open sessions and its rejoin by state transfer (node2 donating), and
the whole cluster killed and restarted under the same sessions.  A failure
is TEMP (or TIMEOUT), never NOTFOUND or OK; measured failover times are
printed.
Run: SOCKMAPD=build/sockmapd tests/bb_cluster.py [test-name-or-glob ...]
"""

import os
import pwd
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F401,F403

pytestmark = pytest.mark.slow  # a Galera cluster formed for the suite, nodes killed and rejoining

PROVIDER = "/usr/lib/galera/libgalera_smm.so"
CAUSAL = "SET SESSION wsrep_sync_wait = 1"
CONNECT_TIMEOUT = 1
READ_TIMEOUT = 2
SLACK = 1.0  # process start, scheduling, the failover state file
QUORUM = 15  # seconds a membership change may take (timeouts below, plus slack)

# Group communication tuned for seconds, not the defaults' tens of seconds:
# a silent peer is suspected after 1 s and dropped after 2 s.
GCOMM_TIMEOUTS = ("evs.keepalive_period=PT0.2S; evs.join_retrans_period=PT0.2S; "
                  "evs.inactive_check_period=PT0.5S; evs.suspect_timeout=PT1S; "
                  "evs.inactive_timeout=PT2S; evs.install_timeout=PT2S; gmcast.peer_timeout=PT1S; "
                  "gcache.size=16M; gcache.recover=yes")

# Which node answered, and the session's wsrep_sync_wait (shows the init
# command ran on the connection the lookups use).
# Both read a table: a node without quorum answers SELECTs without tables
# (for monitoring), and only those.
NODE_MAP = {"service": "node", "database": "dbmail",
            "query": "SELECT @@wsrep_node_name FROM transport WHERE domain = %s"}
SYNC_WAIT_MAP = {"service": "syncwait", "database": "dbmail",
                 "query": "SELECT @@SESSION.wsrep_sync_wait FROM transport WHERE domain = %s"}

# (map, key, expected reply) the fixtures answer on every node.
EXPECTED = [(m, k, fixture_reply(m, k)) for m, k in (
    ("recipient", "team@example.org"),
    ("exists", "bob.smith@example.org"),
    ("recipient", "nobody@example.org"),
    ("othermap", "ping"),
)]


def run_as():
    """(uid, gid, name) the nodes run as: `nobody` for root, else the current user."""
    if os.geteuid() == 0:
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid, pw.pw_name
    return os.geteuid(), os.getegid(), None


class GaleraNode(MariaDB):
    """A MariaDB (harness) with wsrep on; `bootstrap` starts a new cluster."""

    def __init__(self, index, gcomm_ports, ports):
        """ports: (client, IST, SST), distinct from each other node's and from gcomm_ports."""
        super().__init__(name="node%d-" % index)
        self.index = index
        self.node_name = "node%d" % index
        self.port, self.ist_port, self.sst_port = ports
        self.gcomm_port = gcomm_ports[index - 1]
        self.peers = ",".join("127.0.0.1:%d" % p for p in gcomm_ports)
        self.bootstrap = False
        self.extra_wsrep = []
        self.uid, self.gid, self.user = run_as()
        os.chown(self.dir, self.uid, self.gid)

    def _initialise(self):
        tool = require_tool("mariadb-install-db")
        cmd = [tool, "--no-defaults", "--datadir=" + self.datadir, "--auth-root-authentication-method=normal",
               "--skip-test-db", "--skip-name-resolve"] + self._innodb_args()
        if self.user:
            cmd.append("--user=" + self.user)
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=scaled(120))
        if r.returncode != 0:
            raise AssertionError("mariadb-install-db failed: %s" % r.stdout.decode(errors="replace")[-3000:])

    def _command(self):
        cmd = [a for a in super()._command() if a not in ("--user=root", "--skip-log-bin")]
        if self.user:
            cmd.insert(2, "--user=" + self.user)
        options = "gmcast.listen_addr=tcp://127.0.0.1:%d; ist.recv_addr=127.0.0.1:%d; %s" % (
            self.gcomm_port, self.ist_port, GCOMM_TIMEOUTS)
        cmd += ["--wsrep-on=ON", "--wsrep-provider=" + PROVIDER, "--wsrep-cluster-name=sockmapd-test",
                "--wsrep-cluster-address=gcomm://" + self.peers, "--wsrep-node-name=" + self.node_name,
                "--wsrep-node-address=127.0.0.1:%d" % self.gcomm_port,
                "--wsrep-node-incoming-address=127.0.0.1:%d" % self.port,
                "--wsrep-provider-options=" + options, "--wsrep-sst-method=rsync",
                "--wsrep-sst-receive-address=127.0.0.1:%d" % self.sst_port,
                "--binlog-format=ROW", "--innodb-autoinc-lock-mode=2", "--wsrep-slave-threads=2"]
        if self.bootstrap:
            cmd.append("--wsrep-new-cluster")
        return cmd + self.extra_wsrep

    def status(self, name):
        out = self.sql("SHOW GLOBAL STATUS LIKE '%s';" % name).split("\t")
        return out[1].strip() if len(out) > 1 else ""

    def synced(self, size=3):
        try:
            return (self.primary() and self.status("wsrep_local_state_comment") == "Synced"
                    and self.status("wsrep_cluster_size") == str(size))
        except (SqlError, subprocess.TimeoutExpired):
            return False

    def primary(self):
        try:
            return self.status("wsrep_cluster_status") == "Primary"
        except (SqlError, subprocess.TimeoutExpired):
            return False

    def isolate(self, on=True):
        """Cut the node off the group (Galera's gmcast.isolate); it keeps its clients."""
        self.sql("SET GLOBAL wsrep_provider_options = 'gmcast.isolate=%d';" % (1 if on else 0))

    def grastate(self):
        with open(os.path.join(self.datadir, "grastate.dat")) as f:
            return f.read()


def start_nodes(nodes, timeout=60):
    """Starts the nodes at once (a node may wait for the others to form a group)."""
    errors = []

    def one(n):
        try:
            n.start(timeout=timeout)
        except Exception as e:
            errors.append("%s: %s" % (n.node_name, e))

    threads = [threading.Thread(target=one, args=(n,)) for n in nodes if not n.running()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(timeout + 10))
    ok(not errors, "; ".join(errors))


_cluster = []


def cluster():
    """[node1, node2, node3], running and synced, kept for the suite."""
    if not _cluster:
        ports = free_ports(12)  # 3 nodes × (gcomm, client, IST, SST): a port picked twice breaks a join
        gcomm = ports[:3]
        nodes = [GaleraNode(i, gcomm, ports[3 * i:3 * i + 3]).keep_for_suite() for i in (1, 2, 3)]
        first = nodes[0]
        first.fixtures = True
        first.bootstrap = True
        first.start()
        first.stop()
        ok("safe_to_bootstrap: 1" in first.grastate(), "node1 stopped cleanly: " + first.grastate())
        for n in nodes[1:]:
            # The same datadir (grastate.dat included): they join without a transfer.
            r = subprocess.run(["cp", "-a", first.datadir, n.datadir], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
            eq(r.returncode, 0, r.stdout.decode(errors="replace"))
            n._users_done = True
        first.start()
        first.bootstrap = False
        start_nodes(nodes[1:])
        _cluster.extend(nodes)
    heal()
    return _cluster


def heal():
    """Every node running, in the group, synced; failover memory forgotten."""
    for n in _cluster:
        if n.paused:
            n.resume()
    start_nodes(_cluster)
    for n in _cluster:
        try:
            n.isolate(False)
            n.sql("SET GLOBAL wsrep_reject_queries = NONE; SET GLOBAL wsrep_desync = OFF;"
                  " SET GLOBAL wsrep_dirty_reads = OFF;")
        except SqlError:
            pass
    for n in _cluster:
        wait_for(lambda: n.synced(3), timeout=QUORUM, msg="%s synced in a group of 3" % n.node_name)
    reset_runtime_dir()


def config(hosts, **database):
    db = {"connect_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT, "write_timeout": READ_TIMEOUT,
          "retry_interval": 30}
    db.update(database)
    return temp_config(base_config(hosts, database=db, extra_maps=[NODE_MAP, SYNC_WAIT_MAP]))


def all_expected(session, label):
    for m, k, want in EXPECTED:
        eq(session.ask(m, k), want, "%s: %s %s" % (label, m, k))


def timed(fn, *args):
    started = time.monotonic()
    r = fn(*args)
    return r, time.monotonic() - started


def one_shot(cfg, *requests):
    """A new pipe handler per call: the replies to `requests` ((map, key) pairs)."""
    rc, out, err = run_pipe(cfg, b"".join(encode("%s %s" % r) for r in requests), timeout=30)
    eq((rc, err), (0, b""), "pipe handler")
    return decode_stream(out)


def check_config(cfg):
    rc, out, err = run_pipe(cfg, b"", args=["--check-config"], timeout=60)
    return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


# ---------------------------------------------------------------- init_command

@test(timeout=120)
def init_command_runs_on_every_connection():
    n1, n2, n3 = cluster()
    rc, out, _ = run_pipe(config([n1]), encode("syncwait example.org"))
    eq(decode_stream(out), [b"OK 0"], "without init_command")
    cfg = config([n1], init_command=CAUSAL)
    s = PipeSession(cfg)
    eq(s.ask("syncwait", "example.org"), b"OK 1")
    all_expected(s, "with init_command")  # othermap: the second schema's connection
    eq(s.close(), 0)
    # A list runs in order, on every connection.
    both = config([n1], init_command=[CAUSAL, "SET SESSION wsrep_sync_wait = 3"])
    eq(one_shot(both, ("syncwait", "example.org")), [b"OK 3"], "the last of two init commands")
    rc, out, err = check_config(cfg)
    # The fixtures' exact transport map holds domain rows: --check-config
    # warns about that (a search-order hint), nothing else goes to stderr.
    eq((rc, [l for l in err.splitlines() if "\"search\" is \"exact\"" not in l]), (0, []), out + err)
    contains(out, "syncwait: ok\n")


@test
def failing_init_command_is_temp_and_a_check_failure():
    n1, n2, n3 = cluster()
    for sql, words in (("SET SESSION wsrep_sync_waitt = 1", "Unknown system variable 'wsrep_sync_waitt'"),
                       (CAUSAL + "; SELECT 1", "SQL syntax")):
        reset_runtime_dir()
        cfg = config([n1, n2], init_command=sql)
        replies = one_shot(cfg, ("recipient", "postmaster@example.org"), ("recipient", "nobody@example.org"))
        eq([status_word(r) for r in replies], [b"TEMP", b"TEMP"], "%s: %r" % (sql, replies))
        contains(read_log(cfg), words)
        rc, out, err = check_config(cfg)
        eq(rc, 75, out + err)
        contains(out, "recipient: no database host answered (last error: ")
        contains(out, words)


# ---------------------------------------------------------------- causal reads

def readme_cluster_snippet():
    """The database settings of doc/clusters.md (a JSON fragment, its block "cluster-database")."""
    import json
    import readme
    lang, body = readme.block("doc/clusters.md", "cluster-database")
    return json.loads("{" + body + "}")["database"]


class ReadLock:
    """FLUSH TABLES WITH READ LOCK held on a node: Galera pauses its appliers,
    so writes made elsewhere are not applied there until release()."""

    def __init__(self, node):
        self.proc = subprocess.Popen(node.client_argv() + ["--unbuffered"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        defer(self.release)
        self._say("FLUSH TABLES WITH READ LOCK; SELECT 'locked';", b"locked")

    def _say(self, sql, answer):
        self.proc.stdin.write(sql.encode() + b"\n")
        self.proc.stdin.flush()
        eq(self.proc.stdout.readline().strip(), answer, "read lock client")

    def release(self, after=0.0):
        if self.proc.poll() is not None:
            return
        time.sleep(after)
        self._say("UNLOCK TABLES; SELECT 'unlocked';", b"unlocked")
        self.proc.stdin.close()
        self.proc.wait(timeout=scaled(10))


def insert_alias(node, alias, target):
    node.sql("INSERT INTO dbmail.dbmail_aliases (alias, deliver_to) VALUES ('%s', '%s');" % (alias, target))


@test
def causal_read_finds_a_row_just_written_on_another_node():
    n1, n2, n3 = cluster()
    causal = temp_config(base_config([n3], database=readme_cluster_snippet() | {"host": [n3.host_entry]},
                                     extra_maps=[SYNC_WAIT_MAP]))
    plain = config([n3])
    # The case as it comes: written on node1, asked at once through node3.
    for i in range(10):
        insert_alias(n1, "causal%d@example.org" % i, "c%d" % i)
        eq(one_shot(causal, ("recipient", "causal%d@example.org" % i)), [b"OK c%d" % i], "row %d" % i)
    eq(one_shot(causal, ("syncwait", "example.org")), [b"OK 1"], "the guide's setting")
    # node3 lagging (appliers paused by a read lock): without causal reads
    # the new row is NOTFOUND there, which would bounce mail; with them the
    # lookup waits until node3 has applied it.
    waiting = PipeSession(causal, timeout=20)
    eq(waiting.ask("recipient", "postmaster@example.org"), b"OK root@example.org")  # connected before the write
    lock = ReadLock(n3)
    insert_alias(n1, "lagging@example.org", "late")
    eq(one_shot(plain, ("recipient", "lagging@example.org")), [b"NOTFOUND "], "node3 really lags")
    releaser = threading.Thread(target=lock.release, args=(0.5,))
    releaser.start()
    reply, secs = timed(waiting.ask, "recipient", "lagging@example.org")
    releaser.join()
    eq(reply, b"OK late", "a causal read on node3")
    ok(0.4 <= secs < scaled(READ_TIMEOUT), "the causal read waited for node3 (%.2fs)" % secs)
    print("    causal read on a node with paused appliers: %r after %.2fs (lock released after 0.5s)" % (reply, secs))
    eq(one_shot(plain, ("recipient", "lagging@example.org")), [b"OK late"], "node3 caught up")
    eq(waiting.close(), 0)


# ---------------------------------------------------------------- node states

def sessions_on(cfg, node="node1"):
    """A long-lived pipe session and a long-lived client of a socket-activated
    handler, each connected to `node` (checked), as [(session, label)]."""
    sessions = [(PipeSession(cfg, timeout=20), "pipe"), (SocketActivated(["-c", cfg]).client(timeout=20), "socket")]
    for s, label in sessions:
        eq(s.ask("node", "example.org"), b"OK " + node.encode(), label + " before the fault")
    return sessions


def close_all(sessions):
    for s, label in sessions:
        if label == "pipe":
            eq(s.close(), 0, "pipe session exit status")
        else:
            s.shutdown_write()
            eq(s.read_until_eof(5), b"", "nothing after EOF on the socket session")
            s.close()


@test
def desynced_node_keeps_answering():
    n1, n2, n3 = cluster()
    cfg = config([n1, n2, n3])
    sessions = sessions_on(cfg)
    n1.sql("SET GLOBAL wsrep_desync = ON;")
    eq(n1.status("wsrep_local_state_comment"), "Donor/Desynced")
    insert_alias(n2, "desync@example.org", "d")
    for s, label in sessions:
        eq(s.ask("node", "example.org"), b"OK node1", label + ": a desynced node is not a failed one")
        all_expected(s, label + " on the desynced node")
    eq(one_shot(config([n1], init_command=CAUSAL), ("node", "example.org"), ("recipient", "desync@example.org")),
       [b"OK node1", b"OK d"], "a causal read on the desynced node")
    n1.sql("SET GLOBAL wsrep_desync = OFF;")
    close_all(sessions)


@test
def node_in_maintenance_is_left_at_once():
    n1, n2, n3 = cluster()
    for mode in ("ALL", "ALL_KILL"):
        reset_runtime_dir()
        cfg = config([n1, n2, n3])
        sessions = sessions_on(cfg)
        n1.sql("SET GLOBAL wsrep_reject_queries = %s;" % mode)
        defer(n1.sql, "SET GLOBAL wsrep_reject_queries = NONE;")
        for s, label in sessions:
            reply, secs = timed(s.ask, "node", "example.org")
            eq(reply, b"OK node2", "%s, %s" % (label, mode))
            ok(secs < scaled(SLACK), "%s, %s: failover took %.2fs" % (label, mode, secs))
            print("    wsrep_reject_queries=%s, %s session: failover in %.3fs" % (mode, label, secs))
            all_expected(s, "%s after %s" % (label, mode))
        eq(one_shot(cfg, ("node", "example.org"), ("recipient", "postmaster@example.org")),
           [b"OK node2", b"OK root@example.org"], "a new handler, " + mode)
        n1.sql("SET GLOBAL wsrep_reject_queries = NONE;")
        close_all(sessions)


@test(timeout=90)
def node_without_quorum_first_fails_over_or_is_temp():
    n1, n2, n3 = cluster()
    cfg = config([n1, n2, n3])
    sessions = sessions_on(cfg)
    n1.isolate()
    started = time.monotonic()
    wait_for(lambda: not n1.primary(), timeout=QUORUM, msg="node1 without quorum")
    wait_for(lambda: n2.synced(2), timeout=QUORUM, msg="node2 and node3 a group of 2")
    print("    node1 cut off: without quorum, the other two a group of 2, after %.2fs"
          % (time.monotonic() - started))
    insert_alias(n2, "quorum@example.org", "q")  # written where the quorum is
    for s, label in sessions:
        reply, secs = timed(s.ask, "recipient", "quorum@example.org")
        eq(reply, b"OK q", label + ": error 1047 moves on to node2")
        ok(secs < scaled(SLACK), "%s: failover took %.2fs" % (label, secs))
        print("    %s session, node1 answering error 1047: failover in %.3fs" % (label, secs))
        eq(s.ask("node", "example.org"), b"OK node2", label)
        all_expected(s, label + " on node2")
    eq(one_shot(cfg, ("node", "example.org"), ("recipient", "quorum@example.org")), [b"OK node2", b"OK q"],
       "a new handler")
    contains(read_log(cfg), "1047 (08S01): WSREP has not yet prepared node for application use")
    # No node that can answer: TEMP, never NOTFOUND.
    none = config([n1, "127.0.0.1:%d" % closed_port()])
    lone = PipeSession(none, timeout=20)
    for m, k in (("recipient", "quorum@example.org"), ("recipient", "nobody@example.org"), ("node", "example.org")):
        for reply in (lone.ask(m, k), one_shot(none, (m, k))[0]):
            eq(status_word(reply), b"TEMP", "%s %s without quorum: %r" % (m, k, reply))
    # Why wsrep_dirty_reads must stay off: node1 would answer from its stale
    # copy, and the row written since is NOTFOUND there.
    n1.sql("SET GLOBAL wsrep_dirty_reads = ON;")
    defer(n1.sql, "SET GLOBAL wsrep_dirty_reads = OFF;")
    eq(one_shot(none, ("recipient", "quorum@example.org")), [b"NOTFOUND "], "dirty read on node1")
    n1.sql("SET GLOBAL wsrep_dirty_reads = OFF;")
    eq(lone.close(), 0)
    close_all(sessions)



# ---------------------------------------------------------------- failures

@test(timeout=90)
def hung_node_costs_one_timeout_then_is_tried_last():
    n1, n2, n3 = cluster()
    cfg = config([n1, n2, n3])
    s = PipeSession(cfg, timeout=20)
    eq(s.ask("node", "example.org"), b"OK node1")
    n1.pause()
    defer(n1.resume)
    # An open connection: the query runs into read_timeout, then node2 answers.
    reply, secs = timed(s.ask, "node", "example.org")
    eq(reply, b"OK node2", "open session")
    ok(READ_TIMEOUT * 0.9 <= secs < scaled(READ_TIMEOUT + SLACK), "open session: %.2fs" % secs)
    print("    hung node1, open session: %r after %.2fs (read_timeout %ds)" % (reply, secs, READ_TIMEOUT))
    # New handlers skip the marked node for retry_interval without waiting...
    reply, secs = timed(one_shot, cfg, ("node", "example.org"))
    eq(reply, [b"OK node2"], "a new handler")
    ok(secs < scaled(SLACK), "a new handler with node1 marked: %.2fs" % secs)
    # ...and without the mark pay connect_timeout once.
    reset_runtime_dir()
    reply, secs = timed(one_shot, cfg, ("node", "example.org"))
    eq(reply, [b"OK node2"], "a new handler, node1 not marked")
    ok(CONNECT_TIMEOUT * 0.9 <= secs < scaled(CONNECT_TIMEOUT + SLACK), "new handler: %.2fs" % secs)
    print("    hung node1, new handler: %r after %.2fs (connect_timeout %ds)" % (reply[0], secs, CONNECT_TIMEOUT))
    eq(s.close(), 0)
    n1.resume()


@test(timeout=90)
def thawed_node_answers_nothing_older_with_causal_reads():
    """A node frozen long enough to be dropped from the group still believes
    in its old view for about a second after it thaws, and answers from its
    old copy: a row written meanwhile is NOTFOUND there.  With causal reads
    it cannot complete the read (error 1205), and the next node answers.
    While membership changes the nodes may refuse queries altogether: TEMP
    is then the safe answer, with or without causal reads.  What must never
    come with causal reads is an old answer (NOTFOUND) or a wrong one."""
    n1, n2, n3 = cluster()
    plain = config([n1, n2, n3], retry_interval=0)  # every handler tries node1 first
    causal = config([n1, n2, n3], retry_interval=0, init_command=CAUSAL)
    n1.pause()
    defer(n1.resume)
    wait_for(lambda: n2.synced(2), timeout=QUORUM, msg="node1 dropped from the group")
    insert_alias(n2, "frozen@example.org", "f")
    n1.resume()
    started = time.monotonic()
    plain_replies, causal_rows, causal_nodes, slowest, states = [], [], [], 0.0, []
    # Watch for a few seconds, and until node1 is back in the group.
    while time.monotonic() - started < 3 or not n1.synced(3):
        ok(time.monotonic() - started < scaled(QUORUM), "node1 not back after %ds" % QUORUM)
        plain_replies += one_shot(plain, ("recipient", "frozen@example.org"))
        (row, node), secs = timed(one_shot, causal, ("recipient", "frozen@example.org"), ("node", "example.org"))
        causal_rows.append(row)
        causal_nodes.append(node)
        slowest = max(slowest, secs)
        try:
            state = "%s/%s" % (n1.status("wsrep_cluster_status"), n1.status("wsrep_local_state_comment"))
        except SqlError:
            state = "no answer"
        if not states or states[-1][1] != state:
            states.append(("%.1fs" % (time.monotonic() - started), state))
    if states[-1][1] != "Primary/Synced":
        states.append(("%.1fs" % (time.monotonic() - started), "Primary/Synced"))

    def count(replies):
        temp = sum(1 for r in replies if status_word(r) == b"TEMP")
        return "%s, TEMP %d" % (", ".join("%s %d" % (r.decode(errors="replace").strip(), replies.count(r))
                                          for r in sorted(set(replies)) if status_word(r) != b"TEMP"), temp)
    print("    node1 thawed: %s" % ", ".join("%s %s" % st for st in states))
    print("    %d rounds; without causal reads: %s (NOTFOUND is node1's old copy); with them: %s; %s; slowest %.2fs"
          % (len(causal_rows), count(plain_replies), count(causal_rows), count(causal_nodes), slowest))

    def answers(replies):
        return [r for r in replies if status_word(r) != b"TEMP"]
    # With causal reads: the row or TEMP, never NOTFOUND (node1's old copy),
    # and the node answering is one of the cluster's.
    eq(set(answers(causal_rows)) - {b"OK f"}, set(), "causal reads answered something other than the row")
    eq(set(answers(causal_nodes)) - {b"OK node1", b"OK node2", b"OK node3"}, set(), "causal reads, node map")
    # TEMP is not the only thing that came: the lookups did reach the cluster.
    ok(b"OK f" in causal_rows, "causal reads never found the row: %s" % count(causal_rows))
    # Without them an old answer may come (what causal reads are for), but nothing else.
    eq(set(answers(plain_replies)) - {b"OK f", b"NOTFOUND "}, set(), "without causal reads")
    # node1 back in the group: both find the row again (not TEMP for good).
    for cfg, label in ((plain, "without causal reads"), (causal, "with causal reads")):
        seen = []
        try:
            wait_for(lambda: seen.append(one_shot(cfg, ("recipient", "frozen@example.org"))) or seen[-1] == [b"OK f"],
                     timeout=10, interval=0.2, msg="%s, node1 synced: the row" % label)
        except AssertionError as e:
            raise AssertionError("%s; replies %s" % (e, count(sum(seen, []))))


@test(timeout=120)
def killed_node_is_left_and_rejoins_never_answering_old_data():
    n1, n2, n3 = cluster()
    cfg = config([n1, n2, n3], retry_interval=0)  # every new handler tries node1 first
    causal = config([n1, n2, n3], retry_interval=0, init_command=CAUSAL)
    sessions = sessions_on(cfg)
    n1.kill()
    for s, label in sessions:
        reply, secs = timed(s.ask, "node", "example.org")
        eq(reply, b"OK node2", label + ": the first request after the kill")
        ok(secs < scaled(SLACK), "%s: failover took %.2fs" % (label, secs))
        print("    node1 killed, %s session: failover in %.3fs" % (label, secs))
        all_expected(s, label + " after the kill")
    written = {}
    for i in range(5):
        written["down%d@example.org" % i] = "d%d" % i
        insert_alias(n2, "down%d@example.org" % i, "d%d" % i)
    # node1 comes back by a full state transfer (its state is unknown after
    # SIGKILL) from node2, whose sessions keep answering while it donates.
    n1.extra_wsrep = ["--wsrep-sst-donor=node2"]
    defer(setattr, n1, "extra_wsrep", [])
    on_donor = PipeSession(config([n2]), timeout=20)
    eq(on_donor.ask("node", "example.org"), b"OK node2")
    starter = threading.Thread(target=start_nodes, args=([n1],))
    started = time.monotonic()
    starter.start()
    answered_by, donor_states, rounds = set(), set(), 0
    while starter.is_alive() or not n1.synced(3):
        ok(time.monotonic() - started < scaled(60), "node1 not synced after 60s")
        rounds += 1
        key = "rejoin%d@example.org" % rounds
        insert_alias(n2, key, "r%d" % rounds)
        asks = [("recipient", k) for k in written] + [("node", "example.org")]
        replies = one_shot(cfg, *asks)
        eq(replies[:-1], [b"OK " + v.encode() for v in written.values()], "rows written while node1 was down")
        answered_by.add(replies[-1])
        eq(one_shot(causal, ("recipient", key)), [b"OK r%d" % rounds], "a row written during the rejoin")
        eq(on_donor.ask("recipient", "down0@example.org"), b"OK d0", "the donor's session")
        try:
            donor_states.add(n2.status("wsrep_local_state_comment"))
        except SqlError:
            pass
        for s, label in sessions:
            all_expected(s, label + " during the rejoin")
        time.sleep(0.05)
    starter.join()
    log = read_log(cfg)
    print("    node1 rejoined (SST from node2) in %.1fs; %d rounds of lookups meanwhile, answered by %s; "
          "node2 was %s; node1 refused %d connections, answered error 1047 %d times"
          % (time.monotonic() - started, rounds, sorted(answered_by), sorted(donor_states),
             log.count("cannot connect to database host %s" % n1.host_entry),
             log.count("1047 (08S01)")))
    ok("Donor/Desynced" in donor_states, "node2 seen donating: %s" % sorted(donor_states))
    eq(one_shot(cfg, ("node", "example.org"), ("recipient", "down4@example.org")), [b"OK node1", b"OK d4"],
       "node1 answers again, with what was written while it was down")
    eq(on_donor.close(), 0)
    close_all(sessions)


@test(timeout=120)
def whole_cluster_down_is_temp_then_the_same_sessions_answer_again():
    nodes = cluster()
    cfg = config(nodes)
    sessions = sessions_on(cfg)
    for s, label in sessions:
        all_expected(s, label)
    for n in nodes:
        n.kill()
    for s, label in sessions:
        for m, k, _ in EXPECTED:
            reply = s.ask(m, k)
            eq(status_word(reply), b"TEMP", "%s, every node down: %s %s -> %r" % (label, m, k, reply))
    eq([status_word(r) for r in one_shot(cfg, ("recipient", "team@example.org"))], [b"TEMP"], "a new handler")
    started = time.monotonic()
    start_nodes(nodes)  # the group comes back from the nodes' saved view (pc.recovery)
    for n in nodes:
        wait_for(lambda: n.synced(3), timeout=QUORUM, msg="%s synced after the restart" % n.node_name)
    print("    whole cluster killed and restarted: synced after %.1fs" % (time.monotonic() - started))
    for s, label in sessions:
        all_expected(s, label + " after the restart")
    close_all(sessions)


if __name__ == "__main__":
    main()
