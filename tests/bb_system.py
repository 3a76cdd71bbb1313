#!/usr/bin/python3
"""bb_system — the installed package under a real systemd, driven as an administrator would.

A minimal Debian 12 (debootstrap, cached under build/system/, with
mariadb-server, postfix and xinetd) is copied per case as an overlay; the
.deb built from this tree (dpkg-buildpackage) is installed into it with
`apt-get install ./sockmapd_….deb`, then it boots with `systemd-nspawn -b
--private-network` and every command runs inside through nsenter into the
container's PID 1.  Lookups go to the container's own 127.0.0.1:2224 from a
client that enters only its network namespace.  Each container is stopped
by its systemd-nspawn pid after its case, whatever happens.

To add a case: `c = installed()` gives a booted container with the package
installed (MariaDB running, the example tables loaded when `tables=True`);
`configure(c)` follows the README's quick start (its grant, password file
and checks, with the example's four maps); `lookup(c, ...)` and `Session(c)`
talk to the socket.  The blocks of README.md and doc/*.md these cases use
are found by file and marker (tests/lib/readme.py); quick_start_as_written
runs the README's quick start step by step, as a newcomer would.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F403
import container  # noqa: E402
import debpkg  # noqa: E402
import readme  # noqa: E402

pytestmark = pytest.mark.container  # booted Debian under systemd-nspawn (root, build/system)

PASSWORD = "Sys-pw.7f3c9e1a"          # the database password the cases set; searched for in the journal
TEMP_CONFIG_ERROR = b"TEMP sockmapd configuration error"

# ---------------------------------------------------------------- suite fixtures

_deb = None
_base = None


def package():
    """The .deb built from the tree (shared with bb_deploy through build/deb/)."""
    global _deb
    if _deb is None:
        for tool in ("dpkg-buildpackage", "dh", "fakeroot"):
            require_tool(tool)
        _deb, took, built = debpkg.tree_deb()
        print("    %s: %s" % (os.path.basename(_deb), "built in %.0fs" % took if built else "reused"), flush=True)
    return _deb


def base():
    """The cached root; its apt archive holds the package's Depends."""
    global _base
    if _base is None:
        deb = package()
        _base = container.base_root()
        # Once per build of the root, whichever suite built it (bb_sendmail runs first from a clean
        # clone): the marker holds the build's stamp time.
        marker = os.path.join(container.CACHE, "base.predownload")
        built = str(os.stat(os.path.join(container.CACHE, "base.stamp")).st_mtime_ns)
        done = open(marker).read() if os.path.exists(marker) else ""
        if done != built:
            container.predownload(_base, [deb])
            with open(marker, "w") as f:
                f.write(built)
    return _base


def installed(name=None, tables=True, nspawn_args=()):
    """A booted container with the package installed by apt (MariaDB up, the example tables loaded)."""
    deb = package()
    c = container.Container(base(), name or "sys", nspawn_args=nspawn_args)
    out = c.apt_install(["./" + os.path.basename(deb)], files=[deb])
    contains(out, "Setting up sockmapd")
    downloads = re.findall(r"^Get:\d+ \w+://.*$", out, re.M)
    eq(downloads, [], "the Depends come from the cached root's archive, not the network")
    c.boot()
    wait_active(c, "mariadb.service")
    if tables:
        c.write("/root/config.example.sql", open(os.path.join(REPO, "config.example.sql")).read())
        c.run("mariadb < /root/config.example.sql")
    return c


def wait_active(c, unit, timeout=90):
    def up():
        return c.run(["systemctl", "is-active", unit], check=False).out.strip() == "active"
    try:
        wait_for(up, timeout=timeout, interval=0.2, msg=unit + " active")
    except AssertionError as e:
        log = c.run(["journalctl", "--no-pager", "-n", "30", "-u", unit], check=False).out
        raise AssertionError("%s\n%s" % (e, log))


# ---------------------------------------------------------------- talking to the socket

# Runs on the host's python inside the container's network namespace only:
# one connection, a request per stdin line "map key", a reply per stdout line.
CLIENT = r"""
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
source = sys.argv[3] if len(sys.argv) > 3 else None
try:
    s = socket.create_connection((host, port), timeout=20, source_address=(source, 0) if source else None)
except OSError as e:
    for line in sys.stdin.buffer:
        sys.stdout.buffer.write(("<error %s>\n" % (e.strerror or e)).encode())
    sys.exit(0)
buf = b""
def reply():
    global buf
    while True:
        colon = buf.find(b":")
        if colon > 0:
            n = int(buf[:colon])
            if len(buf) >= colon + n + 2:
                out, buf = buf[colon + 1:colon + 1 + n], buf[colon + n + 2:]
                return out
        data = s.recv(65536)
        if not data:
            return b"<closed>" + (b" " + buf if buf else b"")
        buf += data
for line in sys.stdin.buffer:
    req = line.rstrip(b"\n")
    try:
        s.sendall(b"%d:%s," % (len(req), req))
        r = reply()
    except OSError as e:
        r = ("<error %s>" % e.strerror).encode()
    sys.stdout.buffer.write(r + b"\n")
    sys.stdout.buffer.flush()
"""


def _client_argv(c, port=2224, host="127.0.0.1", source=None):
    return ["nsenter", "-t", str(c.leader), "-n", sys.executable, "-c", CLIENT, host, str(port)] + \
        ([source] if source else [])


def lookup(c, *requests, port=2224, source=None):
    """Replies (bytes) to "map key" requests sent on one new connection to the container's socket.

    `source`: the client's address ("127.0.0.2"); a connection that is not
    accepted within 20 s answers each request "<error timed out>"."""
    r = subprocess.run(_client_argv(c, port, source=source), input=b"".join(to_bytes(q) + b"\n" for q in requests),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=scaled(40))
    eq(r.returncode, 0, "client: %r" % r.stderr[-500:])
    return r.stdout.split(b"\n")[:-1]


