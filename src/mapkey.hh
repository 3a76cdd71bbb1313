// mapkey — the key rules of a map, all in one place; pure functions.
//
// KeyCandidates is every rewrite a key goes through before the query:
// lowercase (ASCII only), then its form without the address extension, as
// Postfix tries its own tables; a new rewrite step belongs there, and the
// lookup tries exactly what it lists.  domain_allowed() applies the map's
// domain list (Postfix's db_common_check_domain rules); split_address()
// splits at the last '@' (for %u / %d and the domain list).
#pragma once

#include "config.hh"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sockmapd
{

struct Address {
    std::string_view local;
    std::string_view domain;
};

// Splits at the last '@'; nullopt for a key without one.  Either part may be empty.
std::optional<Address> split_address(std::string_view key);

// A-Z to a-z; every other byte unchanged (UTF-8 stays valid, non-ASCII
// letters are not folded).
std::string ascii_lower(std::string_view s);

// The address without its extension ("user+tag@example.org" ->
// "user@example.org", "user+tag" -> "user"), split at the first of
// `delimiters` in the local part; nullopt when nothing is stripped: no
// delimiter, a delimiter as the first character, or one of the names
// Postfix never splits (postmaster, mailer-daemon; owner-* and *-request
// when '-' is a delimiter).
std::optional<std::string> strip_extension(std::string_view key, std::string_view delimiters);

// The keys to try, in order: the key (lower-cased when `lowercase` is
// set), then, with strip_extension set, its reduced form when there is one.
// The lookup tries the second only when the first is not found.  The views
// point into `key` or into the object: it neither copies nor moves.
class KeyCandidates
{
public:
    KeyCandidates(const MapConfig& map, std::string_view key);
    KeyCandidates(const KeyCandidates&) = delete;
    KeyCandidates& operator=(const KeyCandidates&) = delete;

    const std::string_view* begin() const { return keys_; }
    const std::string_view* end() const { return keys_ + n_; }
    std::size_t size() const { return n_; }

private:
    std::string folded_;
    std::string reduced_;
    std::string_view keys_[2];
    std::size_t n_ = 1;
};

// False when the map has a domain list and the key is not an address with a
// non-empty local part and a listed domain (compared without case).
bool domain_allowed(const MapConfig& map, std::string_view key);

} // namespace sockmapd
