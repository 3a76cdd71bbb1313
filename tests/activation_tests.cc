// activation: what systemd's LISTEN_* variables and the fds from 3 turn
// into.  Each case runs in a forked child that puts real sockets on fds
// 3, 4, ... and sets the variables as systemd does, so the runner's own
// descriptors and environment are left alone.
#include "activation.hh"

#include "child_check.hh"

#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <fcntl.h>
#include <functional>
#include <netinet/in.h>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace sockmapd;

namespace
{

int listening_tcp()
{
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    BOOST_REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    BOOST_REQUIRE(listen(fd, 4) == 0);
    return fd;
}

int listening_unix()
{
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX; // autobind: an abstract name of the kernel's choice
    BOOST_REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa_family_t)) == 0);
    BOOST_REQUIRE(listen(fd, 4) == 0);
    return fd;
}

int connected_stream()
{
    int sv[2];
    BOOST_REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    return sv[0]; // the other end stays open in this process
}

int datagram()
{
    int sv[2];
    BOOST_REQUIRE(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == 0);
    return sv[0];
}

// In a child: `fds` moved to 3, 4, ...; LISTEN_PID (ours unless
// `other_pid`), LISTEN_FDS and LISTEN_FDNAMES set; the text `check`
// returns comes back ("" means it passed).  Closes `fds` here.
std::string with_fds(const std::vector<int>& fds, const char* names, bool other_pid,
                     const std::function<std::string()>& check)
{
    const std::string out = in_child([&] {
        // Above every fd in use first, so the dup2 to 3.. clobbers none of them.
        std::vector<int> high;
        for (const int fd : fds)
            high.push_back(fcntl(fd, F_DUPFD, 100));
        for (std::size_t i = 0; i < high.size(); ++i)
            dup2(high[i], 3 + static_cast<int>(i));
        // No fds: no variables (systemd never sets LISTEN_FDS=0).
        if (fds.empty()) {
            unsetenv("LISTEN_PID");
            unsetenv("LISTEN_FDS");
        } else {
            setenv("LISTEN_PID", std::to_string(other_pid ? getppid() : getpid()).c_str(), 1);
            setenv("LISTEN_FDS", std::to_string(fds.size()).c_str(), 1);
        }
        if (names)
            setenv("LISTEN_FDNAMES", names, 1);
        else
            unsetenv("LISTEN_FDNAMES");
        try {
            return check();
        } catch (const ActivationError& e) {
            return std::string("ActivationError: ") + e.what();
        }
    });
    for (const int fd : fds)
        close(fd); // the child had them; the test is done with them
    return out;
}

bool env_cleared()
{
    return !getenv("LISTEN_PID") && !getenv("LISTEN_FDS") && !getenv("LISTEN_FDNAMES");
}

} // namespace

BOOST_AUTO_TEST_SUITE(activation)

BOOST_AUTO_TEST_CASE(accept_yes_connection_is_fd_3)
{
    const std::string r = with_fds({connected_stream()}, "connection", false, [] {
        const Activation a = find_activation(false);
        if (!a.from_systemd || !a.listeners.empty())
            return std::string("not a connection from systemd");
        if (a.conn.in_fd != 3 || a.conn.out_fd != 3 || a.conn.peer != "unix")
            return "conn " + std::to_string(a.conn.in_fd) + " peer " + a.conn.peer;
        if ((fcntl(3, F_GETFD) & FD_CLOEXEC) == 0)
            return std::string("fd 3 not close-on-exec");
        return env_cleared() ? std::string() : std::string("LISTEN_* left for children");
    });
    BOOST_TEST(r == "");
}

BOOST_AUTO_TEST_CASE(accept_no_listeners_with_names)
{
    const std::string r = with_fds({listening_tcp(), listening_unix()}, "tcp:local", false, [] {
        const Activation a = find_activation(false);
        std::string got;
        for (const auto& l : a.listeners)
            got += std::to_string(l.fd) + "=" + l.name + " ";
        if (got != "3=tcp 4=local ")
            return "listeners: " + got;
        return env_cleared() ? std::string() : std::string("LISTEN_* left for children");
    });
    BOOST_TEST(r == "");
}

