// listen — the --listen mode: sockmapd's own accept loop, for hosts without
// systemd or xinetd and as a drop-in for the Go sockmapd.
//
// listen_loop() binds ADDR:PORT (defaults: sysconfig.listen/.port), drops
// privileges to run_as_user/run_as_group after binding, and forks one
// handler per connection, running `handler(fd)` in the child and exiting
// with its result.  It caps concurrent handlers, reaps children, and
// returns 0 on SIGTERM/SIGINT, 78 for a bad address or user, 75/71 when
// it cannot bind.
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
