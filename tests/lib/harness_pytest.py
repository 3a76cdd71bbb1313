"""harness_pytest — the black-box suites on pytest (tests/conftest.py loads it).

Collects from each tests/bb_*.py, in this order, the cases registered with
harness's @test (in registration order) and the plain pytest functions
(test_*), and gives every case what harness's own runner gave it:

  - a time limit: @test(timeout=S) or @pytest.mark.timeout(S), default
    harness.DEFAULT_TIMEOUT, times TIMEOUT_SCALE; SIGALRM raises
    harness.TestTimeout in the case (pytest runs cases in the main thread,
    also under xdist);
  - cleanup after each case: its defer()red functions, then every process
    and server started during the case or by its function-scoped fixtures,
    stopped by pid; orphaned handlers reaped;
  - a suite per module: its own temp directory (KEEP_TMP=1 keeps it) and
    runtime directory; what was kept for the suite (keep_for_suite(),
    shared_mariadb(), module-scoped fixtures) stopped after its last case.

Tiers are markers (tests/README.md): root (needs root), container (boots a
container: needs root and build/system), slow (more than a few seconds);
`make check-fast` runs -m "not root and not container and not slow".
Under xdist (-n 2 --dist loadgroup) a module's cases stay together on one
worker, in order; the container suites share one worker, one at a time.

Fixtures: mariadb (the suite's MariaDB with tests/fixtures.sql), own_mariadb
(a MariaDB of the case's own, to stop, kill or pause), sockmapd_config
(a factory: config path for the fixture maps on `mariadb`, overrides as
base_config's), sockmapd (sockmapd in a mode: parametrize it indirectly
with harness.MODES).

--suite-report FILE writes {module: {"passed", "failed", "seconds"}} as JSON
(tests/run_all.py reads it); a skipped case counts as failed (a case that
lacks a part fails, never skips), an error in set-up or teardown too.
"""

import json
import os
import shutil
import sys
import tempfile
import threading

import pytest

import harness

__all__ = ["pytest_addoption", "pytest_configure", "pytest_unconfigure", "pytest_pycollect_makemodule", "pytest_pycollect_makeitem",
           "pytest_collection_modifyitems", "pytest_runtest_call", "_harness_suite", "_harness_case",
           "mariadb", "own_mariadb", "sockmapd_config", "sockmapd"]

TIERS = {
    "root": "needs root (switches users, network namespaces, chown)",
    "container": "boots a Debian under systemd-nspawn (needs root and build/system)",
    "slow": "takes more than a few seconds: not in make check-fast",
    "capacity": "measures what the built binary holds at once (Postfix's bursts, hundreds of handlers): left out "
                "for a sanitizer build, where it would measure the sanitizer",
}


def pytest_addoption(parser):
    parser.addoption("--suite-report", metavar="FILE", default=None,
                     help="write per-suite passed/failed/seconds as JSON (tests/run_all.py)")


def pytest_configure(config):
    for name, text in TIERS.items():
        config.addinivalue_line("markers", "%s: %s" % (name, text))
    config.addinivalue_line("markers", "timeout(seconds): the case's time limit (times TIMEOUT_SCALE)")
    if hasattr(config, "workerinput"):
        if threading.current_thread() is not threading.main_thread():
            # Debian 12's execnet (1.9) now and then runs a worker outside the main thread, where
            # no time limit (SIGALRM) can be set: this worker ends before it takes any case, and
            # xdist starts another in its place ("replacing crashed worker").
            sys.stderr.write("harness_pytest: worker %s not in the main thread; ending it\n"
                             % config.workerinput.get("workerid"))
            sys.stderr.flush()
            os._exit(3)
        return
    if config.getoption("--suite-report"):
        config.pluginmanager.register(SuiteReport(config.getoption("--suite-report")), "harness-suite-report")
    if not os.environ.get("TEST_CACHE_DIR"):
        # What every suite would make alike, made once per run (MariaDB's initial datadir); the
        # xdist workers, started after this, inherit the variable.
        config._harness_cache = tempfile.mkdtemp(prefix="sockmapd-tests-cache-")
        os.environ["TEST_CACHE_DIR"] = config._harness_cache


