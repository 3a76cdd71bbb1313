#include "gate.hh"

#include "hoststate.hh" // runtime_dir()
#include "log.hh"
#include "util.hh"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <ctime>

namespace sockmapd
{

namespace
{

constexpr const char* state_file_name = "refused.state";
constexpr std::size_t max_state_file = 64 * 1024;

const char how_to_restrict[] = "every host that reaches it may query every map. Set sysconfig.allow to the "
                               "addresses of the MTAs (see sockmapd.json(5)), and firewall the port or give the "
                               "socket unit IPAddressAllow=";

std::string more_text(unsigned long suppressed)
{
    return suppressed ? " (" + std::to_string(suppressed) + " more since the last such message)" : std::string();
}

// The whole (small) file behind `fd`; empty when unreadable or too large.
std::string read_all(int fd)
{
    std::string text;
    char buf[4096];
    for (off_t at = 0;;) {
        const ssize_t n = ::pread(fd, buf, sizeof buf, at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || text.size() + static_cast<std::size_t>(n) > max_state_file)
            return n == 0 ? text : std::string();
        text.append(buf, static_cast<std::size_t>(n));
        at += n;
    }
}

void write_all(int fd, const std::string& text)
{
    if (::ftruncate(fd, 0) != 0)
        return;
    std::size_t done = 0;
    while (done < text.size()) {
        const ssize_t n = ::pwrite(fd, text.data() + done, text.size() - done, static_cast<off_t>(done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        done += static_cast<std::size_t>(n);
    }
}

std::string state_file()
{
    const std::string dir = runtime_dir();
    return dir.empty() ? std::string() : dir + "/" + state_file_name;
}

} // namespace

bool Gate::throttle(std::string& key, unsigned long& suppressed)
{
    const std::time_t now = std::time(nullptr);
    if (file_.empty())
        return throttle_.admit(key, now, suppressed);
    // Held for microseconds by each handler; a stopped holder costs at
    // most the bound, and the event is then logged.
    const Fd fd(::open(file_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd || !lock_within(fd.get(), std::chrono::milliseconds(200)))
        return true;
    throttle_.load(read_all(fd.get()), now);
    const bool log = throttle_.admit(key, now, suppressed);
    write_all(fd.get(), throttle_.save());
    return log;
}

bool Gate::admit(const AllowList& allow, const sockaddr* peer)
{
    if (allow.admits(peer))
        return true;
    const std::string addr = peer_address(peer);
    std::string key = addr;
    unsigned long suppressed = 0;
    if (throttle(key, suppressed)) {
        const std::string who = key == addr ? addr : "addresses not seen before (the table is full)";
        log_warning("refused a connection from " + who + ": not in sysconfig.allow" + more_text(suppressed),
                    {{"REMOTE_ADDR", addr, false}});
    }
    return false;
}

void Gate::warn_open(const std::string& address, const std::string& subject)
{
    std::string key = "open:" + address;
    unsigned long suppressed = 0;
    if (throttle(key, suppressed))
        log_warning(subject + " " + address + ", not a loopback address, and sysconfig.allow is not set: " +
                    how_to_restrict + more_text(suppressed));
}

bool admit_connection(const AllowList& allow, int fd)
{
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    auto* sa = reinterpret_cast<sockaddr*>(&ss);
    if (!allow.restricts()) {
        if (::getsockname(fd, sa, &len) == 0 && (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) &&
            !loopback_only(sa))
            Gate(state_file()).warn_open(socket_address_name(sa), "a connection came in on");
        return true;
    }
    if (::getpeername(fd, sa, &len) != 0) {
        if (errno == ENOTSOCK)
            return true; // a pipe has no peer
        ss.ss_family = AF_UNSPEC;
    }
    return Gate(state_file()).admit(allow, sa);
}

void warn_if_open(const AllowList& allow, int listening_fd)
{
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    auto* sa = reinterpret_cast<sockaddr*>(&ss);
    if (allow.restricts() || ::getsockname(listening_fd, sa, &len) != 0 ||
        (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) || loopback_only(sa))
        return;
    Gate().warn_open(socket_address_name(sa), "listening on");
}

} // namespace sockmapd
