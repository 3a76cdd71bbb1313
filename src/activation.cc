#include "activation.hh"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <cstdlib>
#include <fcntl.h>
#include <unistd.h>

namespace sockmapd {

namespace {

bool fd_is_socket(int fd)
{
    struct stat st {};
    return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

// sd_listen_fds(1) without libsystemd (and the six libraries it loads into
// every handler): LISTEN_FDS counts the fds from 3 when LISTEN_PID is us;
// the variables are removed so children do not inherit them.
int listen_fds()
{
    const char* pid = getenv("LISTEN_PID");
    const char* fds = getenv("LISTEN_FDS");
    int n = 0;
    if (pid && fds && std::strtol(pid, nullptr, 10) == getpid()) {
        char* end = nullptr;
        const long v = std::strtol(fds, &end, 10);
        n = (*fds == '\0' || *end != '\0' || v < 0 || v > 1024) ? -1 : static_cast<int>(v);
        for (int fd = 3; fd < 3 + n; ++fd)
            fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return n;
}

// sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, listening)
bool is_stream_socket(int fd, bool listening)
{
    int type = 0, accepting = 0;
    socklen_t len = sizeof type;
    if (!fd_is_socket(fd) || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
        return false;
    len = sizeof accepting;
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) == 0 && (accepting != 0) == listening;
}

} // namespace

std::string peer_name(int fd)
{
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
        return {};
    char host[INET6_ADDRSTRLEN] = "";
    switch (ss.ss_family) {
    case AF_INET: {
        const auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
        return std::string(host) + ":" + std::to_string(ntohs(sin->sin_port));
    }
    case AF_INET6: {
        const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
        return "[" + std::string(host) + "]:" + std::to_string(ntohs(sin6->sin6_port));
    }
    case AF_UNIX:
        return "unix";
    }
    return {};
}

ClientConnection find_connection(bool force_inetd)
{
    ClientConnection c;
    if (!force_inetd) {
        const int n = listen_fds();
        if (n < 0)
            throw ActivationError("cannot read LISTEN_FDS from systemd");
        if (n > 1)
            throw ActivationError("systemd passed " + std::to_string(n) + " sockets; sockmapd takes one connection");
        if (n == 1) {
            const int fd = 3;
            if (is_stream_socket(fd, true))
                throw ActivationError("fd 3 is a listening socket: the .socket unit needs Accept=yes");
            if (!is_stream_socket(fd, false))
                throw ActivationError("fd 3 from systemd is not a connected stream socket");
            c.in_fd = c.out_fd = fd;
            c.socket = true;
            c.peer = peer_name(fd);
            return c;
        }
    }
    c.socket = fd_is_socket(0);
    if (c.socket)
        c.peer = peer_name(0);
    return c;
}

bool stderr_is_private()
{
    struct stat st {};
    if (fstat(2, &st) != 0)
        return false;
    return !S_ISSOCK(st.st_mode);
}

} // namespace sockmapd