def pytest_unconfigure(config):
    cache = getattr(config, "_harness_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)
        os.environ.pop("TEST_CACHE_DIR", None)


# ---------------------------------------------------------------- collection

def pytest_pycollect_makemodule(module_path, parent):
    if module_path.name.startswith("bb_"):
        return Suite.from_parent(parent, path=module_path)
    return None


class Suite(pytest.Module):
    """A tests/bb_*.py: the cases @test registered, then its plain pytest functions."""

    def collect(self):
        module = self.obj
        plain = list(super().collect())
        cases = [c for c in harness._TESTS if c[3] == module.__name__]
        names = [c[0] for c in cases] + [p.name for p in plain]
        dupes = sorted({n for n in names if names.count(n) > 1})
        items = []
        for name, fn, timeout, _ in cases:
            item = pytest.Function.from_parent(self, name=name, callobj=fn)
            if not item.get_closest_marker("timeout"):
                item.add_marker(pytest.mark.timeout(timeout))
            items.append(item)
        if dupes:
            items.append(RegistryError.from_parent(self, name="duplicate_case_names", dupes=dupes))
        return items + plain


class RegistryError(pytest.Item):
    def __init__(self, *, dupes, **kw):
        super().__init__(**kw)
        self.dupes = dupes

    def runtest(self):
        raise AssertionError("cases registered twice under one name: %s" % ", ".join(self.dupes))

    def reportinfo(self):
        return self.path, None, self.name


def pytest_pycollect_makeitem(collector, name, obj):
    """What a suite imports (harness's test, TestTimeout, ...) is not a case of that suite."""
    module = getattr(collector, "obj", None)
    owner = getattr(obj, "__module__", None)
    if isinstance(collector, Suite) and owner is not None and owner != module.__name__:
        return []
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    # Under xdist's loadgroup: a module's cases together, the container suites one after another
    # on one worker (they share build/system and the CPU), started first since they take longest.
    for item in items:
        group = "container" if item.get_closest_marker("container") else \
            os.path.basename(item.nodeid.split("::")[0]).rsplit(".", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
    if getattr(config.option, "loadgroup", False):
        items.sort(key=lambda i: 0 if i.get_closest_marker("container") else 1)  # stable: order kept
    if harness.sanitized():
        # Said, not skipped silently: the run's output names what it left out and why.
        out = [i for i in items if i.get_closest_marker("capacity")]
        if out:
            items[:] = [i for i in items if not i.get_closest_marker("capacity")]
            config.hook.pytest_deselected(items=out)
            sys.stderr.write("harness_pytest: a sanitizer build: left out %d capacity case(s): %s\n"
                             % (len(out), ", ".join(i.name for i in out)))


# ---------------------------------------------------------------- per suite, per case

@pytest.fixture(autouse=True, scope="module")
def _harness_suite(request):
    """A module is a suite: its own directories; what it kept is stopped after its last case."""
    harness.begin_suite(request.module.__name__)
    yield
    harness.start_timer(120)
    try:
        harness.end_suite()
    finally:
        harness.start_timer(0)


@pytest.fixture(autouse=True)
def _harness_case(request):
    """First of a case's function-scoped fixtures: what is started from here on is the case's."""
    mark = request.node.get_closest_marker("timeout")
    harness.begin_case(request.node.name, 0)
    request.node._harness_timeout = mark.args[0] if mark and mark.args else harness.DEFAULT_TIMEOUT
    yield
    harness.end_case()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    harness.start_timer(getattr(item, "_harness_timeout", harness.DEFAULT_TIMEOUT))
    try:
        yield
    finally:
        harness.start_timer(0)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def mariadb():
    """The suite's MariaDB with tests/fixtures.sql (harness.shared_mariadb()); cases must not stop it."""
    return harness.shared_mariadb()


@pytest.fixture
def own_mariadb():
    """A MariaDB with the fixtures, the case's own: stop, kill or pause it."""
    return harness.MariaDB(fixtures=True).start()


@pytest.fixture
def sockmapd_config(mariadb):
    """config(**overrides) -> path of a config for the fixture maps on `mariadb` (see base_config)."""
    return lambda **overrides: harness.temp_config(harness.base_config(mariadb, **overrides))


@pytest.fixture
def sockmapd(request, sockmapd_config):
    """sockmapd serving the fixture maps in the mode given by indirect parametrization:

        @pytest.mark.parametrize("sockmapd", MODES, indirect=True)
        def test_found(sockmapd):
            with sockmapd.session() as s: ...
    """
    mode = getattr(request, "param", None)
    if mode is None:
        raise AssertionError("parametrize sockmapd with a mode of harness.MODES (indirect=True)")
    return harness.serve(mode, sockmapd_config())


# ---------------------------------------------------------------- the per-suite report

class SuiteReport:
    """Counts per module (the controller's view under xdist), written at the end of the session."""

    def __init__(self, path):
        self.path = path
        self.suites = {}
        self.outcome = {}

    def _suite(self, nodeid):
        name = os.path.basename(nodeid.split("::")[0])
        name = name[:-3] if name.endswith(".py") else name
        return self.suites.setdefault(name, {"passed": 0, "failed": 0, "seconds": 0.0})

    def pytest_collectreport(self, report):
        if report.failed:
            self._suite(report.nodeid)["failed"] += 1

    def pytest_runtest_logreport(self, report):
        s = self._suite(report.nodeid)
        s["seconds"] += report.duration
        bad = report.failed or report.skipped
        before = self.outcome.get(report.nodeid)
        if report.when == "call" or bad:
            now = "failed" if bad or before == "failed" else "passed"
            if before != now:
                if before:
                    s[before] -= 1
                s[now] += 1
                self.outcome[report.nodeid] = now

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session):
        with open(self.path, "w") as f:
            json.dump(self.suites, f, indent=1, sort_keys=True)