class Session:
    """A connection kept open across steps: ask() sends one request and returns its reply."""

    def __init__(self, c, port=2224):
        self.p = subprocess.Popen(_client_argv(c, port), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        defer(self.close)

    def ask(self, request):
        self.p.stdin.write(to_bytes(request) + b"\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().rstrip(b"\n")

    def close(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                stop_pid(self.p.pid, popen=self.p)


# ---------------------------------------------------------------- the documents, as written

def code_blocks(text, lang=None):
    blocks = re.findall(r"^( *)```(\w*)\n(.*?)^\1```", text, re.M | re.S)
    return [re.sub(r"^" + indent, "", body, flags=re.M) for indent, l, body in blocks if lang is None or l == lang]


def shell_lines(body):
    """The commands of a shell block without output: its lines, comments dropped."""
    out = []
    for line in body.splitlines():
        line = line.split("  #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def run_shown(c, name, path="README.md", subs=()):
    """Runs a block's "$ " lines in the container as one script (stdout and stderr together); fails unless it
    prints what the block shows.  Digits in the output are compared as digits, not as values."""
    lang, body = readme.block(path, name)
    eq(lang, "sh")
    commands, want = readme.commands_and_output(body)
    script = "exec 2>&1\n" + "\n".join(readme.replace_all(cmd, subs) for cmd in commands)
    r = c.run(script, check=False, timeout=scaled(120))
    readme.compare_output(r.out.splitlines(), want, "%s %s" % (path, name))
    return r


def configure(c, password_in="file"):
    """The README's quick start, steps 2 to 4, with the example's own config (four maps, the package's
    /etc/sockmapd/config.json); password_in: "file" (the quick start), "config", or "none" (unix_socket)."""
    sql = readme.block("README.md", "quickstart-grant")[1]
    # The quick start's password is the test's; "none": a user the database knows by its socket.
    if password_in == "none":
        sql = sql.replace("IDENTIFIED BY 'change-me'", "IDENTIFIED VIA unix_socket")
    else:
        sql = sql.replace("'change-me'", "'%s'" % PASSWORD)
    contains(sql, "localhost")
    c.run(["mariadb", "-e", sql])
    cfg = json.loads(c.read("/etc/sockmapd/config.json"))
    if password_in == "file":
        for line in shell_lines(readme.block("README.md", "quickstart-password")[1]):
            c.run(line.replace("'change-me'", "'%s'" % PASSWORD))
        cfg["database"]["password_file"] = "db-password"
        cfg["database"].pop("password", None)
    elif password_in == "config":
        cfg["database"]["password"] = PASSWORD
    else:
        cfg["database"].pop("password", None)
    # The example's second host is not in this container: the local server alone.
    cfg["database"]["host"] = ["unix:/run/mysqld/mysqld.sock"]
    write_conffile(c, cfg)
    # Step 4's commands (--check-config, the reload, --query): their output is the two-map config's, run by
    # quick_start_as_written; here they must succeed.
    for line in readme.commands_and_output(readme.block("README.md", "quickstart-check")[1])[0]:
        if password_in == "none" and line.startswith("sockmapd "):
            # The database knows the OS user sockmapd by its socket, not root: modes-and-units.md says to
            # check as that user.
            contains(readme.prose("doc/modes-and-units.md"), "`runuser -u sockmapd -- sockmapd -c")
            line = "runuser -u sockmapd -- " + line
        r = c.run(line, check=False, timeout=scaled(30))
        eq(r.rc, 0, "README step %r: %s %s" % (line, r.out, r.err))
    return cfg


def write_conffile(c, cfg):
    """Rewrite /etc/sockmapd/config.json in place (keeping its owner and mode, as an editor would); a running
    sockmapd-listener.service re-reads it (under sockmapd.socket the next connection does)."""
    c.run("cat > /etc/sockmapd/config.json", input=json.dumps(cfg, indent=2) + "\n")
    c.run(["systemctl", "try-reload-or-restart", "sockmapd-listener.service"], timeout=scaled(30))


DEFAULT_UNIT = "sockmapd-listener.service"
SOCKETS = {"listener": "sockmapd-listener.socket", "accept": "sockmapd.socket"}


def use_accept_socket(c):
    """modes-and-units.md's switch to sockmapd.socket (Accept=yes, a unit per connection), as written."""
    listener_steps(c, 0)
    eq(c.run(["systemctl", "is-active", "sockmapd-listener.socket", "sockmapd-listener.service"],
             check=False).out.split(), ["inactive", "inactive"])
    eq(c.run(["systemctl", "is-active", "sockmapd.socket"], check=False).out.strip(), "active")


def use_listener_socket(c):
    """Back to the default pair: the guide's switch the other way round."""
    for line in listener_block(0).splitlines()[::-1]:
        line = line.replace("enable --now", "ENABLE").replace("disable --now", "enable --now").replace(
            "ENABLE", "disable --now")
        c.run(line, timeout=scaled(30))
    eq(c.run(["systemctl", "is-active", "sockmapd.socket"], check=False).out.strip(), "inactive")


def stop_database(c):
    """MariaDB down, its sockets too (Debian 12 socket-activates it: a connection would start it again)."""
    units = [u for u in ("mariadb.socket", "mariadb-extra.socket") if
             c.run(["systemctl", "is-active", u], check=False).out.strip() == "active"]
    c.run(["systemctl", "stop"] + units + ["mariadb.service"], timeout=scaled(60))
    c.stopped_db_units = units
    ok(c.run(["systemctl", "is-active", "mariadb.service"], check=False).out.strip() != "active")


def start_database(c):
    for unit in getattr(c, "stopped_db_units", []) + ["mariadb.service"]:  # the sockets first
        c.run(["systemctl", "start", unit], timeout=scaled(60))


def units_left(c, pattern="sockmapd@*"):
    r = c.run(["systemctl", "list-units", "--all", "--plain", "--no-legend", pattern], check=False)
    return [l.split()[0] for l in r.out.splitlines() if l.strip()]


def failed_units(c):
    r = c.run(["systemctl", "list-units", "--failed", "--plain", "--no-legend"], check=False)
    return [l.split()[0] for l in r.out.splitlines() if l.strip()]


def security_exposure(c, unit="sockmapd@x.service"):
    r = c.run(["systemd-analyze", "security", "--no-pager", unit], check=False)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.out)
    ok(m, "systemd-analyze security: %s %s" % (r.out[-400:], r.err[-400:]))
    return float(m.group(1))


# ---------------------------------------------------------------- cases

@test(timeout=1000)  # on a cold cache it builds the root first (about 4 minutes, longer on a busy machine)
def installed_and_after_reboot():
    """Case 1: the package as apt leaves it (the listener pair enabled, sockmapd.socket shipped but not), and
    again after a reboot; every unit that runs sockmapd at exposure <= 1.1; TEMP before any configuration."""
    c = installed("install")
    for boot in (1, 2):
        eq(c.run(["systemctl", "is-enabled", "sockmapd-listener.socket"], check=False).out.strip(), "enabled")
        eq(c.run(["systemctl", "is-active", "sockmapd-listener.socket"], check=False).out.strip(), "active")
        eq(c.run(["systemctl", "is-enabled", "sockmapd.socket"], check=False).out.strip(), "disabled")
        eq(c.run(["systemctl", "is-active", "sockmapd.socket"], check=False).out.strip(), "inactive")
        eq(c.run(["systemctl", "show", "-P", "Listen", "sockmapd-listener.socket"]).out.strip(),
           "127.0.0.1:2224 (Stream)")
        ok(c.run(["getent", "passwd", "sockmapd"]).out.startswith("sockmapd:"))
        eq(c.run(["stat", "-c", "%a %U:%G", "/etc/sockmapd/config.json"]).out.strip(), "640 root:sockmapd")
        for unit in ("sockmapd-listener.service", "sockmapd@x.service"):
            score = security_exposure(c, unit)
            print("    boot %d: systemd-analyze security %s: %.1f" % (boot, unit, score))
            ok(score <= 1.1, "%s: exposure %.1f > 1.1" % (unit, score))
        # Not configured yet: the database refuses the example's user, so TEMP, on a live connection.
        replies = lookup(c, "recipient postmaster@example.org", "nosuch key")
        eq([r[:5] for r in replies], [b"TEMP ", b"PERM "], "replies before configuration")
        if boot == 1:
            c.reboot()
    eq(failed_units(c), [], "failed units")


@test(timeout=900)
def quick_start_as_written():
    """The README's quick start, step by step as a newcomer runs it, in a booted Debian 12 with Postfix: the
    package, the example tables, the grant, the password file, the two-map config, its checks, the main.cf
    lines, postmap, SMTP (550 for an unknown alias, 554 for a blacklisted sender), the outage; then "Operating
    it": the status line and the password rotation."""
    # Step 1: the build is this tree's package (built as written: dpkg-buildpackage -us -uc -b), installed with
    # apt from the parent directory's name.
    lang, body = readme.block("README.md", "quickstart-build")
    steps = shell_lines(body)
    eq(steps[0], "apt-get build-dep ./", "bb_docs simulates it against debian/control")
    eq(steps[1], "dpkg-buildpackage -us -uc -b")
    deb = os.path.basename(package())
    eq(steps[2], "apt install ../" + deb, "the .deb the build makes")
    c = installed("quickstart", tables=False)
    eq(c.run(["systemctl", "is-active", "sockmapd-listener.socket"], check=False).out.strip(), "active",
       "listening on 127.0.0.1:2224 once installed")
    eq(lookup(c, "recipient postmaster@example.org")[0][:5], b"TEMP ", "TEMP until configured")
    # Step 2: the tables, the grant, the password file.
    for line in shell_lines(readme.block("README.md", "quickstart-tables")[1]):
        c.run(line)
    c.run(["mariadb", "-e", readme.block("README.md", "quickstart-grant")[1]])
    for line in shell_lines(readme.block("README.md", "quickstart-password")[1]):
        c.run(line)
    eq(c.run(["stat", "-c", "%a %U:%G", "/etc/sockmapd/db-password"]).out.strip(), "640 root:sockmapd")
    # Step 3: the config, as written, over the package's (an editor keeps owner and mode).
    lang, body = readme.block("README.md", "quickstart-config")
    eq(lang, "json")
    c.run("cat > /etc/sockmapd/config.json", input=body + "\n")
    eq(c.run(["stat", "-c", "%a %U:%G", "/etc/sockmapd/config.json"]).out.strip(), "640 root:sockmapd")
    # Step 4: --check-config, the reload, --query.
    run_shown(c, "quickstart-check")
    # Step 5: main.cf, then postfix reload.
    lang, body = readme.block("README.md", "quickstart-main-cf")
    for setting in main_cf_settings(body):
        c.run(["postconf", "-e", setting])
    contains(readme.prose("README.md"), "Add to `/etc/postfix/main.cf`, then `postfix reload`")
    c.run("postfix reload", timeout=scaled(60))
    eq(c.run("postconf >/dev/null", check=False).err, "", "postconf warnings")
    # Step 6: postmap, and what the README says SMTP clients get.
    run_shown(c, "quickstart-postmap")
    replies = smtp(c, "someone@example.com", "postmaster@example.org", "anyone@example.com", "nobody@example.org")
    eq([code for code, _ in replies], [250, 250, 250, 550], "\n".join(l for _, l in replies))
    contains(replies[3][1], "5.1.1")
    contains(replies[3][1], "User unknown")
    replies = smtp(c, "spammer@bad.example", "postmaster@example.org")
    eq([code for code, _ in replies], [250, 554], "\n".join(l for _, l in replies))
    contains(replies[1][1], "5.7.1")
    contains(replies[1][1], "spam source")
    # Step 7: the outage as written, then the same through SMTP, and the log lines the README names.
    since = c.run(["date", "+%Y-%m-%d %H:%M:%S"]).out.strip()
    run_shown(c, "quickstart-outage")
    stop_database(c)
    replies = smtp(c, "other@bad.example", "postmaster@example.org")
    eq([code for code, _ in replies], [250, 451], "\n".join(l for _, l in replies))
    contains(replies[1][1], "4.3.5")
    contains(replies[1][1], "Server configuration error")
    c.run(["postconf", "-e", "smtpd_sender_restrictions ="])
    c.run("postfix reload", timeout=scaled(60))
    replies = smtp(c, "someone@example.com", "someone@example.org")
    eq([code for code, _ in replies], [250, 451], "an alias in the outage: " + "\n".join(l for _, l in replies))
    start_database(c)
    journal = c.run(["journalctl", "--no-pager", "-o", "cat", "--since", since]).out
    # The README's line, for the alias looked up in the outage (the first SMTP session stopped at the
    # sender check, before its recipient was looked up).
    warned = re.findall(r'socketmap:inet:127\.0\.0\.1:2224:recipient lookup error for "([^"]*)"', journal)
    ok("someone@example.org" in warned, "Postfix's warning for the alias, as the README shows it: %r\n%s"
       % (warned, "\n".join(l for l in journal.splitlines() if "warning" in l)))
    contains(journal, "no database host answered for map recipient", "sockmapd's error")
    contains(journal, "cannot connect to database host unix:/run/mysqld/mysqld.sock")
    eq(lookup(c, "recipient postmaster@example.org"), [b"OK root@example.net"], "back after the outage")
    # Operating it: the status line; the password rotation (a restart, the new password read).
    r = c.run(["systemctl", "show", "-P", "StatusText", "sockmapd-listener.service"])
    lang, body = readme.block("README.md", "operate-status")
    commands, want = readme.commands_and_output(body)
    eq(commands, ["systemctl show -P StatusText sockmapd-listener.service"])
    digits = lambda lines: [re.sub(r"\d+", "N", l) for l in lines]
    readme.compare_output(digits(r.out.splitlines()), digits(want), "operate-status")
    for line in shell_lines(readme.block("README.md", "operate-rotate")[1]):
        c.run(line, timeout=scaled(60))
    eq(lookup(c, "recipient postmaster@example.org", "sender other@mail.bad.example"),
       [b"OK root@example.net", b"OK REJECT domain blacklisted"], "after the rotation")
    eq(c.run(["mariadb", "-u", "sockmapd", "-pnew-secret", "-N", "-e", "SELECT 1"]).out.strip(), "1",
       "the new password is the database's")
    eq(failed_units(c), [], "failed units")


@test(timeout=600)
def readme_setup_steps_as_written():
    """Case 2: the quick start's steps (grant, password file, checks) with the example's four maps."""
    c = installed("readme")
    configure(c, "file")
    eq(lookup(c, "recipient postmaster@example.org", "recipient nobody@example.org",
              "virtual Info+news@Example.ORG", "transport example.net", "sender spammer@bad.example"),
       [b"OK root@example.net", b"NOTFOUND ", b"OK alice@example.net", b"OK smtp:[mx.example.net]",
        b"OK REJECT spam source"])
    eq(failed_units(c), [], "failed units")


@test(timeout=600)
def password_in_config_file_or_nowhere():
    """Case 2b: the password in the config, and no password at all (unix_socket): each works as documented."""
    c = installed("pw")
    configure(c, "config")
    eq(lookup(c, "recipient postmaster@example.org"), [b"OK root@example.net"], "password in the config")
    c.run(["mariadb", "-e", "DROP USER 'sockmapd'@'localhost'"])
    configure(c, "none")
    not_contains(c.read("/etc/sockmapd/config.json"), "password")
    eq(lookup(c, "recipient postmaster@example.org"), [b"OK root@example.net"], "no password (unix_socket)")
    eq(failed_units(c), [], "failed units")



@test(timeout=600)
def handler_that_cannot_start_is_a_failed_unit():
    """A handler systemd cannot start, or one with a broken config, shows in systemctl --failed, logged at error."""
    c = installed("failing")
    configure(c, "file")
    use_accept_socket(c)
    # A setting systemd cannot apply: the user does not exist.
    c.write("/etc/systemd/system/sockmapd@.service.d/broken.conf", "[Service]\nUser=nosuchuser\n")
    c.run(["systemctl", "daemon-reload"])
    since = c.run(["date", "+%Y-%m-%d %H:%M:%S"]).out.strip()
    replies = lookup(c, "recipient postmaster@example.org")
    ok(replies[0].startswith(b"<closed>") or replies[0].startswith(b"<error"), "no answer: %r" % replies)
    wait_for(lambda: failed_units(c), timeout=scaled(10), msg="a failed unit")
    failed = failed_units(c)
    eq(len(failed), 1, failed)
    startswith(failed[0], "sockmapd@")
    r = c.run(["journalctl", "--no-pager", "-p", "err", "--since", since, "-o", "cat"])
    contains(r.out, "Failed to determine user credentials")
    c.run(["systemctl", "reset-failed", "sockmapd@*"])
    c.run(["rm", "/etc/systemd/system/sockmapd@.service.d/broken.conf"])
    c.run(["systemctl", "daemon-reload"])
    eq(lookup(c, "recipient postmaster@example.org"), [b"OK root@example.net"], "fixed")
    eq(failed_units(c), [])
    # A broken config: TEMP for the MTA, and a failed unit for the administrator.
    c.run("echo '{' > /etc/sockmapd/config.json")
    eq(lookup(c, "recipient postmaster@example.org"), [TEMP_CONFIG_ERROR])
    wait_for(lambda: len(failed_units(c)) == 1, timeout=scaled(10), msg="a failed unit for the broken config")


@test(timeout=600)
def database_outage_and_failover():
    """Case 3: MariaDB stopped -> TEMP (new and kept connection), back -> OK; a dead first host is skipped."""
    c = installed("outage")
    configure(c, "file")
    kept = Session(c)
    eq(kept.ask("recipient postmaster@example.org"), b"OK root@example.net")
    stop_database(c)
    eq(lookup(c, "recipient postmaster@example.org")[0][:5], b"TEMP ", "new connection, database stopped")
    eq(kept.ask("recipient postmaster@example.org")[:5], b"TEMP ", "kept connection, database stopped")
    eq(kept.ask("recipient nobody@example.org")[:5], b"TEMP ", "never NOTFOUND in an outage")
    start_database(c)
    eq(lookup(c, "recipient postmaster@example.org"), [b"OK root@example.net"], "new connection, database back")
    eq(kept.ask("recipient postmaster@example.org"), b"OK root@example.net", "kept connection, database back")
    kept.close()

    # Two hosts, the first dead (nothing listens there): the first handler
    # finds out, the next one skips it through /run/sockmapd.
    cfg = json.loads(c.read("/etc/sockmapd/config.json"))
    cfg["database"]["host"] = ["127.0.0.1:3307", "unix:/run/mysqld/mysqld.sock"]
    cfg["sysconfig"]["loglevel"] = "info"
    write_conffile(c, cfg)
    since = c.run(["date", "+%Y-%m-%d %H:%M:%S"]).out.strip()
    eq(lookup(c, "recipient postmaster@example.org"), [b"OK root@example.net"], "first handler")
    eq(lookup(c, "recipient postmaster@example.org"), [b"OK root@example.net"], "second handler")
    # failover.state alone: the counters' file beside it names every host too.
    state = c.run("cat /run/sockmapd/failover.state", check=False).out
    contains(state, "127.0.0.1:3307", "the dead host in the shared state")
    journal = c.run(["journalctl", "--no-pager", "-o", "cat", "-t", "sockmapd", "--since", since]).out
    tried = [l for l in journal.splitlines() if "cannot connect to database host 127.0.0.1:3307" in l]
    eq(len(tried), 1, "only the first handler tried the dead host:\n" + journal)
    wait_for(lambda: units_left(c) == [], timeout=scaled(10), msg="no per-connection units left")
    eq(failed_units(c), [], "failed units")


@test(timeout=600)
def journal_summary_fields_and_no_secrets():
    """Case 4: one summary per connection with its fields; no password anywhere; no keys below debug."""
    c = installed("journal")
    configure(c, "file")
    since = c.run(["date", "+%Y-%m-%d %H:%M:%S"]).out.strip()
    secret_key = "needle-4711@example.org"
    for _ in range(3):
        eq(lookup(c, "recipient postmaster@example.org", "recipient " + secret_key),
           [b"OK root@example.net", b"NOTFOUND "])
    wait_for(lambda: units_left(c) == [], timeout=scaled(10), msg="handlers ended")
    r = c.run(["journalctl", "--no-pager", "-o", "json", "-t", "sockmapd", "--since", since])
    entries = [json.loads(l) for l in r.out.splitlines() if l.strip()]
    summaries = [e for e in entries if e.get("MESSAGE", "").startswith("session end")]
    eq(len(summaries), 3, "one summary per connection: %r" % [e.get("MESSAGE") for e in entries])
    for e in summaries:
        startswith(e.get("REMOTE_ADDR", ""), "127.0.0.1:", "REMOTE_ADDR")
        eq(e.get("PRIORITY"), "6", "summary at info")
        contains(e["MESSAGE"], "2 requests, 1 found, 1 not found, 0 errors")
        eq({k: e.get(k) for k in ("SOCKMAP_END", "SOCKMAP_REQUESTS", "SOCKMAP_FOUND", "SOCKMAP_NOTFOUND",
                                  "SOCKMAP_ERRORS")},
           {"SOCKMAP_END": "client closed", "SOCKMAP_REQUESTS": "2", "SOCKMAP_FOUND": "1",
            "SOCKMAP_NOTFOUND": "1", "SOCKMAP_ERRORS": "0"}, "the summary's fields")
        ok(e.get("SOCKMAP_DURATION_MS", "").isdigit(), "SOCKMAP_DURATION_MS")
        eq(e.get("_SYSTEMD_UNIT"), DEFAULT_UNIT, "logged by the default unit's handler")
    connected = [e for e in entries if e.get("MESSAGE", "").startswith("connected to database host")]
    # A handler of the default unit serves one connection after another and keeps its database connection.
    ok(1 <= len(connected) <= 3, "at most one database connection per client connection: %d" % len(connected))
    for e in connected:
        eq(e.get("SOCKMAP_DB_HOST"), "unix:/run/mysqld/mysqld.sock", "SOCKMAP_DB_HOST")
    everything = c.run(["journalctl", "--no-pager", "-o", "export"]).out
    not_contains(everything, PASSWORD, "the password in the journal")
    not_contains(everything, secret_key, "a key in the journal below debug")
    not_contains(c.run(["ps", "-eo", "args"]).out, PASSWORD, "the password on a command line")


# An SMTP dialogue with the container's Postfix, from the host's smtplib in its
# network namespace: MAIL FROM, then each RCPT TO; a line "code text" per reply.
SMTP_CLIENT = r"""
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", 25, timeout=60)
s.ehlo("client.example.com")
code, msg = s.mail(sys.argv[1])
print(code, msg.decode().replace("\n", " "))
for rcpt in sys.argv[2:]:
    code, msg = s.rcpt(rcpt)
    print(code, msg.decode().replace("\n", " "))
s.quit()
"""


def smtp(c, sender, *rcpts):
    r = subprocess.run(["nsenter", "-t", str(c.leader), "-n", sys.executable, "-c", SMTP_CLIENT, sender] + list(rcpts),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=scaled(120))
    eq(r.returncode, 0, "smtp client: %r" % r.stderr[-800:])
    return [(int(l.split()[0]), l) for l in r.stdout.decode().splitlines()]


def readme_main_cf():
    """The main.cf lines of doc/postfix.md, the example's four maps (comments dropped, continuations joined)."""
    lang, body = readme.block("doc/postfix.md", "postfix-main-cf")
    eq(lang, "")
    return main_cf_settings(body)


def main_cf_settings(text):
    settings = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[:1].isspace() and settings:
            settings[-1] += " " + line.strip()
        else:
            settings.append(line.strip())
    return [re.sub(r"\s+", " ", re.sub(r"\s*=\s*", " = ", s, count=1)) for s in settings]


def man_text(name):
    with open(os.path.join(REPO, "doc", name)) as f:
        text = f.read()
    return text.replace("\\-", "-").replace("\\(aq", "'").replace("\\(ga", "`")


def man_example_lines(page, after):
    """The .nf block of a man page that follows the line `after`."""
    m = re.search(re.escape(after) + r".*?^\.nf\n(.*?)^\.fi", man_text(page), re.M | re.S)
    ok(m, "%s: a block after %r" % (page, after))
    return m.group(1)


# The map each Sendmail feature declares: the name Sendmail sends.
SENDMAIL_FEATURE_MAPS = {"access_db": "access", "virtusertable": "virtuser", "mailertable": "mailertable",
                         "genericstable": "generics", "domaintable": "domaintable", "authinfo": "authinfo"}


def sendmail_maps(text):
    """The map names of a sendmail.mc's socket-map features."""
    return [SENDMAIL_FEATURE_MAPS[f] for f in re.findall(r"^FEATURE\(`(\w+)', `socket ", text, re.M)]


@test
def documented_examples_are_one_set_of_maps():
    """config.example.json, the guides' and the man pages' Postfix/Sendmail lines name the same maps; the
    quick start's maps are the example's, by the same names."""
    with open(os.path.join(REPO, "config.example.json")) as f:
        example = json.load(f)
    services = [m["service"] for m in example["postmaps"]]
    readme_cf = readme_main_cf()
    eq(main_cf_settings(man_example_lines("sockmapd.8", ".IR main.cf :")), readme_cf,
       "sockmapd(8) EXAMPLES main.cf = postfix.md's")
    used = re.findall(r"socketmap:inet:127\.0\.0\.1:2224:(\w+)", " ".join(readme_cf))
    eq(sorted(set(used)), sorted(services), "postfix.md's main.cf uses every map of config.example.json, no other")
    quick = json.loads(readme.block("README.md", "quickstart-config")[1])["postmaps"]
    eq([m for m in quick if m not in example["postmaps"]], [], "the quick start's maps are the example's")
    quick_cf = main_cf_settings(readme.block("README.md", "quickstart-main-cf")[1])
    eq(sorted(set(re.findall(r"socketmap:inet:127\.0\.0\.1:2224:(\w+)", " ".join(quick_cf)))),
       sorted(m["service"] for m in quick), "the quick start's main.cf uses its two maps")
    readme_sendmail = sendmail_maps(readme.block("doc/sendmail.md", "sendmail-mc")[1])
    man_sendmail = sendmail_maps(man_example_lines("sockmapd.8", ".IR sendmail.mc"))
    ok(readme_sendmail, "Sendmail maps in sendmail.md")
    eq(man_sendmail, readme_sendmail, "sockmapd(8) Sendmail = sendmail.md's")
    sendmail_services = [m["service"] for m in json.loads(readme.block("doc/sendmail.md", "sendmail-maps")[1])]
    eq(sorted(readme_sendmail), sorted(sendmail_services), "sendmail.md's Sendmail maps are in its postmaps block")
    json5 = man_example_lines("sockmapd.json.5", ".SH EXAMPLE")
    eq(json.loads(json5)["postmaps"], example["postmaps"], "sockmapd.json(5) EXAMPLE maps = config.example.json's")
    # Nothing in a check_*_access restriction is a map whose values are not access(5) actions.
    for setting in readme_cf:
        for table in re.findall(r"check_\w+_access socketmap:inet:127\.0\.0\.1:2224:(\w+)", setting):
            eq(table, "sender", "access maps answer actions")


@test(timeout=600)
def postfix_smtpd_chrooted_with_the_readme_lines():
    """Case 5: a real chrooted smtpd with postfix.md's main.cf: 250, 550, 554 with the reason, 451 in an outage;
    the example maps' search orders (a domain blacklist, an address row over its domain's, a catch-all, a
    transport by domain)."""
    c = installed("postfix")
    configure(c, "file")
    master = c.read("/etc/postfix/master.cf")
    ok(re.search(r"^smtp\s+inet\s+n\s+-\s+y\s", master, re.M), "Debian's smtpd is chrooted")
    settings = readme_main_cf()
    for s in settings:
        c.run(["postconf", "-e", s])
    c.run(["postfix", "check"])
    c.run(["systemctl", "restart", "postfix.service"], timeout=scaled(60))
    wait_for(lambda: c.run("postfix status", check=False).rc == 0, timeout=scaled(20), msg="postfix running")
    warnings = c.run("postconf >/dev/null", check=False).err
    eq(warnings, "", "postconf warnings")

    replies = smtp(c, "someone@example.com", "postmaster@example.org", "info@example.org", "nobody@example.org")
    eq([code for code, _ in replies], [250, 250, 250, 550], "\n".join(l for _, l in replies))
    contains(replies[3][1], "User unknown")
    replies = smtp(c, "spammer@bad.example", "postmaster@example.org")
    eq([code for code, _ in replies], [250, 554], "\n".join(l for _, l in replies))
    contains(replies[1][1], "spam source")
    # Postfix asks the socketmap for the sender's full address only; the
    # sender map's "search": "access" finds the bad.example row for the rest
    # of the domain and its subdomains, and the address row wins over it.
    for sender in ("other@bad.example", "someone@mail.bad.example"):
        replies = smtp(c, sender, "postmaster@example.org")
        eq([code for code, _ in replies], [250, 554], sender + ": " + "\n".join(l for _, l in replies))
        contains(replies[1][1], "domain blacklisted")
    replies = smtp(c, "friend@bad.example", "postmaster@example.org")
    eq([code for code, _ in replies], [250, 250], "\n".join(l for _, l in replies))
    # The recipient map's "@example.com" catch-all ("search": "virtual");
    # example.org has none.
    replies = smtp(c, "someone@example.com", "anyone@example.com", "nobody@example.org")
    eq([code for code, _ in replies], [250, 250, 550], "\n".join(l for _, l in replies))
    # The transport by domain: trivial-rewrite asks for alice@example.net
    # (and "*"), "search": "transport" answers the example.net row, so the
    # smtp client goes to [mx.example.net] (an A lookup) instead of
    # example.net's MX.
    since = c.run(["date", "+%Y-%m-%d %H:%M:%S"]).out.strip()
    c.run(["sendmail", "-bv", "alice@example.net"], input="")

    def verified():
        log = c.run(["journalctl", "--no-pager", "-o", "cat", "--since", since, "-t", "postfix/smtp"]).out
        return [l for l in log.splitlines() if "to=<alice@example.net>" in l]
    wait_for(verified, timeout=scaled(60), interval=0.5, msg="the smtp client's verdict for alice@example.net")
    line = verified()[0]
    contains(line, "mx.example.net", "the transport map's next hop")
    not_contains(line, "type=MX", "not the default route")

    stop_database(c)
    for sender, rcpt in (("someone@example.com", "postmaster@example.org"), ("other@bad.example", "postmaster@example.org"),
                         ("friend@bad.example", "postmaster@example.org")):
        replies = smtp(c, sender, rcpt)
        eq([code for code, _ in replies], [250, 451], "%s: %s" % (sender, "\n".join(l for _, l in replies)))
    # Without the sender check, the recipient's own lookups: the catch-all
    # and the transport map defer too, never accept.
    c.run(["postconf", "-e", "smtpd_sender_restrictions ="])
    c.run(["postfix", "reload"])
    replies = smtp(c, "someone@example.com", "anyone@example.com", "alice@example.net")
    eq([code for code, _ in replies], [250, 451, 451], "\n".join(l for _, l in replies))
    start_database(c)
    # Another sender: smtpd keeps each (sender, recipient)'s resolver answer,
    # the outage's failure included, for as long as the process lives.
    replies = smtp(c, "someone.else@example.com", "anyone@example.com", "alice@example.net")
    eq([code for code, _ in replies], [250, 250, 250], "\n".join(l for _, l in replies))
    for s in settings:
        c.run(["postconf", "-e", s])
    c.run(["postfix", "reload"])
    replies = smtp(c, "someone@example.com", "postmaster@example.org")
    eq([code for code, _ in replies], [250, 250], "\n".join(l for _, l in replies))
    log = c.run(["journalctl", "--no-pager", "-o", "cat", "-u", "postfix@-.service", "-t", "postfix/smtpd"]).out
    not_contains(log, "unknown smtpd restriction")


@test(timeout=600)
def postfix_proxymap_over_the_unix_socket():
    """Case 5b: postfix.md's unix socket in /run (its systemctl edit block) through the unchrooted proxymap; then
    its socket under the queue directory, named relative to it, for the chrooted smtpd itself."""
    c = installed("proxymap")
    configure(c, "file")
    lang, dropin = readme.block("doc/postfix.md", "postfix-run-socket")
    eq(lang, "ini")
    postfix = readme.prose("doc/postfix.md")
    contains(postfix, "`systemctl edit sockmapd-listener.socket`, then `systemctl restart sockmapd-listener.socket`")
    c.write("/etc/systemd/system/sockmapd-listener.socket.d/override.conf", dropin)
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "restart", "sockmapd-listener.socket"], timeout=scaled(60))
    eq(c.run(["stat", "-c", "%a %U:%G", "/run/sockmapd.sock"]).out.strip(), "660 root:postfix")
    m = re.search(r"`(proxy:socketmap:unix:/run/sockmapd\.sock:\w+)`, listed in `proxy_read_maps`", postfix)
    ok(m, "the guide's proxymap form")
    table = m.group(1)
    for setting in ("virtual_alias_domains = example.org", "virtual_alias_maps = " + table):
        c.run(["postconf", "-e", setting])
    # The guide: maps named in Postfix's own parameters are in proxy_read_maps already.
    contains(postfix, "are in it by default")
    contains(c.run(["postconf", "-h", "proxy_read_maps"]).out, "$virtual_alias_maps")
    c.run(["systemctl", "restart", "postfix.service"], timeout=scaled(60))
    wait_for(lambda: c.run("postfix status", check=False).rc == 0, timeout=scaled(20), msg="postfix running")
    replies = smtp(c, "someone@example.com", "postmaster@example.org", "nobody@example.org")
    eq([code for code, _ in replies], [250, 250, 550], "\n".join(l for _, l in replies))
    eq(lookup(c, "recipient postmaster@example.org")[0][:7], b"<error ", "nothing on 127.0.0.1:2224 any more")
    # The socket's group keeps other local users out (dmz-and-security.md, "A local user").
    as_postfix = c.run(["postmap", "-q", "postmaster@example.org", "socketmap:unix:/run/sockmapd.sock:recipient"],
                       user="postfix", check=False)
    eq((as_postfix.rc, as_postfix.out), (0, "root@example.net\n"), "a member of the group postfix")
    c.run(["useradd", "--no-create-home", "someone"])  # a local user with a group of its own
    as_other = c.run(["postmap", "-q", "postmaster@example.org", "socketmap:unix:/run/sockmapd.sock:recipient"],
                     user="someone", check=False)
    ne(as_other.rc, 0, "another local user")
    contains(as_other.err, "Permission denied")

    # The socket under Postfix's queue directory, named relative to it: the chrooted smtpd connects itself.
    lang, dropin = readme.block("doc/postfix.md", "postfix-chroot-socket")
    eq(lang, "ini")
    c.write("/etc/systemd/system/sockmapd-listener.socket.d/override.conf", dropin)
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "restart", "sockmapd-listener.socket"], timeout=scaled(60))
    c.run(["systemctl", "restart", "sockmapd-listener.service"], timeout=scaled(60))
    eq(c.run(["stat", "-c", "%a %U:%G", "/var/spool/postfix/sockmapd"]).out.strip(), "660 root:postfix")
    relative = re.search(r"\(`(socketmap:unix:sockmapd:\w+)`\)", postfix)
    absolute = re.search(r"`(socketmap:unix:/var/spool/postfix/sockmapd:\w+)`", postfix)
    ok(relative and absolute, "the guide's two forms")
    c.run(["postconf", "-e", "virtual_alias_maps = " + relative.group(1)])
    c.run("postfix reload", timeout=scaled(60))
    ok(re.search(r"^smtp\s+inet\s+n\s+-\s+y\s", c.read("/etc/postfix/master.cf"), re.M), "smtpd chrooted")
    replies = smtp(c, "someone@example.com", "postmaster@example.org", "nobody@example.org")
    eq([code for code, _ in replies], [250, 250, 550], "chrooted smtpd, relative socket: " +
       "\n".join(l for _, l in replies))
    as_postfix = c.run(["postmap", "-q", "postmaster@example.org", absolute.group(1)], user="postfix", check=False)
    eq((as_postfix.rc, as_postfix.out), (0, "root@example.net\n"), "postmap with the absolute form")


