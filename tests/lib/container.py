"""container — a minimal Debian 12 booted under a real systemd, for system suites.

    base = base_root()                       # debootstrap'd root, cached under build/system/
    c = Container(base, "name")              # a fresh overlay of it (tmpfs upper dir)
    c.apt_install(["./" + os.path.basename(deb)], files=[deb])   # package work before booting
    c.boot()                                 # systemd-nspawn -b --private-network, waits for "running"
    r = c.run("systemctl is-active sockmapd.socket")   # nsenter into the container's PID 1
    c.reboot()                               # clean poweroff, boot again on the same overlay
    c.stop()                                 # poweroff by the nspawn pid, SIGKILL if it hangs; unmount

base_root() builds the root when it is missing (or made with another package
list): `debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus
bookworm` from the mirror apt on this machine is configured with (read from
/etc/apt/sources.list* at run time), then mariadb-server, postfix and xinetd
installed in it with apt, and the package lists kept so that a later
`apt-get install ./x.deb` needs no download for what is already in its
archive cache (see predownload()).  It is built in a temporary directory and
renamed into place when complete, so an interrupted build is not used.

Container is what the suites share: it registers with the harness (stopped
after the test or at suite exit, by pid, whatever happens) when the harness
is loaded.  systemd-nspawn on these machines needs
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 (a hybrid cgroup v1 host), --register=no
(no machined) and --keep-unit (no systemd as the host's PID 1); --private-network gives
the booted container a loopback of its own, so ports cannot clash with the
other suites.
"""

import glob
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CACHE = os.path.join(REPO, "build", "system")
SUITE = "bookworm"
BASE_INCLUDE = ["systemd", "systemd-sysv", "dbus"]
# Installed in the cached root: what the system suites drive besides sockmapd.
BASE_PACKAGES = ["mariadb-server", "mariadb-client", "postfix", "xinetd", "netcat-openbsd", "procps"]
NSPAWN_ENV = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log(msg):
    print("    [container] " + msg, flush=True)


# ---------------------------------------------------------------- the mirror

def _deb822_entries(text):
    for para in re.split(r"\n\s*\n", text):
        fields = {}
        for line in para.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            k, _, v = line.partition(":")
            fields[k.strip().lower()] = v.strip()
        if fields:
            yield (fields.get("types", "").split(), fields.get("uris", "").split(),
                   fields.get("suites", "").split(), fields.get("components", "").split())


def _one_line_entries(text):
    for line in text.splitlines():
        line = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(line) >= 4:
            yield [line[0]], [line[1]], [line[2]], line[3:]


def apt_mirror(suite=SUITE):
    """The URI apt on this machine uses for `suite` main (not -updates/-security)."""
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*"))
    for path in files:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        entries = _deb822_entries(text) if path.endswith(".sources") else _one_line_entries(text)
        for types, uris, suites, comps in entries:
            if "deb" in types and suite in suites and "main" in comps and uris:
                return uris[0]
    raise AssertionError("no apt source for %s main in /etc/apt/sources.list*" % suite)


# ---------------------------------------------------------------- the cached root

def _mounts_under(path):
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        points = [l.split()[1].replace("\\040", " ") for l in f]
    return [m for m in points if m == path or m.startswith(path + "/")]


def remove_tree(path):
    """rm -rf that first unmounts what is mounted below `path` and never crosses into another file system."""
    for m in sorted(_mounts_under(path), key=len, reverse=True):
        if subprocess.run(["umount", m], stderr=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["umount", "-l", m])
    subprocess.run(["rm", "-rf", "--one-file-system", path])


def _stamp():
    return "debootstrap %s minbase +%s; apt %s\n" % (SUITE, ",".join(BASE_INCLUDE), " ".join(BASE_PACKAGES))


def _nspawn_pipe(root, argv, timeout, env=None, network=True):
    """Run argv in root with systemd-nspawn (no boot): package work before booting."""
    cmd = ["systemd-nspawn", "-q", "-D", root, "--register=no", "--keep-unit", "--pipe"]
    if not network:
        cmd.append("--private-network")
    for k, v in (env or {}).items():
        cmd.append("--setenv=%s=%s" % (k, v))
    r = subprocess.run(cmd + list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       timeout=timeout, env=dict(os.environ, **NSPAWN_ENV))
    return r.returncode, r.stdout.decode(errors="replace")


APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"}
APT = ["apt-get", "-y", "-q", "--no-install-recommends", "-o", "Dpkg::Options::=--force-confdef",
       "-o", "Dpkg::Options::=--force-confold"]


