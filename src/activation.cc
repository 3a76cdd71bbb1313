#include "activation.hh"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

namespace sockmapd {

namespace {

bool fd_is_socket(int fd)
{
    struct stat st {};
    return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
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
        const int n = sd_listen_fds(1);
        if (n < 0)
            throw ActivationError("cannot read LISTEN_FDS from systemd");
        if (n > 1)
            throw ActivationError("systemd passed " + std::to_string(n) + " sockets; sockmapd takes one connection");
        if (n == 1) {
            const int fd = SD_LISTEN_FDS_START;
            if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) > 0)
                throw ActivationError("fd 3 is a listening socket: the .socket unit needs Accept=yes");
            if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 0) <= 0)
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