@test(timeout=600)
def xinetd_with_the_shipped_file():
    """Case 6: modes-and-units.md's xinetd steps: answers on 127.0.0.1:2224 and logs to syslog (facility mail)."""
    c = installed("xinetd")
    configure(c, "file")
    # xinetd takes the port the socket unit had: the guide is for hosts without the socket.
    c.run(["systemctl", "disable", "--now", "sockmapd-listener.socket"])
    lang, body = readme.block("doc/modes-and-units.md", "modes-xinetd")
    eq(lang, "sh")
    for line in body.splitlines():
        line = line.split("  #", 1)[0].strip()
        if line:
            c.run(line, timeout=scaled(30))
    since = c.run(["date", "+%Y-%m-%d %H:%M:%S"]).out.strip()

    def answers():
        try:
            return lookup(c, "recipient postmaster@example.org") == [b"OK root@example.net"]
        except AssertionError:
            return False
    wait_for(answers, timeout=scaled(20), interval=0.5, msg="xinetd answers")
    eq(lookup(c, "recipient nobody@example.org", "nosuch key"), [b"NOTFOUND ", b"PERM unknown map"])

    # The file binds 127.0.0.1 only.
    def listening_2224():
        out = []
        for f in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in c.run(["cat", f]).out.splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[1].endswith(":08B0"):
                    out.append(fields[1])
        return out
    eq(listening_2224(), ["0100007F:08B0"], "xinetd listens on 127.0.0.1 only")
    # Ten clients at once, each a handler of its own, two lookups each.
    sessions = [Session(c) for _ in range(10)]
    for _ in range(2):
        for s in sessions:
            eq(s.ask("recipient postmaster@example.org"), b"OK root@example.net")
    for s in sessions:
        s.close()
    # Postfix's own client, many keys on one connection.
    r = c.run(["postmap", "-q", "-", "socketmap:inet:127.0.0.1:2224:recipient"],
              input="postmaster@example.org\nnone@example.org\n")
    eq(r.out, "postmaster@example.org\troot@example.net\n", "postmap -q - through xinetd")
    r = c.run(["journalctl", "--no-pager", "-o", "json", "-t", "sockmapd", "--since", since])
    entries = [json.loads(l) for l in r.out.splitlines() if l.strip()]
    summaries = [e for e in entries if e.get("MESSAGE", "").startswith("session end")]
    ok(len(summaries) >= 2, "summaries through syslog: %r" % [e.get("MESSAGE") for e in entries])
    where = {(e.get("_TRANSPORT"), e.get("SYSLOG_FACILITY"), e.get("_SYSTEMD_UNIT"), e.get("_COMM")) for e in summaries}
    # journald reads a sender's unit and name from /proc when it reads the line: a handler that has
    # exited by then leaves them out (seen once in CI).  Every line came through syslog as mail, and
    # those that name a sender name xinetd's handler.
    eq({w[:2] for w in where}, {("syslog", "2")}, "how the handlers log")
    eq({w for w in where if w[2:] != (None, None)}, {("syslog", "2", "xinetd.service", "sockmapd")},
       "where the handlers log")
    contains(readme.prose("doc/modes-and-units.md"), "else to syslog (facility `mail`; in the journal under "
             "`xinetd.service`", "the guide says so")
    eq(units_left(c), [], "no socket-activated handlers")
    # A flood of connections past xinetd's default rate (50 a second) leaves
    # the service up: the file sets no rate limit.
    made, took = flood(c, 200)
    # Past 50 a second, or the flood would not test the rate limit.
    ok(made == 200 and made / took > 55, "the flood: %d connections in %.1fs" % (made, took))
    wait_for(answers, timeout=scaled(20), interval=0.5, msg="xinetd answers after the flood")
    xinetd_log = c.run(["journalctl", "--no-pager", "-o", "cat", "-u", "xinetd.service", "--since", since]).out
    not_contains(xinetd_log, "excessive incoming connections")
    # The handlers share the failover state in the package's /run/sockmapd.
    cfg = json.loads(c.read("/etc/sockmapd/config.json"))
    cfg["database"]["host"] = ["127.0.0.1:3307", "unix:/run/mysqld/mysqld.sock"]
    write_conffile(c, cfg)
    eq(lookup(c, "recipient postmaster@example.org"), [b"OK root@example.net"], "a dead first host")
    eq(c.run(["stat", "-c", "%U", "/run/sockmapd/failover.state"]).out.strip(), "sockmapd")
    contains(c.run(["cat", "/run/sockmapd/failover.state"]).out, "127.0.0.1:3307")  # /run is the container's own
    handlers_log = c.run(["journalctl", "--no-pager", "-o", "cat", "-t", "sockmapd", "--since", since]).out
    not_contains(handlers_log, "failover state")


