// allow: parsing sysconfig.allow entries, matching peers against them
// (prefix edges, IPv4-mapped peers, unix peers) and the log throttle.
#include "allow.hh"

#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <string>
#include <vector>

using namespace sockmapd;

namespace
{

// A socket address from text: "unix", an IPv4 or an IPv6 address.
struct Peer {
    sockaddr_storage ss{};
    explicit Peer(const std::string& text)
    {
        if (text == "unix") {
            ss.ss_family = AF_UNIX;
        } else if (text.find(':') != std::string::npos) {
            auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
            s6->sin6_family = AF_INET6;
            s6->sin6_port = htons(40000);
            BOOST_REQUIRE(inet_pton(AF_INET6, text.c_str(), &s6->sin6_addr) == 1);
        } else {
            auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
            s4->sin_family = AF_INET;
            s4->sin_port = htons(40000);
            BOOST_REQUIRE(inet_pton(AF_INET, text.c_str(), &s4->sin_addr) == 1);
        }
    }
    const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&ss); }
};

AllowList list_of(const std::vector<std::string>& entries)
{
    std::vector<AllowRule> rules;
    for (const auto& e : entries) {
        std::string why;
        const auto r = parse_allow_rule(e, why);
        BOOST_REQUIRE_MESSAGE(r, e + ": " + why);
        rules.push_back(*r);
    }
    return AllowList(std::move(rules));
}

bool admits(const std::vector<std::string>& entries, const std::string& peer)
{
    return list_of(entries).admits(Peer(peer).get());
}

std::string why_not(const std::string& entry)
{
    std::string why;
    BOOST_TEST(!parse_allow_rule(entry, why).has_value(), entry);
    return why;
}

} // namespace

BOOST_AUTO_TEST_SUITE(allow)

BOOST_AUTO_TEST_CASE(entries_parse_to_their_rules)
{
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"127.0.0.1", "127.0.0.1/32"},
        {"192.0.2.0/24", "192.0.2.0/24"},
        {"0.0.0.0/0", "0.0.0.0/0"},
        {"::1", "::1/128"},
        {"2001:db8::/32", "2001:db8::/32"},
        {"::/0", "::/0"},
        {"::ffff:192.0.2.25", "192.0.2.25/32"}, // IPv4-mapped: stored as IPv4
        {"::ffff:192.0.2.0/120", "192.0.2.0/24"},
        {"::ffff:0.0.0.0/96", "0.0.0.0/0"},
        {"unix", "unix"},
        {"UNIX", "unix"},
    };
    for (const auto& [entry, text] : cases) {
        std::string why;
        const auto r = parse_allow_rule(entry, why);
        BOOST_TEST_REQUIRE(r.has_value(), entry + ": " + why);
        BOOST_TEST(r->text() == text, entry);
    }
}

BOOST_AUTO_TEST_CASE(bad_entries_say_why)
{
    BOOST_TEST(why_not("").find("is empty") != std::string::npos);
    BOOST_TEST(why_not("mta.example.org").find("host names are not looked up") != std::string::npos);
    BOOST_TEST(why_not("[::1]").find("without brackets") != std::string::npos);
    BOOST_TEST(why_not("127.0.0.1/33").find("0-32") != std::string::npos);
    BOOST_TEST(why_not("::1/129").find("0-128") != std::string::npos);
    BOOST_TEST(why_not("192.0.2.1/24").find("write the network (192.0.2.0/24) or the host (192.0.2.1)") !=
               std::string::npos);
    BOOST_TEST(why_not("2001:db8::1/64").find("2001:db8::/64") != std::string::npos);
    BOOST_TEST(why_not(" 127.0.0.1").find("space or a control character") != std::string::npos);
    BOOST_TEST(why_not(std::string("127.0.0.1\0x", 11)).find("control character") != std::string::npos);
    for (const char* bad :
         {"127.0.0.1/", "127.0.0.1/-1", "127.0.0.1/+8", "127.0.0.1/8x", "127.0.0.1/32/32", "1.2.3", "1.2.3.4.5",
          "256.1.1.1", "01.2.3.4", "::1::", "1:2:3:4:5:6:7:8:9", "*", "all", "unix:", "/8", "127.0.0.1 /8"})
        why_not(bad);
}

BOOST_AUTO_TEST_CASE(no_list_admits_everyone)
{
    const AllowList none;
    BOOST_TEST(!none.restricts());
    BOOST_TEST(none.admits(Peer("192.0.2.1").get()));
    BOOST_TEST(none.admits(Peer("unix").get()));
    BOOST_TEST(none.admits(nullptr));
}

