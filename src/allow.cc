#include "allow.hh"

#include "util.hh"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace sockmapd
{

namespace
{

bool is_word_unix(std::string_view s)
{
    return s.size() == 4 && std::equal(s.begin(), s.end(), "unix", [](char a, char b) {
               return (a >= 'A' && a <= 'Z' ? static_cast<char>(a - 'A' + 'a') : a) == b;
           });
}

// The first `bits` bits of `a` and `b` are equal.
bool same_prefix(const std::uint8_t* a, const std::uint8_t* b, unsigned bits)
{
    const unsigned whole = bits / 8, rest = bits % 8;
    if (std::memcmp(a, b, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    const auto mask = static_cast<std::uint8_t>(0xff << (8 - rest));
    return ((a[whole] ^ b[whole]) & mask) == 0;
}

// Bits past the prefix that are set: "192.0.2.1/24" names a host, not a network.
bool host_bits_set(const AllowRule& r, unsigned width)
{
    for (unsigned bit = r.prefix; bit < width; ++bit)
        if (r.addr[bit / 8] & (0x80 >> (bit % 8)))
            return true;
    return false;
}

void clear_host_bits(AllowRule& r, unsigned width)
{
    for (unsigned bit = r.prefix; bit < width; ++bit)
        r.addr[bit / 8] &= static_cast<std::uint8_t>(~(0x80 >> (bit % 8)));
}

const std::uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

// ::ffff:a.b.c.d/96+n is the IPv4 rule a.b.c.d/n: peers are compared as IPv4.
void unmap(AllowRule& r)
{
    if (r.family != AllowRule::Family::V6 || r.prefix < 96 || std::memcmp(r.addr.data(), mapped_prefix, 12) != 0)
        return;
    r.family = AllowRule::Family::V4;
    std::memmove(r.addr.data(), r.addr.data() + 12, 4);
    std::fill(r.addr.begin() + 4, r.addr.end(), 0);
    r.prefix -= 96;
}

// The peer as a family and its address bytes; mapped IPv4 as IPv4.
struct PeerBytes {
    bool known = false; // unix, IPv4 or IPv6
    AllowRule::Family family = AllowRule::Family::Unix;
    const std::uint8_t* bytes = nullptr; // the address; nullptr for unix
};

PeerBytes peer_bytes(const sockaddr* sa)
{
    if (!sa)
        return {};
    if (sa->sa_family == AF_UNIX)
        return {true, AllowRule::Family::Unix};
    if (sa->sa_family == AF_INET)
        return {true, AllowRule::Family::V4,
                reinterpret_cast<const std::uint8_t*>(&reinterpret_cast<const sockaddr_in*>(sa)->sin_addr)};
    if (sa->sa_family == AF_INET6) {
        const auto* b = reinterpret_cast<const std::uint8_t*>(&reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr);
        if (std::memcmp(b, mapped_prefix, 12) == 0)
            return {true, AllowRule::Family::V4, b + 12};
        return {true, AllowRule::Family::V6, b};
    }
    return {};
}

std::string why_not_address(const std::string& addr)
{
    if (addr.find_first_of("[]") != std::string::npos)
        return "write an IPv6 address without brackets, such as 2001:db8::25 or 2001:db8::/48";
    if (addr.find(':') == std::string::npos &&
        std::any_of(addr.begin(), addr.end(), [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }))
        return "host names are not looked up: give the client's IP address, or \"unix\"";
    return "give an IPv4 or IPv6 address, a prefix such as 192.0.2.0/24, or \"unix\"";
}

} // namespace

std::string AllowRule::text() const
{
    if (family == Family::Unix)
        return "unix";
    char buf[INET6_ADDRSTRLEN] = "";
    inet_ntop(family == Family::V4 ? AF_INET : AF_INET6, addr.data(), buf, sizeof buf);
    return std::string(buf) + "/" + std::to_string(prefix);
}

std::optional<AllowRule> parse_allow_rule(std::string_view entry, std::string& why)
{
    AllowRule r;
    if (is_word_unix(entry)) {
        r.family = AllowRule::Family::Unix;
        return r;
    }
    if (entry.empty()) {
        why = "is empty: give an address, a prefix such as 192.0.2.0/24, or \"unix\"";
        return std::nullopt;
    }
    if (!printable_name(entry)) {
        why = "contains a space or a control character";
        return std::nullopt;
    }
    const auto slash = entry.find('/');
    const std::string addr(entry.substr(0, slash));
    const bool v6 = addr.find(':') != std::string::npos;
    r.family = v6 ? AllowRule::Family::V6 : AllowRule::Family::V4;
    const unsigned width = v6 ? 128 : 32;
    if (inet_pton(v6 ? AF_INET6 : AF_INET, addr.c_str(), r.addr.data()) != 1) {
        why = "\"" + std::string(entry) + "\": " + why_not_address(addr);
        return std::nullopt;
    }
    r.prefix = width;
    if (slash != std::string_view::npos) {
        const auto bits = parse_decimal(entry.substr(slash + 1), width);
        if (!bits) {
            why = "\"" + std::string(entry) + "\": the prefix length after / must be 0-" + std::to_string(width);
            return std::nullopt;
        }
        r.prefix = static_cast<unsigned>(*bits);
    }
    if (host_bits_set(r, width)) {
        AllowRule net = r;
        clear_host_bits(net, width);
        why = "\"" + std::string(entry) + "\" has bits set past the /" + std::to_string(r.prefix) +
              " prefix: write the network (" + net.text() + ") or the host (" + addr + ")";
        return std::nullopt;
    }
    unmap(r);
    return r;
}

bool AllowList::admits(const sockaddr* peer) const
{
    if (rules_.empty())
        return true;
    const PeerBytes p = peer_bytes(peer);
    if (!p.known)
        return false;
    return std::any_of(rules_.begin(), rules_.end(), [&](const AllowRule& r) {
        if (r.family != p.family)
            return false;
        return r.family == AllowRule::Family::Unix || same_prefix(r.addr.data(), p.bytes, r.prefix);
    });
}

std::string AllowList::text() const
{
    std::string out;
    for (const auto& r : rules_)
        out += (out.empty() ? "" : ", ") + r.text();
    return out;
}

std::string peer_address(const sockaddr* peer)
{
    const PeerBytes p = peer_bytes(peer);
    if (!p.known)
        return "unknown";
    if (p.family == AllowRule::Family::Unix)
        return "unix";
    char buf[INET6_ADDRSTRLEN] = "";
    inet_ntop(p.family == AllowRule::Family::V4 ? AF_INET : AF_INET6, p.bytes, buf, sizeof buf);
    return buf;
}

std::string peer_network(const sockaddr* peer)
{
    const PeerBytes p = peer_bytes(peer);
    if (!p.known || p.family == AllowRule::Family::Unix)
        return peer_address(peer);
    const bool v4 = p.family == AllowRule::Family::V4;
    std::uint8_t net[16] = {};
    std::memcpy(net, p.bytes, v4 ? 3 : 8);
    char buf[INET6_ADDRSTRLEN] = "";
    inet_ntop(v4 ? AF_INET : AF_INET6, net, buf, sizeof buf);
    return std::string(buf) + (v4 ? "/24" : "/64");
}

bool loopback_only(const sockaddr* local)
{
    const PeerBytes p = peer_bytes(local);
    if (!p.known)
        return false;
    if (p.family == AllowRule::Family::Unix)
        return true;
    if (p.family == AllowRule::Family::V4)
        return p.bytes[0] == 127;
    static const std::uint8_t v6_loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    return std::memcmp(p.bytes, v6_loopback, 16) == 0;
}

bool LogThrottle::admit(std::string& key, std::time_t now, unsigned long& suppressed)
{
    auto it = table_.find(key);
    if (it == table_.end() && table_.size() >= max_keys_) {
        std::erase_if(table_, [&](const auto& kv) { return now - kv.second.logged >= window_; });
        if (table_.size() >= max_keys_) {
            key = overflow_key;
            it = table_.find(key);
        }
    }
    if (it == table_.end())
        it = table_.emplace(key, Entry{}).first;
    Entry& e = it->second;
    if (e.logged == 0 || now - e.logged >= window_ || now < e.logged) {
        suppressed = e.suppressed;
        e = {now, 0};
        return true;
    }
    ++e.suppressed;
    suppressed = e.suppressed;
    return false;
}

std::string LogThrottle::save() const
{
    std::string out;
    for (const auto& [key, e] : table_)
        out += std::to_string(static_cast<long long>(e.logged)) + " " + std::to_string(e.suppressed) + " " + key + "\n";
    return out;
}

void LogThrottle::load(std::string_view text, std::time_t now)
{
    table_.clear();
    while (!text.empty() && table_.size() <= max_keys_) {
        const auto nl = text.find('\n');
        if (nl == std::string_view::npos)
            break; // an unterminated last line is a torn write
        const std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl + 1);
        const auto sp1 = line.find(' ');
        const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
        if (sp2 == std::string_view::npos)
            continue;
        const auto logged = parse_decimal(line.substr(0, sp1));
        const auto count = parse_decimal(line.substr(sp1 + 1, sp2 - sp1 - 1), 1ULL << 32);
        const std::string_view key = line.substr(sp2 + 1);
        if (!logged || !count || !printable_name(key) || key.size() > 100)
            continue;
        const auto when = static_cast<std::time_t>(std::min<std::uint64_t>(*logged, static_cast<std::uint64_t>(now)));
        table_[std::string(key)] = {when, static_cast<unsigned long>(*count)};
    }
}

} // namespace sockmapd
