#include "activation.hh"

#include "util.hh"

#include <arpa/inet.h>
#include <cstdlib>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

namespace sockmapd
{

namespace
{

// The names sd_listen_fds_with_names() hands out, freed on every path.
class FdNames
{
public:
    ~FdNames()
    {
        if (names_) {
            for (char** p = names_; *p; ++p)
                std::free(*p);
            std::free(static_cast<void*>(names_));
        }
    }
    char*** out() { return &names_; }
    std::string operator[](int i) const { return names_ && names_[i] ? names_[i] : "unknown"; }

private:
    char** names_ = nullptr;
};

std::string fd_label(int fd, const std::string& name)
{
    return "fd " + std::to_string(fd) + " (" + name + ")";
}

} // namespace

std::string peer_name(int fd)
{
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
        return {};
    return socket_address_name(reinterpret_cast<const sockaddr*>(&ss));
}

bool is_dev_null(int fd)
{
    struct stat st {
    }, null{};
    return fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && stat("/dev/null", &null) == 0 && S_ISCHR(null.st_mode) &&
           st.st_rdev == null.st_rdev;
}

Activation find_activation(bool force_inetd)
{
    Activation a;
    const int n = force_inetd ? 0 : [&] {
        FdNames names;
        const int r = sd_listen_fds_with_names(1, names.out());
        if (r < 0)
            throw ActivationError("cannot read LISTEN_FDS from systemd");
        int listening = 0;
        for (int i = 0; i < r; ++i) {
            const int fd = SD_LISTEN_FDS_START + i;
            if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, -1) <= 0)
                throw ActivationError(fd_label(fd, names[i]) + " from systemd is not a stream socket");
            if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) > 0) {
                ++listening;
                a.listeners.push_back({fd, names[i]});
            }
        }
        if (listening > 0 && listening < r)
            throw ActivationError("systemd passed listening and connected sockets together");
        if (listening == 0 && r > 1)
            throw ActivationError("systemd passed " + std::to_string(r) +
                                  " connections; sockmapd serves one (Accept=yes) or listens (Accept=no)");
        return r;
    }();
    a.from_systemd = n > 0;
    if (n == 1 && a.listeners.empty()) {
        a.conn.in_fd = a.conn.out_fd = SD_LISTEN_FDS_START;
        a.conn.peer = peer_name(SD_LISTEN_FDS_START);
        return a;
    }
    if (n == 0)
        a.conn.peer = peer_name(0); // "" for a pipe or a tty
    return a;
}

} // namespace sockmapd