FLOOD = r"""
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
made, started = 0, time.monotonic()
for i in range(n):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
        made += 1
    except OSError:
        pass
print(made, time.monotonic() - started)
"""


def flood(c, n, port=2224):
    """n connections opened and closed at once, as fast as they go, from the container's network; (made, seconds)."""
    r = subprocess.run(["nsenter", "-t", str(c.leader), "-n", sys.executable, "-c", FLOOD, str(port), str(n)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=scaled(120))
    eq(r.returncode, 0, "flood: %r" % r.stderr[-300:])
    made, took = r.stdout.split()
    return int(made), float(took)


# Fetches a URL from inside the container's network namespace (the host's python).
FETCH = r"""
import sys, urllib.request
sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())
"""


def fetch(c, url):
    r = subprocess.run(["nsenter", "-t", str(c.leader), "-n", sys.executable, "-c", FETCH, url],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=scaled(30))
    return r.stdout.decode(errors="replace") if r.returncode == 0 else ""


def sample(text, line_prefix):
    """The value of the sample line starting with `line_prefix` (name and labels), or None."""
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


@test(timeout=1200)  # a cold cache builds the node-exporter layer (and the base root) first
def metrics_scraped_by_node_exporter_and_prometheus():
    """The installed package's counters through node_exporter's textfile collector (Debian's
    prometheus-node-exporter, in a cached layer over the root) to a real Prometheus (the host's binary,
    in the container's network namespace only), whose query API returns the lookups the test made."""
    base()  # the package's Depends in the root's archive
    layer = container.layer_root("node-exporter", ["prometheus-node-exporter"])
    deb = package()
    c = container.Container(layer, "metrics")
    defer(c.stop)
    contains(c.apt_install(["./" + os.path.basename(deb)], files=[deb]), "Setting up sockmapd")
    c.boot()
    wait_active(c, "mariadb.service")
    c.write("/root/config.example.sql", open(os.path.join(REPO, "config.example.sql")).read())
    c.run("mariadb < /root/config.example.sql")
    configure(c, "file")
    eq(c.run(["systemctl", "is-enabled", "sockmapd-metrics.timer"], check=False).out.strip(), "enabled")
    wait_active(c, "prometheus-node-exporter.service")
    before = sample(c.run(["sockmapd", "--stats"]).out, 'sockmapd_lookups_total{map="recipient",result="OK"}') or 0
    n = 7
    for _ in range(n):
        eq(lookup(c, "recipient postmaster@example.org", "recipient nobody@example.org"),
           [b"OK root@example.net", b"NOTFOUND "])
    want = before + n
    key = 'sockmapd_lookups_total{map="recipient",result="OK"}'
    # The guide's scrape: its URL, fetched from inside the container.
    url = re.search(r"http://\S+", readme.block("doc/monitoring.md", "monitoring-scrape")[1]).group(0)
    wait_for(lambda: sample(fetch(c, url), key) == want, timeout=scaled(60),
             msg="node_exporter serves %s %d" % (key, want))
    scrape = fetch(c, url)
    eq(sample(scrape, "node_textfile_scrape_error"), 0, "the textfile collector read the file")
    print("    " + "\n    ".join(l for l in scrape.splitlines() if l.startswith("sockmapd_") and
                                   not l.endswith(" 0") and "_bucket" not in l), flush=True)
    # Prometheus scraping node_exporter, asked through its query API.
    tool = require_tool("prometheus")
    d = tmpdir("prometheus")
    with open(os.path.join(d, "prometheus.yml"), "w") as f:
        f.write("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: node\n"
                "    static_configs:\n      - targets: ['127.0.0.1:9100']\n")
    with open(os.path.join(d, "out"), "wb") as out:
        prom = subprocess.Popen(["nsenter", "-t", str(c.leader), "-n", tool,
                                 "--config.file=" + os.path.join(d, "prometheus.yml"),
                                 "--storage.tsdb.path=" + os.path.join(d, "data"),
                                 "--web.listen-address=127.0.0.1:9090"], stdout=out, stderr=out,
                                start_new_session=True)
    defer(stop_pid, prom.pid, 5.0, prom)
    query = "http://127.0.0.1:9090/api/v1/query?query=" + \
        "sockmapd_lookups_total%7Bmap%3D%22recipient%22%2Cresult%3D%22OK%22%7D"

    def answered():
        text = fetch(c, query)
        m = re.search(r'"value":\[[0-9.]+,"([0-9.]+)"\]', text)
        return m and float(m.group(1)) == want
    wait_for(answered, timeout=scaled(90), interval=1, msg="Prometheus answers %d: %s" % (want, fetch(c, query)))
    print("    Prometheus: " + fetch(c, query), flush=True)
    eq(c.run(["systemctl", "is-failed", "sockmapd-metrics.service"], check=False).out.strip(), "inactive")
    # The guide's commands for a person, and its drop-in for another textfile directory.
    read = [c.run(line, timeout=scaled(30)).out for line in shell_lines(
        readme.block("doc/monitoring.md", "monitoring-read")[1])]
    contains(read[1], '%s %d' % (key, want))
    ok(re.search(r"handlers running \(\d+ idle\), \d+ connections served, [1-9]\d* lookups, 0 TEMP", read[2]),
       "the status line: %s" % read[2])
    dropin = readme.block("doc/monitoring.md", "monitoring-dropin")[1]
    c.write("/etc/systemd/system/sockmapd-metrics.service.d/override.conf", dropin)
    c.run(["mkdir", "-p", "/srv/textfile"])
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "start", "sockmapd-metrics.service"], timeout=scaled(30))
    contains(c.read("/srv/textfile/sockmapd.prom"), "%s %d" % (key, want))
    exposure = security_exposure(c, "sockmapd-listener.service")
    eq(exposure, 1.1, "the listener's sandbox is unchanged")
    print("    exposure: sockmapd-listener.service %.1f, sockmapd-metrics.service %.1f"
          % (exposure, security_exposure(c, "sockmapd-metrics.service")), flush=True)


