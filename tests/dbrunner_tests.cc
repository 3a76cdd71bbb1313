// MariaDbRunner without a server: what it answers when no host does.  The
// failover policy is pool_tests'; statements on a real server are the
// black-box suites'.
#include "dbrunner.hh"

#include <boost/test/unit_test.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>

using namespace sockmapd;

namespace
{

// A loopback port nobody listens on: connections are refused at once.
unsigned closed_port()
{
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(s);
    return ntohs(a.sin_port);
}

DatabaseConfig unreachable_db()
{
    DatabaseConfig db;
    db.hosts = {*parse_endpoint("127.0.0.1:" + std::to_string(closed_port()), 3306)};
    db.username = "nobody";
    db.connect_timeout = 1;
    return db;
}

CompiledMap map_in(const std::string& service, const std::string& database)
{
    MapConfig m;
    m.service = service;
    m.database = database;
    m.table = "t";
    m.key = "k";
    m.value = "v";
    return compile_map(m);
}

} // namespace

BOOST_AUTO_TEST_SUITE(dbrunner)

BOOST_AUTO_TEST_CASE(no_host_answering_is_the_last_error_and_the_walk_never_runs)
{
    MariaDbRunner db(unreachable_db(), HostState("", 30)); // down-marks in this process only
    BOOST_TEST(!db.next_wakeup().has_value());             // nothing opened
    const CompiledMap m = map_in("recipient", "dbmail");
    bool walked = false;
    const RunOutcome ran = db.run(m, [&](StatementRunner::Execute) { walked = true; });
    // Every host failed, and none timed out.
    BOOST_TEST((ran == RunOutcome::Unavailable));
    BOOST_TEST(!walked);
    BOOST_TEST(!db.next_wakeup().has_value());
}

BOOST_AUTO_TEST_CASE(the_last_hosts_error_is_classified_here)
{
    struct Case {
        DbError error;
        RunOutcome outcome;
    };
    const std::vector<Case> cases = {
        {DbError(2002, "HY000", "Can't connect to server on '127.0.0.1' (111)"), RunOutcome::Unavailable},
        {DbError(1045, "28000", "Access denied for user 'sockmapd'"), RunOutcome::LoginRefused},
        {DbError(1040, "08004", "Too many connections"), RunOutcome::ServerFull},
        {DbError(2013, "HY000", "Lost connection to server during query", TimedOut::Yes), RunOutcome::TimedOut},
    };
    for (const auto& c : cases)
        BOOST_TEST((every_host_failed(c.error) == c.outcome), c.error.what());
}

BOOST_AUTO_TEST_CASE(check_verdicts_without_a_server)
{
    MariaDbRunner db(unreachable_db(), HostState("", 30));
    const MapCheck c = db.check_map(map_in("recipient", "dbmail"));
    BOOST_TEST((c.verdict == MapCheck::Verdict::Unreachable));
    BOOST_TEST(c.message.find("no database host answered") == 0u, c.message);
    // The schema's verdict is kept for its other maps.
    const MapCheck again = db.check_map(map_in("exists", "dbmail"));
    BOOST_TEST((again.verdict == MapCheck::Verdict::Unreachable));
    BOOST_TEST(again.message == c.message);
}

BOOST_AUTO_TEST_SUITE_END()
