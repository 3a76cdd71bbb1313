// libFuzzer target: request split and reply policy on arbitrary payloads.
#include "netstring.hh"
#include "socketmap.hh"

#include <cstdint>
#include <cstdlib>
#include <string>

using namespace sockmapd;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::string payload(reinterpret_cast<const char*>(data), size);
    if (const auto r = split_request(payload)) {
        if (r->map.empty() || r->map.find(' ') != std::string_view::npos)
            std::abort();
        if (r->map.size() + 1 + r->key.size() != payload.size())
            std::abort();
    }
    for (const auto o : {Outcome::Found, Outcome::NotFound, Outcome::TempFail, Outcome::Timeout, Outcome::PermFail,
                         Outcome::NoSuchMap}) {
        const Reply r = reply_for({o, payload});
        const std::string& reply = r.payload;
        if (reply.rfind(std::string(r.status) + " ", 0) != 0)
            std::abort();
        if (reply.size() > max_reply_length)
            std::abort();
        const bool ok_like = reply.rfind("OK ", 0) == 0 || reply.rfind("NOTFOUND ", 0) == 0;
        if (ok_like != (o == Outcome::Found || o == Outcome::NotFound))
            std::abort();
        if (o != Outcome::Found && reply.find('\n') != std::string::npos)
            std::abort();
    }
    return 0;
}
