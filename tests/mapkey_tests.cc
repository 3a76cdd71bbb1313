#include "mapkey.hh"

#include <boost/test/unit_test.hpp>

#include <optional>
#include <string>
#include <vector>

using namespace sockmapd;

namespace
{

MapConfig map_with(bool lowercase, std::string strip, std::vector<std::string> domains = {})
{
    MapConfig m;
    m.service = "virtual";
    m.database = "mail";
    m.query = "SELECT goto FROM alias WHERE address = %s";
    m.lowercase = lowercase;
    m.strip_extension = std::move(strip);
    m.domains = std::move(domains);
    return m;
}

using Keys = std::vector<std::string>;

Keys candidates(const MapConfig& map, std::string_view key)
{
    const KeyCandidates c(map, key);
    return Keys(c.begin(), c.end());
}

} // namespace

BOOST_AUTO_TEST_SUITE(mapkey)

BOOST_AUTO_TEST_CASE(splitting_at_the_last_at)
{
    struct Case {
        std::string key;
        bool has_at;
        std::string local, domain;
    };
    const std::vector<Case> cases = {
        {"alice@example.org", true, "alice", "example.org"},
        {"a@b@example.org", true, "a@b", "example.org"},
        {"@example.org", true, "", "example.org"},
        {"alice@", true, "alice", ""},
        {"@", true, "", ""},
        {"alice", false, "", ""},
        {"", false, "", ""},
        {std::string("n\0l@d\0m", 7), true, std::string("n\0l", 3), std::string("d\0m", 3)},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.key)
        {
            const auto a = split_address(c.key);
            BOOST_REQUIRE(a.has_value() == c.has_at);
            if (a) {
                BOOST_TEST(a->local == c.local);
                BOOST_TEST(a->domain == c.domain);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(lowercasing_is_ascii_only)
{
    // The folding itself is util's (util_tests); here, that the map applies it.
    BOOST_TEST(candidates(map_with(true, ""), "Bob@Example.ORG") == Keys{"bob@example.org"},
               boost::test_tools::per_element());
    BOOST_TEST(candidates(map_with(false, ""), "Bob@Example.ORG") == Keys{"Bob@Example.ORG"},
               boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(extension_candidates)
{
    struct Case {
        std::string key;
        std::string delimiters;
        std::optional<std::string> reduced;
    };
    const std::vector<Case> cases = {
        {"user+tag@example.org", "+", "user@example.org"},
        {"user+tag+more@example.org", "+", "user@example.org"}, // the first delimiter cuts
        {"user+@example.org", "+", "user@example.org"},         // empty extension
        {"user+tag", "+", "user"},                              // no '@'
        {"user@example.org", "+", std::nullopt},
        {"+tag@example.org", "+", std::nullopt},       // a delimiter first: nothing left
        {"user@ex+ample.org", "+", std::nullopt},      // only the local part counts
        {"a+b@c+d@example.org", "+", "a@example.org"}, // local part up to the last '@'
        {"user-tag@example.org", "+-", "user@example.org"},
        {"user+a-b@example.org", "-+", "user@example.org"}, // whichever comes first
        {"user-a+b@example.org", "+-", "user@example.org"},
        {"user+tag@example.org", "", std::nullopt}, // off
        // Names Postfix never splits.
        {"owner-list@example.org", "-", std::nullopt},
        {"Owner-list@example.org", "+-", std::nullopt},
        {"list-request@example.org", "-", std::nullopt},
        {"list-request@example.org", "+", std::nullopt}, // no '+' anyway
        {"-request@example.org", "-", std::nullopt},     // delimiter first
        {"list-Request", "-", std::nullopt},
        {"owner+x@example.org", "+", "owner@example.org"}, // owner- only matters with '-'
        {"mailer-daemon@example.org", "-", std::nullopt},
        {"MAILER-DAEMON", "-", std::nullopt},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.key << " with \"" << c.delimiters << "\"")
        {
            const auto r = strip_extension(c.key, c.delimiters);
            BOOST_REQUIRE(r.has_value() == c.reduced.has_value());
            if (r)
                BOOST_TEST(*r == *c.reduced);
        }
    }
}

BOOST_AUTO_TEST_CASE(candidates_in_order)
{
    BOOST_TEST(candidates(map_with(false, ""), "User+Tag@Example.org") == Keys{"User+Tag@Example.org"},
               boost::test_tools::per_element());
    BOOST_TEST(candidates(map_with(false, "+"), "User+Tag@Example.org") ==
                   (Keys{"User+Tag@Example.org", "User@Example.org"}),
               boost::test_tools::per_element());
    // Lowercasing comes first, so both candidates are folded.
    BOOST_TEST(candidates(map_with(true, "+"), "User+Tag@Example.org") ==
                   (Keys{"user+tag@example.org", "user@example.org"}),
               boost::test_tools::per_element());
    BOOST_TEST(candidates(map_with(true, "+"), "plain@example.org") == Keys{"plain@example.org"},
               boost::test_tools::per_element());
    BOOST_TEST(candidates(map_with(false, "+"), "user+tag") == (Keys{"user+tag", "user"}),
               boost::test_tools::per_element());
    // The key as sent is not copied when nothing rewrites it.
    const std::string sent = "plain@example.org";
    const KeyCandidates same(map_with(false, "+"), sent);
    BOOST_TEST(same.size() == 1u);
    BOOST_TEST(static_cast<const void*>(same.begin()->key.data()) == static_cast<const void*>(sent.data()));
}

MapConfig searching(SearchOrder order, bool lowercase = false, std::string strip = "", std::optional<bool> parent = {})
{
    MapConfig m = map_with(lowercase, std::move(strip));
    m.search = order;
    m.parent_matches_subdomains = parent.value_or(order == SearchOrder::Access);
    return m;
}

BOOST_AUTO_TEST_CASE(search_orders)
{
    const auto exact = SearchOrder::Exact;
    const auto access = SearchOrder::Access;
    const auto transport = SearchOrder::Transport;
    const auto virt = SearchOrder::Virtual;
    struct Case {
        MapConfig map;
        std::string key;
        Keys keys;
    };
    const std::vector<Case> cases = {
        // exact: today's order, whatever the key.
        {searching(exact), "other@bad.example", {"other@bad.example"}},
        {searching(exact, false, "+"), "u+x@bad.example", {"u+x@bad.example", "u@bad.example"}},
        {searching(exact), "bad.example", {"bad.example"}},
        // access(5) with Postfix's default parent_domain_matches_subdomains
        // (it lists smtpd_access_maps): parents without the dot.
        {searching(access),
         "other@sub.bad.example",
         {"other@sub.bad.example", "sub.bad.example", "bad.example", "example", "other@"}},
        {searching(access), "other@bad.example", {"other@bad.example", "bad.example", "example", "other@"}},
        // ... and with smtpd_access_maps left out of it: ".parent".
        {searching(access, false, "", false),
         "other@sub.bad.example",
         {"other@sub.bad.example", "sub.bad.example", ".bad.example", ".example", "other@"}},
        // An extension: user+ext@domain, user@domain, domains, user+ext@, user@.
        {searching(access, false, "+"),
         "u+x@bad.example",
         {"u+x@bad.example", "u@bad.example", "bad.example", "example", "u+x@", "u@"}},
        {searching(access, true, "+"),
         "U+X@Bad.Example",
         {"u+x@bad.example", "u@bad.example", "bad.example", "example", "u+x@", "u@"}},
        {searching(access, false, "+"),
         "postmaster@bad.example",
         {"postmaster@bad.example", "bad.example", "example", "postmaster@"}},
        // Address literals and numeric domains have no parents.
        {searching(access), "u@[192.0.2.1]", {"u@[192.0.2.1]", "[192.0.2.1]", "u@"}},
        {searching(access), "u@192.0.2.1", {"u@192.0.2.1", "192.0.2.1", "u@"}},
        // Odd addresses: no empty key, no lone "@", no repeats.
        {searching(access), "@bad.example", {"@bad.example", "bad.example", "example"}},
        {searching(access), "u@", {"u@"}},
        // A trailing dot is an empty label: no domain, no parents.
        {searching(access), "u@bad.example.", {"u@bad.example.", "bad.example.", "u@"}},
        {searching(access, false, "", false), "u@bad.example.", {"u@bad.example.", "bad.example.", "u@"}},
        {searching(access), "a@b@bad.example", {"a@b@bad.example", "bad.example", "example", "a@b@"}},
        // Keys without '@' (check_client_access, check_helo_access, ...).
        {searching(access),
         "mail.sub.bad.example",
         {"mail.sub.bad.example", "sub.bad.example", "bad.example", "example"}},
        {searching(access, false, "", false), "mail.bad.example", {"mail.bad.example", ".bad.example", ".example"}},
        {searching(access), "localhost", {"localhost"}},
        {searching(access), "192.0.2.1", {"192.0.2.1", "192.0.2", "192.0", "192"}},
        {searching(access), "2001:db8::1", {"2001:db8::1", "2001:db8:", "2001:db8", "2001"}},
        {searching(access),
         "2001:db8:1:2:3:4:5:6",
         {"2001:db8:1:2:3:4:5:6", "2001:db8:1:2:3:4:5", "2001:db8:1:2:3:4", "2001:db8:1:2:3", "2001:db8:1:2",
          "2001:db8:1", "2001:db8", "2001"}},
        {searching(access), "::1", {"::1", ":"}},
        {searching(access), "192.0.2.256", {"192.0.2.256", "0.2.256", "2.256", "256"}},   // not an address: a name
        {searching(access, false, "+"), "host+x.example", {"host+x.example", "example"}}, // no extension on names
        {searching(access), "<>", {"<>"}},
        // transport(5): ".parent" by default (transport_maps is not in
        // parent_domain_matches_subdomains), no user@; "*" as it is.
        {searching(transport),
         "alice@mail.example.net",
         {"alice@mail.example.net", "mail.example.net", ".example.net", ".net"}},
        {searching(transport, false, "", true),
         "alice@mail.example.net",
         {"alice@mail.example.net", "mail.example.net", "example.net", "net"}},
        {searching(transport, false, "+"),
         "a+b@example.net",
         {"a+b@example.net", "a@example.net", "example.net", ".net"}},
        {searching(transport), "*", {"*"}},
        {searching(transport), "example.net", {"example.net"}},
        // virtual(5): user@domain, @domain.
        {searching(virt), "nobody@example.org", {"nobody@example.org", "@example.org"}},
        {searching(virt, true, "+"), "Info+X@Example.ORG", {"info+x@example.org", "info@example.org", "@example.org"}},
        {searching(virt), "@example.org", {"@example.org"}},
        {searching(virt), "nobody@", {"nobody@"}},
        {searching(virt), "nobody", {"nobody"}},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.key << " search " << static_cast<int>(c.map.search) << " parent "
                                 << c.map.parent_matches_subdomains)
        {
            const KeyCandidates k(c.map, c.key);
            BOOST_TEST(k.searchable());
            BOOST_TEST(Keys(k.begin(), k.end()) == c.keys, boost::test_tools::per_element());
        }
    }
}

BOOST_AUTO_TEST_CASE(search_is_bounded)
{
    // A domain of 32 labels is walked, one of 33 labels or longer than 255
    // bytes is not searched at all (the lookup answers PERM): a 255-byte
    // domain of 1-byte labels would be 128 queries.
    std::string domain = "a";
    for (std::size_t i = 1; i < max_search_labels; ++i)
        domain += ".a";
    const KeyCandidates fits(searching(SearchOrder::Access), "u@" + domain);
    BOOST_TEST(fits.searchable());
    BOOST_TEST(fits.size() == 2u + max_search_labels);
    const std::string label(max_label_length, 'l');
    const std::string long_domain = label + "." + label + "." + label + "." + label; // 255 bytes
    BOOST_TEST(KeyCandidates(searching(SearchOrder::Access), "u@" + long_domain).searchable());
    for (const auto order : {SearchOrder::Access, SearchOrder::Transport}) {
        const KeyCandidates too_long(searching(order), "u@" + long_domain + "b");
        BOOST_TEST(!too_long.searchable());
        BOOST_TEST(too_long.refusal() == std::string("domain too long to search"));
        BOOST_TEST(too_long.size() == 0u);
        const KeyCandidates too_deep(searching(order), "u@a." + domain);
        BOOST_TEST(too_deep.refusal() == std::string("domain has too many labels to search"));
        BOOST_TEST(too_deep.size() == 0u);
        const KeyCandidates long_label(searching(order), "u@" + std::string(64, 'x') + ".example");
        BOOST_TEST(long_label.refusal() == std::string("domain label too long to search"));
        BOOST_TEST(KeyCandidates(searching(order), "u@" + std::string(63, 'x') + ".example").size() ==
                   (order == SearchOrder::Access ? 4u : 3u));
    }
    BOOST_TEST(!KeyCandidates(searching(SearchOrder::Access), std::string(300, '.')).searchable());
    BOOST_TEST(!KeyCandidates(searching(SearchOrder::Access), "a." + domain).searchable(), "a host name too");
    // The orders without a domain walk take any key, as exact always did.
    BOOST_TEST(KeyCandidates(searching(SearchOrder::Virtual), "u@" + domain + "b").size() == 2u);
    BOOST_TEST(KeyCandidates(searching(SearchOrder::Exact), "u@" + domain + "b").size() == 1u);
    // Every candidate is a view into the key or the object: nothing per step.
    const std::string sent = "other@sub.bad.example";
    const KeyCandidates views(searching(SearchOrder::Access), sent);
    for (const std::string_view k : views)
        BOOST_TEST((k.data() >= sent.data() && k.data() + k.size() <= sent.data() + sent.size()));
}

// The review's key: 255 dots walked label by label were 256 queries.  A
// name with an empty label (a leading or trailing dot, "..") is not a
// domain: it is asked as it is, without parents.
BOOST_AUTO_TEST_CASE(a_name_with_an_empty_label_has_no_parents)
{
    const MapConfig access = searching(SearchOrder::Access);
    const MapConfig transport = searching(SearchOrder::Transport);
    BOOST_TEST(candidates(transport, "u@" + std::string(255, '.')) ==
                   (Keys{"u@" + std::string(255, '.'), std::string(255, '.')}),
               boost::test_tools::per_element());
    BOOST_TEST(candidates(access, "u@" + std::string(255, '.')) ==
                   (Keys{"u@" + std::string(255, '.'), std::string(255, '.'), "u@"}),
               boost::test_tools::per_element());
    for (const std::string domain : {"a..example", ".example.org", "example.org.", "sub..", ".", ".."}) {
        BOOST_TEST_CONTEXT(domain)
        {
            BOOST_TEST(candidates(access, "u@" + domain) == (Keys{"u@" + domain, domain, "u@"}),
                       boost::test_tools::per_element());
            BOOST_TEST(candidates(transport, "u@" + domain) == (Keys{"u@" + domain, domain}),
                       boost::test_tools::per_element());
            BOOST_TEST(candidates(access, domain) == Keys{domain}, boost::test_tools::per_element());
        }
    }
}

// No key, however built, has more candidates than max_candidate_keys.
BOOST_AUTO_TEST_CASE(no_key_has_more_candidates_than_the_bound)
{
    std::vector<std::string> keys = {"::1:2:3:4:5:6:7", "1:2:3:4:5:6:7::", "1.2.3.4", "::ffff:1.2.3.4"};
    for (const std::string& label : std::vector<std::string>{"a", "bb", std::string(63, 'c')})
        for (std::size_t n = 1; n <= 130; ++n) {
            std::string d = label;
            for (std::size_t i = 1; i < n; ++i)
                d += "." + label;
            for (const std::string local : {"u", "u+ext", "+x", ""}) {
                keys.push_back(local + "@" + d);
                keys.push_back(local + "@" + d + ".");
            }
            keys.push_back(d);
        }
    std::size_t most = 0;
    for (const auto order : {SearchOrder::Exact, SearchOrder::Access, SearchOrder::Transport, SearchOrder::Virtual})
        for (const bool parent : {true, false}) {
            MapConfig m = searching(order);
            m.strip_extension = "+";
            m.parent_matches_subdomains = parent;
            for (const auto& k : keys)
                most = std::max(most, KeyCandidates(m, k).size());
        }
    BOOST_TEST(most == max_candidate_keys);
}

BOOST_AUTO_TEST_CASE(domain_filter)
{
    const MapConfig open = map_with(false, "");
    const MapConfig listed = map_with(false, "", {"example.org", "example.net"});
    struct Case {
        std::string key;
        bool allowed;
    };
    const std::vector<Case> cases = {
        {"alice@example.org", true},
        {"alice@EXAMPLE.Org", true}, // domains compare without case
        {"alice@example.net", true},
        {"alice@example.com", false},
        {"alice@sub.example.org", false}, // exact domains, no subdomains
        {"alice@example.org.", false},
        {"a@b@example.org", true}, // the last '@' counts
        {"a@example.org@evil", false},
        {"example.org", false},  // no '@': not an address, no lookup (Postfix)
        {"@example.org", false}, // empty local part: no lookup (Postfix)
        {"alice@", false},
        {"", false},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.key)
        {
            BOOST_TEST(domain_allowed(listed, c.key) == c.allowed);
            BOOST_TEST(domain_allowed(open, c.key)); // no list: every key
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()
