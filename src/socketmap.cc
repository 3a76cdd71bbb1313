#include "socketmap.hh"

namespace sockmapd
{

namespace
{

constexpr std::size_t max_reason_length = 200;

// Reasons come from databases and the system; keep them one short line.
std::string clean_reason(std::string_view reason, std::string_view fallback)
{
    if (reason.empty())
        reason = fallback;
    std::string out;
    out.reserve(std::min(reason.size(), max_reason_length));
    for (const char c : reason.substr(0, max_reason_length)) {
        const auto u = static_cast<unsigned char>(c);
        out.push_back(u < 0x20 || u == 0x7f ? ' ' : c);
    }
    return out;
}

Reply with_word(std::string_view word, std::string_view text)
{
    Reply r{word, {}};
    r.payload.reserve(word.size() + 1 + text.size());
    r.payload.append(word);
    r.payload.push_back(' ');
    r.payload.append(text);
    return r;
}

} // namespace

std::optional<Request> split_request(std::string_view payload)
{
    const auto space = payload.find(' ');
    if (space == std::string_view::npos || space == 0)
        return std::nullopt;
    return Request{payload.substr(0, space), payload.substr(space + 1)};
}

LookupResult ask(Lookup& lookup, const Request& req)
{
    if (req.key.size() > max_key_length)
        return {Outcome::PermFail, "key too long"};
    return lookup.lookup(req.map, req.key);
}

Reply reply_for(const LookupResult& r)
{
    switch (r.outcome) {
    case Outcome::Found:
        if (r.text.empty())
            return with_word("NOTFOUND", "");
        if (r.text.size() > max_value_length)
            return reply_for(result_too_long());
        return with_word("OK", r.text);
    case Outcome::NotFound:
        return with_word("NOTFOUND", "");
    case Outcome::TempFail:
        return with_word("TEMP", clean_reason(r.text, "temporary failure"));
    case Outcome::Timeout:
        return with_word("TIMEOUT", clean_reason(r.text, "database timeout"));
    case Outcome::PermFail:
        return with_word("PERM", clean_reason(r.text, "permanent failure"));
    case Outcome::NoSuchMap:
        return with_word("PERM", "unknown map");
    }
    // An outcome we do not know is not an answer: let the MTA retry.
    return with_word("TEMP", "internal error");
}

LookupResult malformed_request()
{
    return {Outcome::PermFail, "request without map name and key"};
}

LookupResult result_too_long()
{
    return {Outcome::PermFail, "result too long"};
}

} // namespace sockmapd
