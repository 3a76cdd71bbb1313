// libFuzzer target: an allow-list entry either parses to a rule whose text
// parses back to the same rule and that admits its own network address,
// or is refused with a reason; the throttle's state file, whatever its
// text, loads into a bounded table.
#include "allow.hh"

#include <netinet/in.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

using namespace sockmapd;

namespace
{

// The rule's own address as a peer.
sockaddr_storage peer_of(const AllowRule& r)
{
    sockaddr_storage ss{};
    if (r.family == AllowRule::Family::V4) {
        auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
        s4->sin_family = AF_INET;
        std::memcpy(&s4->sin_addr, r.addr.data(), 4);
    } else if (r.family == AllowRule::Family::V6) {
        auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
        s6->sin6_family = AF_INET6;
        std::memcpy(&s6->sin6_addr, r.addr.data(), 16);
    } else {
        ss.ss_family = AF_UNIX;
    }
    return ss;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::string text(reinterpret_cast<const char*>(data), size);
    std::string why;
    if (const auto r = parse_allow_rule(text, why)) {
        std::string again_why;
        const auto again = parse_allow_rule(r->text(), again_why);
        if (!again || again->text() != r->text() || again->prefix != r->prefix)
            std::abort();
        const sockaddr_storage ss = peer_of(*r);
        if (!AllowList({*r}).admits(reinterpret_cast<const sockaddr*>(&ss)))
            std::abort();
    } else if (why.empty()) {
        std::abort();
    }
    LogThrottle t(60, 8);
    t.load(text, 1000);
    if (t.size() > 9)
        std::abort();
    std::string key = "192.0.2.1";
    unsigned long n = 0;
    t.admit(key, 1000, n);
    return 0;
}