def _no_service_starts(root, on):
    """policy-rc.d 101: maintainer scripts do not start daemons during package work."""
    path = os.path.join(root, "usr/sbin/policy-rc.d")
    if on:
        with open(path, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(path, 0o755)
    elif os.path.exists(path):
        os.unlink(path)


def base_root(timeout=900):
    """The cached root (build/system/base), built when missing or stale."""
    base = os.path.join(CACHE, "base")
    stamp = os.path.join(CACHE, "base.stamp")
    if os.path.isdir(base) and os.path.exists(stamp):
        with open(stamp) as f:
            if f.read() == _stamp():
                return base
    for tool in ("debootstrap", "systemd-nspawn", "nsenter"):
        if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
            raise AssertionError("required tool missing: %s (run `make deps`)" % tool)
    os.makedirs(CACHE, exist_ok=True)
    t0 = time.monotonic()
    mirror = apt_mirror()
    tmp = tempfile.mkdtemp(prefix="base-new-", dir=CACHE)
    os.chmod(tmp, 0o755)  # it becomes "/": every user of the container must traverse it
    try:
        log("debootstrap %s from %s into the cache" % (SUITE, mirror))
        r = subprocess.run(["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_INCLUDE),
                            SUITE, tmp, mirror], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        if r.returncode != 0:
            raise AssertionError("debootstrap failed: " + r.stdout.decode(errors="replace")[-3000:])
        with open(os.path.join(tmp, "etc/hostname"), "w") as f:
            f.write("sockmapd-test\n")
        # Postfix set up from its own defaults, no debconf questions.
        debconf = "postfix postfix/main_mailer_type select Internet Site\npostfix postfix/mailname string mx.example.org\n"
        _no_service_starts(tmp, True)
        rc, out = _nspawn_pipe(tmp, ["sh", "-c", "echo '%s' | debconf-set-selections && apt-get update -q && %s install %s"
                                     % (debconf.strip(), " ".join(APT), " ".join(BASE_PACKAGES))],
                               timeout, env=APT_ENV)
        if rc != 0:
            raise AssertionError("apt-get install in the base root failed: " + out[-3000:])
        _no_service_starts(tmp, False)
        # Nothing of this build's machine identity is shared by the copies.
        open(os.path.join(tmp, "etc/machine-id"), "w").close()
        remove_tree(base)
        os.rename(tmp, base)
        with open(stamp, "w") as f:
            f.write(_stamp())
    finally:
        if os.path.isdir(tmp):
            remove_tree(tmp)
    log("base root built in %.0fs" % (time.monotonic() - t0))
    return base


def layer_root(name, packages, timeout=900):
    """A cached layer over the base root with `packages` installed by apt, for an MTA that cannot
    share the base root (Sendmail replaces Postfix): build/system/NAME/upper, built when missing or
    when the base root was rebuilt, like base_root() (with the mirror's network, policy-rc.d 101).
    Returns the overlay lowerdir for Container: "NAME/upper:base"."""
    base = base_root()
    layer = os.path.join(CACHE, name)
    stamp = os.path.join(CACHE, name + ".stamp")
    want = "%s%s over base of %d; apt %s\n" % (_stamp(), name, os.stat(os.path.join(CACHE, "base.stamp")).st_mtime_ns,
                                               " ".join(packages))
    lower = "%s:%s" % (os.path.join(layer, "upper"), base)
    if os.path.isdir(layer) and os.path.exists(stamp):
        with open(stamp) as f:
            if f.read() == want:
                return lower
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix=name + "-new-", dir=CACHE)
    root = os.path.join(tmp, "root")
    try:
        for d in ("upper", "work", "root"):
            os.makedirs(os.path.join(tmp, d))
        os.chmod(os.path.join(tmp, "upper"), 0o755)
        subprocess.run(["mount", "-t", "overlay", "-o", "lowerdir=%s,upperdir=%s/upper,workdir=%s/work"
                        % (base, tmp, tmp), "overlay", root], check=True)
        log("layer %s: apt-get install %s" % (name, " ".join(packages)))
        _no_service_starts(root, True)
        rc, out = _nspawn_pipe(root, ["sh", "-c", "apt-get update -q && %s install %s"
                                      % (" ".join(APT), " ".join(packages))], timeout, env=APT_ENV)
        _no_service_starts(root, False)
        if rc != 0:
            raise AssertionError("apt-get install in layer %s failed: %s" % (name, out[-3000:]))
        subprocess.run(["umount", root], check=True)
        remove_tree(os.path.join(tmp, "work"))
        os.rmdir(root)
        remove_tree(layer)
        os.rename(tmp, layer)
        with open(stamp, "w") as f:
            f.write(want)
    finally:
        if os.path.isdir(tmp):
            remove_tree(tmp)
    log("layer %s built in %.0fs" % (name, time.monotonic() - t0))
    return lower


def predownload(base, debs):
    """Put the Depends of `debs` into the cached root's apt archive (with network, once)."""
    names = []
    for deb in debs:
        r = subprocess.run(["dpkg-deb", "-f", deb, "Depends"], stdout=subprocess.PIPE, check=True)
        for alt in r.stdout.decode().split(","):
            names.append(re.sub(r"\s*\(.*\)", "", alt.split("|")[0]).strip().split(":")[0])
    names = [n for n in names if n]
    rc, out = _nspawn_pipe(base, APT + ["install", "--download-only"] + names, 300, env=APT_ENV)
    if rc != 0:
        raise AssertionError("apt-get --download-only %s: %s" % (" ".join(names), out[-2000:]))


# ---------------------------------------------------------------- a booted container

class CommandFailed(AssertionError):
    pass


class Result:
    def __init__(self, argv, rc, out, err):
        self.argv, self.rc, self.out, self.err = argv, rc, out, err

    def __repr__(self):
        return "Result(%r, rc=%d, out=%r, err=%r)" % (self.argv, self.rc, self.out[-800:], self.err[-800:])


_registry_hooks = None


def _harness_hooks():
    """(register, unregister) of the harness if it is loaded: containers are stopped with the tests."""
    global _registry_hooks
    if _registry_hooks is None:
        try:
            import harness
            _registry_hooks = (harness._register, harness._unregister)
        except ImportError:
            _registry_hooks = (lambda obj: None, lambda obj: None)
    return _registry_hooks


class Container:
    """A fresh overlay of `base`, booted on demand; stop() undoes everything."""

    def __init__(self, base, name="sockmapd-test", nspawn_args=()):
        self.base, self.name = base, re.sub(r"[^A-Za-z0-9-]", "-", name)[:60]
        # Extra systemd-nspawn options for boot() (e.g. --system-call-filter=bpf); may change between boots.
        self.nspawn_args = list(nspawn_args)
        self.dir = tempfile.mkdtemp(prefix="ct-%s-" % self.name[:20], dir=CACHE)
        self.root = os.path.join(self.dir, "root")
        self.nspawn = None
        self.leader = None
        self.boots = 0
        self._mounted = []
        _harness_hooks()[0](self)
        try:
            self._mount()
        except BaseException:
            self.stop()
            raise

    def _mount(self):
        rw = os.path.join(self.dir, "rw")
        os.makedirs(rw)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", rw], check=True)
        self._mounted.append(rw)
        os.makedirs(os.path.join(rw, "upper"))
        os.makedirs(os.path.join(rw, "work"))
        os.makedirs(self.root)
        subprocess.run(["mount", "-t", "overlay", "-o", "lowerdir=%s,upperdir=%s/upper,workdir=%s/work"
                        % (self.base, rw, rw), "overlay", self.root], check=True)
        self._mounted.append(self.root)

    def path(self, inside):
        """The host's path of a file inside the container."""
        return os.path.join(self.root, inside.lstrip("/"))

    def write(self, inside, content, mode=0o644, owner=None):
        p = self.path(inside)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
        os.chmod(p, mode)
        if owner:
            self.run(["chown", owner, inside])

    def read(self, inside):
        with open(self.path(inside), "rb") as f:
            return f.read().decode(errors="replace")

    # -- package work (not booted: with the host's network, no daemons started)

    def apt_install(self, args, files=(), timeout=600):
        """apt-get install ARGS in the root before booting; `files` copied to /root first (cwd /root)."""
        if self.leader:
            raise AssertionError("package work is done before boot()")
        for f in files:
            shutil.copy(f, self.path("/root/" + os.path.basename(f)))
        _no_service_starts(self.root, True)
        try:
            rc, out = _nspawn_pipe(self.root, ["sh", "-c", "cd /root && " + " ".join(APT + ["install"] + list(args))],
                                   timeout, env=APT_ENV)
        finally:
            _no_service_starts(self.root, False)
        if rc != 0:
            raise CommandFailed("apt-get install %s: %s" % (" ".join(args), out[-3000:]))
        return out

    # -- booting

    def boot(self, timeout=60):
        """systemd-nspawn -b; returns once `systemctl is-system-running` says running (or degraded)."""
        if self.leader:
            return
        self.boots += 1
        logf = open(os.path.join(self.dir, "console-%d.log" % self.boots), "wb")
        cmd = ["systemd-nspawn", "-q", "-D", self.root, "-M", self.name, "--register=no", "--keep-unit",
               "--private-network"] + self.nspawn_args + ["-b", "--console=passive"]
        self.nspawn = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                       env=dict(os.environ, **NSPAWN_ENV), start_new_session=True)
        logf.close()
        deadline = time.monotonic() + timeout
        while self.leader is None:
            if self.nspawn.poll() is not None:
                raise AssertionError("systemd-nspawn exited %s: %s" % (self.nspawn.returncode, self.console()[-2000:]))
            if time.monotonic() > deadline:
                raise AssertionError("container PID 1 did not appear: " + self.console()[-2000:])
            # nspawn's first child forks the container's init and exits:
            # wait for the child that is PID 1 of a namespace of its own.
            leaders = [k for k in _children(self.nspawn.pid) if _is_pid1_of_own_namespace(k)]
            if leaders:
                self.leader = leaders[0]
            else:
                time.sleep(0.05)
        state, r = "", None
        while time.monotonic() < deadline:
            r = self.run(["systemctl", "is-system-running", "--wait"], check=False,
                         timeout=max(1, deadline - time.monotonic()))
            state = r.out.strip()
            if state in ("running", "degraded"):
                return state
            time.sleep(0.2)
        raise AssertionError("container did not reach running: %r %r %s" % (state, r, self.console()[-2000:]))

    def console(self):
        try:
            with open(os.path.join(self.dir, "console-%d.log" % self.boots), "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def run(self, cmd, check=True, timeout=60, input=None, user=None):
        """Run cmd (argv list, or a string for sh -c) inside the booted container; Result(rc, out, err)."""
        if not self.leader:
            raise AssertionError("container not booted")
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if user:
            argv = ["setpriv", "--reuid=" + user, "--regid=" + user, "--init-groups", "--"] + argv
        full = ["nsenter", "-t", str(self.leader), "-a", "env", "-i", "PATH=" + PATH, "LANG=C.UTF-8",
                "HOME=/root", "TERM=dumb"] + argv
        r = subprocess.run(full, input=input.encode() if isinstance(input, str) else input,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                           stdin=None if input is not None else subprocess.DEVNULL)
        res = Result(argv, r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"))
        if check and r.returncode != 0:
            raise CommandFailed("in container: %r" % res)
        return res

    def popen(self, argv, **kw):
        """A process inside the container (e.g. a client kept open); the caller stops it."""
        full = ["nsenter", "-t", str(self.leader), "-a", "env", "-i", "PATH=" + PATH, "LANG=C.UTF-8"] + list(argv)
        return subprocess.Popen(full, **kw)

    def poweroff(self, timeout=30):
        """Clean shutdown by the nspawn pid (SIGTERM: the container's systemd powers off), SIGKILL if it hangs.

        The SIGTERM wait stays well inside the harness's cleanup bound, and
        whatever interrupts it (that bound's TestTimeout too), the container's
        PID 1 and nspawn are killed before this returns: no container outlives
        its test."""
        p, leader, self.nspawn, self.leader = self.nspawn, self.leader, None, None
        if p is None or p.poll() is not None:
            return
        try:
            try:
                os.kill(p.pid, signal.SIGTERM)
                p.wait(timeout)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                log("systemd-nspawn %d did not stop after SIGTERM; killing the container" % p.pid)
        finally:
            if p.poll() is None:
                # SIGKILL to the container's PID 1 ends its whole PID namespace;
                # then nspawn and whatever is left of its process group.
                for kill in ((lambda: os.kill(leader, signal.SIGKILL)) if leader else None,
                             lambda: os.killpg(p.pid, signal.SIGKILL)):
                    try:
                        if kill:
                            kill()
                    except (ProcessLookupError, PermissionError):
                        pass
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    log("systemd-nspawn %d still running after SIGKILL" % p.pid)

    def reboot(self, timeout=60):
        self.poweroff(timeout)  # a clean shutdown: the test's own time, not the cleanup's
        return self.boot(timeout)

    def stop(self):
        try:
            self.poweroff()
        finally:
            self._mounted = []
            if os.environ.get("KEEP_TMP") == "1":
                for m in sorted(_mounts_under(self.dir), key=len, reverse=True):
                    subprocess.run(["umount", "-l", m])
            else:
                remove_tree(self.dir)
            _harness_hooks()[1](self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return "Container(%s, nspawn=%s)" % (self.name, self.nspawn.pid if self.nspawn else None)


def _is_pid1_of_own_namespace(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("NSpid:"):
                    ids = line.split()[1:]
                    return len(ids) >= 2 and ids[-1] == "1"
    except OSError:
        pass
    return False


def _children(pid):
    kids = []
    for tid in os.listdir("/proc/%d/task" % pid) if os.path.isdir("/proc/%d/task" % pid) else []:
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                kids += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return kids
