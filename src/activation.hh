// activation — where the client connection comes from.
//
// Under systemd with Accept=yes the connection is fd 3 (LISTEN_FDS=1);
// under xinetd, inetd, systemd's StandardInput=socket or a shell pipe it is
// stdin/stdout.  find_connection() decides, and throws ActivationError for
// set-ups that cannot work (several fds, a listening socket: Accept=no).
#pragma once

#include <stdexcept>
#include <string>

namespace sockmapd {

class ActivationError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct ClientConnection {
    int in_fd = 0;
    int out_fd = 1;
    bool socket = false;     // the connection is a socket (not a pipe or tty)
    std::string peer;        // "127.0.0.1:40000", "unix", or "" for pipes
};

// `force_inetd`: use stdin/stdout even if LISTEN_FDS is set.
ClientConnection find_connection(bool force_inetd);

// The peer of a connected socket for logs: "127.0.0.1:40000", "[::1]:40000",
// "unix", or "" when it is not a socket.
std::string peer_name(int fd);

// stderr may carry messages: it is not a socket (under xinetd and
// systemd it is the client's socket or the journal's stream).
bool stderr_is_private();

} // namespace sockmapd
