// listen — the accept loop: sockmapd --listen (hosts without systemd or
// xinetd, and a drop-in for the Go sockmapd), and the listening sockets
// systemd passes from an Accept=no socket unit.
//
// listen_loop() takes the passed sockets, or binds every address ADDR
// resolves to (SO_REUSEADDR, close-on-exec) when none were passed; then,
// when root and run_as_user/run_as_group are set, drops privileges
// (groups, gid, uid, each checked; root cannot be regained), tells systemd
// READY=1, and forks one handler per connection: the child closes the
// listening sockets, restores default signal handling, runs `handler(fd)`
// and _exit()s with its result.  A peer outside sysconfig.allow is closed
// at once, before any fork (gate.hh); a listening socket open to other
// hosts without an allow-list is warned about at start.  At most max_children run at once; past
// that nothing is accepted and new connections wait in the listen backlog.
// STATUS= tells systemd how many run and how many were served.
// SIGHUP/SIGUSR1: `reload()` (new connections get the new config; it
// returns false and logs when the new one is broken, and the old stays).
// SIGTERM/SIGINT: STOPPING=1, stop accepting, shut the read side of each
// running handler's connection (it answers what it has read, then sees
// EOF), wait up to 5 s, then SIGTERM, and SIGKILL 2 s later; return 0.
// Other results: 78 unknown user or unresolvable address, 75 address in
// use or not available, 71 other bind or privilege-drop failures.
#pragma once

#include "activation.hh"
#include "config.hh"

#include <functional>
#include <string>
#include <vector>

namespace sockmapd
{

struct ListenOptions {
    std::string address; // numeric IPv4/IPv6 or host name
    std::string port;
    std::vector<PassedListener> passed; // from systemd: nothing is bound
    unsigned max_children = 64;
};

// "[[ADDR:]PORT]" (ADDR may be "[v6]"); empty parts from `sys`.
// Throws UsageError for a malformed argument, ConfigError (naming the key)
// for a bad sysconfig.listen or sysconfig.port the argument leaves in use.
ListenOptions listen_options(const SysConfig& sys, const std::string& arg);

int listen_loop(const Config& cfg, const ListenOptions& opt, const std::function<bool()>& reload,
                const std::function<int(int fd)>& handler);

} // namespace sockmapd
