SHELL := /bin/bash
.SECONDEXPANSION:

# sockmapd — socketmap lookups for Postfix and Sendmail, answered from MariaDB.
#
#   make            build build/sockmapd
#   make check      install what is missing, build, run every test suite
#   make check-fast the loop while working: unit tests and the quick black-box
#                   cases (no root, no container, not slow), a minute at most
#   make demo       install what is missing (deps-demo), build, show real lookups
#   make deps       install the Debian packages the build and tests need
#   make install    DESTDIR= PREFIX= honoured
#   make check SANITIZE=address,undefined   the suite under sanitizers

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= $(PREFIX)/sbin
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
DOCDIR     ?= $(PREFIX)/share/doc/sockmapd
UNITDIR    ?= $(shell pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || echo /lib/systemd/system)

PKGS       := libmariadb jsoncpp libcrypto libsystemd
VERSION    := $(shell sed -n 's/^sockmapd (\([^)-]*\).*/\1/p;q' debian/changelog 2>/dev/null)
ifeq ($(VERSION),)
VERSION    := 0.1.0
endif

ifneq ($(SANITIZE),)
BUILD      ?= build/san
SANFLAGS   := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
# -O1, as AddressSanitizer's documentation suggests: every check stays, and
# the instrumented build compiles in two thirds of -O2's time.
OPTFLAGS   ?= -O1
# Instrumented binaries are slower: the black-box suites stretch their timeouts.
export TIMEOUT_SCALE ?= 3
else
BUILD      ?= build
SANFLAGS   :=
OPTFLAGS   ?= -O2
endif

# Project flags first, the user's (Debian's) CXXFLAGS/CPPFLAGS/LDFLAGS last so they win.
PKG_CFLAGS  = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS    = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ALL_CPPFLAGS = -DSOCKMAPD_VERSION='"$(VERSION)"' -Isrc $(PKG_CFLAGS) $(CPPFLAGS)
ALL_CXXFLAGS = -std=c++20 $(OPTFLAGS) -g -Wall -Wextra -Wpedantic -MMD -MP $(SANFLAGS) $(CXXFLAGS)
ALL_LDFLAGS  = $(SANFLAGS) -Wl,--as-needed $(LDFLAGS)

