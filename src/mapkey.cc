#include "mapkey.hh"

#include <arpa/inet.h>

#include <algorithm>

namespace sockmapd
{

namespace
{

// inet_pton() wants a C string; an address is short, a longer key is none.
bool is_ip_address(std::string_view s, int family)
{
    char buf[64];
    if (s.empty() || s.size() >= sizeof buf || s.find('\0') != std::string_view::npos)
        return false;
    s.copy(buf, s.size());
    buf[s.size()] = '\0';
    unsigned char out[16];
    return ::inet_pton(family, buf, out) == 1;
}

bool is_numeric_host(std::string_view s)
{
    return is_ip_address(s, AF_INET) || is_ip_address(s, AF_INET6);
}

struct Labels {
    std::size_t count = 0;
    bool empty = false; // a leading or trailing dot, or ".."
    bool too_long = false;
};

Labels labels_of(std::string_view domain)
{
    Labels l;
    for (std::size_t start = 0;; ++l.count) {
        const auto dot = domain.find('.', start);
        const std::size_t len = (dot == std::string_view::npos ? domain.size() : dot) - start;
        l.empty = l.empty || len == 0;
        l.too_long = l.too_long || len > max_label_length;
        if (dot == std::string_view::npos)
            return {l.count + 1, l.empty, l.too_long};
        start = dot + 1;
    }
}

} // namespace

std::optional<Address> split_address(std::string_view key)
{
    const auto at = last_at(key);
    if (at == std::string_view::npos)
        return std::nullopt;
    return Address{key.substr(0, at), key.substr(at + 1)};
}

std::optional<std::string> strip_extension(std::string_view key, std::string_view delimiters)
{
    if (delimiters.empty())
        return std::nullopt;
    const auto at = last_at(key);
    const std::string_view local = key.substr(0, at);
    const std::string_view rest = at == std::string_view::npos ? std::string_view() : key.substr(at);
    // Postfix's split_addr() leaves these alone, whatever the delimiter.
    if (ascii_iequals(local, "postmaster") || ascii_iequals(local, "mailer-daemon"))
        return std::nullopt;
    if (delimiters.find('-') != std::string_view::npos) {
        constexpr std::string_view owner = "owner-", request = "-request";
        if (local.size() >= owner.size() && ascii_iequals(local.substr(0, owner.size()), owner))
            return std::nullopt;
        if (local.size() > request.size() && ascii_iequals(local.substr(local.size() - request.size()), request))
            return std::nullopt;
    }
    const auto cut = local.find_first_of(delimiters);
    if (cut == std::string_view::npos || cut == 0)
        return std::nullopt;
    return std::string(local.substr(0, cut)) + std::string(rest);
}

void KeyCandidates::assign(const MapConfig& map, std::string_view key)
{
    keys_.clear();
    reduced_.clear();
    refusal_ = nullptr;
    // Without lowercase the key is used as sent: no copy.
    if (map.lowercase) {
        folded_ = ascii_lower(key);
        key = folded_;
    }
    std::string_view bare;
    if (!map.strip_extension.empty())
        if (auto reduced = strip_extension(key, map.strip_extension)) {
            reduced_ = std::move(*reduced);
            bare = reduced_;
        }
    keys_.reserve(map.search == SearchOrder::Exact ? 2 : 8);
    const auto at = last_at(key);
    add(key, at);
    // A host name or address is not an address with an extension.
    if (!bare.empty() && (map.search != SearchOrder::Access || at != std::string_view::npos))
        add(bare);
    switch (map.search) {
    case SearchOrder::Exact:
        break;
    case SearchOrder::Access:
        if (at == std::string_view::npos) {
            if (is_ip_address(key, AF_INET))
                add_network_walk(key, '.');
            else if (is_ip_address(key, AF_INET6))
                add_network_walk(key, ':');
            else
                add_domain_walk(key, 0, map.parent_matches_subdomains);
            break;
        }
        add_domain_walk(key, at + 1, map.parent_matches_subdomains);
        // "user@" of the key as sent, then of its bare form (Postfix's
        // check_mail_access); never a lone "@".
        if (at > 0)
            add(key.substr(0, at + 1), at);
        if (const auto bare_at = last_at(bare); bare_at != std::string_view::npos && bare_at > 0)
            add(bare.substr(0, bare_at + 1), bare_at);
        break;
    case SearchOrder::Transport:
        if (at != std::string_view::npos)
            add_domain_walk(key, at + 1, map.parent_matches_subdomains);
        break;
    case SearchOrder::Virtual:
        if (at != std::string_view::npos && at + 1 < key.size())
            add(key.substr(at), 0);
        break;
    }
    if (refusal_)
        keys_.clear();
}

void KeyCandidates::add(std::string_view k, std::size_t at)
{
    if (k.empty())
        return;
    for (const Candidate& c : keys_)
        if (c.key == k)
            return;
    keys_.emplace_back(k, at);
}

// The domain at key[from..] and its parents, as Postfix's
// check_domain_access() walks them: each step starts at the next '.',
// kept (".parent") or skipped ("parent").  Checked before any key is
// asked: a name with an empty label is not a domain and has no parents
// (Postfix never asks for an empty label); one that could cost a query
// per byte is refused.
void KeyCandidates::add_domain_walk(std::string_view key, std::size_t from, bool parent_style)
{
    const std::string_view domain = key.substr(from);
    if (domain.size() > max_search_domain) {
        refusal_ = "domain too long to search";
        return;
    }
    add(domain, std::string_view::npos);
    if (domain.empty() || domain.front() == '[' || is_numeric_host(domain))
        return;
    const Labels labels = labels_of(domain);
    if (labels.empty)
        return;
    if (labels.too_long) {
        refusal_ = "domain label too long to search";
        return;
    }
    if (labels.count > max_search_labels) {
        refusal_ = "domain has too many labels to search";
        return;
    }
    for (std::size_t pos = from;;) {
        const auto next = key.find('.', pos + 1);
        if (next == std::string_view::npos)
            return;
        pos = parent_style ? next + 1 : next;
        add(key.substr(pos), std::string_view::npos);
    }
}

// The address and its networks, cut at each `delimiter` from the right
// (Postfix's check_addr_access).
void KeyCandidates::add_network_walk(std::string_view addr, char delimiter)
{
    for (;;) {
        add(addr, std::string_view::npos);
        const auto cut = addr.rfind(delimiter);
        if (cut == std::string_view::npos)
            return;
        addr = addr.substr(0, cut);
    }
}

bool domain_allowed(const MapConfig& map, const Candidate& key)
{
    if (map.domains.empty())
        return true;
    if (!key.has_at() || key.at == 0 || key.at + 1 == key.key.size())
        return false;
    const std::string_view domain = key.domain();
    // The listed domains are lower-cased by the loader.
    for (const std::string& d : map.domains)
        if (ascii_iequals(d, domain))
            return true;
    return false;
}

} // namespace sockmapd