@test(timeout=600)
def connection_flood_leaves_the_socket_listening():
    """Case 6b: 400 connections in a burst, against the default pair and sockmapd.socket: both stay; with
    systemd's default trigger limit sockmapd.socket would fail."""
    c = installed("flood")
    configure(c, "file")
    started = c.run(["date", "+%Y-%m-%d %H:%M:%S"]).out.strip()
    made, took = flood(c, 400)
    eq(made, 400, "connections made to the listener")
    wait_for(lambda: lookup(c, "recipient postmaster@example.org") == [b"OK root@example.net"],
             timeout=scaled(30), interval=0.5, msg="the listener answers after the flood")
    eq(c.run(["systemctl", "is-active", "sockmapd-listener.socket", "sockmapd-listener.service"],
             check=False).out.split(), ["active", "active"])
    log = c.run(["journalctl", "--no-pager", "-o", "cat", "-u", "sockmapd-listener.service", "-u",
                 "sockmapd-listener.socket", "--since", started]).out
    for bad in ("Failed with result", "Scheduled restart", "Trigger limit hit", "start-limit"):
        not_contains(log, bad)
    use_accept_socket(c)
    since = c.run(["date", "+%Y-%m-%d %H:%M:%S"]).out.strip()
    made, took = flood(c, 400)
    eq(made, 400, "connections made")
    eq(c.run(["systemctl", "is-active", "sockmapd.socket"], check=False).out.strip(), "active")
    # The flood's handlers end by themselves: a unit started per connection, about 8 a second on a quiet
    # 2-core machine (bench/RESULTS.md), several times fewer beside other work: 400 may take minutes.
    t0 = time.monotonic()
    wait_for(lambda: not units_left(c), timeout=400, interval=1, msg="the flood's sockmapd@ units ended")
    print("    sockmapd.socket: the flood's 400 units ended %.0f s after it" % (time.monotonic() - t0), flush=True)
    # Then lookups are answered again.
    wait_for(lambda: lookup(c, "recipient postmaster@example.org") == [b"OK root@example.net"],
             timeout=scaled(30), interval=0.5, msg="answers after the flood")
    log = c.run(["journalctl", "--no-pager", "-o", "cat", "-u", "sockmapd.socket", "--since", since]).out
    not_contains(log, "Trigger limit hit")
    # The same burst against systemd's default (200 in 2 s) fails the socket:
    # the flood is strong enough to show what the setting prevents.
    c.write("/etc/systemd/system/sockmapd.socket.d/override.conf",
            "[Socket]\nTriggerLimitIntervalSec=2s\nTriggerLimitBurst=200\n")
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "restart", "sockmapd.socket"])

    def failed():
        return c.run(["systemctl", "is-failed", "sockmapd.socket"], check=False).out.strip() == "failed"
    # More than 200 connections in 2 s: on a machine busy with other work one flood may be slower; up to three.
    rates = []
    for _ in range(3):
        made, took = flood(c, 400)
        rates.append(round(made / took))
        try:
            wait_for(failed, timeout=10, interval=0.5, msg="the trigger limit")
            break
        except AssertionError:
            pass
    ok(failed(), "sockmapd.socket failed under the default trigger limit (floods of %s connections/s)" % rates)
    contains(c.run(["journalctl", "--no-pager", "-o", "cat", "-u", "sockmapd.socket", "--since", since]).out,
             "Trigger limit hit")


# Runs in the container's network namespace while a package is upgraded: a new
# connection and one lookup every 50 ms until stdin closes; a line per reply.
LOOP_CLIENT = r"""
import socket, sys, threading, time
port, req = int(sys.argv[1]), sys.argv[2].encode()
frame = b"%d:%s," % (len(req), req)
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
while not stop.is_set():
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(frame)
        data = b""
        while not data.endswith(b","):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        r = data.decode(errors="replace")
    except OSError as e:
        r = "<error %s>" % e
    print(r, flush=True)
    time.sleep(0.05)
"""


