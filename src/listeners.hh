// listeners — the accept loop's listening sockets and where they come from.
//
// listen_options() reads "[[ADDR:]PORT]" (--listen, or the Go sockmapd's
// -p PORT) over sysconfig.listen and sysconfig.port.  open_listeners()
// takes the sockets systemd passed from an Accept=no socket unit (made
// non-blocking), or, when none were passed, binds every address ADDR
// resolves to (SO_REUSEADDR, close-on-exec, non-blocking; "::" next to an
// IPv4 address is IPv6 only).  The sockets are Fd: closed with the vector.
// Results: EX_OK; 78 unresolvable address, 75 address in use or not
// available, 71 other bind failures (each logged).
#pragma once

#include "activation.hh" // PassedListener
#include "config.hh"
#include "util.hh" // Fd

#include <string>
#include <sys/socket.h>
#include <vector>

namespace sockmapd
{

// The handler cap without --max-children: room for what a Postfix at its
// default limits sends (up to about 300 connections: 100 processes each
// of smtpd, cleanup and trivial-rewrite) and more.  Handlers are forked as
// connections come, so an unused cap costs nothing.
inline constexpr unsigned default_max_children = 512;

// Idle handlers kept ready, within the cap, once connections come: the
// next new connection is handed to a running process instead of waiting
// for a fork (its database login is still its own).
inline constexpr unsigned default_spare_handlers = 1;

struct ListenOptions {
    std::string address; // numeric IPv4/IPv6 or host name
    std::string port;
    std::vector<PassedListener> passed; // from systemd: nothing is bound
    unsigned max_children = default_max_children;
    unsigned max_per_peer = 0; // 0: no limit (peerlimit.hh)
    unsigned spare_handlers = default_spare_handlers;
};

// "[[ADDR:]PORT]" (ADDR may be "[v6]"); empty parts from `sys`.
// Throws UsageError for a malformed argument, ConfigError (naming the key)
// for a bad sysconfig.listen or sysconfig.port the argument leaves in use.
ListenOptions listen_options(const SysConfig& sys, const std::string& arg);

struct Listener {
    Fd fd;            // closed with the Listener
    std::string name; // "127.0.0.1:2224", "[::1]:2224"
};

int open_listeners(const ListenOptions& opt, std::vector<Listener>& out);

// An address for the logs ("127.0.0.1:2224", "[::1]:2224"); "?" when unknown.
std::string addr_name(const sockaddr* sa);

} // namespace sockmapd
