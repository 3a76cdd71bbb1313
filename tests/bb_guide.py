#!/usr/bin/python3
"""bb_guide — doc/moving-from-go.md, postfix.md's "What Postfix says" and sizing, dmz-and-security.md, as written.

Each block is found by its file and marker (tests/lib/readme.py) and used:
shell blocks run (`$ ` lines are commands, the other lines the output they
must print; a line ending in "..." is a prefix), with the config path, the
port and Postfix's config directory replaced by the test's own; unit
drop-ins are verified with systemd-analyze and applied; JSON is merged into
a config; the DMZ section's nftables rules run in a network namespace of
the test's own, its addresses replaced by loopback ones (the MTA 127.0.0.1,
a stranger 127.0.0.2); systemd's IPAddressAllow= is enforced in
bb_system.  Outputs are those of config.example.sql (root@example.net).
Also: modes-and-units.md's --listen command lines, each started and stopped;
the LICENSE file says what debian/copyright says; and a config edit reaches
the next connection under a unit per connection, not an open one.
Run: SOCKMAPD=build/sockmapd tests/bb_guide.py [test-name-or-glob ...]
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F401,F403

from readme import block, marked, prose, run_shell, sample_database  # noqa: E402

UNITS = os.path.join(REPO, "units")
MOVING = "doc/moving-from-go.md"
POSTFIX = "doc/postfix.md"
DMZ = "doc/dmz-and-security.md"
MODES = "doc/modes-and-units.md"


def go_config(db=None, typo=False):
    """A config as the Go sockmapd's users wrote them: every value a string, some keys capitalised."""
    host = db.host_entry if db else "127.0.0.1:%d" % closed_port()
    sender = {"service": "sender", "database": "dbmail", "table": "sender_access", "key": "sender",
              "value": "action"}
    if typo:
        sender["vaule"] = sender.pop("value")
    cfg = {
        "sysconfig": {"port": "2224", "loglevel": "info", "idle_timeout": "120"},
        "Database": {"Host": host, "port": "3306", "username": MariaDB.APP_USER,
                     "password": MariaDB.APP_PASSWORD, "connect_timeout": "2"},
        "postmaps": [{"service": "recipient", "database": "dbmail", "table": "dbmail_aliases",
                      "Key": "alias", "Value": "deliver_to"}, sender],
    }
    path = temp_config(json.dumps(cfg, indent=2))
    os.chmod(path, 0o600)
    return path


