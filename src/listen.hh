// listen — the accept loop: sockmapd --listen (hosts without systemd or
// xinetd, and a drop-in for the Go sockmapd), and the listening sockets
// systemd passes from an Accept=no socket unit.
//
// listen_loop() takes the passed sockets, or binds every address ADDR
// resolves to when none were passed (listeners.hh); then, when root and run_as_user/run_as_group are set, drops
// privileges (groups, gid, uid, each checked; root cannot be regained), tells systemd READY=1, and accepts.  A peer
// outside sysconfig.allow is closed at once, before it reaches a handler (gate.hh); a listening socket open to other
// hosts without an allow-list is warned about at start.  Each other
// connection goes to the handler pool (handlers.hh): to an idle handler
// process, else to one forked for it (the child closes the listening
// sockets and every client connection but its own, restores default
// signal handling, calls `make_server()` once and serves one connection
// after another with it).
// A handler exits after sysconfig.max_use
// connections or max_idle seconds without one.  At most max_children run
// at once; past that, and only then, nothing is accepted and new
// connections wait in the listen backlog.  At most max_per_peer (0: no
// limit) connections of one client address (TCP) or user (unix socket,
// SO_PEERCRED) are served at once; past that its new connections are
// closed at once, so that one client cannot hold every handler.  STATUS= tells systemd how many
// run and how many connections were served.
// SIGHUP/SIGUSR1: `reload()`; when it returns true (it logs, and keeps the
// old config, when the new one is broken) `cfg` holds the new config: every
// running handler finishes its connection and exits, no later connection
// is served with the old config.
// SIGTERM/SIGINT: STOPPING=1, hand the connections waiting in the backlog
// of a socket it bound to an idle handler or, while fewer than max_children
// run, a new one (the rest are reset when it closes), stop accepting, shut
// the read side of each
// running handler's connection (it answers what it has read, then sees
// EOF), idle handlers end at once; wait up to 5 s, then SIGTERM, and
// SIGKILL 2 s later; return 0.
// Other results: 78 unknown user or unresolvable address, 75 address in
// use or not available, 71 other bind or privilege-drop failures.
#pragma once

#include "config.hh"
#include "handlers.hh"
#include "listeners.hh"

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace sockmapd
{

// sysconfig.max_use and max_idle.
ReuseLimits reuse_limits(const SysConfig& sys);

int listen_loop(const Config& cfg, const ListenOptions& opt, const std::function<bool()>& reload,
                const std::function<std::unique_ptr<ConnectionServer>()>& make_server);

} // namespace sockmapd
