// socketmap — the words of the socketmap protocol, without I/O.
//
// split_request() cuts a request payload into map name and key at the
// first space.  reply_for() is the one place where an outcome becomes a
// reply (OK/NOTFOUND/TEMP/TIMEOUT/PERM, the table in doc/DESIGN.md, "The
// protocol and the reply policy") — lookups, malformed requests and broken
// framing alike; a reply is never longer than max_reply_length bytes, and
// carries its status word for the logs.
#pragma once

#include "lookup.hh"

#include <optional>
#include <string>
#include <string_view>

namespace sockmapd
{

// Postfix's limit on a reply, and so the longest value "OK <value>" can carry.
inline constexpr std::size_t max_reply_length = 100000;
inline constexpr std::size_t max_value_length = max_reply_length - std::string_view("OK ").size();

struct Request {
    std::string_view map;
    std::string_view key;
};

// nullopt when the payload has no space or the map name is empty.
std::optional<Request> split_request(std::string_view payload);

struct Reply {
    std::string_view status; // "OK", "NOTFOUND", "TEMP", "TIMEOUT" or "PERM"
    std::string payload;     // the whole reply: status word, space, text
};

// The reply for an outcome.  Reasons are cleaned of control bytes and
// shortened; a Found value that would pass the reply limit becomes PERM,
// an empty one NOTFOUND.
Reply reply_for(const LookupResult& result);

// The outcome of a request that is not "<map> <key>".
LookupResult malformed_request();

} // namespace sockmapd
