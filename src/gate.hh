// gate — sysconfig.allow applied to connections, before anything else is
// done for them; the refusals logged without flooding the log.
//
// Gate is for a process that sees many connections (the accept loop):
// admit() answers whether a connection from `peer` may be served; when not,
// it logs a warning naming the peer's address (REMOTE_ADDR), at most one
// per network (a /24, a /64: peer_network()) and minute, the next one
// saying how many were refused from that network in between, and the
// caller closes the connection without a word.  Past 256 networks in a
// minute (LogThrottle's table) the new ones share a line a minute, which
// names the address that made it.  No
// allocation or I/O when the peer is admitted.
//
// admit_connection() is the same for a handler that serves one connection
// (fd 3, or stdin under xinetd / StandardInput=socket): it finds the peer
// with getpeername(); a descriptor that is not a socket (a pipe) is always
// admitted.  Handlers share the once-a-minute rule through a small file in
// the runtime directory (rundir.hh: refused.state; when it cannot be read
// or locked in time, the refusal is logged).
//
// warn_if_open() logs at warning, once, when a socket's local address is
// not loopback-only and no allow-list is set: every host that reaches it
// may query every map.  Handlers warn at most once a minute per address.
#pragma once

#include "allow.hh"
#include "rundir.hh"

#include <string>

namespace sockmapd
{

class Gate
{
public:
    // `state_file` none: the throttle lives in this process.
    explicit Gate(SharedFile state_file = {}) : file_(std::move(state_file)) {}

    bool admit(const AllowList& allow, const sockaddr* peer);
    // The warning of warn_if_open() for the socket address `address`
    // ("192.0.2.1:2224"), `subject` saying what it is.
    void warn_open(const std::string& address, const std::string& subject);

private:
    // Whether to log an event for `key` now (see LogThrottle::admit).
    bool throttle(std::string& key, unsigned long& suppressed);

    SharedFile file_;
    LogThrottle throttle_;
};

// For a handler: admits or refuses the connection on `fd` (logged), and
// warns when it is open to every host.
bool admit_connection(const AllowList& allow, int fd);

// For a listening socket: warns when it is open to every host.
void warn_if_open(const AllowList& allow, int listening_fd);

} // namespace sockmapd