class LookupLoop:
    """New connections with a lookup each, one after the other, until stop(): the replies."""

    def __init__(self, c, request="recipient postmaster@example.org"):
        self.p = subprocess.Popen(["nsenter", "-t", str(c.leader), "-n", sys.executable, "-c", LOOP_CLIENT, "2224",
                                   request], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        defer(self.stop)

    def stop(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            try:
                self.p.wait(scaled(60))
            except subprocess.TimeoutExpired:
                stop_pid(self.p.pid, popen=self.p)
        return self.p.stdout.read().decode(errors="replace").splitlines() if self.p.stdout else []


def upgrade(c, tag):
    """apt-get install of the package's files as the next higher version, as an upgrade; its output."""
    old = c.run(["dpkg-query", "-W", "-f", "${Version}", "sockmapd"]).out
    version = re.sub(r"-(\d+)$", lambda m: "-%d" % (int(m.group(1)) + 1), old)
    newer = debpkg.rebuild_with_version(package(), version, tmpdir("upgrade-" + tag))
    shutil.copy(newer, c.path("/root/" + os.path.basename(newer)))
    r = c.run("cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y -q ./" + os.path.basename(newer),
              timeout=scaled(180))
    eq(re.findall(r"^Get:\d+ \w+://.*$", r.out, re.M), [], "nothing downloaded for the upgrade")
    eq(c.run(["dpkg-query", "-W", "-f", "${Version}", "sockmapd"]).out, version)
    return r.out


def upgrade_while_looking_up(c, tag):
    """An upgrade with lookups going on: every one answered, several during the upgrade."""
    loop = LookupLoop(c)
    wait_for(lambda: lookup(c, "recipient postmaster@example.org") == [b"OK root@example.net"], msg="answering")
    upgrade(c, tag)
    replies = loop.stop()
    ok(len(replies) >= 3, "lookups during the upgrade: %r" % replies)
    eq(sorted(set(replies)), ["19:OK root@example.net,"], "every lookup answered during the upgrade")
    return len(replies)


def enabled_active(c, unit):
    return [c.run(["systemctl", verb, unit], check=False).out.strip() for verb in ("is-enabled", "is-active")]


@test(timeout=900)
def upgrades_keep_the_enabled_unit_answering_then_purge():
    """Case 7: upgrades (the same files as higher versions) answer throughout and keep the admin's choice of
    unit and config: the default pair (its service restarted on the new binary), sockmapd.socket switched to,
    and sockmapd.socket as an older package left it (no helper state for the listener); purge cleans up."""
    c = installed("lifecycle")
    configure(c, "file")
    before = c.read("/etc/sockmapd/config.json")
    eq(lookup(c, "recipient postmaster@example.org"), [b"OK root@example.net"])
    pid = c.run(["systemctl", "show", "-P", "MainPID", DEFAULT_UNIT]).out.strip()
    n = upgrade_while_looking_up(c, "1")
    print("    default pair: %d lookups during the upgrade, all answered" % n, flush=True)
    eq(c.read("/etc/sockmapd/config.json"), before, "the edited conffile after the upgrade")
    eq(c.run(["stat", "-c", "%a %U:%G", "/etc/sockmapd/config.json", "/etc/sockmapd/db-password"]).out.split("\n")[:2],
       ["640 root:sockmapd"] * 2)
    eq(enabled_active(c, "sockmapd-listener.socket"), ["enabled", "active"])
    eq(enabled_active(c, "sockmapd.socket"), ["disabled", "inactive"])
    wait_active(c, DEFAULT_UNIT)
    new_pid = c.run(["systemctl", "show", "-P", "MainPID", DEFAULT_UNIT]).out.strip()
    ok(new_pid not in ("0", pid), "the service restarted: MainPID %s -> %s" % (pid, new_pid))
    eq(c.run(["readlink", "/proc/%s/exe" % new_pid]).out.strip(), "/usr/sbin/sockmapd", "runs the new binary")
    eq(failed_units(c), [], "failed units")

    # sockmapd.socket, switched to as the README says: kept enabled and listening.
    use_accept_socket(c)
    for tag, note in (("2", "switched to by the administrator"),
                      ("3", "as a package before the listener was the default left it")):
        if tag == "3":
            c.run("rm -f /var/lib/systemd/deb-systemd-helper-enabled/sockmapd-listener.socket.dsh-also "
                  "/var/lib/systemd/deb-systemd-helper-enabled/sockets.target.wants/sockmapd-listener.socket")
        n = upgrade_while_looking_up(c, tag)
        print("    sockmapd.socket %s: %d lookups during the upgrade, all answered" % (note, n), flush=True)
        eq(enabled_active(c, "sockmapd.socket"), ["enabled", "active"], note)
        eq(enabled_active(c, "sockmapd-listener.socket"), ["disabled", "inactive"], note)
        eq(failed_units(c), [], "failed units")
    use_listener_socket(c)
    eq(lookup(c, "recipient postmaster@example.org"), [b"OK root@example.net"], "the default pair again")

    kept = Session(c)
    eq(kept.ask("recipient postmaster@example.org"), b"OK root@example.net")
    c.run("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q sockmapd", timeout=scaled(180))
    eq(kept.ask("recipient postmaster@example.org"), b"<closed>", "the open session closed by the stop")
    kept.close()
    for path in ("/etc/sockmapd", "/usr/sbin/sockmapd", "/lib/systemd/system/sockmapd.socket",
                 "/lib/systemd/system/sockmapd@.service", "/lib/systemd/system/sockmapd-listener.socket",
                 "/lib/systemd/system/sockmapd-listener.service", "/usr/share/doc/sockmapd"):
        ok(not os.path.lexists(c.path(path)), path + " left after purge")
    ok(not c.run("ls /etc/systemd/system/*/sockmapd*", check=False).out.strip(), "no enablement links left")
    wait_for(lambda: units_left(c, "sockmapd*") == [], timeout=scaled(15), msg="no sockmapd units after purge")
    eq(c.run(["pgrep", "-x", "sockmapd"], check=False).out, "", "no sockmapd process after purge")
    eq(lookup(c, "recipient postmaster@example.org"), [b"<error Connection refused>"])
    eq(failed_units(c), [], "failed units")

# ---------------------------------------------------------------- the Accept=no pair (sockmapd-listener)

def journal_since(c, since, unit):
    r = c.run(["journalctl", "--no-pager", "-o", "json", "-u", unit, "--since", since])
    return [json.loads(l) for l in r.out.splitlines() if l.strip()]


def listener_block(which):
    """modes-and-units.md's shell block `which` (0: the switch to sockmapd.socket, 1: reload and status)."""
    lang, body = readme.block("doc/modes-and-units.md", ["modes-switch-to-accept", "modes-reload-status"][which])
    eq(lang, "sh")
    return body


def listener_steps(c, which):
    """Runs modes-and-units.md's shell block `which` as written; their output."""
    out = ""
    for line in listener_block(which).splitlines():
        r = c.run(line, check=False, timeout=scaled(30))
        eq(r.rc, 0, "README step %r: %s %s" % (line, r.out, r.err))
        out += r.out
    return out


@test(timeout=900)
def listener_pair_lookups_reload_outage_stop_and_journal():
    """The Accept=no pair, the default: lookups, reload good and broken, an outage TEMP and back, stop with a
    session open, its journal lines and exposure."""
    c = installed("listener")
    since = c.run(["date", "+%Y-%m-%d %H:%M:%S"]).out.strip()
    cfg = configure(c, "file")
    eq(c.run(["systemctl", "is-active", "sockmapd.socket"], check=False).out.strip(), "inactive")
    eq(lookup(c, "recipient postmaster@example.org"), [b"OK root@example.net"], "first connection")
    wait_active(c, "sockmapd-listener.service")
    eq(lookup(c, "recipient postmaster@example.org", "recipient nobody@example.org"),
       [b"OK root@example.net", b"NOTFOUND "])
    eq(units_left(c), [], "no unit per connection")
    wait_for(lambda: "2 connections served" in c.run(["systemctl", "show", "-p", "StatusText", "--value",
                                                       "sockmapd-listener.service"]).out, msg="STATUS=")
    exposure = security_exposure(c, "sockmapd-listener.service")
    print("    sockmapd-listener.service exposure under systemd: %.1f" % exposure, flush=True)
    ok(exposure <= 1.1, "exposure %.1f" % exposure)

    # Reload: a good config (a map renamed) for new connections; a kept one keeps its own.
    kept = Session(c)
    eq(kept.ask("recipient postmaster@example.org"), b"OK root@example.net")
    renamed = json.loads(json.dumps(cfg))
    renamed["postmaps"][0]["service"] = "recipient2"
    write_conffile(c, renamed)
    status = listener_steps(c, 1)  # the guide's reload and status lines
    contains(status, "handlers running")
    wait_for(lambda: any("reload: configuration read" in e.get("MESSAGE", "")
                         for e in journal_since(c, since, "sockmapd-listener.service")), msg="reload logged")
    eq(lookup(c, "recipient2 postmaster@example.org"), [b"OK root@example.net"], "new config, new connection")
    eq(kept.ask("recipient postmaster@example.org"), b"OK root@example.net", "old config, kept connection")
    # A broken config: logged, the previous one kept.
    c.run("cat > /etc/sockmapd/config.json", input="{ broken\n")
    c.run(["systemctl", "reload", "sockmapd-listener.service"])
    wait_for(lambda: any("keeping the previous configuration" in e.get("MESSAGE", "")
                         for e in journal_since(c, since, "sockmapd-listener.service")), msg="broken reload logged")
    eq(lookup(c, "recipient2 postmaster@example.org"), [b"OK root@example.net"], "still the good config")
    wait_active(c, "sockmapd-listener.service")
    write_conffile(c, cfg)
    c.run(["systemctl", "reload", "sockmapd-listener.service"])

    # An outage: TEMP on new and kept connections, never NOTFOUND; then back.
    stop_database(c)
    eq(lookup(c, "recipient postmaster@example.org")[0][:5], b"TEMP ", "new connection, database stopped")
    eq(kept.ask("recipient nobody@example.org")[:5], b"TEMP ", "kept connection, database stopped")
    start_database(c)
    eq(lookup(c, "recipient postmaster@example.org"), [b"OK root@example.net"], "database back")
    eq(kept.ask("recipient postmaster@example.org"), b"OK root@example.net", "kept connection, database back")

    # Stop with a session open: it ends cleanly (no reset), the service stops in time.
    t0 = time.monotonic()
    c.run(["systemctl", "stop", "sockmapd-listener.service"], timeout=scaled(60))
    ok(time.monotonic() - t0 < 10, "stopped in %.1fs" % (time.monotonic() - t0))
    eq(kept.ask("recipient postmaster@example.org"), b"<closed>", "the open session closed, not reset")
    kept.close()
    # The socket stays: the next connection starts the service again.
    eq(lookup(c, "recipient postmaster@example.org"), [b"OK root@example.net"], "started again by its socket")

    entries = journal_since(c, since, "sockmapd-listener.service")
    text = "\n".join(e.get("MESSAGE", "") for e in entries)
    contains(text, "listening on sockets from systemd: sockmapd 127.0.0.1:2224")
    contains(text, "stopping on Terminated")
    not_contains(text, "sending SIGTERM", "every handler ended by itself")
    summaries = [e for e in entries if e.get("MESSAGE", "").startswith("session end")]
    ok(len(summaries) >= 5, "session summaries: %r" % text[-2000:])
    for e in summaries:
        startswith(e.get("REMOTE_ADDR", ""), "127.0.0.1:", "REMOTE_ADDR")
        eq(e.get("_SYSTEMD_UNIT"), "sockmapd-listener.service")
    not_contains(c.run(["journalctl", "--no-pager", "-o", "export"]).out, PASSWORD, "the password in the journal")
    eq([u for u in failed_units(c) if u.startswith("sockmapd")], [], "failed units")


def dmz_dropin_on_loopback():
    """dmz-and-security.md's socket drop-in (for sockmapd.socket here), the MTA and the inside address both
    127.0.0.1."""
    lang, body = readme.block("doc/dmz-and-security.md", "dmz-socket-dropin")
    eq(lang, "ini")
    body = body.replace("198.51.100.10:2224", "127.0.0.1:2224").replace("192.0.2.25", "127.0.0.1")
    contains(body, "IPAddressAllow=127.0.0.1")
    return body


def refused_by_sockmapd(replies):
    """Closed without a reply: EOF, or a reset when the request was still unread at the close."""
    return replies in ([b"<closed>"], [b"<error Connection reset by peer>"])


def accepted(c, unit="sockmapd.socket"):
    return int(c.run(["systemctl", "show", "-P", "NAccepted", unit]).out.strip())


@test(timeout=900)
def who_may_connect_ip_address_allow_and_allow_list():
    """IPAddressAllow= on the socket drops a stranger's packets where BPF is allowed; sockmapd's allow-list refuses it everywhere."""
    # systemd-nspawn's seccomp filter forbids bpf() unless told otherwise:
    # this boot lets the container's systemd load its cgroup packet filter.
    c = installed("allow", nspawn_args=["--system-call-filter=bpf"])
    configure(c, "file")
    # The guide's drop-in on sockmapd.socket, switched to as modes-and-units.md says (the default pair holds
    # the port otherwise, and NAccepted counts only Accept=yes connections).
    use_accept_socket(c)
    c.write("/etc/systemd/system/sockmapd.socket.d/dmz.conf", dmz_dropin_on_loopback() + "\n")
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "restart", "sockmapd.socket"])
    eq(lookup(c, "recipient postmaster@example.org"), [b"OK root@example.net"], "the MTA's address")
    before = accepted(c)
    eq(lookup(c, "recipient postmaster@example.org", source="127.0.0.2"), [b"<error timed out>"],
       "a stranger's connection never completes")
    eq(accepted(c), before, "systemd accepted nothing from the stranger: no handler started")
    not_contains(c.run("journalctl -b --no-pager", check=False).out, "does not support BPF/cgroup firewalling")

    # sockmapd's own list (the guide's JSON, the MTA 127.0.0.1); then a
    # boot under nspawn's default filter, where systemd cannot apply
    # IPAddressAllow= and says so once.
    cfg = json.loads(c.read("/etc/sockmapd/config.json"))
    allow = readme.block("doc/dmz-and-security.md", "dmz-allow")[1]
    cfg["sysconfig"].update(json.loads("{" + allow.replace("192.0.2.25", "127.0.0.1") + "}")["sysconfig"])
    write_conffile(c, cfg)
    c.nspawn_args = []
    c.reboot()
    wait_active(c, "mariadb.service")
    # In a container systemd says so only at debug level, once per manager.
    not_contains(c.run("journalctl -b --no-pager", check=False).out, "BPF/cgroup firewalling")
    c.run(["systemd-analyze", "log-level", "debug"])
    c.run(["systemctl", "daemon-reexec"])
    c.run(["systemd-analyze", "log-level", "debug"])
    c.run(["systemctl", "restart", "sockmapd.socket"])
    wait_for(lambda: "does not support BPF/cgroup firewalling" in c.run(
        "journalctl -b --no-pager -g 'BPF/cgroup firewalling'", check=False).out, timeout=scaled(10),
        msg="systemd's debug message: the IP firewall is not applied")
    c.run(["systemd-analyze", "log-level", "info"])
    since = c.run(["date", "+%Y-%m-%d %H:%M:%S"]).out.strip()
    before = accepted(c)
    for _ in range(3):
        ok(refused_by_sockmapd(lookup(c, "recipient postmaster@example.org", source="127.0.0.2")),
           "no reply to the stranger: sockmapd closes the connection")
    eq(accepted(c), before + 3, "without BPF systemd accepts the stranger; sockmapd refuses it")
    eq(lookup(c, "recipient postmaster@example.org"), [b"OK root@example.net"], "the MTA is served")

    def refusals():
        r = c.run(["journalctl", "--no-pager", "-o", "json", "-t", "sockmapd", "--since", since])
        entries = [json.loads(l) for l in r.out.splitlines() if l.strip()]
        return [e for e in entries if "refused a connection" in e.get("MESSAGE", "")]
    wait_for(lambda: refusals(), timeout=scaled(10), msg="the refusal in the journal")
    found = refusals()
    eq(len(found), 1, "one warning for three refusals: %r" % [e["MESSAGE"] for e in found])
    eq(found[0]["MESSAGE"], "refused a connection from 127.0.0.2: not in sysconfig.allow")
    eq((found[0].get("PRIORITY"), found[0].get("REMOTE_ADDR")), ("4", "127.0.0.2"), "at warning, with REMOTE_ADDR")
    wait_for(lambda: units_left(c) == [], timeout=scaled(10), msg="no per-connection units left")
    eq(failed_units(c), [], "a refused connection is not a failed unit")

    # The service mode: the listener refuses before forking a handler.
    c.run(["systemctl", "disable", "--now", "sockmapd.socket"])
    c.run(["systemctl", "enable", "--now", "sockmapd-listener.socket"])
    since = c.run(["date", "+%Y-%m-%d %H:%M:%S"]).out.strip()
    ok(refused_by_sockmapd(lookup(c, "recipient postmaster@example.org", source="127.0.0.2")),
       "service mode: refused")
    eq(lookup(c, "recipient postmaster@example.org"), [b"OK root@example.net"], "service mode: the MTA")
    journal = c.run(["journalctl", "--no-pager", "-o", "cat", "-u", "sockmapd-listener.service", "--since", since]).out
    contains(journal, "refused a connection from 127.0.0.2: not in sysconfig.allow")
    not_contains(journal, "for 127.0.0.2:", "no handler forked for the stranger")
    contains(journal, "for 127.0.0.1:")
    eq([u for u in failed_units(c) if u.startswith("sockmapd")], [], "failed units")



# ---------------------------------------------------------------- Postfix's numbers (issue: sized for its defaults)

# Many connections from one process in the container's network namespace,
# driven by commands on stdin, one JSON line back for each:
#   open N P         N more connections, no request yet, P s apart
#   ask A B REQ      REQ on connections A..B-1 at once: their replies
#   close A B        close connections A..B-1
#   probe T REQ      a new connection (kept as the next index): REQ, seconds to the reply, or null after T s
#   wait I T         the reply of connection I within T s (after a probe that got none)
#   busy A B S REQ   connections A..B-1 ask REQ over and over for S s: replies per status word
MANY_CLIENT = r"""
import json, resource, socket, sys, time
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (65536 if hard == resource.RLIM_INFINITY else hard, hard))  # past 1024
conns, bufs = [], []
def frame(req):
    return b"%d:%s," % (len(req), req)
def reply(i, deadline):
    s = conns[i]
    while True:
        b = bufs[i]
        colon = b.find(b":")
        if colon > 0:
            n = int(b[:colon])
            if len(b) >= colon + n + 2:
                bufs[i] = b[colon + n + 2:]
                return b[colon + 1:colon + 1 + n].decode(errors="replace")
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        s.settimeout(left)
        try:
            data = s.recv(65536)
        except socket.timeout:
            return None
        except OSError as e:
            return "<error %s>" % e.strerror
        if not data:
            return "<closed>"
        bufs[i] += data
def connect():
    s = socket.create_connection(("127.0.0.1", 2224), timeout=30)
    conns.append(s)
    bufs.append(b"")
    return len(conns) - 1
for line in sys.stdin:
    cmd = line.rstrip("\n").split(" ")
    try:
        if cmd[0] == "open":
            for _ in range(int(cmd[1])):
                connect()
                time.sleep(float(cmd[2]))
            out = {"open": len(conns)}
        elif cmd[0] == "ask":
            a, b, req = int(cmd[1]), int(cmd[2]), " ".join(cmd[3:]).encode()
            for i in range(a, b):
                conns[i].sendall(frame(req))
            deadline = time.monotonic() + 120
            out = {"replies": [reply(i, deadline) for i in range(a, b)]}
        elif cmd[0] == "close":
            for i in range(int(cmd[1]), int(cmd[2])):
                conns[i].close()
            out = {}
        elif cmd[0] == "probe":
            t0 = time.monotonic()
            i = connect()
            conns[i].sendall(frame(" ".join(cmd[2:]).encode()))
            r = reply(i, t0 + float(cmd[1]))
            out = {"index": i, "reply": r, "seconds": time.monotonic() - t0 if r is not None else None}
        elif cmd[0] == "wait":
            t0 = time.monotonic()
            r = reply(int(cmd[1]), t0 + float(cmd[2]))
            out = {"reply": r, "seconds": time.monotonic() - t0}
        elif cmd[0] == "busy":
            a, b, secs, req = int(cmd[1]), int(cmd[2]), float(cmd[3]), " ".join(cmd[4:]).encode()
            counts = {}
            end = time.monotonic() + secs
            while time.monotonic() < end:
                for i in range(a, b):
                    conns[i].sendall(frame(req))
                for i in range(a, b):
                    r = reply(i, time.monotonic() + 30) or "<none>"
                    counts[r.split(" ")[0]] = counts.get(r.split(" ")[0], 0) + 1
            out = {"counts": counts}
        else:
            out = {"error": "unknown command"}
    except OSError as e:
        out = {"error": str(e)}
    print(json.dumps(out), flush=True)
"""


