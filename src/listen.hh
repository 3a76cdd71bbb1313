// listen — the --listen mode: sockmapd's own accept loop, for hosts without
// systemd or xinetd and as a drop-in for the Go sockmapd.
//
// listen_loop() binds every address ADDR resolves to (SO_REUSEADDR,
// close-on-exec), then, when root and run_as_user/run_as_group are set,
// drops privileges (groups, gid, uid, each checked, and root must not be
// regained), and forks one handler per connection: the child closes the
// listening sockets, restores default signal handling, runs `handler(fd)`
// and _exit()s with its result.  At most max_children run at once (no
// accept() while full); children are reaped on SIGCHLD and their start and
// end logged.  SIGTERM/SIGINT: stop accepting, SIGTERM the handlers, wait
// up to 5 s (then SIGKILL), return 0.  Other results: 78 unknown user or
// unresolvable address, 75 address in use or not available, 71 other bind
// or privilege-drop failures.
#pragma once

#include "config.hh"

#include <functional>
#include <string>

namespace sockmapd {

struct ListenOptions {
    std::string address;        // numeric IPv4/IPv6 or host name
    std::string port;
    unsigned max_children = 64;
};

// "[[ADDR:]PORT]" (ADDR may be "[v6]"); empty parts from `sys`.
// Throws ConfigError for a malformed argument.
ListenOptions listen_options(const SysConfig& sys, const std::string& arg);

int listen_loop(const Config& cfg, const ListenOptions& opt, const std::function<int(int fd)>& handler);

} // namespace sockmapd
