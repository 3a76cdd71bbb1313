"""postfix — a private Postfix instance for the black-box suites, and bursts of SMTP sessions through it.

PostfixInstance: master, smtpd on a free loopback port, trivial-rewrite and
cleanup in a temporary directory, stopped by pid.  smtp_burst(): many SMTP
sessions at once, each timed.
"""

import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
import threading
import time

import harness
from harness import eq, free_port, pid_alive, proc_children, require_tool, scaled, stop_pid, wait_for


class PostfixInstance:
    """A Postfix of our own: master, smtpd on 127.0.0.1:PORT, trivial-rewrite, cleanup, in a temp directory.

    `settings`: main.cf lines added to a minimal loopback-only config.  No
    queue manager or delivery agents: the tests talk SMTP up to RCPT TO,
    where smtpd asks its access and alias maps, and quit before DATA.  stop() stops master and every process it
    started, by pid."""

    SERVICES = """\
{listen} inet n - n - - smtpd
rewrite   unix  -       -       n       -       -       trivial-rewrite
cleanup   unix  n       -       n       -       0       cleanup
anvil     unix  -       -       n       -       1       anvil
proxymap  unix  -       -       n       -       -       proxymap
postlog   unix-dgram n  -       n       -       1       postlogd
"""

    # For delivery: the queue manager, virtual(8) and what they talk to.
    DELIVERY = """\
qmgr      unix  n       -       n       300     1       qmgr
virtual   unix  -       n       n       -       -       virtual
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
flush     unix  n       -       n       1000?   0       flush
"""

    def __init__(self, settings, delivery=False):
        self.postfix = require_tool("postfix")
        # Postfix's daemons run as its mail_owner: the path must be
        # traversable for it, which the suite's private directory is not.
        self.dir = tempfile.mkdtemp(prefix="sockmapd-postfix-")
        os.chmod(self.dir, 0o755)
        self.etc = os.path.join(self.dir, "etc")
        self.log = os.path.join(self.dir, "maillog")
        os.mkdir(self.etc)
        os.mkdir(os.path.join(self.dir, "queue"))
        data = os.path.join(self.dir, "data")
        os.mkdir(data)
        shutil.chown(data, "postfix")
        self.port = free_port()
        main = ["compatibility_level = 3.6",
                "queue_directory = %s/queue" % self.dir,
                "data_directory = %s" % data,
                "maillog_file_prefixes = %s" % self.dir,
                "maillog_file = %s" % self.log,
                "inet_interfaces = 127.0.0.1",
                "inet_protocols = ipv4",
                "myhostname = mx.test.invalid",
                "mydestination =",
                "mynetworks = 127.0.0.0/8",
                "alias_maps =",
                "alias_database =",
                "smtpd_delay_reject = yes"] + list(settings)
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write("\n".join(main) + "\n")
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(self.SERVICES.format(listen="127.0.0.1:%d" % self.port) + (self.DELIVERY if delivery else ""))
        self.pid = None
        self.kids = []
        harness._register(self)
        r = subprocess.run([self.postfix, "-c", self.etc, "start"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=scaled(60))
        with open(os.path.join(self.dir, "queue", "pid", "master.pid")) as f:
            self.pid = int(f.read().strip())
        eq(r.returncode, 0, "postfix start: %s %s" % (r.stdout.decode(errors="replace"), self.maillog()))

        def accepting():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(accepting, timeout=scaled(20), interval=0.1, msg="Postfix smtpd on port %d" % self.port)

    def maillog(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def smtp(self, sender, *rcpts):
        """[(code, reply text)] for MAIL FROM and each RCPT TO, on one new session."""
        try:
            s = smtplib.SMTP("127.0.0.1", self.port, timeout=scaled(60))
            s.ehlo("client.test.invalid")
            out = [s.mail(sender)]
            out += [s.rcpt(r) for r in rcpts]
            s.quit()
        except smtplib.SMTPException as e:
            raise AssertionError("SMTP session from %s: %s\nPostfix's log:\n%s" % (sender, e, self.maillog()[-3000:]))
        return [(code, msg.decode(errors="replace").replace("\n", " ")) for code, msg in out]

    def codes(self, sender, *rcpts):
        replies = self.smtp(sender, *rcpts)
        return [code for code, _ in replies], "\n".join("%d %s" % r for r in replies)

    def stop(self):
        if self.pid is None:
            return
        self.kids = [k for k in proc_children(self.pid) if k not in self.kids] + self.kids
        subprocess.run([self.postfix, "-c", self.etc, "stop"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=scaled(60))
        stop_pid(self.pid, grace=scaled(10))
        for kid in self.kids:
            if pid_alive(kid):
                stop_pid(kid, grace=scaled(5))
        self.pid = None
        harness._unregister(self)
        shutil.rmtree(self.dir, ignore_errors=True)

    def smtp_burst(self, n, sender, *rcpts):
        """`n` SMTP sessions at once, all open together: each MAIL FROM and a RCPT TO per recipient, then QUIT
        once every session has had its replies (or a minute has passed), so that `n` smtpd processes hold their
        table connections at the same time.  [(codes, seconds from connecting to the last reply)] per session;
        an error in place of the codes when one failed."""
        start, answered = threading.Barrier(n), threading.Barrier(n)
        out = [None] * n

        def one(i):
            codes, t0, took = [], None, None
            try:
                start.wait(scaled(60))
                t0 = time.monotonic()
                s = smtplib.SMTP("127.0.0.1", self.port, timeout=scaled(120))
                s.ehlo("client%d.test.invalid" % i)
                codes.append(s.mail(sender)[0])
                codes += [s.rcpt(r)[0] for r in rcpts]
                took = time.monotonic() - t0
                try:
                    answered.wait(60)
                except threading.BrokenBarrierError:
                    pass  # a session waiting for its replies: told by its codes or time
                s.quit()
            except Exception as e:  # noqa: BLE001 -- reported with the session's result
                codes.append("%s: %s" % (type(e).__name__, e))
                took = time.monotonic() - t0 if t0 is not None else None
            out[i] = (codes, took)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out
