// The failover policy of pool.hh, with connections that are only names:
// no database needed.
#include "pool.hh"

#include <boost/test/unit_test.hpp>

#include <errmsg.h>
#include <mysqld_error.h>

#include <cstdlib>
#include <set>
#include <string>
#include <vector>

using namespace sockmapd;

namespace
{

struct TempDir {
    std::string path;
    TempDir()
    {
        std::string tmpl = "/tmp/sockmapd-pool-test.XXXXXX";
        BOOST_REQUIRE(::mkdtemp(tmpl.data()));
        path = tmpl;
    }
    ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

struct FakeLink : Pool::Link {
    std::string host;
    int id = 0;
};

DbError gone()
{
    return DbError(CR_SERVER_GONE_ERROR, "HY000", "MySQL server has gone away");
}

DbError timed_out()
{
    return DbError(CR_SERVER_LOST, "HY000", "Lost connection to server during query", TimedOut::Yes);
}

// Three hosts a, b, c; records every connection attempt as "host/db".
struct World {
    TempDir dir;
    std::vector<Endpoint> hosts{*parse_endpoint("a:1", 0), *parse_endpoint("b:1", 0), *parse_endpoint("c:1", 0)};
    std::set<std::string> refusing; // host names whose connect fails
    std::set<std::string> full;     // host names whose connect gets 1040 (too many connections)
    std::vector<std::string> connects;
    int next_id = 0;
    Pool pool{hosts, HostState(dir.path, 30), 10, [this](const Endpoint& h, const std::string& db) {
                  connects.push_back(h.name() + "/" + db);
                  if (refusing.count(h.name()))
                      throw DbError(CR_CONN_HOST_ERROR, "HY000", "Can't connect to server on '" + h.name() + "'");
                  if (full.count(h.name()))
                      throw DbError(ER_CON_COUNT_ERROR, "08004", "Too many connections");
                  auto c = std::make_unique<FakeLink>();
                  c->host = h.name();
                  c->id = ++next_id;
                  return std::unique_ptr<Pool::Link>(std::move(c));
              }};

    // What another handler sees in the shared state.
    bool is_down(std::size_t i)
    {
        // order() puts a host after one never marked exactly when it is down.
        HostState st(dir.path, 30);
        return st.order({hosts[i], *parse_endpoint("never-marked.invalid:1", 0)}).front() == 1;
    }

