// socketmap — the words of the socketmap protocol, without I/O.
//
// split_request() cuts a request payload into map name and key at the
// first space.  reply_for() is the one place where an outcome becomes a
// reply (OK/NOTFOUND/TEMP/TIMEOUT/PERM, the table in DESIGN.md); it never
// returns more than max_reply_length bytes.
#pragma once

#include "lookup.hh"

#include <optional>
#include <string>
#include <string_view>

namespace sockmapd {

struct Request {
    std::string_view map;
    std::string_view key;
};

// nullopt when the payload has no space or the map name is empty.
std::optional<Request> split_request(std::string_view payload);

// The reply payload for an outcome.  Reasons are cleaned of control bytes
// and shortened; a Found value that would pass the reply limit becomes PERM.
std::string reply_for(const LookupResult& result);

// The reply for a request that is not "<map> <key>".
std::string reply_malformed_request();

} // namespace sockmapd