def dropin_applied(shown, unit):
    """The units as installed, with the guide's drop-in for `unit`; verified.  Its directory."""
    lang, body = shown
    eq(lang, "ini")
    d = tmpdir("units")
    for name in os.listdir(UNITS):
        if name.endswith((".service", ".socket")):
            with open(os.path.join(UNITS, name)) as f:
                text = f.read().replace("@SBINDIR@", os.path.dirname(sockmapd_path()))
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
    os.makedirs(os.path.join(d, unit + ".d"))
    with open(os.path.join(d, unit + ".d", "override.conf"), "w") as f:
        f.write(body + "\n")
    r = subprocess.run([require_tool("systemd-analyze"), "verify", "--man=no", os.path.join(d, unit)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=scaled(30), cwd=d)
    eq((r.returncode, r.stdout.decode(errors="replace")), (0, ""), "systemd-analyze verify with the drop-in")
    return d


def effective(d, unit, section_name, key):
    """A setting's values after the unit and its drop-in, as systemd merges them (an empty value resets)."""
    values = []
    for path in (os.path.join(d, unit), os.path.join(d, unit + ".d", "override.conf")):
        current = None
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("[") and line.endswith("]"):
                    current = line[1:-1]
                elif current == section_name and line.startswith(key + "="):
                    value = line[len(key) + 1:]
                    values = [] if value == "" else values + [value]
    return values


# ---------------------------------------------------------------- Moving from the Go sockmapd

@test
def moving_guide_blocks_are_all_tested():
    eq(sorted(marked(MOVING)), ["moving-check", "moving-debug", "moving-every-address", "moving-summary-line",
                                "moving-typo"])


@test
def moving_go_config_checks_as_it_is():
    run_shell(block(MOVING, "moving-check"), cfg=go_config())


@test
def moving_typo_is_an_error_naming_the_nearest_key():
    run_shell(block(MOVING, "moving-typo"), cfg=go_config(typo=True))


@pytest.mark.slow
@test(timeout=60)
def moving_socket_on_every_ipv4_address():
    unit = "sockmapd-listener.socket"
    contains(prose(MOVING), "`systemctl edit %s`" % unit, "the guide's drop-in is for the default socket")
    d = dropin_applied(block(MOVING, "moving-every-address"), unit)
    listen = effective(d, unit, "Socket", "ListenStream")
    eq(listen, ["0.0.0.0:2224"])
    # That address, on a port of the test's own, answers on loopback (the service mode, as the listener runs it).
    port = free_port()
    cfg = temp_config(base_config(None))
    p = subprocess.Popen([require_tool("systemd-socket-activate"), "-l", listen[0].replace("2224", str(port)),
                          sockmapd_path(), "-c", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=sockmapd_env())
    defer(stop_pid, p.pid, popen=p)
    wait_for(lambda: listening_any(port), timeout=10, msg="systemd-socket-activate listening on 0.0.0.0")
    with Client(port) as c:
        eq(c.ask("nosuch", "key"), b"PERM unknown map")


def listening_any(port):
    """Whether something listens on 0.0.0.0:port (from /proc/net/tcp)."""
    with open("/proc/net/tcp") as f:
        return any(line.split()[1] == "00000000:%04X" % port and line.split()[3] == "0A" for line in f.readlines()[1:])


@pytest.mark.slow
@test(timeout=120)
def moving_one_log_line_per_connection_keys_only_at_debug():
    db = shared_mariadb()
    lang, line = block(MOVING, "moving-summary-line")
    eq(lang, "")
    m = re.fullmatch(r"sockmapd\[\d+\]: (info: session end \(client closed\): 3 requests, 2 found, 1 not found, "
                     r"0 errors), \d+ ms", line)
    ok(m, "the README's summary line: %r" % line)
    requests = encode("recipient postmaster@example.org") + encode("recipient team@example.org") + \
        encode("recipient nobody-guide@example.org")
    cfg = base_config(db, sysconfig={"logfile": None, "loglevel": "info"})
    rc, out, err = run_pipe(temp_config(cfg), requests, timeout=30)
    eq(rc, 0)
    summaries = [line for line in err.decode().splitlines() if "session end" in line]
    eq(len(summaries), 1, "one summary per connection at info: %r" % err)
    ok(re.fullmatch(r"sockmapd\[\d+\]: %s, \d+ ms" % re.escape(m.group(1)), summaries[0]), summaries[0])
    for key in ("postmaster@", "team@", "nobody-guide"):
        not_contains(err.decode(), key, "no key below debug")
    # The README's JSON, merged into the config: each request is logged with its key.
    lang, body = block(MOVING, "moving-debug")
    eq(lang, "json")
    debug = json.loads("{" + body + "}")
    cfg["sysconfig"].update(debug["sysconfig"])
    rc, out, err = run_pipe(temp_config(cfg), requests, timeout=30)
    eq(rc, 0)
    contains(err.decode(), "nobody-guide@example.org")
    ok(len(err.decode().splitlines()) > 3, "a line per request at debug")


# ---------------------------------------------------------------- What Postfix says (doc/postfix.md)

@pytest.mark.slow
@test(timeout=120)
def troubleshooting_postmap_found_and_not_found():
    _, cfg = sample_database()
    with SocketActivated(["-c", cfg]) as sa:
        run_shell(block(POSTFIX, "postfix-says-found"), port=sa.port, pdir=postfix_dir())


@pytest.mark.slow
@test(timeout=120)
def troubleshooting_postmap_database_down():
    cfg = temp_config(base_config(None, database={"connect_timeout": 1}))
    with SocketActivated(["-c", cfg]) as sa:
        run_shell(block(POSTFIX, "postfix-says-database-down"), port=sa.port, pdir=postfix_dir())


@pytest.mark.slow
@test(timeout=120)
def troubleshooting_postmap_unknown_map():
    cfg = temp_config(base_config(None))
    with SocketActivated(["-c", cfg]) as sa:
        run_shell(block(POSTFIX, "postfix-says-unknown-map"), port=sa.port, pdir=postfix_dir())


@pytest.mark.slow
@test
def troubleshooting_postmap_nothing_listening():
    run_shell(block(POSTFIX, "postfix-says-nothing-listening"), port=closed_port(), pdir=postfix_dir())


@pytest.mark.slow
@test
def troubleshooting_postfix_process_limit():
    run_shell(block(POSTFIX, "postfix-process-limit"), pdir=postfix_dir())


@test
def troubleshooting_max_connections_dropin():
    d = dropin_applied(block(POSTFIX, "postfix-max-connections"), "sockmapd.socket")
    eq(effective(d, "sockmapd.socket", "Socket", "MaxConnections")[-1], "1024", "the drop-in's value wins")
    eq(unit_value(os.path.join(UNITS, "sockmapd.socket"), "MaxConnections"), "512", "the guide names the shipped cap")
    contains(prose(POSTFIX), "(`MaxConnections=512`)")
    contains(prose(POSTFIX), "`--max-children 512`")
    contains(unit_value(os.path.join(UNITS, "sockmapd-listener.service"), "ExecStart"), "--max-children 512")


def unit_value(path, key):
    with open(path) as f:
        for line in f:
            if line.startswith(key + "="):
                return line.strip().split("=", 1)[1]
    return None


@test(timeout=60)
def config_edit_reaches_the_next_connection_not_an_open_one():
    """Under a unit per connection (sockmapd.socket): modes-and-units.md, "When a config change applies"."""
    contains(prose(MODES), "Under `sockmapd.socket` and xinetd each handler reads the config file when its connection "
             "starts: an edited file applies to the next connection")
    cfg = base_config(None)
    path = temp_config(cfg)
    with SocketActivated(["-c", path]) as sa:
        with sa.client(timeout=15) as first:
            eq(first.ask("gone", "x"), b"PERM unknown map")
            cfg["postmaps"].append({"service": "gone", "database": "dbmail", "table": "t", "key": "k"})
            write_config(path, cfg)
            with sa.client(timeout=15) as second:
                startswith(second.ask("gone", "x"), b"TEMP ", "the new map, on the next connection")
            eq(first.ask("gone", "x"), b"PERM unknown map", "the open connection keeps its config")


# ---------------------------------------------------------------- The MTA in a DMZ
#
# The README's addresses: the MTA 192.0.2.25, the inside host 198.51.100.10.
# Here the MTA is 127.0.0.1 and a stranger 127.0.0.2, on loopback.

MTA, INSIDE = "192.0.2.25", "198.51.100.10"


def on_loopback(shown):
    lang, body = shown
    return lang, body.replace(INSIDE + ":2224", "127.0.0.1:2224").replace(MTA, "127.0.0.1")


def dmz_allow(mta="127.0.0.1"):
    """The guide's sysconfig, its MTA being `mta`."""
    lang, body = block(DMZ, "dmz-allow")
    eq(lang, "json")
    return json.loads("{" + body.replace(MTA, mta) + "}")["sysconfig"]


@test
def dmz_guide_blocks_are_all_tested():
    eq(sorted(marked(DMZ)), ["dmz-allow", "dmz-nft", "dmz-postmap", "dmz-postmap-stranger", "dmz-refused-log",
                             "dmz-socket-dropin"])


@test(timeout=60)
def dmz_socket_on_the_inside_address_for_the_mta():
    for unit in ("sockmapd-listener.socket", "sockmapd.socket"):
        d = dropin_applied(block(DMZ, "dmz-socket-dropin"), unit)
        eq(effective(d, unit, "Socket", "ListenStream"), [INSIDE + ":2224"])
        eq(effective(d, unit, "Socket", "IPAddressAllow"), [MTA])
        eq(effective(d, unit, "Socket", "IPAddressDeny"), ["any"])


@test(timeout=120)
def dmz_allow_list_refuses_a_stranger_with_the_logged_line():
    lang, line = block(DMZ, "dmz-refused-log")
    eq(lang, "")
    pattern = re.escape(line).replace("4711", r"\d+").replace(re.escape("203.0.113.9"), re.escape("127.0.0.2"))
    ok("(12 more since the last such message)" in line, line)
    sysconfig = dmz_allow()
    eq(sysconfig["allow"][0], "127.0.0.1")
    sysconfig["logfile"] = None  # the handler's stderr, as the README shows it
    cfg = temp_config(base_config(shared_mariadb(), sysconfig=sysconfig))
    reset_runtime_dir()
    # The handlers' shared memory of refusals, by network: 127.0.0.0/24 was
    # last logged a minute ago and refused 12 times since.
    with open(os.path.join(runtime_dir(), "refused.state"), "w") as f:
        f.write("%d 12 127.0.0.0/24\n" % (time.time() - 61))
    with SocketActivated(["-c", cfg]) as sa:
        s = socket.socket()
        s.settimeout(scaled(10))
        s.bind(("127.0.0.2", 0))
        s.connect(sa.address)
        with Client(s) as c:
            c.send_raw(encode(b"recipient postmaster@example.org"))
            eq(c.read_until_eof(), b"", "no reply to the stranger")
        with sa.client() as c:
            eq(c.ask("recipient", "postmaster@example.org"), b"OK root@example.org", "the MTA is served")
        refused = [l for l in sa.log_text().splitlines() if "refused" in l]
    eq(len(refused), 1, sa.log_text())
    ok(re.fullmatch(pattern, refused[0]), "%r is the README's line %r" % (refused[0], line))


@pytest.mark.root
@test(timeout=60)
def dmz_firewall_rules_as_written():
    lang, body = on_loopback(block(DMZ, "dmz-nft"))
    eq(lang, "sh")
    nft = require_tool("nft")
    # No allow-list: what keeps the stranger out is the firewall alone.  In
    # this namespace port 2224 is the test's: the README's port as it is.
    cfg = temp_config(base_config(None))
    rc, lines = in_network_namespace(body.replace("nft ", nft + " "), "127.0.0.1:2224", ["127.0.0.1", "127.0.0.2"],
                                     ["-c", cfg])
    eq((rc, lines), (0, ["127.0.0.1 16:PERM unknown map,", "127.0.0.2 TimeoutError"]),
       "the MTA reaches sockmapd, the stranger's SYN is dropped")

@pytest.mark.slow
@test(timeout=120)
def dmz_postmap_from_the_mta():
    _, path = sample_database()
    with open(path) as f:
        cfg = json.load(f)
    cfg["sysconfig"].update(dmz_allow())
    cfg = temp_config(cfg)
    with SocketActivated(["-c", cfg]) as sa:
        run_shell(on_loopback(block(DMZ, "dmz-postmap")), port=sa.port, pdir=postfix_dir())
    not_contains(read_log(cfg), "refused")


@pytest.mark.slow
@test(timeout=120)
def dmz_postmap_from_a_host_not_in_the_list():
    # The README's list as written: 127.0.0.1 (where postmap runs) is not in it.
    cfg = temp_config(base_config(shared_mariadb(), sysconfig=dmz_allow(MTA)))
    reset_runtime_dir()
    with SocketActivated(["-c", cfg]) as sa:
        run_shell(on_loopback(block(DMZ, "dmz-postmap-stranger")), port=sa.port, pdir=postfix_dir())
    contains(read_log(cfg), "warning: refused a connection from 127.0.0.1: not in sysconfig.allow")
    not_contains(read_log(cfg), "connected to database", "no database work for a refused client")


# ---------------------------------------------------------------- --listen (doc/modes-and-units.md)

@test(timeout=120)
def listen_command_lines():
    """Each command line of the guide's --listen block, on a port of the test's own: it listens where the line
    says, answers, and stops on SIGTERM with exit 0."""
    lang, body = block(MODES, "modes-listen")
    eq(lang, "sh")
    lines = [l.split("  #", 1)[0].strip() for l in body.splitlines() if l.strip()]
    eq(len(lines), 3, "three command lines: %r" % lines)
    for line in lines:
        port = free_port()
        cfg = base_config(None, sysconfig={"port": str(port), "listen": "127.0.0.1"})
        path = temp_config(cfg)
        line = line.replace("/etc/sockmapd/config.json", path).replace(":2224", ":%d" % port)
        argv = [sockmapd_path()] + [a.strip("'") for a in line.split()[1:]]
        host = "::1" if "[::1]" in line else "127.0.0.1"
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=sockmapd_env())
        defer(stop_pid, p.pid, popen=p)

        def answers():
            try:
                s = socket.create_connection((host, port), timeout=2)
            except OSError:
                return False
            with Client(s) as c:
                return c.ask("nosuch", "key") == b"PERM unknown map"
        wait_for(answers, timeout=scaled(20), interval=0.2, msg="%r answering on %s port %d" % (line, host, port))
        p.terminate()
        eq(p.wait(scaled(20)), 0, "%r: exit status after SIGTERM" % line)


# ---------------------------------------------------------------- LICENSE

@test
def license_matches_debian_copyright():
    with open(os.path.join(REPO, "debian", "copyright")) as f:
        copyright_text = f.read()
    m = re.search(r"^License: MIT\n((?: .*\n?)+)", copyright_text, re.M)
    ok(m, "a License: MIT paragraph in debian/copyright")
    paragraphs = [[]]
    for line in m.group(1).splitlines():
        if line.strip() == ".":
            paragraphs.append([])
        else:
            paragraphs[-1].append(line.strip())
    paragraphs = [" ".join(p) for p in paragraphs]
    holder = re.search(r"^Copyright: (.+)$", copyright_text, re.M).group(1)
    with open(os.path.join(REPO, "LICENSE")) as f:
        text = f.read()
    contains(text, "Copyright " + holder + "\n")
    body = " ".join(text.split())
    for p in paragraphs:
        contains(body, p)
    eq(len(paragraphs), 3, "permission, notice, warranty")


if __name__ == "__main__":
    main()
