"""debpkg — the sockmapd .deb built from this tree, as the suites need it.

    deb = build_deb(outdir)              # dpkg-buildpackage -us -uc -b in a copy of the tree
    deb = tree_deb()                     # the same, kept under build/deb/ for this tree's content
    deb2 = rebuild_with_version(deb, "0.1.0-2", outdir)   # the same files, a higher version

build_deb() copies the tree (no .git, no build output, no tests: the build is
nocheck) under `outdir` and runs
dpkg-buildpackage there with DEB_BUILD_OPTIONS=nocheck, without the variables
of a calling make (SANITIZE, BUILD, MAKEFLAGS); it returns the path of the one
sockmapd_*.deb and raises AssertionError (with the build log's tail) on
failure.  rebuild_with_version() unpacks a .deb with dpkg-deb -R, changes its
Version and packs it again: what dpkg sees as an upgrade.
"""

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time

from harness import scaled

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def build_deb(outdir, timeout=540):
    """Build the .deb from a copy of the tree under outdir; (deb path, seconds taken).

    `timeout` is scaled by TIMEOUT_SCALE like every other wait: on a loaded machine the
    compile alone takes longer."""
    src = os.path.join(outdir, "sockmapd-src")
    shutil.rmtree(src, ignore_errors=True)
    # A copy of the tree (no build output, no .git): artefacts stay out of the repo.
    shutil.copytree(REPO, src, symlinks=True, ignore=IGNORE)
    # A package build of its own: not the variables of the make that runs the
    # suite (under `make check SANITIZE=...` they would point it at build/san).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "SANITIZE", "BUILD")}
    # The unit tests run in their own suite; here only the packaging is under test.
    env["DEB_BUILD_OPTIONS"] = "nocheck parallel=%d" % (os.cpu_count() or 1)
    t0 = time.monotonic()
    r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=scaled(timeout), env=env)
    took = time.monotonic() - t0
    if r.returncode != 0:
        raise AssertionError("dpkg-buildpackage failed: " + r.stdout.decode(errors="replace")[-3000:])
    debs = sorted(n for n in os.listdir(outdir) if re.match(r"sockmapd_.*\.deb$", n))
    if len(debs) != 1:
        raise AssertionError("expected one sockmapd_*.deb in %s, found %s" % (outdir, os.listdir(outdir)))
    shutil.rmtree(src, ignore_errors=True)
    return os.path.join(outdir, debs[0]), took


_ARTEFACTS = shutil.ignore_patterns(".git", "build", "*.deb", "__pycache__")


def IGNORE(path, names):
    """What the package build does not need: VCS, build output, and (nocheck) the tests and benchmarks."""
    skip = set(_ARTEFACTS(path, names))
    if os.path.abspath(path) == REPO:
        skip |= {"tests", "bench"} & set(names)
    return skip


def tree_digest():
    """A digest of what build_deb() copies: paths, modes and contents."""
    h = hashlib.sha256()
    for dirpath, dirs, files in os.walk(REPO):
        skip = IGNORE(dirpath, dirs + files)
        dirs[:] = sorted(d for d in dirs if d not in skip)
        for name in sorted(f for f in files if f not in skip):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            h.update(("%s\0%o\0" % (os.path.relpath(full, REPO), st.st_mode)).encode())
            if os.path.islink(full):
                h.update(os.readlink(full).encode())
            else:
                with open(full, "rb") as f:
                    h.update(f.read())
            h.update(b"\0")
    return h.hexdigest()[:16]


def tree_deb():
    """(deb, seconds, built) for the tree as it is now: built once per content, kept under build/deb/.

    Suites running side by side (make check's two workers) wait for each other's build."""
    top = os.path.join(REPO, "build", "deb")
    os.makedirs(top, exist_ok=True)
    with open(os.path.join(REPO, "build", "deb.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _tree_deb(top)


def _tree_deb(top):
    digest = tree_digest()
    outdir = os.path.join(top, digest)
    done = os.path.join(outdir, "done")
    if os.path.exists(done):
        with open(done) as f:
            return os.path.join(outdir, f.read().strip()), 0.0, False
    for old in os.listdir(top):
        shutil.rmtree(os.path.join(top, old), ignore_errors=True)
    os.makedirs(outdir)
    deb, took = build_deb(outdir)
    with open(done, "w") as f:
        f.write(os.path.basename(deb))
    return deb, took, True


def deb_field(deb, field):
    r = subprocess.run(["dpkg-deb", "-f", deb, field], stdout=subprocess.PIPE, check=True)
    return r.stdout.decode().strip()


def rebuild_with_version(deb, version, outdir):
    """The files of `deb` packed again as `version` (dpkg-deb -R, edit, dpkg-deb -b)."""
    tree = os.path.join(outdir, "repack")
    shutil.rmtree(tree, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-R", deb, tree], check=True)
    control = os.path.join(tree, "DEBIAN", "control")
    with open(control) as f:
        text = f.read()
    text = re.sub(r"^Version: .*$", "Version: " + version, text, count=1, flags=re.M)
    with open(control, "w") as f:
        f.write(text)
    out = os.path.join(outdir, "sockmapd_%s_%s.deb" % (version, deb_field(deb, "Architecture")))
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", tree, out], check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(tree, ignore_errors=True)
    return out
