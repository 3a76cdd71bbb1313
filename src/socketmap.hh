// socketmap — the words of the socketmap protocol, without I/O.
//
// split_request() cuts a request payload into map name and key at the
// first space; ask() hands a request to a Lookup, answering PERM without
// asking for a key over max_key_length.  reply_for() is the one place where an outcome becomes a
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

// The longest map name (postmaps[].service) and key a request may carry.
// The key's limit does not shrink with the map name's length: a request
// may be as long as the longest name, a space and the longest key
// together; a longer frame is broken framing (PERM, then close).
// (Postfix itself limits nothing on the request side.)
inline constexpr std::size_t max_map_name_length = 100;
inline constexpr std::size_t max_key_length = 10000;
inline constexpr std::size_t max_request_length = max_map_name_length + 1 + max_key_length;

struct Request {
    std::string_view map;
    std::string_view key;
};

// nullopt when the payload has no space or the map name is empty.
std::optional<Request> split_request(std::string_view payload);

// `lookup`'s answer to `req`; a key over max_key_length is PermFail "key
// too long" without a lookup.
LookupResult ask(Lookup& lookup, const Request& req);

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

// The outcome of an answer longer than max_value_length: PermFail "result
// too long", whoever finds it (the rows' joiner, or reply_for()).
LookupResult result_too_long();

} // namespace sockmapd