class Many:
    """MANY_CLIENT in the container's network namespace; each method one command."""

    def __init__(self, c):
        self.p = subprocess.Popen(["nsenter", "-t", str(c.leader), "-n", sys.executable, "-c", MANY_CLIENT],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        defer(self.stop)
        self.count = 0

    def cmd(self, *words):
        self.p.stdin.write((" ".join(str(w) for w in words) + "\n").encode())
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        ok(line, "the client ended on %r" % (words,))
        out = json.loads(line)
        ok("error" not in out, "%r: %r" % (words, out))
        return out

    def open(self, n, pause=0):
        self.count = self.cmd("open", n, pause)["open"]

    def ask(self, a, b, req="recipient postmaster@example.org"):
        return self.cmd("ask", a, b, req)["replies"]

    def probe(self, timeout, req="recipient postmaster@example.org"):
        out = self.cmd("probe", timeout, req)
        self.count = out["index"] + 1
        return out

    def stop(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            try:
                self.p.wait(scaled(30))
            except subprocess.TimeoutExpired:
                stop_pid(self.p.pid, popen=self.p)


def db_connections(c):
    return int(c.run(["mariadb", "-N", "-e", "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                                            "WHERE USER='sockmapd'"]).out.strip())


def handler_pss_kib(c, unit):
    """Pss of each handler process (KiB): the accept loop's children, or every sockmapd@ handler."""
    if unit == "listener":
        main_pid = c.run(["systemctl", "show", "-P", "MainPID", DEFAULT_UNIT]).out.strip()
        pids = c.run(["pgrep", "-P", main_pid], check=False).out.split()
    else:
        pids = c.run(["pgrep", "-x", "sockmapd"], check=False).out.split()
    return [kib for _, kib in proc_fields(c, pids, "smaps_rollup", "Pss")]


def proc_fields(c, pids, name, field):
    """[(pid, the number after `field:`)] in /proc/PID/NAME, one grep for all (a process per pid takes minutes
    with 1000 handlers on a busy machine); processes gone meanwhile left out."""
    if not pids:
        return []
    out = c.run("grep -H '^%s:' %s 2>/dev/null" % (field, " ".join("/proc/%s/%s" % (p, name) for p in pids)),
                check=False, timeout=scaled(120)).out
    return [(int(m.group(1)), int(m.group(2))) for m in re.finditer(r"^/proc/(\d+)/\S+:\w+:\s+(\d+)", out, re.M)]


def service_tasks_and_pss(c):
    """(tasks, Pss MiB) of sockmapd-listener.service: the accept loop and its handlers, every thread counted
    (the container has no memory or pids accounting of its own to ask)."""
    main_pid = c.run(["systemctl", "show", "-P", "MainPID", DEFAULT_UNIT]).out.strip()
    pids = [main_pid] + c.run(["pgrep", "-P", main_pid], check=False).out.split()
    tasks = sum(n for _, n in proc_fields(c, pids, "status", "Threads"))
    return tasks, round(sum(kib for _, kib in proc_fields(c, pids, "smaps_rollup", "Pss")) / 1024, 1)


def status_text(c):
    return c.run(["systemctl", "show", "-P", "StatusText", DEFAULT_UNIT]).out.strip()


def sampling_db_connections(c, fn):
    """(fn(), the database connections counted every 0.5 s while it ran)."""
    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append(db_connections(c))
            time.sleep(0.5)
    t = threading.Thread(target=sample)
    t.start()
    try:
        return fn(), samples
    finally:
        done.set()
        t.join()


def measure_300_idle_50_busy(c, unit, m):
    """300 connections that each looked up, idle past db_idle_timeout, then a new connection's first answer
    and 50 more connections busy: the figures for the report."""
    fig = {}
    base = m.count
    # sockmapd.socket: paced below systemd's trigger limit (200 activations in 2 s by default).
    m.open(300, 0 if unit == "listener" else 0.05)
    replies = m.ask(base, base + 300)
    if sorted(set(replies)) != ["OK root@example.net"]:
        raise AssertionError("%s: 300 connections, a lookup each: %r\n%s" % (
            unit, sorted(set(replies)), c.run(["journalctl", "--no-pager", "-n", "30", "-u", SOCKETS[unit]]).out))
    fig["db connections, 300 just looked up"] = db_connections(c)
    # Idle: each handler gives its database connection back after db_idle_timeout (10 s).
    t0 = time.monotonic()
    wait_for(lambda: db_connections(c) <= 1, timeout=scaled(40), interval=1, msg="database connections closed idle")
    fig["seconds until the idle handlers closed theirs"] = round(time.monotonic() - t0, 1)
    pss = handler_pss_kib(c, unit)
    ok(len(pss) >= 300, "%s: %d handler processes for 300 connections" % (unit, len(pss)))
    fig["Pss per idle handler KiB (mean)"] = round(sum(pss) / len(pss))
    probe = m.probe(scaled(5))
    eq(probe["reply"], "OK root@example.net", "%s: a new connection with 300 open and idle" % unit)
    fig["new connection's first answer with 300 idle, ms"] = round(probe["seconds"] * 1000, 1)
    ok(probe["seconds"] < 1.0, "%s: first answer after %.3f s with 300 connections idle" % (unit, probe["seconds"]))
    # 50 busy beside the 300 idle.
    busy = m.count
    m.open(50, 0 if unit == "listener" else 0.05)
    out, samples = sampling_db_connections(c, lambda: m.cmd("busy", busy, busy + 50, 5,
                                                             "recipient postmaster@example.org"))
    counts = out["counts"]
    eq(list(counts), ["OK"], "%s: 50 busy connections" % unit)
    fig["db connections, 300 idle + 50 busy (max)"] = max(samples)
    fig["lookups by the 50 busy in 5 s"] = counts["OK"]
    return fig


def size_mariadb_as_postfix_md_says(c):
    """postfix.md's sizing: max_connections where the guide puts it, MariaDB restarted, sockmapd answering."""
    lang, cnf = readme.block("doc/postfix.md", "postfix-mariadb-max-connections")
    eq(lang, "ini")
    contains(cnf, "[mysqld]")
    path, restart = cnf_path_and_restart()
    c.write(path, cnf)
    c.run(restart, timeout=scaled(120))
    wait_active(c, "mariadb.service")
    eq(c.run(["mariadb", "-N", "-e", "SELECT @@max_connections"]).out.strip(), "600")
    wait_for(lambda: lookup(c, "recipient postmaster@example.org") == [b"OK root@example.net"], timeout=scaled(30),
             msg="answering after the database restart")


@test(timeout=1200)
def sized_for_postfix_300_connections_and_the_cap():
    """The default unit holds Postfix's 300 (100 each of smtpd, cleanup, trivial-rewrite): with MariaDB's default
    max_connections the lookups past it answer TEMP (1040, not a host failure); with the README's sizing all
    answer; with 300 idle a new connection answers within 1 s; Pss per idle handler; the handler cap at its edge
    (it waits, never refused; TasksMax agrees).  Then the same 300 through sockmapd.socket."""
    c = installed("capacity")
    cfg = configure(c, "file")
    figures = {}
    eq(c.run(["mariadb", "-N", "-e", "SELECT @@max_connections"]).out.strip(), "151", "MariaDB's default")

    # MariaDB's default: 300 handlers that each look up at once do not fit.
    m = Many(c)
    m.open(300)
    t0 = time.monotonic()
    replies = m.ask(0, 300)
    took = time.monotonic() - t0
    answered = replies.count("OK root@example.net")
    full = replies.count("TEMP database server full (too many connections)")
    print("    max_connections 151, 300 lookups at once: %d OK, %d TEMP server full, in %.1f s"
          % (answered, full, took), flush=True)
    eq(answered + full, 300, "OK or TEMP, nothing else: %r" % sorted(set(replies)))
    ok(answered >= 50 and full > 0, "the server's limit shows: %d OK" % answered)
    # A handler gives its database connection back after db_idle_timeout (10 s): lookups spread over
    # longer than that (a loaded machine) may find a freed one.
    if took < cfg["database"].get("db_idle_timeout", 10):
        ok(answered <= 151, "no more OK than max_connections: %d OK" % answered)
    eq(c.run("cat /run/sockmapd/failover.state 2>/dev/null", check=False).out.count("mysqld.sock"), 0,
       "a full server is not marked down")
    m.cmd("close", 0, 300)
    m.stop()

    size_mariadb_as_postfix_md_says(c)

    for unit in ("listener", "accept"):
        if unit == "accept":
            use_accept_socket(c)
        since = c.run(["date", "+%Y-%m-%d %H:%M:%S"]).out.strip()
        m = Many(c)
        figures[unit] = measure_300_idle_50_busy(c, unit, m)
        if unit == "listener":
            fig = figures[unit]
            fig["tasks, Pss MiB of the service at 351"] = "%d, %.1f" % service_tasks_and_pss(c)
            # The cap at its edge: every handler forked (TasksMax agrees), the next connection waits, not refused.
            svc = c.read("/lib/systemd/system/sockmapd-listener.service")
            cap = int(re.search(r"--max-children (\d+)", svc).group(1))
            m.open(cap - m.count)
            wait_for(lambda: status_text(c).startswith("%d handlers running" % cap), timeout=scaled(60),
                     msg="%d handlers running" % cap)
            tasks, pss_mib = service_tasks_and_pss(c)
            tasks_max = int(c.run(["systemctl", "show", "-P", "TasksMax", DEFAULT_UNIT]).out)
            fig["tasks, Pss MiB of the service at the cap"] = "%d, %.1f" % (tasks, pss_mib)
            ok(tasks + 2 <= tasks_max, "%d tasks at the cap (and ExecReload's) within TasksMax=%d" % (tasks, tasks_max))
            replies = m.ask(m.count - 10, m.count)
            eq(sorted(set(replies)), ["OK root@example.net"], "the last handlers below the cap answer")
            waiting = m.probe(2)
            eq(waiting["reply"], None, "connection %d waits behind the cap" % (cap + 1))
            m.cmd("close", 0, 1)
            got = m.cmd("wait", waiting["index"], scaled(10))
            eq(got["reply"], "OK root@example.net", "answered once a handler ended")
            fig["connection cap+1: waited 2 s, answered once one closed"] = "yes"
            journal = c.run(["journalctl", "--no-pager", "-o", "cat", "-u", DEFAULT_UNIT, "--since", since]).out
            contains(journal, "all %d handlers busy: new connections wait" % cap)
            not_contains(journal, "fork:", "every fork succeeded")
        m.cmd("close", 0, m.count)
        m.stop()
        eq([u for u in failed_units(c) if u.startswith("sockmapd")], [], "failed units")
    print("    %-52s %18s %18s" % ("", "listener (default)", "sockmapd.socket"))
    for key in figures["listener"]:
        print("    %-52s %18s %18s" % (key, figures["listener"][key], figures["accept"].get(key, "-")), flush=True)
    with open(os.path.join(tmpdir("figures"), "capacity.json"), "w") as f:
        json.dump(figures, f)
    ok(figures["listener"]["Pss per idle handler KiB (mean)"] <= 512, "Pss per idle handler")


# A burst of SMTP sessions at once, from the host's smtplib in the container's
# network namespace: each MAIL FROM, then each RCPT TO; a JSON list of codes per session.
SMTP_BURST = r"""
import json, smtplib, sys, threading
n, sender, rcpts = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
start = threading.Barrier(n)
out = [None] * n
def one(i):
    codes = []
    try:
        start.wait(60)
        s = smtplib.SMTP("127.0.0.1", 25, timeout=120)
        s.ehlo("client%d.example.com" % i)
        codes.append(s.mail(sender)[0])
        for r in rcpts:
            codes.append(s.rcpt(r)[0])
        s.quit()
    except Exception as e:
        codes.append("%s: %s" % (type(e).__name__, e))
    out[i] = codes
ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print(json.dumps(out))
"""


def journal_sessions(c, since_epoch, unit_prefix):
    """The "session end" entries journald received since `since_epoch` (s): (time, fields), of units starting
    with unit_prefix, or of no unit journald could tell (a handler that exits at once may be gone before it
    looks); the lines of the unit switched away from may come late and are left out."""
    r = c.run(["journalctl", "--no-pager", "-o", "json", "-t", "sockmapd", "--since", "@%d" % int(since_epoch)])
    out = []
    for line in r.out.splitlines():
        e = json.loads(line)
        if e.get("MESSAGE", "").startswith("session end") and e.get("_SYSTEMD_UNIT", unit_prefix).startswith(
                unit_prefix):
            out.append((int(e["__REALTIME_TIMESTAMP"]) / 1e6, e))
    return out


def burst_evidence(c, since):
    """What the container logged since `since` of a burst gone wrong: every warning and error (Postfix's
    lookup errors, sockmapd's TEMP, the database's), Postfix's rejects, the units' starts and stops; the
    whole journal goes to a file of the suite directory (kept with KEEP_TMP=1)."""
    c.run(["journalctl", "--sync"], check=False)
    text = c.run(["journalctl", "--no-pager", "-o", "short-precise", "--since", since], check=False,
                 timeout=scaled(60)).out
    path = os.path.join(tmpdir("journal"), "burst.journal")
    with open(path, "w") as f:
        f.write(text)
    pick = re.compile(r"warning|error|fatal|panic|reject|TEMP|denied|refused|limit|Too many|"
                      r"Start|Stopp|Started|Stopped|Deactivated|Failed|killed", re.I)
    lines = [l for l in text.splitlines() if pick.search(l)]
    return "journal (%d lines, in %s), %d of them picked:\n%s" % (
        len(text.splitlines()), path, len(lines), "\n".join(lines[:150]))


@test(timeout=1200)
def postfix_reconnects_after_pauses_and_a_burst_of_100_sessions():
    """A real smtpd with the README's main.cf, through the default unit and through sockmapd.socket: mails with
    pauses over 10 s (Postfix closes idle socketmap connections after 10 s: each reconnect answered, seen in the
    journal's session lines), and 100 SMTP sessions at once (Postfix's process limit), every recipient right."""
    c = installed("postfix-load")
    configure(c, "file")
    for s_ in readme_main_cf():
        c.run(["postconf", "-e", s_])
    limit = int(c.run(["postconf", "-h", "default_process_limit"]).out)
    maxproc = c.run(["postconf", "-M", "smtp/inet"]).out.split()[6]
    ok(limit >= 100 and maxproc in ("-", str(limit)), "smtpd's process limit %s/%s" % (maxproc, limit))
    c.run(["systemctl", "restart", "postfix.service"], timeout=scaled(60))
    wait_for(lambda: c.run("postfix status", check=False).rc == 0, timeout=scaled(20), msg="postfix running")
    gap = 12
    # The pauses first, while Postfix runs few smtpd processes: an idle one waits for the accept lock
    # (master.cf's serialisation) outside its event loop, and its socketmap idle timer fires only when it
    # holds the lock, so after a burst of 100 an idle connection may stay until the process exits.
    for unit, prefix in (("listener", DEFAULT_UNIT), ("accept", "sockmapd@")):
        if unit == "accept":
            use_accept_socket(c)
        c.run(["journalctl", "--sync"])  # what the unit before logged is in, and left out by its unit name
        t_start = time.time()
        mails = []
        for i in range(3):
            if i:
                time.sleep(gap)
            mails.append(time.time())
            replies = smtp(c, "someone@example.com", "postmaster@example.org", "nobody@example.org")
            eq([code for code, _ in replies], [250, 250, 550], "%s, mail %d: %s" % (unit, i, replies))

        # Postfix closes each socketmap connection after 10 s without a lookup: the last mail's too.
        def sessions():
            c.run(["journalctl", "--sync"])
            return journal_sessions(c, t_start, prefix)
        wait_for(lambda: any(t > mails[2] + 5 for t, _ in sessions()), timeout=scaled(30), interval=1,
                 msg="the last mail's socketmap sessions closed by Postfix")
        ended = [e for _, e in sessions()]
        shown = [(e.get("MESSAGE"), e.get("_SYSTEMD_UNIT")) for e in ended]
        ok(len(ended) >= 3, "%s: socketmap sessions for 3 mails %d s apart: %r" % (unit, gap, shown))
        for e in ended:
            # Each lived less than a pause: the mail after it was looked up on new connections, answered right.
            ok(int(e["SOCKMAP_DURATION_MS"]) < (gap - 0.5) * 1000, "%s: a session across a pause: %r" % (unit, shown))
            eq((e.get("SOCKMAP_END"), e.get("SOCKMAP_ERRORS")), ("client closed", "0"), "Postfix closed it")
        print("    %s: 3 mails %d s apart: %d socketmap sessions, each closed by Postfix after %s ms" % (
            unit, gap, len(ended), "/".join(e["SOCKMAP_DURATION_MS"] for e in ended)), flush=True)

    # 100 sessions at once (Postfix's process limit), through sockmapd.socket, then the default pair.  Each
    # smtpd looks up in two maps: when the sessions overlap, up to 200 handlers hold a database connection
    # each, past MariaDB's default max_connections (151); those answer TEMP (1040) and Postfix defers with
    # 451.  How much they overlap depends on the machine (here bursts used at most 18 and 52 connections;
    # bb_service's burst through --listen made 200 handlers, and 12 of 100 sessions got 451 on 151).  So
    # the database is sized as postfix.md tells a Postfix at its default limits, and sockmapd must not have
    # found it full.  A wrong session prints the container's journal.
    size_mariadb_as_postfix_md_says(c)
    for unit in ("accept", "listener"):
        if unit == "listener":
            use_listener_socket(c)
        c.run(["mariadb", "-e", "FLUSH STATUS"])
        since = c.run(["date", "+%Y-%m-%d %H:%M:%S"]).out.strip()
        t0 = time.monotonic()
        r = subprocess.run(["nsenter", "-t", str(c.leader), "-n", sys.executable, "-c", SMTP_BURST, "100",
                            "someone@example.com", "postmaster@example.org", "nobody@example.org"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=scaled(300))
        eq(r.returncode, 0, r.stderr[-800:])
        results = json.loads(r.stdout)
        took = time.monotonic() - t0
        wrong = [res for res in results if res != [250, 250, 550]]
        if wrong:
            raise AssertionError("%s: every session's answers: %r\n%s" % (unit, wrong, burst_evidence(c, since)))
        used = c.run(["mariadb", "-N", "-e", "SHOW GLOBAL STATUS LIKE 'Max_used_connections'"]).out.split()[1]
        print("    %s: 100 SMTP sessions at once, all 250/250/550, in %.1f s; database connections at most %s"
              % (unit, took, used), flush=True)
        eq([u for u in failed_units(c) if u.startswith("sockmapd")], [], "failed units")
    log = c.run(["journalctl", "--no-pager", "-o", "cat", "-t", "postfix/smtpd"]).out
    not_contains(log, "lookup error", "no failed lookup in Postfix's log")
    not_contains(c.run(["journalctl", "--no-pager", "-o", "cat", "-t", "sockmapd"]).out, "is full, not marked down",
                 "the database had room for every handler")


def cnf_path_and_restart():
    """Where postfix.md puts MariaDB's settings, and the command that applies them."""
    m = re.search(r"`(/etc/mysql/mariadb\.conf\.d/[\w-]+\.cnf)`, then `(systemctl restart mariadb)`",
                  readme.prose("doc/postfix.md"))
    ok(m, "where the guide puts MariaDB's settings")
    return m.group(1), m.group(2)


@test(timeout=1800)
def thousand_connections_with_the_cap_raised():
    """postfix.md's "More than 512 connections at once" as written: the listener's drop-in (--max-children 1100
    and the limits sized from it) and MariaDB's max_connections for it.  1000 connections held, each having
    looked up: all answered; three new connections beside them answered at once (their times printed beside
    the same with none held); Pss per handler and database connections at 300 and at 1000."""
    c = installed("thousand")
    configure(c, "file")
    path, restart = cnf_path_and_restart()
    lang, cnf = readme.block("doc/postfix.md", "postfix-mariadb-max-connections-1100")
    eq(lang, "ini")
    c.write(path, cnf)
    c.run(restart, timeout=scaled(120))
    wait_active(c, "mariadb.service")
    want = re.search(r"max_connections = (\d+)", cnf).group(1)
    eq(c.run(["mariadb", "-N", "-e", "SELECT @@max_connections"]).out.strip(), want)
    lang, dropin = readme.block("doc/postfix.md", "postfix-raise-the-cap")
    eq(lang, "ini")
    cap = int(re.search(r"--max-children (\d+)", dropin).group(1))
    # What `systemctl edit` writes, then the guide's restart.
    c.write("/etc/systemd/system/sockmapd-listener.service.d/override.conf", dropin)
    c.run(["systemctl", "daemon-reload"])
    since = c.run(["date", "+%Y-%m-%d %H:%M:%S"]).out.strip()
    c.run(["systemctl", "restart", DEFAULT_UNIT], timeout=scaled(60))
    wait_active(c, DEFAULT_UNIT)
    eq(c.run(["systemctl", "show", "-P", "LimitNOFILE", DEFAULT_UNIT]).out.strip(),
       re.search(r"LimitNOFILE=(\d+)", dropin).group(1))
    wait_for(lambda: lookup(c, "recipient postmaster@example.org") == [b"OK root@example.net"], timeout=scaled(30),
             msg="answering after the restarts")

    def probes(what):
        """Three new connections one after another, each forking a handler that opens its database connection:
        ms to each first answer."""
        out = []
        for _ in range(3):
            probe = m.probe(scaled(5))
            eq(probe["reply"], "OK root@example.net", what)
            out.append(round(probe["seconds"] * 1000, 2))
        return out

    figures = {}
    m = Many(c)
    # The same with none held (the first may go to the idle handler the lookup above left): this machine's floor.
    floor = probes("a new connection with none held")
    for upto in (300, 1000):
        m.open(upto - m.count)
        t0 = time.monotonic()
        replies, samples = sampling_db_connections(c, lambda: m.ask(0, upto))
        eq(sorted(set(replies)), ["OK root@example.net"], "%d connections held, a lookup on each" % upto)
        fig = figures[upto] = {"seconds for a lookup on each": round(time.monotonic() - t0, 1)}
        # Each closes its database connection db_idle_timeout (10 s) after its lookup: on a busy machine the
        # first are closed before the last have asked.
        fig["db connections (most seen while asking)"] = max(samples + [db_connections(c)])
        fig["db connections after"] = db_connections(c)
        pss = handler_pss_kib(c, "listener")
        ok(len(pss) >= upto, "%d handler processes for %d connections" % (len(pss), upto))
        fig["handlers"] = len(pss)
        fig["Pss per handler KiB (mean)"] = round(sum(pss) / len(pss))
        fig["tasks, Pss MiB of the service"] = "%d, %.1f" % service_tasks_and_pss(c)
    # Held and idle, as Postfix's processes hold theirs between mails: the handlers have given their database
    # connections back (db_idle_timeout), which 1000 of them doing at once would otherwise weigh on the figure.
    wait_for(lambda: db_connections(c) <= 1, timeout=scaled(60), interval=1, msg="database connections closed idle")
    after = probes("connection 1001 with 1000 held")
    figures[1000]["connections 1001-1003: first answer, ms"] = "/".join("%g" % x for x in after)
    figures[1000]["the same with none held, ms"] = "/".join("%g" % x for x in floor)
    tasks_max = int(c.run(["systemctl", "show", "-P", "TasksMax", DEFAULT_UNIT]).out)
    print("    %-40s %12s %12s" % ("held connections", 300, 1000))
    for key in figures[1000]:
        print("    %-40s %12s %12s" % (key, figures[300].get(key, "-"), figures[1000][key]), flush=True)
    # Answered, not waiting behind the cap, within the 1 s of the 300-connection case.  The issue's 10 ms is
    # not asserted: on the shared 2-core machine a new connection with none held takes 16 to 72 ms itself.
    ok(max(after) < 1000, "a new connection with 1000 held answered in %s ms (with none held %s)" % (after, floor))
    ok(int(figures[1000]["tasks, Pss MiB of the service"].split(",")[0]) + 2 <= tasks_max, "within TasksMax")
    journal = c.run(["journalctl", "--no-pager", "-o", "cat", "-u", DEFAULT_UNIT, "--since", since]).out
    contains(journal, "at most %d handlers" % cap)
    for bad in ("fork:", "Too many open files", "descriptor limit", "handlers busy"):
        not_contains(journal, bad)
    m.cmd("close", 0, m.count)
    m.stop()
    eq([u for u in failed_units(c) if u.startswith("sockmapd")], [], "failed units")
    with open(os.path.join(tmpdir("figures"), "thousand.json"), "w") as f:
        json.dump(figures, f)


if __name__ == "__main__":
    main()
