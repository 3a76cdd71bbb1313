// activation — where the client connections come from.
//
// find_activation() asks systemd with sd_listen_fds_with_names() (the
// LISTEN_* variables are removed, so children do not inherit them):
//  - one connected stream socket (Accept=yes): that is the connection;
//  - listening stream sockets, any number, with their FileDescriptorName=
//    (Accept=no): they go to the accept loop;
//  - nothing: the connection is stdin/stdout (xinetd, inetd, systemd's
//    StandardInput=socket, a shell pipe).
// It throws ActivationError for set-ups that cannot work (several
// connections, a datagram socket, connected and listening sockets mixed).
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace sockmapd
{

class ActivationError : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

struct ClientConnection {
    int in_fd = 0;
    int out_fd = 1;
    std::string peer; // "127.0.0.1:40000", "unix", or "" for pipes
};

struct PassedListener {
    int fd = -1;
    std::string name; // FileDescriptorName=, "unknown" when unnamed
};

struct Activation {
    bool from_systemd = false;             // systemd passed the sockets below
    std::vector<PassedListener> listeners; // Accept=no: non-empty
    ClientConnection conn;                 // otherwise the connection
};

// `force_inetd`: use stdin/stdout and leave LISTEN_FDS alone.
Activation find_activation(bool force_inetd);

// The peer of a connected socket for logs: "127.0.0.1:40000", "[::1]:40000",
// "unix", or "" when it is not a socket.
std::string peer_name(int fd);

// `fd` is the character device /dev/null (a service's default stdin).
bool is_dev_null(int fd);

} // namespace sockmapd