BOOST_AUTO_TEST_CASE(ipv4_prefix_edges)
{
    BOOST_TEST(admits({"127.0.0.1/32"}, "127.0.0.1"));
    BOOST_TEST(!admits({"127.0.0.1/32"}, "127.0.0.2"));
    BOOST_TEST(!admits({"127.0.0.1"}, "127.0.0.0"));
    BOOST_TEST(admits({"0.0.0.0/0"}, "255.255.255.255"));
    BOOST_TEST(admits({"0.0.0.0/0"}, "0.0.0.0"));
    BOOST_TEST(!admits({"0.0.0.0/0"}, "::1"), "an IPv4 rule never admits an IPv6 peer");
    BOOST_TEST(admits({"192.0.2.0/24"}, "192.0.2.255"));
    BOOST_TEST(!admits({"192.0.2.0/24"}, "192.0.3.0"));
    BOOST_TEST(admits({"10.0.0.0/9"}, "10.127.255.255"));
    BOOST_TEST(!admits({"10.0.0.0/9"}, "10.128.0.0"));
    BOOST_TEST(admits({"128.0.0.0/1"}, "200.0.0.1"));
    BOOST_TEST(!admits({"128.0.0.0/1"}, "127.255.255.255"));
}

BOOST_AUTO_TEST_CASE(ipv6_prefix_edges)
{
    BOOST_TEST(admits({"::1/128"}, "::1"));
    BOOST_TEST(!admits({"::1/128"}, "::2"));
    BOOST_TEST(!admits({"::1/128"}, "127.0.0.1"));
    BOOST_TEST(admits({"::/0"}, "2001:db8::1"));
    BOOST_TEST(!admits({"::/0"}, "192.0.2.1"), "an IPv6 rule never admits an IPv4 peer");
    BOOST_TEST(admits({"2001:db8::/127"}, "2001:db8::1"));
    BOOST_TEST(!admits({"2001:db8::/127"}, "2001:db8::2"));
    BOOST_TEST(admits({"2001:db8:8000::/33"}, "2001:db8:ffff::1"));
    BOOST_TEST(!admits({"2001:db8:8000::/33"}, "2001:db8:7fff::1"));
    BOOST_TEST(admits({"2001:db8::ff/128"}, "2001:db8::ff"));
    BOOST_TEST(!admits({"2001:db8::ff/128"}, "2001:db8::fe"));
}

BOOST_AUTO_TEST_CASE(mapped_peers_match_ipv4_rules)
{
    BOOST_TEST(admits({"127.0.0.1/32"}, "::ffff:127.0.0.1"));
    BOOST_TEST(!admits({"127.0.0.1/32"}, "::ffff:127.0.0.2"));
    BOOST_TEST(admits({"192.0.2.0/24"}, "::ffff:192.0.2.9"));
    BOOST_TEST(admits({"::ffff:192.0.2.9"}, "192.0.2.9"), "a mapped entry is an IPv4 rule");
    BOOST_TEST(admits({"::ffff:192.0.2.9"}, "::ffff:192.0.2.9"));
    BOOST_TEST(!admits({"::/0"}, "::ffff:192.0.2.9"), "a mapped peer is IPv4, not IPv6");
    BOOST_TEST(!admits({"::1"}, "::ffff:0.0.0.1"));
}

BOOST_AUTO_TEST_CASE(unix_peers_need_the_word)
{
    BOOST_TEST(admits({"unix"}, "unix"));
    BOOST_TEST(!admits({"127.0.0.1/32"}, "unix"));
    BOOST_TEST(!admits({"0.0.0.0/0", "::/0"}, "unix"));
    BOOST_TEST(!admits({"unix"}, "127.0.0.1"));
    BOOST_TEST(admits({"127.0.0.1", "unix"}, "unix"));
    BOOST_TEST(admits({"192.0.2.1", "::1", "unix"}, "::1"));
}

BOOST_AUTO_TEST_CASE(other_families_and_unknown_peers_are_refused)
{
    const AllowList l = list_of({"0.0.0.0/0", "::/0", "unix"});
    sockaddr_storage ss{};
    ss.ss_family = AF_UNSPEC;
    BOOST_TEST(!l.admits(reinterpret_cast<const sockaddr*>(&ss)));
    BOOST_TEST(!l.admits(nullptr));
    BOOST_TEST(l.text() == "0.0.0.0/0, ::/0, unix");
}