    // Runs work that fails with the given errors, one per call, then
    // succeeds; returns the hosts it was called on, in order.
    std::vector<std::string> run(const std::string& db, std::vector<DbError> failures,
                                 std::optional<DbError>* result = nullptr)
    {
        std::vector<std::string> on;
        std::size_t calls = 0;
        const auto r = pool.run(db, "m", [&](Pool::Link& c, const Endpoint& host) {
            BOOST_TEST(static_cast<FakeLink&>(c).host == host.name());
            on.push_back(host.name());
            if (calls < failures.size())
                throw failures[calls++];
        });
        if (result)
            *result = r;
        else
            BOOST_TEST(!r.has_value());
        return on;
    }
};

using Names = std::vector<std::string>;

} // namespace

BOOST_AUTO_TEST_SUITE(pool)

BOOST_AUTO_TEST_CASE(connects_lazily_and_keeps_the_connection)
{
    World w;
    BOOST_TEST(w.connects.empty());
    BOOST_TEST(!w.pool.next_wakeup().has_value());
    BOOST_TEST(w.run("db1", {}) == Names{"a:1"}, boost::test_tools::per_element());
    BOOST_TEST(w.run("db1", {}) == Names{"a:1"}, boost::test_tools::per_element());
    BOOST_TEST(w.run("db2", {}) == Names{"a:1"}, boost::test_tools::per_element());
    BOOST_TEST(w.connects == (Names{"a:1/db1", "a:1/db2"}), boost::test_tools::per_element());
    BOOST_TEST(w.pool.next_wakeup().has_value());
}

BOOST_AUTO_TEST_CASE(stale_kept_connection_is_retried_once_on_the_same_host)
{
    World w;
    w.run("db", {});
    BOOST_TEST(w.run("db", {gone()}) == (Names{"a:1", "a:1"}), boost::test_tools::per_element());
    BOOST_TEST(w.connects == (Names{"a:1/db", "a:1/db"}), boost::test_tools::per_element());
    BOOST_TEST(!w.is_down(0)); // a stale connection says nothing about the host
}

BOOST_AUTO_TEST_CASE(stale_retry_failing_too_moves_on_and_marks_the_host)
{
    World w;
    w.run("db", {});
    BOOST_TEST(w.run("db", {gone(), gone()}) == (Names{"a:1", "a:1", "b:1"}), boost::test_tools::per_element());
    BOOST_TEST(w.is_down(0));
    BOOST_TEST(!w.is_down(1));
}

BOOST_AUTO_TEST_CASE(a_new_connection_that_fails_is_not_retried)
{
    World w;
    BOOST_TEST(w.run("db", {gone()}) == (Names{"a:1", "b:1"}), boost::test_tools::per_element());
    BOOST_TEST(w.connects == (Names{"a:1/db", "b:1/db"}), boost::test_tools::per_element());
    BOOST_TEST(w.is_down(0));
}

BOOST_AUTO_TEST_CASE(hung_host_is_dropped_for_every_schema)
{
    World w;
    w.run("db1", {});
    w.run("db2", {});
    // A timeout on a kept connection: no retry on the hung host.
    BOOST_TEST(w.run("db1", {timed_out()}) == (Names{"a:1", "b:1"}), boost::test_tools::per_element());
    BOOST_TEST(w.is_down(0));
    // db2's connection to a went with it: db2 connects anew, to b.
    BOOST_TEST(w.run("db2", {}) == Names{"b:1"}, boost::test_tools::per_element());
    BOOST_TEST(w.connects == (Names{"a:1/db1", "a:1/db2", "b:1/db1", "b:1/db2"}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(down_hosts_are_tried_last_not_skipped)
{
    World w;
    HostState(w.dir.path, 30).mark_down(w.hosts[0]); // another handler saw a fail
    BOOST_TEST(w.run("db", {}) == Names{"b:1"}, boost::test_tools::per_element());
    // Every host down: all still tried, in configured order.
    World all;
    for (const auto& h : all.hosts)
        HostState(all.dir.path, 30).mark_down(h);
    all.refusing = {"a:1", "b:1"};
    BOOST_TEST(all.run("db", {}) == Names{"c:1"}, boost::test_tools::per_element());
    BOOST_TEST(all.connects == (Names{"a:1/db", "b:1/db", "c:1/db"}), boost::test_tools::per_element());
    BOOST_TEST(!all.is_down(2)); // the first success clears the mark
    BOOST_TEST(all.is_down(0));
}

BOOST_AUTO_TEST_CASE(every_host_failing_returns_the_last_error)
{
    World w;
    w.refusing = {"a:1", "c:1"};
    std::optional<DbError> r;
    BOOST_TEST(w.run("db", {gone()}, &r) == Names{"b:1"}, boost::test_tools::per_element());
    BOOST_REQUIRE(r.has_value());
    BOOST_TEST(r->code == static_cast<unsigned>(CR_CONN_HOST_ERROR));
    BOOST_TEST(std::string(r->what()).find("c:1") != std::string::npos);
    BOOST_TEST(w.connects == (Names{"a:1/db", "b:1/db", "c:1/db"}), boost::test_tools::per_element());
    for (std::size_t i = 0; i < 3; ++i)
        BOOST_TEST(w.is_down(i));
    // The last failure a timeout: the caller can tell.
    World t;
    t.refusing = {"b:1", "c:1"};
    BOOST_TEST(t.run("db", {timed_out()}, &r) == Names{"a:1"}, boost::test_tools::per_element());
    BOOST_REQUIRE(r.has_value());
    BOOST_TEST(!r->timed_out); // c refused last
    Pool single({*parse_endpoint("a:1", 0)}, HostState("", 30), 10, [](const Endpoint&, const std::string&) {
        return std::unique_ptr<Pool::Link>(std::make_unique<FakeLink>());
    });
    const auto last = single.run("db", "m", [](Pool::Link&, const Endpoint&) { throw timed_out(); });
    BOOST_REQUIRE(last.has_value());
    BOOST_TEST(last->timed_out);
}

BOOST_AUTO_TEST_CASE(a_full_host_is_skipped_for_this_run_but_not_marked_down)
{
    World w;
    w.full = {"a:1"};
    BOOST_TEST(w.run("db", {}) == Names{"b:1"}, boost::test_tools::per_element());
    BOOST_TEST(!w.is_down(0)); // other handlers still try a first
    // Every host full: the error is the caller's (TEMP for this lookup), no host marked.
    World all;
    all.full = {"a:1", "b:1", "c:1"};
    std::optional<DbError> r;
    BOOST_TEST(all.run("db", {}, &r).empty());
    BOOST_REQUIRE(r.has_value());
    BOOST_TEST(is_server_full(r->code));
    for (std::size_t i = 0; i < 3; ++i)
        BOOST_TEST(!all.is_down(i));
    // A slot free again: the next run connects to the first host.
    all.full.clear();
    BOOST_TEST(all.run("db", {}) == Names{"a:1"}, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(long_host_lists_are_each_tried_once)
{
    for (const std::size_t n : {3, 64, 65, 130}) {
        std::vector<Endpoint> hosts;
        for (std::size_t i = 0; i < n; ++i)
            hosts.push_back(*parse_endpoint("h" + std::to_string(i), 1));
        std::vector<std::string> attempts;
        Pool p(hosts, HostState("", 30), 10, [&](const Endpoint& h, const std::string&) -> std::unique_ptr<Pool::Link> {
            attempts.push_back(h.name());
            if (attempts.size() < n)
                throw DbError(CR_CONN_HOST_ERROR, "HY000", "refused");
            return std::make_unique<FakeLink>();
        });
        BOOST_TEST(!p.run("db", "m", [](Pool::Link&, const Endpoint&) {}).has_value());
        BOOST_TEST(attempts.size() == n);
        BOOST_TEST(std::set<std::string>(attempts.begin(), attempts.end()).size() == n);
        BOOST_TEST(attempts.back() == "h" + std::to_string(n - 1) + ":1");
    }
}

BOOST_AUTO_TEST_CASE(errors_of_the_work_itself_keep_the_connection)
{
    World w;
    w.run("db", {});
    const DbError bad_column(ER_BAD_FIELD_ERROR, "42S22", "Unknown column 'x'");
    BOOST_CHECK_THROW(w.run("db", {bad_column}), DbError);
    BOOST_CHECK_THROW(w.pool.run("db", "m", [](Pool::Link&, const Endpoint&) { throw ConfigError("bad"); }),
                      ConfigError);
    BOOST_TEST(w.run("db", {}) == Names{"a:1"}, boost::test_tools::per_element());
    BOOST_TEST(w.connects == Names{"a:1/db"}, boost::test_tools::per_element());
    BOOST_TEST(!w.is_down(0));
}

BOOST_AUTO_TEST_CASE(idle_connections_close)
{
    World w;
    w.run("db", {});
    const auto when = w.pool.next_wakeup();
    BOOST_REQUIRE(when.has_value());
    w.pool.close_idle(*when - std::chrono::seconds(1));
    BOOST_TEST(w.pool.next_wakeup().has_value()); // not yet
    w.pool.close_idle(*when);
    BOOST_TEST(!w.pool.next_wakeup().has_value());
    w.run("db", {});
    BOOST_TEST(w.connects == (Names{"a:1/db", "a:1/db"}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()
