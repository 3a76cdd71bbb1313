#include "mapkey.hh"

#include <algorithm>

namespace sockmapd
{

namespace
{

bool iequals(std::string_view a, std::string_view b)
{
    return a.size() == b.size() && ascii_lower(a) == ascii_lower(b);
}

} // namespace

std::optional<Address> split_address(std::string_view key)
{
    const auto at = key.rfind('@');
    if (at == std::string_view::npos)
        return std::nullopt;
    return Address{key.substr(0, at), key.substr(at + 1)};
}

std::string ascii_lower(std::string_view s)
{
    std::string out(s);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z')
            c = static_cast<char>(c - 'A' + 'a');
    return out;
}

std::optional<std::string> strip_extension(std::string_view key, std::string_view delimiters)
{
    if (delimiters.empty())
        return std::nullopt;
    const auto at = key.rfind('@');
    const std::string_view local = key.substr(0, at);
    const std::string_view rest = at == std::string_view::npos ? std::string_view() : key.substr(at);
    // Postfix's split_addr() leaves these alone, whatever the delimiter.
    if (iequals(local, "postmaster") || iequals(local, "mailer-daemon"))
        return std::nullopt;
    if (delimiters.find('-') != std::string_view::npos) {
        constexpr std::string_view owner = "owner-", request = "-request";
        if (local.size() >= owner.size() && iequals(local.substr(0, owner.size()), owner))
            return std::nullopt;
        if (local.size() > request.size() && iequals(local.substr(local.size() - request.size()), request))
            return std::nullopt;
    }
    const auto cut = local.find_first_of(delimiters);
    if (cut == std::string_view::npos || cut == 0)
        return std::nullopt;
    return std::string(local.substr(0, cut)) + std::string(rest);
}

KeyCandidates::KeyCandidates(const MapConfig& map, std::string_view key)
{
    // Without lowercase the key is used as sent: no copy.
    if (map.lowercase) {
        folded_ = ascii_lower(key);
        key = folded_;
    }
    keys_[0] = key;
    if (map.strip_extension.empty())
        return;
    if (auto reduced = strip_extension(key, map.strip_extension)) {
        reduced_ = std::move(*reduced);
        keys_[n_++] = reduced_;
    }
}

bool domain_allowed(const MapConfig& map, std::string_view key)
{
    if (map.domains.empty())
        return true;
    const auto addr = split_address(key);
    if (!addr || addr->local.empty() || addr->domain.empty())
        return false;
    return std::find(map.domains.begin(), map.domains.end(), ascii_lower(addr->domain)) != map.domains.end();
}

} // namespace sockmapd
