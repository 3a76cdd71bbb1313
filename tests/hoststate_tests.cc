#include "hoststate.hh"

#include <boost/test/unit_test.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

using namespace sockmapd;

namespace
{

// A scratch directory removed at the end of the test.
struct TempDir {
    std::string path;
    TempDir()
    {
        std::string tmpl = "/tmp/sockmapd-hoststate-test.XXXXXX";
        path = ::mkdtemp(tmpl.data()) ? tmpl : std::string();
        BOOST_REQUIRE(!path.empty());
    }
    ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

std::string slurp(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void spit(const std::string& path, const std::string& text)
{
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

Endpoint tcp(const std::string& host, unsigned port)
{
    Endpoint e;
    e.host = host;
    e.port = port;
    return e;
}

// Whether `st` has `host` marked down (re-reading the file, as order()
// does): order() puts it after a host never marked exactly then.
bool marked_down(HostState& st, const Endpoint& host)
{
    return st.order({host, tcp("never-marked.invalid", 1)}).front() == 1;
}

// Where HostState keeps the marks in `dir`; its name is part of the
// contract with running handlers of an older version.
std::string state_file(const std::string& dir)
{
    return dir + "/failover.state";
}

} // namespace

BOOST_AUTO_TEST_SUITE(hoststate)

BOOST_AUTO_TEST_CASE(state_round_trip)
{
    const DownMap down = {{"db1:3306", 1000}, {"unix:/s", 1010}, {"[::1]:3306", 1020}};
    const std::string text = format_state(down);
    BOOST_TEST(parse_state(text, 900, 300) == down);
}

BOOST_AUTO_TEST_CASE(state_tolerates_garbage)
{
    const std::time_t now = 1000;
    const std::string text = "garbage\n"
                             "1100 good:1\n"
                             " 1100 leadingspace:1\n"
                             "11x0 badnumber:1\n"
                             "-5 negative:1\n"
                             "999 expired:1\n"
                             "1000 expires-now:1\n"
                             "99999999999 far-future:1\n"
                             "1100 \n"
                             "1100\n"
                             "\n"
                             "1100 two words\n"
                             "1200 torn:1"; // no newline: a torn write
    const DownMap got = parse_state(text, now, 300);
    const DownMap want = {{"good:1", 1100}, {"far-future:1", 1300}};
    BOOST_TEST(got == want);
    BOOST_TEST(parse_state("", now, 30).empty());
    BOOST_TEST(parse_state(std::string("\0\0\0\n", 4), now, 30).empty());
}

BOOST_AUTO_TEST_CASE(order_demotes_down_hosts)
{
    const std::vector<Endpoint> hosts = {tcp("a", 1), tcp("b", 1), tcp("c", 1)};
    const std::time_t now = 1000;
    using V = std::vector<std::size_t>;
    BOOST_TEST(try_order(hosts, {}, now) == V({0, 1, 2}));
    BOOST_TEST(try_order(hosts, {{"a:1", 1050}}, now) == V({1, 2, 0}));
    BOOST_TEST(try_order(hosts, {{"a:1", 1050}, {"c:1", 1050}}, now) == V({1, 0, 2}));
    // All down: still every host, in configured order.
    BOOST_TEST(try_order(hosts, {{"a:1", 1050}, {"b:1", 1050}, {"c:1", 1050}}, now) == V({0, 1, 2}));
    // Expired marks and unknown names do not count.
    BOOST_TEST(try_order(hosts, {{"a:1", 1000}, {"zz:1", 2000}}, now) == V({0, 1, 2}));
}

BOOST_AUTO_TEST_CASE(state_file_shared_between_instances)
{
    TempDir dir;
    const std::vector<Endpoint> hosts = {tcp("a", 1), tcp("b", 1)};
    HostState one(dir.path, 30), two(dir.path, 30);
    one.mark_down(hosts[0]);
    BOOST_TEST(marked_down(two, hosts[0]));
    BOOST_TEST(!marked_down(two, hosts[1]));
    BOOST_TEST(two.order(hosts) == std::vector<std::size_t>({1, 0}));
    BOOST_TEST(slurp(state_file(dir.path)).find(" a:1\n") != std::string::npos);
    two.mark_down(hosts[1]);
    BOOST_TEST(marked_down(one, hosts[0]));
    BOOST_TEST(marked_down(one, hosts[1]));
    one.mark_up(hosts[0]);
    BOOST_TEST(!marked_down(two, hosts[0]));
    BOOST_TEST(marked_down(two, hosts[1]));
    // No temporary files left behind.
    BOOST_TEST(std::system(("test $(ls '" + dir.path + "' | wc -l) -eq 2").c_str()) == 0);
}

BOOST_AUTO_TEST_CASE(state_file_corrupt_or_huge_is_ignored)
{
    TempDir dir;
    const Endpoint a = tcp("a", 1);
    HostState st(dir.path, 30);
    spit(state_file(dir.path), std::string(100000, 'x'));
    BOOST_TEST(!marked_down(st, a));
    spit(state_file(dir.path), "\x01\x02 not a state file\n9999999999999999999999 a:1\n");
    BOOST_TEST(!marked_down(st, a));
    st.mark_down(a); // rewrites the file cleanly
    BOOST_TEST(marked_down(st, a));
    BOOST_TEST(slurp(state_file(dir.path)).find("not a state file") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(retry_interval_zero_never_marks)
{
    TempDir dir;
    const Endpoint a = tcp("a", 1);
    HostState st(dir.path, 0);
    st.mark_down(a);
    BOOST_TEST(!marked_down(st, a));
}

BOOST_AUTO_TEST_CASE(marks_expire)
{
    TempDir dir;
    const Endpoint a = tcp("a", 1);
    HostState st(dir.path, 1);
    st.mark_down(a);
    BOOST_TEST(marked_down(st, a));
    std::this_thread::sleep_for(std::chrono::milliseconds(2100));
    BOOST_TEST(!marked_down(st, a));
}

BOOST_AUTO_TEST_CASE(unwritable_dir_is_not_fatal)
{
    const Endpoint a = tcp("a", 1);
    // A directory that does not exist: memory only, still remembers.
    HostState st("/nonexistent/sockmapd-test", 30);
    BOOST_CHECK_NO_THROW(st.mark_down(a));
    BOOST_TEST(marked_down(st, a));
    BOOST_CHECK_NO_THROW(st.mark_up(a));
    BOOST_TEST(!marked_down(st, a));
    HostState none("", 30);
    none.mark_down(a);
    BOOST_TEST(marked_down(none, a));
}

BOOST_AUTO_TEST_CASE(unusable_state_file_is_not_fatal)
{
    // A directory where the state file belongs cannot be read or replaced,
    // whoever runs the test (root included).
    TempDir dir;
    BOOST_REQUIRE(::mkdir((dir.path + "/failover.state").c_str(), 0700) == 0);
    const Endpoint a = tcp("a", 1);
    HostState st(dir.path, 30);
    BOOST_CHECK_NO_THROW(st.mark_down(a));
    BOOST_TEST(marked_down(st, a)); // remembered in this process
    BOOST_CHECK_NO_THROW(st.mark_up(a));
    BOOST_TEST(!marked_down(st, a));
}

BOOST_AUTO_TEST_CASE(concurrent_writers_keep_a_valid_file)
{
    TempDir dir;
    std::vector<Endpoint> hosts;
    for (int i = 0; i < 8; ++i)
        hosts.push_back(tcp("h" + std::to_string(i), 1));
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
        threads.emplace_back([&, t] {
            HostState st(dir.path, 60);
            for (int i = 0; i < 10; ++i) {
                st.mark_down(hosts[static_cast<std::size_t>(t)]);
                st.mark_up(hosts[static_cast<std::size_t>(t)]);
            }
            st.mark_down(hosts[static_cast<std::size_t>(t)]);
        });
    for (auto& th : threads)
        th.join();
    // flock serialises the writers, so every final mark survives.
    const DownMap got = parse_state(slurp(dir.path + "/failover.state"), std::time(nullptr), 60);
    BOOST_TEST(got.size() == 8u);
}

BOOST_AUTO_TEST_SUITE_END()
