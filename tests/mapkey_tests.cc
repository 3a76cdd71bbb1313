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
    BOOST_TEST(ascii_lower("Alice.Smith@EXAMPLE.Org") == "alice.smith@example.org");
    // UTF-8 bytes are left alone: "Ä" stays "Ä", the text stays valid UTF-8.
    BOOST_TEST(ascii_lower("M\xC3\x9C"
                           "LLER@EX\xC3\x84MPLE.ORG") == "m\xC3\x9C"
                                                         "ller@ex\xC3\x84mple.org");
    BOOST_TEST(ascii_lower(std::string("A\0B", 3)) == std::string("a\0b", 3));
    BOOST_TEST(ascii_lower("@[]`{}^_~") == "@[]`{}^_~"); // neighbours of A-Z, a-z untouched

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
    BOOST_TEST(static_cast<const void*>(same.begin()->data()) == static_cast<const void*>(sent.data()));
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