SRC        := $(filter-out src/main.cc,$(wildcard src/*.cc))
OBJ        := $(SRC:src/%.cc=$(BUILD)/obj/%.o)
TEST_SRC   := $(wildcard tests/*_tests.cc) tests/test_main.cc
TEST_OBJ   := $(TEST_SRC:tests/%.cc=$(BUILD)/obj/tests/%.o)

# Programs only where that is enough: mariadb-server-core holds mariadbd,
# mariadb-install-db and resolveip, mariadb-client-core the mariadb client and
# my_print_defaults (what the tests' throwaway servers use); mariadb-server
# would also start a system MariaDB.  Postfix is installed with debconf's
# "No configuration": no main.cf, so no mail system starts; the tests and
# the demo give postmap a main.cf of their own (postmap -c DIR).
BUILD_DEPS := g++ make pkg-config libmariadb-dev libjsoncpp-dev libcli11-dev libsystemd-dev \
              libssl-dev
DEMO_DEPS  := mariadb-server-core mariadb-client-core systemd python3 postfix
TEST_DEPS  := $(DEMO_DEPS) libboost-test-dev procps openssl xinetd valgrind \
              time groff-base debootstrap systemd-container clang-format nftables \
              python3-pytest python3-pytest-xdist prometheus
# bb_cluster's Galera nodes: the provider, and rsync state transfer, whose
# scripts (wsrep_sst_rsync, wsrep_sst_common) come only with mariadb-server
# (not -core, so that package is needed here, system service and all); they
# use rsync, and ss and ip from iproute2.
CLUSTER_DEPS := mariadb-server galera-4 rsync iproute2
DEB_DEPS   := build-essential debhelper devscripts lintian fakeroot
FUZZ_DEPS  := clang libclang-rt-14-dev
# make bench measures the Go sockmapd beside ours when GO_SOCKMAPD names its
# binary; building it (GOPATH mode) needs Go and its one driver, nothing else.
BENCH_DEPS := golang-go golang-github-go-sql-driver-mysql-dev

.PHONY: format format-check all check check-fast unit blackbox deps deps-demo deps-deb deps-fuzz deps-bench demo install uninstall clean fuzz fuzz-run bench bench-instructions bench-held bench-systemd deb

all: $(BUILD)/sockmapd

$(BUILD)/sockmapd: $(BUILD)/obj/main.o $(OBJ)
	$(CXX) $(ALL_CXXFLAGS) -o $@ $^ $(ALL_LDFLAGS) $(PKG_LIBS)

$(BUILD)/unit_tests: $(TEST_OBJ) $(OBJ)
	$(CXX) $(ALL_CXXFLAGS) -o $@ $^ $(ALL_LDFLAGS) $(PKG_LIBS) -lboost_unit_test_framework

$(BUILD)/obj/%.o: src/%.cc
	@mkdir -p $(@D)
	$(CXX) $(ALL_CPPFLAGS) $(ALL_CXXFLAGS) -c -o $@ $<

$(BUILD)/obj/tests/%.o: tests/%.cc
	@mkdir -p $(@D)
	$(CXX) $(ALL_CPPFLAGS) -DBOOST_TEST_DYN_LINK $(ALL_CXXFLAGS) -c -o $@ $<

-include $(OBJ:.o=.d) $(BUILD)/obj/main.d $(TEST_OBJ:.o=.d)

# Install only what is missing, so a prepared machine is not touched.
# Packages such as mariadb-server and xinetd start a system service when
# installed; the tests run servers of their own and need none of them, so a
# policy-rc.d (exit 101, "action forbidden") keeps every package's service
# from starting during the install, unless the machine already has one.
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
	  echo "postfix postfix/main_mailer_type select No configuration" | $$SUDO debconf-set-selections; \
	  policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    policy=/usr/sbin/policy-rc.d; \
	    printf '#!/bin/sh\n# make deps: no service starts while packages are installed\nexit 101\n' | $$SUDO tee $$policy >/dev/null; \
	    $$SUDO chmod 755 $$policy; \
	  fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	  rc=$$?; if [ -n "$$policy" ]; then $$SUDO rm -f $$policy; fi; exit $$rc; \
	fi
endef

deps:
	$(call apt_install,$(BUILD_DEPS) $(TEST_DEPS) $(CLUSTER_DEPS))

# What `make demo` needs: no package in it starts a service.
deps-demo:
	$(call apt_install,$(BUILD_DEPS) $(DEMO_DEPS))

deps-deb:
	$(call apt_install,$(DEB_DEPS))

deps-fuzz:
	$(call apt_install,$(FUZZ_DEPS))

deps-bench:
	$(call apt_install,$(BENCH_DEPS))

# The black-box suites run under pytest (tests/README.md), two side by side
# (CHECK_JOBS=1: one after another); the last line is "N passed, N failed".
check: deps
	$(MAKE) -j2 $(BUILD)/sockmapd $(BUILD)/unit_tests
	/usr/bin/python3 tests/run_all.py --build $(BUILD) $(RUN_ALL_FLAGS)

check-fast: deps
	$(MAKE) -j2 $(BUILD)/sockmapd $(BUILD)/unit_tests
	/usr/bin/python3 tests/run_all.py --build $(BUILD) --fast $(RUN_ALL_FLAGS)

# One layout for every C++ file (.clang-format); CI fails on a difference.
FORMAT_SRC := $(wildcard src/*.cc src/*.hh tests/*.cc tests/fuzz/*.cc)

format:
	clang-format -i $(FORMAT_SRC)

format-check:
	clang-format --dry-run -Werror $(FORMAT_SRC)

unit: $(BUILD)/unit_tests
	$(BUILD)/unit_tests

demo: deps-demo
	$(MAKE) -j2 $(BUILD)/sockmapd
	/usr/bin/python3 tests/demo.py --build $(BUILD)

# libFuzzer targets, built with clang: `make fuzz` builds, `make fuzz-run`
# runs each for FUZZ_SECONDS on a scratch copy of its seed corpus.
FUZZ_CXX     ?= clang++
FUZZ_SECONDS ?= 60
FUZZ_FLAGS    = -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -Isrc $(PKG_CFLAGS)
FUZZERS      := netstring request config allow
FUZZ_SRC_netstring := src/netstring.cc
FUZZ_SRC_request   := src/socketmap.cc src/netstring.cc
FUZZ_SRC_config    := src/config.cc src/allow.cc src/jsonread.cc src/endpoint.cc src/statement.cc src/mapkey.cc src/util.cc src/log.cc src/socketmap.cc src/netstring.cc
FUZZ_SRC_allow     := src/allow.cc src/util.cc

build/fuzz/%_fuzz: tests/fuzz/%_fuzz.cc $$(FUZZ_SRC_$$*)
	@mkdir -p $(@D)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -o $@ $^ $(PKG_LIBS)

fuzz: deps-fuzz
	$(MAKE) $(FUZZERS:%=build/fuzz/%_fuzz)

fuzz-run: fuzz
	@for f in $(FUZZERS); do \
	  rm -rf build/fuzz/corpus-$$f && mkdir -p build/fuzz/corpus-$$f && \
	  cp tests/fuzz/corpus/$$f/* build/fuzz/corpus-$$f/ && \
	  echo "fuzzing $$f for $(FUZZ_SECONDS)s" && \
	  dict=; test -f tests/fuzz/$$f.dict && dict=-dict=tests/fuzz/$$f.dict; \
	  build/fuzz/$${f}_fuzz $$dict -max_total_time=$(FUZZ_SECONDS) -max_len=20000 -rss_limit_mb=1024 \
	    -print_final_stats=1 build/fuzz/corpus-$$f 2>&1 | grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)|ERROR|SUMMARY' ; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done

install: $(BUILD)/sockmapd
	install -D -m 0755 $(BUILD)/sockmapd $(DESTDIR)$(SBINDIR)/sockmapd
	install -D -m 0644 doc/sockmapd.8 $(DESTDIR)$(MANDIR)/man8/sockmapd.8
	install -D -m 0644 doc/sockmapd.json.5 $(DESTDIR)$(MANDIR)/man5/sockmapd.json.5
	install -D -m 0644 units/sockmapd.socket $(DESTDIR)$(UNITDIR)/sockmapd.socket
	sed 's,@SBINDIR@,$(SBINDIR),g' units/sockmapd@.service > $(BUILD)/sockmapd@.service
	install -D -m 0644 $(BUILD)/sockmapd@.service $(DESTDIR)$(UNITDIR)/sockmapd@.service
	install -D -m 0644 units/sockmapd-listener.socket $(DESTDIR)$(UNITDIR)/sockmapd-listener.socket
	sed 's,@SBINDIR@,$(SBINDIR),g' units/sockmapd-listener.service > $(BUILD)/sockmapd-listener.service
	install -D -m 0644 $(BUILD)/sockmapd-listener.service $(DESTDIR)$(UNITDIR)/sockmapd-listener.service
	sed 's,@SBINDIR@,$(SBINDIR),g' units/sockmapd-metrics.service > $(BUILD)/sockmapd-metrics.service
	install -D -m 0644 $(BUILD)/sockmapd-metrics.service $(DESTDIR)$(UNITDIR)/sockmapd-metrics.service
	install -D -m 0644 units/sockmapd-metrics.timer $(DESTDIR)$(UNITDIR)/sockmapd-metrics.timer
	install -D -m 0644 doc/sockmapd-alerts.yml $(DESTDIR)$(DOCDIR)/examples/sockmapd-alerts.yml
	install -D -m 0644 config.example.json $(DESTDIR)$(DOCDIR)/config.example.json
	sed 's,/usr/sbin/sockmapd,$(SBINDIR)/sockmapd,g' units/sockmapd.xinetd > $(BUILD)/sockmapd.xinetd
	install -D -m 0644 $(BUILD)/sockmapd.xinetd $(DESTDIR)$(DOCDIR)/examples/sockmapd.xinetd
	@# A config to start from, never over one that exists; readable by the
	@# handlers' group when that exists (not in a staging DESTDIR).
	@conf=$(DESTDIR)$(SYSCONFDIR)/sockmapd/config.json; \
	if [ -e "$$conf" ]; then echo "keeping $$conf"; else \
	  echo "installing $$conf (from config.example.json)"; \
	  install -D -m 0640 config.example.json "$$conf" && \
	  if [ -z "$(DESTDIR)" ] && getent group sockmapd >/dev/null; then chgrp sockmapd "$$conf"; fi; \
	fi

# The config goes only if it is still the example, unedited.
uninstall:
	@conf=$(DESTDIR)$(SYSCONFDIR)/sockmapd/config.json; \
	if cmp -s "$$conf" config.example.json; then rm -f "$$conf"; rmdir "$$(dirname "$$conf")" 2>/dev/null || true; \
	elif [ -e "$$conf" ]; then echo "keeping $$conf (edited)"; fi
	rm -f $(DESTDIR)$(SBINDIR)/sockmapd $(DESTDIR)$(MANDIR)/man8/sockmapd.8 \
	      $(DESTDIR)$(MANDIR)/man5/sockmapd.json.5 $(DESTDIR)$(UNITDIR)/sockmapd.socket \
	      $(DESTDIR)$(UNITDIR)/sockmapd@.service $(DESTDIR)$(UNITDIR)/sockmapd-listener.socket \
	      $(DESTDIR)$(UNITDIR)/sockmapd-listener.service $(DESTDIR)$(UNITDIR)/sockmapd-metrics.service \
	      $(DESTDIR)$(UNITDIR)/sockmapd-metrics.timer
	rm -rf $(DESTDIR)$(DOCDIR)

clean:
	rm -rf build

# ---- bench (issue 6): sockmapd against its floor ------------------------------
# `make bench` builds the load client, the null answerer (transport floor) and
# the in-process libmariadb floor into $(BUILD)/bench/, then runs
# bench/run_bench.py: a throwaway mariadbd with a 100000-row table, loopback
# only, medians of BENCH_ROUNDS rounds.  With GO_SOCKMAPD naming a binary of
# the Go sockmapd (github.com/ezplanet/sockmapd, built by hand with the Go of
# deps-bench; nothing here fetches or builds it), it is measured beside ours.
# BENCH_BASELINE=PATH (an older sockmapd) is measured beside the answer
# cache's "cache off" figure, in the same slices.
BENCH_ROUNDS ?= 5
BENCH_FLAGS   = -std=c++20 -O2 -g -Wall -Wextra -Wpedantic $(CXXFLAGS)
BENCH_BINS   := $(addprefix $(BUILD)/bench/,loadclient nullanswer dbfloor)

$(BUILD)/bench/loadclient: bench/client.hh
$(BUILD)/bench/loadclient $(BUILD)/bench/nullanswer: $(BUILD)/bench/%: bench/%.cc
	@mkdir -p $(@D)
	$(CXX) $(CPPFLAGS) $(BENCH_FLAGS) -o $@ $< -Wl,--as-needed $(LDFLAGS)

$(BUILD)/bench/dbfloor: bench/dbfloor.cc bench/client.hh
	@mkdir -p $(@D)
	$(CXX) $(ALL_CPPFLAGS) $(BENCH_FLAGS) -o $@ $< -Wl,--as-needed $(LDFLAGS) $(PKG_LIBS)

# The same sources without the counters (stats.hh), to measure what counting costs.
$(BUILD)/nostats/sockmapd: $(wildcard src/*.cc src/*.hh)
	$(MAKE) BUILD=$(BUILD)/nostats CPPFLAGS="$(CPPFLAGS) -DSOCKMAPD_NO_STATS" $(BUILD)/nostats/sockmapd

bench: deps deps-bench
	$(MAKE) -j2 $(BUILD)/sockmapd $(BENCH_BINS) $(BUILD)/nostats/sockmapd
	/usr/bin/python3 bench/run_bench.py --build $(BUILD) --rounds $(BENCH_ROUNDS) \
	  --counting-off $(BUILD)/nostats/sockmapd \
	  $(if $(BENCH_BASELINE),--baseline $(BENCH_BASELINE)) \
	  --json $(BUILD)/bench/results.json --markdown $(BUILD)/bench/results.md

# The shipped sockmapd@.service against a plain unit of the same binary, and
# each sandbox setting's share, under a real systemd: the system suite's
# container (bench/systemd_bench.py; needs the tools of `make deps deps-deb`).
# About 8 minutes a round on 2 shared vCPUs (70 unit variants), then about
# 2 minutes for what a mail through Postfix's smtpd pays after a pause, per
# installed unit.
SYSTEMD_BENCH_ROUNDS ?= 3
# Instructions per lookup (callgrind), with the counters and compiled out:
# the figure bench/RESULTS.md compares across commits.
bench-instructions: deps
	$(MAKE) -j2 $(BUILD)/sockmapd $(BUILD)/nostats/sockmapd
	/usr/bin/python3 bench/instructions.py --binary $(BUILD)/sockmapd --binary $(BUILD)/nostats/sockmapd

# A new connection beside 1000 held ones, without and with a spare handler
# (--spare-handlers 0 and 1, alternating): ms to its first answer.  About
# 30 s a round and value.
HELD_ROUNDS ?= 3
bench-held: deps
	$(MAKE) -j2 $(BUILD)/sockmapd
	@mkdir -p $(BUILD)/bench
	/usr/bin/python3 bench/held.py --build $(BUILD) --rounds $(HELD_ROUNDS) --json $(BUILD)/bench/held.json

bench-systemd: deps deps-deb
	@mkdir -p $(BUILD)/bench
	/usr/bin/python3 bench/systemd_bench.py --rounds $(SYSTEMD_BENCH_ROUNDS) --connections 30 \
	  --json $(BUILD)/bench/systemd.json --markdown $(BUILD)/bench/systemd.md
# ---- end bench ----------------------------------------------------------------
