// mapconfig — a map as the configuration file defines it: plain fields.
//
// The loader (config.hh) fills it and compiles it into a CompiledMap
// (statement.hh); the key rules (mapkey.hh) and the statement read it.
// Nothing here checks or computes anything.
#pragma once

#include <string>
#include <vector>

namespace sockmapd
{

// The keys a lookup tries for one request (mapkey.hh): Postfix marks
// socketmap tables as patterns and asks them for the full key only, so a
// map that holds domain rows does the search Postfix does for its own
// tables here.  Named after the manual page that documents each order.
enum class SearchOrder {
    Exact,     // the key alone (and its rewrites): Sendmail maps, Postfix maps of addresses only
    Access,    // access(5): user@domain, domain, parent domains, user@; hosts, networks
    Transport, // transport(5): user@domain, domain, parent domains (".parent")
    Virtual,   // virtual(5): user@domain, @domain
};

// "cache": how long the map's answers are reused (seconds), cache.hh.  All
// zero: off, every lookup asks the database.
struct CachePolicy {
    unsigned ttl = 0;            // a found answer is reused this long
    unsigned negative_ttl = 0;   // a NOTFOUND (default: ttl)
    unsigned stale_if_error = 0; // an answer this old may still be served when no database host answers
    bool enabled() const { return ttl != 0 || negative_ttl != 0 || stale_if_error != 0; }
};

// A field that changes a map's answers belongs in dblookup.cc's
// map_fingerprint() too: the answer cache keys entries with it.
struct MapConfig {
    std::string service;  // the socketmap name
    std::string database; // schema name
    std::string table;
    std::string key;
    std::string value;         // empty: existence map, answers the key as stored
    std::string reason;        // optional column appended as " <reason>"
    std::string query;         // optional SELECT with %s %u %d instead of table/key/value
    std::string result_format; // optional template, %s is the value
    bool lowercase = false;
    std::string strip_extension;      // delimiter(s) such as "+"; empty: off
    std::vector<std::string> domains; // empty: every domain
    SearchOrder search = SearchOrder::Exact;
    // Parent domains are tried as "example.org" (true) or ".example.org"
    // (false), as Postfix's parent_domain_matches_subdomains gives; its
    // default lists smtpd_access_maps but not transport_maps, so the
    // default here is true for access and false for transport.
    bool parent_matches_subdomains = false;
    CachePolicy cache;
};

} // namespace sockmapd
