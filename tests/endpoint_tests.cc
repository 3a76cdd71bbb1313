#include "endpoint.hh"

#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

using namespace sockmapd;

BOOST_AUTO_TEST_SUITE(endpoint)

BOOST_AUTO_TEST_CASE(parse_good_entries)
{
    struct Case {
        std::string spec;
        Endpoint::Kind kind;
        std::string host;
        unsigned port;
        std::string path;
        std::string name;
    };
    const std::vector<Case> cases = {
        {"db1.example.org", Endpoint::Kind::Tcp, "db1.example.org", 3306, "", "db1.example.org:3306"},
        {"db2.example.org:3307", Endpoint::Kind::Tcp, "db2.example.org", 3307, "", "db2.example.org:3307"},
        {"127.0.0.1:1", Endpoint::Kind::Tcp, "127.0.0.1", 1, "", "127.0.0.1:1"},
        {"localhost:65535", Endpoint::Kind::Tcp, "localhost", 65535, "", "localhost:65535"},
        {"[::1]:3310", Endpoint::Kind::Tcp, "::1", 3310, "", "[::1]:3310"},
        {"[2001:db8::5]", Endpoint::Kind::Tcp, "2001:db8::5", 3306, "", "[2001:db8::5]:3306"},
        {"unix:/run/mysqld/mysqld.sock", Endpoint::Kind::Unix, "", 0, "/run/mysqld/mysqld.sock",
         "unix:/run/mysqld/mysqld.sock"},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT("entry \"" << c.spec << "\"")
        {
            const auto parsed = parse_endpoint(c.spec, 3306);
            BOOST_REQUIRE(parsed.has_value());
            const Endpoint& e = *parsed;
            BOOST_TEST((e.kind == c.kind));
            BOOST_TEST(e.host == c.host);
            BOOST_TEST(e.port == c.port);
            BOOST_TEST(e.path == c.path);
            BOOST_TEST(e.name() == c.name);
        }
    }
}

BOOST_AUTO_TEST_CASE(parse_bad_entries)
{
    const std::vector<std::string> bad = {
        "",
        "db1:",
        ":3306",
        "db1:0",
        "db1:65536",
        "db1:33o6",
        "db1:-1",
        "db1:+3306",
        "db1:123456",
        "::1",
        "2001:db8::1:3306",
        "[::1",
        "[::1]3306",
        "[::1]:",
        "[]:3306",
        "[db1]:3306",
        "unix:",
        "unix:relative.sock",
        "db 1",
        "db1\n",
        std::string("db\0x", 4),
    };
    for (const auto& spec : bad) {
        BOOST_TEST_CONTEXT("entry \"" << spec << "\"")
        {
            std::string why;
            BOOST_TEST(!parse_endpoint(spec, 3306, &why).has_value());
            BOOST_TEST(!why.empty());
        }
    }
}

BOOST_AUTO_TEST_CASE(names_of_default_ports_and_messages)
{
    BOOST_TEST(parse_endpoint("db1", 3307)->name() == "db1:3307");
    std::string why;
    BOOST_TEST(!parse_endpoint("db1:0", 3306, &why).has_value());
    BOOST_TEST(why == "\"db1:0\": port must be a number from 1 to 65535");
    BOOST_TEST(!parse_endpoint("::1", 3306, &why).has_value());
    BOOST_TEST(why == "\"::1\": an IPv6 address needs brackets: [::1]:3306");
}

BOOST_AUTO_TEST_CASE(host_port_split_shared_with_listen)
{
    struct Case {
        std::string spec;
        HostPortError error;
        std::string host;
        std::optional<std::string> port;
        bool bracketed;
    };
    const std::vector<Case> cases = {
        {"db1", HostPortError::None, "db1", std::nullopt, false},
        {"db1:3307", HostPortError::None, "db1", "3307", false},
        {"db1:", HostPortError::None, "db1", "", false},
        {":3307", HostPortError::None, "", "3307", false},
        {"[::1]", HostPortError::None, "::1", std::nullopt, true},
        {"[::1]:3307", HostPortError::None, "::1", "3307", true},
        {"[]", HostPortError::None, "", std::nullopt, true},
        {"[::1", HostPortError::NoClosingBracket, "", std::nullopt, false},
        {"[::1]3307", HostPortError::AfterBracket, "", std::nullopt, false},
        {"::1:3307", HostPortError::Unbracketed, "", std::nullopt, false},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.spec)
        {
            HostPort hp;
            BOOST_TEST(static_cast<int>(split_host_port(c.spec, hp)) == static_cast<int>(c.error));
            if (c.error == HostPortError::None) {
                BOOST_TEST(hp.host == c.host);
                BOOST_TEST(hp.port.has_value() == c.port.has_value());
                if (hp.port && c.port)
                    BOOST_TEST(*hp.port == *c.port);
                BOOST_TEST(hp.bracketed == c.bracketed);
            }
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()
