// allow — who may connect: the rules of sysconfig.allow, pure.
//
// An entry is an IPv4 or IPv6 address ("192.0.2.25", "2001:db8::25", one
// host), a CIDR prefix ("192.0.2.0/24", "2001:db8::/48") or the word "unix"
// (every unix-socket peer).  parse_allow_rule() answers nullopt and says why
// for anything else: a host name, brackets, a prefix length out of range,
// host bits set past the prefix ("192.0.2.1/24" is a typo, not a network).
// An IPv4-mapped entry ("::ffff:192.0.2.25") is stored as the IPv4 rule.
//
// AllowList::admits() decides for a peer address: with no rules everyone
// is admitted (no list configured); otherwise a peer is admitted when a
// rule covers it.  An IPv4 client of an IPv6 socket (::ffff:a.b.c.d) is
// matched as IPv4; a unix peer only by "unix"; any other family never.
// Nothing here allocates while deciding or does I/O.
//
// LogThrottle keeps, per key (a peer's network, peer_network()), when it was
// last logged and how many events were not logged since, in a bounded
// table: it is what keeps one client that keeps trying, from one address
// or many of one network, from flooding the log.  Its text
// form (save()/load()) lets handler processes share it through a file.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <ctime>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sockmapd
{

struct AllowRule {
    enum class Family { V4, V6, Unix } family = Family::V4;
    std::array<std::uint8_t, 16> addr{}; // V4: the first 4 bytes
    unsigned prefix = 0;                 // bits that must match

    // "192.0.2.0/24", "2001:db8::1/128", "unix"
    std::string text() const;
};

// One entry of sysconfig.allow; nullopt with `why` set when malformed.
std::optional<AllowRule> parse_allow_rule(std::string_view entry, std::string& why);

class AllowList
{
public:
    AllowList() = default;
    explicit AllowList(std::vector<AllowRule> rules) : rules_(std::move(rules)) {}

    // A list is configured: peers outside it are refused.
    bool restricts() const { return !rules_.empty(); }
    // `peer` is the address of a connected socket's other end.
    bool admits(const sockaddr* peer) const;
    // "192.0.2.25/32, unix" for messages.
    std::string text() const;

private:
    std::vector<AllowRule> rules_;
};

// The peer for logs and the throttle, without its port: "192.0.2.1",
// "2001:db8::1", an IPv4-mapped address as IPv4, "unix", or "unknown".
std::string peer_address(const sockaddr* peer);

// The network a peer's refusals are counted under: its /24 for IPv4 (an
// IPv4-mapped address too), its /64 for IPv6 ("192.0.2.0/24",
// "2001:db8:1:2::/64"); "unix" or "unknown" as peer_address() says.  One
// host, or one customer of a provider, has many addresses of one network
// and few networks.
std::string peer_network(const sockaddr* peer);

// A local address that only this host can reach: 127.0.0.0/8, ::1,
// ::ffff:127.0.0.0/104, or a unix socket.
bool loopback_only(const sockaddr* local);

class LogThrottle
{
public:
    // One logged event per key and `window` seconds.  At most `max_keys`
    // keys are tracked; when the table is full and nothing in it has
    // expired, new keys share one entry (overflow_key), so the table and
    // the log stay bounded; the caller names the event it logs then.
    explicit LogThrottle(std::time_t window = 60, std::size_t max_keys = 256) : window_(window), max_keys_(max_keys) {}

    // True when an event for `key` at `now` is to be logged: the first one,
    // and then one per window.  `suppressed` is set to the events not
    // logged for the key since its previous logged one.  `key` is
    // replaced by overflow_key when the table is full.
    bool admit(std::string& key, std::time_t now, unsigned long& suppressed);

    // One line per key: "<last-logged-epoch> <suppressed> <key>".
    std::string save() const;
    // Replaces the table with `text`; skips malformed lines, clamps times
    // in the future to `now` (a clock step must not silence a key).
    void load(std::string_view text, std::time_t now);
    std::size_t size() const { return table_.size(); }

    static constexpr const char* overflow_key = "other-addresses";

private:
    struct Entry {
        std::time_t logged = 0;
        unsigned long suppressed = 0;
    };
    std::map<std::string, Entry, std::less<>> table_;
    std::time_t window_;
    std::size_t max_keys_;
};

} // namespace sockmapd