BOOST_AUTO_TEST_CASE(unnamed_listener_is_unknown)
{
    const std::string r = with_fds({listening_tcp()}, nullptr, false, [] {
        const Activation a = find_activation(false);
        return a.listeners.size() == 1 ? a.listeners[0].name : std::string("no listener");
    });
    BOOST_TEST(r == "unknown");
}

BOOST_AUTO_TEST_CASE(set_ups_that_cannot_work)
{
    struct Case {
        std::vector<int> fds;
        const char* error;
    };
    const Case cases[] = {
        {{datagram()}, "ActivationError: fd 3 (unknown) from systemd is not a stream socket"},
        {{connected_stream(), connected_stream()},
         "ActivationError: systemd passed 2 connections; sockmapd serves one (Accept=yes) or listens (Accept=no)"},
        {{listening_tcp(), connected_stream()},
         "ActivationError: systemd passed listening and connected sockets together"},
    };
    for (const auto& c : cases) {
        const std::string r = with_fds(c.fds, nullptr, false, [] {
            find_activation(false);
            return std::string("accepted");
        });
        BOOST_TEST(r == c.error);
    }
}

BOOST_AUTO_TEST_CASE(variables_for_another_process_are_ignored)
{
    // LISTEN_PID names the parent: the variables were meant for it.
    const std::string r = with_fds({connected_stream()}, nullptr, true, [] {
        const Activation a = find_activation(false);
        if (a.from_systemd || a.conn.in_fd != 0 || a.conn.out_fd != 1)
            return std::string("took fd 3");
        return std::string();
    });
    BOOST_TEST(r == "");
}

BOOST_AUTO_TEST_CASE(inetd_flag_keeps_stdin)
{
    const std::string r = with_fds({listening_tcp()}, nullptr, false, [] {
        const Activation a = find_activation(true);
        if (a.from_systemd || !a.listeners.empty() || a.conn.in_fd != 0)
            return std::string("took the passed socket");
        return getenv("LISTEN_FDS") ? std::string() : std::string("LISTEN_FDS consumed");
    });
    BOOST_TEST(r == "");
}

BOOST_AUTO_TEST_CASE(stdin_socket_is_a_socket_connection)
{
    int sv[2];
    BOOST_REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    const std::string r = with_fds({}, nullptr, false, [&sv] {
        dup2(sv[0], 0);
        const Activation a = find_activation(false);
        return a.conn.peer == "unix" ? std::string() : std::string("stdin not seen as a socket");
    });
    BOOST_TEST(r == "");
    close(sv[0]);
    close(sv[1]);
    // A pipe on stdin has no peer: logged as a pipe.
    int p[2];
    BOOST_REQUIRE(pipe(p) == 0);
    const std::string q = with_fds({}, nullptr, false, [&p] {
        dup2(p[0], 0);
        const Activation a = find_activation(false);
        return a.conn.peer.empty() ? std::string() : "a pipe with peer " + a.conn.peer;
    });
    BOOST_TEST(q == "");
    close(p[0]);
    close(p[1]);
}

BOOST_AUTO_TEST_CASE(dev_null_is_told_apart)
{
    const int null = open("/dev/null", O_RDONLY);
    const int zero = open("/dev/zero", O_RDONLY);
    int p[2];
    BOOST_REQUIRE(null >= 0 && zero >= 0 && pipe(p) == 0);
    BOOST_TEST(is_dev_null(null));
    BOOST_TEST(!is_dev_null(zero)); // a character device, not /dev/null
    BOOST_TEST(!is_dev_null(p[0]));
    BOOST_TEST(!is_dev_null(-1));
    for (const int fd : {null, zero, p[0], p[1]})
        close(fd);
}

BOOST_AUTO_TEST_SUITE_END()
