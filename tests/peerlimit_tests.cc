#include "peerlimit.hh"

#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>

using namespace sockmapd;

BOOST_AUTO_TEST_SUITE(peerlimit)

BOOST_AUTO_TEST_CASE(key_is_the_address_or_the_user)
{
    sockaddr_in v4{};
    v4.sin_family = AF_INET;
    v4.sin_port = htons(40000);
    inet_pton(AF_INET, "127.0.0.2", &v4.sin_addr);
    BOOST_TEST(peer_key(reinterpret_cast<sockaddr*>(&v4), -1) == "127.0.0.2"); // no port: every connection of one host
    sockaddr_in6 v6{};
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(40001);
    inet_pton(AF_INET6, "::1", &v6.sin6_addr);
    BOOST_TEST(peer_key(reinterpret_cast<sockaddr*>(&v6), -1) == "::1");
    // A unix socket: the peer's user, whatever path it bound.
    int sv[2];
    BOOST_REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    sockaddr_storage ss{};
    ss.ss_family = AF_UNIX;
    BOOST_TEST(peer_key(reinterpret_cast<sockaddr*>(&ss), sv[0]) == "uid " + std::to_string(geteuid()));
    BOOST_TEST(peer_key(reinterpret_cast<sockaddr*>(&ss), -1) == ""); // cannot tell
    close(sv[0]);
    close(sv[1]);
}

BOOST_AUTO_TEST_CASE(admits_up_to_the_limit_and_reports_once)
{
    using A = PeerLimit::Admission;
    PeerLimit two(2);
    BOOST_TEST((two.admit("10.0.0.1", 0) == A::Yes));
    BOOST_TEST((two.admit("10.0.0.1", 1) == A::Yes));
    BOOST_TEST((two.admit("10.0.0.1", 2) == A::No));
    BOOST_TEST((two.admit("10.0.0.1", 2) == A::NoAgain)); // a flood is logged once
    BOOST_TEST((two.admit("10.0.0.2", 5) == A::No));      // each peer on its own
    BOOST_TEST((two.admit("10.0.0.1", 1) == A::Yes));     // one ended
    BOOST_TEST((two.admit("10.0.0.1", 2) == A::No));      // a new episode is logged again
    BOOST_TEST((two.admit("", 100) == A::Yes));           // unknown peer
    PeerLimit none(0);
    BOOST_TEST((none.admit("10.0.0.1", 10000) == A::Yes));
}

// The review's case, scaled up: 10,000 addresses each refused once, none
// admitted again (they went away), leave a bounded set.
BOOST_AUTO_TEST_CASE(refusals_of_clients_that_went_away_stay_bounded)
{
    using A = PeerLimit::Admission;
    PeerLimit one(1);
    for (int i = 0; i < 10000; ++i)
        BOOST_TEST((one.admit("10." + std::to_string(i / 256) + ".0." + std::to_string(i % 256), 1) == A::No));
    BOOST_TEST(one.refused() <= PeerLimit::max_refused);
    BOOST_TEST(one.refused() > 0u);
}

// A client still refused is kept while others come and go; one forgotten
// is logged again at its next refusal.
BOOST_AUTO_TEST_CASE(the_client_refused_longest_ago_is_forgotten_first)
{
    using A = PeerLimit::Admission;
    PeerLimit limit(1, 3);
    BOOST_TEST((limit.admit("flood", 1) == A::No));
    BOOST_TEST((limit.admit("gone-1", 1) == A::No));
    BOOST_TEST((limit.admit("flood", 1) == A::NoAgain));
    BOOST_TEST((limit.admit("gone-2", 1) == A::No));
    BOOST_TEST((limit.admit("gone-3", 1) == A::No)); // gone-1 is forgotten, not flood
    BOOST_TEST(limit.refused() == 3u);
    BOOST_TEST((limit.admit("flood", 1) == A::NoAgain));
    BOOST_TEST((limit.admit("gone-1", 1) == A::No));
    BOOST_TEST((limit.admit("gone-3", 0) == A::Yes)); // admitted: forgotten at once
    BOOST_TEST(limit.refused() == 2u);
}

BOOST_AUTO_TEST_SUITE_END()