BOOST_AUTO_TEST_CASE(peer_addresses_and_loopback)
{
    BOOST_TEST(peer_address(Peer("192.0.2.1").get()) == "192.0.2.1");
    BOOST_TEST(peer_address(Peer("::ffff:192.0.2.1").get()) == "192.0.2.1");
    BOOST_TEST(peer_address(Peer("2001:db8::1").get()) == "2001:db8::1");
    BOOST_TEST(peer_address(Peer("unix").get()) == "unix");
    BOOST_TEST(peer_address(nullptr) == "unknown");
    for (const char* lo : {"127.0.0.1", "127.255.0.3", "::1", "::ffff:127.0.0.1", "unix"})
        BOOST_TEST(loopback_only(Peer(lo).get()), lo);
    for (const char* open : {"0.0.0.0", "192.0.2.1", "128.0.0.1", "::", "::2", "::ffff:10.0.0.1", "2001:db8::1"})
        BOOST_TEST(!loopback_only(Peer(open).get()), open);
}

BOOST_AUTO_TEST_CASE(peer_networks)
{
    BOOST_TEST(peer_network(Peer("192.0.2.77").get()) == "192.0.2.0/24");
    BOOST_TEST(peer_network(Peer("::ffff:192.0.2.77").get()) == "192.0.2.0/24");
    BOOST_TEST(peer_network(Peer("2001:db8:1:2:3:4:5:6").get()) == "2001:db8:1:2::/64");
    BOOST_TEST(peer_network(Peer("2001:db8::1").get()) == "2001:db8::/64");
    BOOST_TEST(peer_network(Peer("unix").get()) == "unix");
    BOOST_TEST(peer_network(nullptr) == "unknown");
}

BOOST_AUTO_TEST_CASE(throttle_logs_once_a_window_and_counts_the_rest)
{
    LogThrottle t(60, 4);
    unsigned long n = 99;
    std::string a = "192.0.2.1";
    BOOST_TEST(t.admit(a, 1000, n));
    BOOST_TEST(n == 0u);
    for (int i = 1; i <= 5; ++i) {
        BOOST_TEST(!t.admit(a, 1000 + i, n));
        BOOST_TEST(n == static_cast<unsigned long>(i));
    }
    std::string b = "192.0.2.2";
    BOOST_TEST(t.admit(b, 1010, n), "another address is logged at once");
    BOOST_TEST(!t.admit(a, 1059, n));
    BOOST_TEST(t.admit(a, 1060, n), "a window later");
    BOOST_TEST(n == 6u, "with the count of those not logged");
    BOOST_TEST(!t.admit(a, 1061, n));
    BOOST_TEST(t.admit(a, 900, n), "a clock stepped back does not silence a key");
}

BOOST_AUTO_TEST_CASE(throttle_table_is_bounded)
{
    LogThrottle t(60, 3);
    unsigned long n = 0;
    for (int i = 0; i < 3; ++i) {
        std::string k = "10.0.0." + std::to_string(i);
        BOOST_TEST(t.admit(k, 1000, n));
    }
    std::string k = "10.0.0.9";
    BOOST_TEST(t.admit(k, 1001, n), "the first address past the table is logged");
    BOOST_TEST(k == LogThrottle::overflow_key, "under the shared key");
    for (int i = 10; i < 100; ++i) {
        std::string more = "10.0.0." + std::to_string(i);
        BOOST_TEST(!t.admit(more, 1002, n));
    }
    BOOST_TEST(n == 90u);
    BOOST_TEST(t.size() == 4u);
    std::string later = "10.0.1.1";
    BOOST_TEST(t.admit(later, 1100, n), "expired entries make room");
    BOOST_TEST(later == "10.0.1.1");
    BOOST_TEST(t.size() <= 3u);
}

BOOST_AUTO_TEST_CASE(throttle_text_round_trip_and_garbage)
{
    LogThrottle t(60, 8);
    unsigned long n = 0;
    std::string a = "192.0.2.1", b = "unix";
    t.admit(a, 1000, n);
    t.admit(a, 1001, n);
    t.admit(b, 1002, n);
    LogThrottle u(60, 8);
    u.load(t.save(), 1003);
    BOOST_TEST(u.save() == t.save());
    BOOST_TEST(!u.admit(a, 1004, n));
    BOOST_TEST(n == 2u, "the count survives the file");

    LogThrottle g(60, 2);
    g.load("x y z\n1000 1\n-5 1 a\n1000 -1 b\n1000 1 has space\n99999999999 3 future\n1000 2 torn", 2000);
    BOOST_TEST(g.save() == "2000 3 future\n", "malformed lines skipped, the future clamped, a torn line dropped");
    std::string lines;
    for (int i = 0; i < 100; ++i)
        lines += "1000 0 k" + std::to_string(i) + "\n";
    g.load(lines, 1001);
    BOOST_TEST(g.size() <= 3u, "a long file is read up to the table's bound");
}

BOOST_AUTO_TEST_SUITE_END()
