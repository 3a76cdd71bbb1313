// mapkey — what a map does with a key around the database; pure functions.
//
// Before the query: fold_key() (lowercase, ASCII only), key_candidates()
// (the key, then its form without the address extension, as Postfix tries
// its own tables), domain_allowed() (the map's domain list, Postfix's
// db_common_check_domain rules) and split_address() (%u / %d, split at the
// last '@').  compile_query() turns a `query` template into SQL with a `?`
// for each %s, %u, %d and the list of key parts to bind, so key text never
// becomes SQL; it throws ConfigError naming the map for templates it cannot
// compile.  After the query: format_result() applies result_format.
#pragma once

#include "config.hh"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sockmapd
{

// A part of the key bound as one statement parameter.
enum class KeyPart {
    Whole,  // %s, and the key column of table maps
    Local,  // %u: before the last '@'
    Domain, // %d: after the last '@'
};

struct Address {
    std::string_view local;
    std::string_view domain;
};

// Splits at the last '@'; nullopt for a key without one.  Either part may be empty.
std::optional<Address> split_address(std::string_view key);

struct CompiledQuery {
    std::string sql;             // the template with each escape replaced by '?'
    std::vector<KeyPart> params; // in the order of the '?'s
};

// %s %u %d become '?'; %% becomes '%'.  Inside a quoted string the escapes
// are kept as parameters too ('%s' becomes ?, 'x%uy' becomes
// CONCAT('x', ?, 'y')) so Postfix-style templates work unchanged.  Refused
// (ConfigError naming `service`): unknown or lone '%', an escape inside a
// comment, a back-quoted identifier, a prefixed string (_utf8mb4'%s', X'%s')
// or right after a backslash, an unterminated string or comment, a '?' of
// its own, no escape at all.
CompiledQuery compile_query(std::string_view tmpl, const std::string& service);

// A-Z to a-z; every other byte unchanged (UTF-8 stays valid, non-ASCII
// letters are not folded).
std::string ascii_lower(std::string_view s);

// The key as the map looks it up: lower-cased when `lowercase` is set.
std::string fold_key(const MapConfig& map, std::string_view key);

// The address without its extension ("user+tag@example.org" ->
// "user@example.org", "user+tag" -> "user"), split at the first of
// `delimiters` in the local part; nullopt when nothing is stripped: no
// delimiter, a delimiter as the first character, or one of the names
// Postfix never splits (postmaster, mailer-daemon; owner-* and *-request
// when '-' is a delimiter).
std::optional<std::string> strip_extension(std::string_view key, std::string_view delimiters);

// The keys to try, in order: the folded key, then (strip_extension set)
// its reduced form.  The second is tried only when the first is not found.
std::vector<std::string> key_candidates(const MapConfig& map, std::string_view key);

// False when the map has a domain list and the key is not an address with a
// non-empty local part and a listed domain (compared without case).
bool domain_allowed(const MapConfig& map, std::string_view key);

// `format` with %s replaced by `value` and %% by '%'; empty format: value.
std::string format_result(std::string_view format, std::string_view value);

} // namespace sockmapd
