#include "hoststate.hh"
#include "log.hh"

#include "child_check.hh"

#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>

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

// In a child with private, empty /tmp and /run (a mount namespace) and
// stderr a pipe: what runtime_dir() chose, and what it logged.  Needs
// root, as the log suite does.
std::string dir_choice(const std::function<std::string()>& body)
{
    return in_child([&] {
        if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
            mount("tmpfs", "/tmp", "tmpfs", 0, "mode=1777") != 0 || mount("tmpfs", "/run", "tmpfs", 0, nullptr) != 0)
            return std::string("private /tmp and /run: ") + std::strerror(errno);
        ::unsetenv("RUNTIME_DIRECTORY");
        return body();
    });
}

// stderr becomes a pipe; the returned fd reads what was logged.
int capture_log()
{
    const int fd = stderr_to_pipe();
    LogFacts f;
    f.stderr_private = true;
    log_init(f);
    log_setup(LogLevel::Info, "");
    return fd;
}

std::string drain(int fd)
{
    char buf[4096];
    const ssize_t n = read(fd, buf, sizeof buf);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

BOOST_AUTO_TEST_CASE(runtime_dir_choice)
{
    BOOST_TEST(dir_choice([] {
                   ::setenv("RUNTIME_DIRECTORY", "/run/x:/run/y", 1);
                   if (runtime_dir() != "/run/x")
                       return "RUNTIME_DIRECTORY: " + runtime_dir();
                   ::unsetenv("RUNTIME_DIRECTORY");
                   ::mkdir("/run/sockmapd", 0750);
                   if (runtime_dir() != "/run/sockmapd")
                       return "/run/sockmapd: " + runtime_dir();
                   ::rmdir("/run/sockmapd");
                   const std::string mine = "/tmp/sockmapd-" + std::to_string(::geteuid());
                   if (runtime_dir() != mine)
                       return mine + ": " + runtime_dir();
                   return std::string();
               }) == "");
}

// A command root runs, and root in a directory the service user owns:
// files root created there would lock the handlers out of the state.
BOOST_AUTO_TEST_CASE(root_leaves_the_service_users_directory_alone)
{
    BOOST_TEST(dir_choice([] {
                   const int log = capture_log();
                   ::mkdir("/run/sockmapd", 0750);
                   if (::chown("/run/sockmapd", 12345, 12345) != 0)
                       return std::string("chown");
                   if (runtime_dir() != "/tmp/sockmapd-0")
                       return "root took " + runtime_dir();
                   if (!runtime_dir_for_command().empty())
                       return "a command as root uses " + runtime_dir_for_command();
                   ::setenv("RUNTIME_DIRECTORY", "/run/sockmapd", 1);
                   if (!runtime_dir().empty())
                       return std::string("root took RUNTIME_DIRECTORY of uid 12345");
                   const std::string said = drain(log);
                   if (said.find("RUNTIME_DIRECTORY /run/sockmapd belongs to another user") == std::string::npos)
                       return "no warning: " + said;
                   return std::string();
               }) == "");
}

// Another local user created /tmp/sockmapd-<uid> first: no shared state,
// and a warning says why.
BOOST_AUTO_TEST_CASE(squatted_tmp_directory_is_refused_with_a_warning)
{
    BOOST_TEST(dir_choice([] {
                   const int log = capture_log();
                   const uid_t victim = 12346;
                   const std::string dir = "/tmp/sockmapd-" + std::to_string(victim);
                   if (::mkdir(dir.c_str(), 0777) != 0 || ::chown(dir.c_str(), 12347, 12347) != 0 ||
                       ::chmod(dir.c_str(), 0777) != 0)
                       return std::string("squat: ") + std::strerror(errno);
                   if (setgid(victim) != 0 || setuid(victim) != 0)
                       return std::string("setuid: ") + std::strerror(errno);
                   if (!runtime_dir().empty())
                       return "took the squatted " + runtime_dir();
                   const std::string said = drain(log);
                   if (said.find("warning: failover state: " + dir + " is not a directory of uid 12346") ==
                           std::string::npos ||
                       said.find("remembered in this process only") == std::string::npos)
                       return "no warning: " + said;
                   return std::string();
               }) == "");
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
