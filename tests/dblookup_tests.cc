#include "dblookup.hh"

#include <boost/test/unit_test.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>

using namespace sockmapd;

namespace
{

MapConfig table_map()
{
    MapConfig m;
    m.service = "recipient";
    m.database = "dbmail";
    m.table = "dbmail_aliases";
    m.key = "alias";
    m.value = "deliver_to";
    return m;
}

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

Config config_with_host(const std::string& host)
{
    Config c;
    c.db.hosts = {*parse_endpoint(host, 3306)};
    c.db.username = "nobody";
    c.db.connect_timeout = 1;
    c.maps = {table_map()};
    return c;
}

// Keeps the failover state of these tests out of the real runtime directory.
struct ScratchRuntimeDir {
    std::string path;
    std::string saved;
    bool had = false;
    ScratchRuntimeDir()
    {
        std::string tmpl = "/tmp/sockmapd-dblookup-test.XXXXXX";
        BOOST_REQUIRE(::mkdtemp(tmpl.data()));
        path = tmpl;
        if (const char* s = std::getenv("RUNTIME_DIRECTORY")) {
            had = true;
            saved = s;
        }
        ::setenv("RUNTIME_DIRECTORY", path.c_str(), 1);
    }
    ~ScratchRuntimeDir()
    {
        if (had)
            ::setenv("RUNTIME_DIRECTORY", saved.c_str(), 1);
        else
            ::unsetenv("RUNTIME_DIRECTORY");
        std::system(("rm -rf '" + path + "'").c_str());
    }
};

} // namespace

BOOST_AUTO_TEST_SUITE(dblookup)

BOOST_AUTO_TEST_CASE(lazy_and_unknown_maps)
{
    ScratchRuntimeDir rt;
    const Config cfg = config_with_host("127.0.0.1:" + std::to_string(closed_port()));
    DbLookup db(cfg); // never connects here
    BOOST_TEST(!db.next_wakeup().has_value());
    const LookupResult r = db.lookup("nosuchmap", "key");
    BOOST_TEST((r.outcome == Outcome::NoSuchMap));
    BOOST_TEST(!db.next_wakeup().has_value());
    db.wakeup(Clock::now()); // nothing to close, and nothing opened by it
    BOOST_TEST(!db.next_wakeup().has_value());
}

BOOST_AUTO_TEST_CASE(unreachable_host_is_temp_never_notfound)
{
    ScratchRuntimeDir rt;
    const Config cfg = config_with_host("127.0.0.1:" + std::to_string(closed_port()));
    DbLookup db(cfg);
    for (int i = 0; i < 2; ++i) { // the second time the host is marked down, and still tried
        const LookupResult r = db.lookup("recipient", "postmaster@example.org");
        BOOST_TEST((r.outcome == Outcome::TempFail));
        BOOST_TEST(!r.text.empty());
    }
    std::ostringstream out;
    BOOST_TEST(check_maps_online(cfg, out, out) == 75);
    BOOST_TEST(out.str().find("recipient: no database host answered") == 0);
}

BOOST_AUTO_TEST_SUITE_END()
