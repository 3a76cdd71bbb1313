// mapkey — the key rules of a map, all in one place; pure functions.
//
// KeyCandidates is every key a lookup tries for one request, in order:
// the key's rewrites (lowercase, ASCII only; its form without the address
// extension, as Postfix tries its own tables) walked through the map's
// search order (config.hh SearchOrder), the tables Postfix searches itself
// for hash or mysql tables but not for a socketmap.  A new rewrite step
// belongs there, and the lookup tries exactly what it lists.
// Each candidate is split once, when it is listed: a Candidate carries
// where its last '@' is, for the domain list and the key parts a statement
// binds.  domain_allowed() applies the map's domain list (Postfix's
// db_common_check_domain rules) to each candidate; split_address() splits
// at the last '@'.
#pragma once

#include "mapconfig.hh"
#include "util.hh" // ascii_lower

#include <cstring>
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

// Where the last '@' of k is, or npos (memrchr: a lookup asks for every
// key's, and the library's search is word-wise).
inline std::size_t last_at(std::string_view k)
{
    const void* p = k.empty() ? nullptr : memrchr(k.data(), '@', k.size());
    return p ? static_cast<std::size_t>(static_cast<const char*>(p) - k.data()) : std::string_view::npos;
}

// One key to try, split at its last '@' once.
struct Candidate {
    Candidate(std::string_view k) : key(k), at(last_at(k)) {}
    Candidate(const std::string& k) : Candidate(std::string_view(k)) {}
    Candidate(const char* k) : Candidate(std::string_view(k)) {}
    Candidate(std::string_view k, std::size_t last_at) : key(k), at(last_at) {}
    operator std::string_view() const { return key; }
    bool has_at() const { return at != std::string_view::npos; }
    std::string_view local() const { return key.substr(0, at); }   // with has_at()
    std::string_view domain() const { return key.substr(at + 1); } // with has_at()

    std::string_view key;
    std::size_t at; // the last '@'; npos: none
};

// The address without its extension ("user+tag@example.org" ->
// "user@example.org", "user+tag" -> "user"), split at the first of
// `delimiters` in the local part; nullopt when nothing is stripped: no
// delimiter, a delimiter as the first character, or one of the names
// Postfix never splits (postmaster, mailer-daemon; owner-* and *-request
// when '-' is a delimiter).
std::optional<std::string> strip_extension(std::string_view key, std::string_view delimiters);

// The keys to try, in order; the lookup tries the next only while the
// ones before it were not found.  With `key` folded when `lowercase` is set,
// and `bare` its form without the extension when strip_extension gives one:
//   exact      key, bare
//   access     with '@': key, bare, the domain and its parents, local@ of
//              key, local@ of bare;
//              an IPv4 address: 1.2.3.4, 1.2.3, 1.2, 1; an IPv6 address:
//              its prefixes at each ':' (2001:db8::1, 2001:db8:, 2001:db8,
//              2001); anything else: the name and its parents (no bare form)
//   transport  with '@': key, bare, the domain and its parents;
//              without: key, bare (so "*" is asked as it is)
//   virtual    with '@': key, bare, @domain; without: key, bare
// Parent domains are "b.example", "example" of "a.b.example" when
// parent_matches_subdomains is set, else ".b.example", ".example"; an
// address literal ("[192.0.2.1]"), an IP address, and a name that is not a
// domain name (an empty label: a leading or trailing dot or "..") have
// none: the name itself is the only key of its walk.  Empty keys and
// repeats are left out.  refusal() says why a key is not searched at all
// (no keys then: the lookup answers PERM rather than run dozens of
// queries): its domain would be walked and passes max_search_domain bytes,
// has a label over max_label_length bytes or more than max_search_labels
// labels.  So no key has more than max_candidate_keys candidates.  The
// views point into `key` or into the object: it neither copies nor moves.
// assign() lists another key's candidates in the same object, so that a
// lookup that keeps one allocates nothing once it has grown.
class KeyCandidates
{
public:
    KeyCandidates() = default;
    KeyCandidates(const MapConfig& map, std::string_view key) { assign(map, key); }
    KeyCandidates(const KeyCandidates&) = delete;
    KeyCandidates& operator=(const KeyCandidates&) = delete;

    const Candidate* begin() const { return keys_.data(); }
    const Candidate* end() const { return keys_.data() + keys_.size(); }
    std::size_t size() const { return keys_.size(); }
    bool searchable() const { return refusal_ == nullptr; }
    // The PERM text when not searchable(), else nullptr.
    const char* refusal() const { return refusal_; }
    void assign(const MapConfig& map, std::string_view key);

private:
    // `at`: where k's last '@' is, when the caller knows it.
    void add(std::string_view k, std::size_t at);
    void add(std::string_view k) { add(k, last_at(k)); }
    void add_domain_walk(std::string_view key, std::size_t from, bool parent_style);
    void add_network_walk(std::string_view addr, char delimiter);

    std::string folded_;
    std::string reduced_;
    std::vector<Candidate> keys_;
    const char* refusal_ = nullptr;
};

// The longest domain (or host name) a search walks: a DNS name is at most
// 253 bytes, 255 with a trailing dot and an address literal's brackets.
inline constexpr std::size_t max_search_domain = 255;
// A DNS label is at most 63 bytes (RFC 1035).
inline constexpr std::size_t max_label_length = 63;
// The most labels a walked domain may have.  A DNS name may have 127, and
// Postfix walks them all, a query each; mail domains and client host names
// have a handful (reverse names of dynamic pools, the deepest in use, under
// ten), so 32 is never reached by mail and keeps one request to a few
// dozen queries.
inline constexpr std::size_t max_search_labels = 32;
// The most keys one request tries, reached by `access` with '@': the key,
// its bare form, the domain and its parents, and user@ of both.  (IPv6
// networks are at most 9, `transport` 2 + the walk, `virtual` 3, `exact` 2.)
inline constexpr std::size_t max_candidate_keys = 4 + max_search_labels;

// False when the map has a domain list and the key is not an address with a
// non-empty local part and a listed domain (compared without case).
bool domain_allowed(const MapConfig& map, const Candidate& key);

} // namespace sockmapd
