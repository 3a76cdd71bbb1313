#include "gate.hh"

#include "log.hh"
#include "rundir.hh"
#include "util.hh"

#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <ctime>

namespace sockmapd
{

namespace
{

constexpr std::string_view state_file_stem = "refused"; // refused.state, refused.lock
constexpr std::size_t max_state_file = 64 * 1024;

const char how_to_restrict[] = "every host that reaches it may query every map. Set sysconfig.allow to the "
                               "addresses of the MTAs (see sockmapd.json(5)), and firewall the port or give the "
                               "socket unit IPAddressAllow=";

std::string more_text(unsigned long suppressed)
{
    return suppressed ? " (" + std::to_string(suppressed) + " more since the last such message)" : std::string();
}

SharedFile state_file()
{
    return SharedFile(runtime_dir(), state_file_stem, max_state_file);
}

} // namespace

bool Gate::throttle(std::string& key, unsigned long& suppressed)
{
    const std::time_t now = std::time(nullptr);
    if (!file_.usable())
        return throttle_.admit(key, now, suppressed);
    // Held for microseconds by each handler; a stopped holder costs at
    // most the bound, and the event is then logged.
    bool log = true;
    int err = 0;
    const auto done = file_.update(
        std::chrono::milliseconds(200), SharedFile::WhenBusy::Skip,
        [&](std::string_view text) -> std::optional<std::string> {
            throttle_.load(text, now);
            log = throttle_.admit(key, now, suppressed);
            return throttle_.save();
        },
        err);
    return done == SharedFile::Update::Busy || done == SharedFile::Update::Unreadable || log;
}

bool Gate::admit(const AllowList& allow, const sockaddr* peer)
{
    if (allow.admits(peer))
        return true;
    const std::string addr = peer_address(peer);
    const std::string network = peer_network(peer);
    std::string key = network;
    unsigned long suppressed = 0;
    if (throttle(key, suppressed)) {
        // Counted by network, so that decoys from one host or one
        // provider's block fill one entry; past the table's bound the new
        // networks share one line a minute, which names the address that
        // made it.
        const std::string shared = key == network ? std::string()
                                                  : " (one line a minute for the networks not seen before: "
                                                    "the table of networks is full)";
        log_warning("refused a connection from " + addr + ": not in sysconfig.allow" + shared + more_text(suppressed),
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
