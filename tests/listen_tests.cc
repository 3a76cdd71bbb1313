#include "listen.hh"
#include "log.hh"

#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <set>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace sockmapd;

namespace
{

SysConfig sys_with(const std::string& listen, const std::string& port)
{
    SysConfig s;
    s.listen = listen;
    s.port = port;
    return s;
}

struct Good {
    std::string sys_listen, sys_port, arg, address, port;
};

// The message of the error listen_options() threw, or "" when it accepted `arg`.
template <class Error> std::string error_of(const SysConfig& sys, const std::string& arg)
{
    try {
        listen_options(sys, arg);
    } catch (const Error& e) {
        return e.what();
    }
    return {};
}

// A mistake in the argument is a usage error (exit 64).
std::string usage_error_of(const SysConfig& sys, const std::string& arg)
{
    return error_of<UsageError>(sys, arg);
}

// A bad value left from the config is a config error (exit 78).
std::string config_error_of(const SysConfig& sys, const std::string& arg)
{
    return error_of<ConfigError>(sys, arg);
}

} // namespace

BOOST_AUTO_TEST_SUITE(listen_options_parsing)

BOOST_AUTO_TEST_CASE(accepted_forms)
{
    const Good cases[] = {
        // no argument: the config's sysconfig.listen and .port
        {"127.0.0.1", "2224", "", "127.0.0.1", "2224"},
        {"::", "2224", "", "::", "2224"},
        {"[::1]", "2224", "", "::1", "2224"},
        {"localhost", "10025", "", "localhost", "10025"},
        // PORT alone keeps the address
        {"127.0.0.1", "2224", "9000", "127.0.0.1", "9000"},
        {"::", "2224", "1", "::", "1"},
        {"127.0.0.1", "2224", "65535", "127.0.0.1", "65535"},
        // ADDR:PORT
        {"127.0.0.1", "2224", "0.0.0.0:2225", "0.0.0.0", "2225"},
        {"127.0.0.1", "2224", "localhost:2225", "localhost", "2225"},
        {"127.0.0.1", "2224", "mail.example.org:2225", "mail.example.org", "2225"},
        // bracketed IPv6, with and without port
        {"127.0.0.1", "2224", "[::1]:2226", "::1", "2226"},
        {"127.0.0.1", "2224", "[::]:2226", "::", "2226"},
        {"127.0.0.1", "2224", "[fe80::1%lo]:2226", "fe80::1%lo", "2226"},
        {"127.0.0.1", "2224", "[::1]", "::1", "2224"},
        // empty parts come from the config
        {"127.0.0.1", "2224", ":2227", "127.0.0.1", "2227"},
        {"127.0.0.1", "2224", "10.0.0.1:", "10.0.0.1", "2224"},
        {"127.0.0.1", "2224", "[::1]:", "::1", "2224"},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT("sys " << c.sys_listen << " " << c.sys_port << ", arg \"" << c.arg << "\"")
        {
            const ListenOptions o = listen_options(sys_with(c.sys_listen, c.sys_port), c.arg);
            BOOST_TEST(o.address == c.address);
            BOOST_TEST(o.port == c.port);
            BOOST_TEST(o.max_children == default_max_children);
        }
    }
}

BOOST_AUTO_TEST_CASE(rejected_forms)
{
    const struct {
        std::string arg, needle;
    } cases[] = {
        {"0", "not a port number"},
        {"65536", "not a port number"},
        {"99999999999", "not a port number"},
        {"-1", "PORT, ADDR:PORT"},
        {"smtp", "PORT, ADDR:PORT"},
        {"127.0.0.1", "PORT, ADDR:PORT"},
        {"127.0.0.1:http", "not a port number"},
        {"127.0.0.1:22x", "not a port number"},
        {"127.0.0.1:0", "not a port number"},
        {"::1:2224", "needs brackets"},
        {"::", "needs brackets"},
        {"[::1", "without ']'"},
        {"[]:2224", "empty brackets"},
        {"[::1]2224", "expected ':' after ']'"},
        {"[::1]:x", "not a port number"},
        {"bad host:2224", "not an address"},
        {"a/b:2224", "not an address"},
        {" :2224", "not an address"},
    };
    const SysConfig sys = sys_with("127.0.0.1", "2224");
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT("arg \"" << c.arg << "\"")
        {
            const std::string err = usage_error_of(sys, c.arg);
            BOOST_TEST(!err.empty());
            BOOST_TEST(err.find(c.needle) != std::string::npos, err);
            BOOST_TEST(err.find(c.arg) != std::string::npos, "the message names the argument: " << err);
        }
    }
}

BOOST_AUTO_TEST_CASE(bad_config_values_are_named)
{
    BOOST_TEST(config_error_of(sys_with("127.0.0.1", "0"), "").find("sysconfig.port") != std::string::npos);
    BOOST_TEST(config_error_of(sys_with("127.0.0.1", "abc"), "").find("sysconfig.port") != std::string::npos);
    BOOST_TEST(config_error_of(sys_with("bad host", "2224"), "").find("sysconfig.listen") != std::string::npos);
    // The argument's port replaces a bad config port; its address does not repair a bad port.
    BOOST_TEST(config_error_of(sys_with("127.0.0.1", "abc"), "2224").empty());
    BOOST_TEST(!config_error_of(sys_with("127.0.0.1", "abc"), "127.0.0.1:").empty());
    BOOST_TEST(config_error_of(sys_with("bad host", "2224"), "127.0.0.1:2224").empty());
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------- the loop, for real

namespace
{

using namespace std::chrono_literals;

// A handler's server double: answers each connection "PID N", N counting
// the connections this process served, and ends it when the client has.
class WhoServer : public ConnectionServer
{
public:
    void serve(int fd) override
    {
        const std::string line = std::to_string(getpid()) + " " + std::to_string(++served_);
        (void)!write(fd, line.data(), line.size());
        char buf[64];
        while (read(fd, buf, sizeof buf) > 0) {
        }
    }

private:
    int served_ = 0;
};

struct Answer {
    pid_t pid = 0;
    int n = 0;
    bool operator==(const Answer&) const = default;
};

// listen_loop() in a process of its own, on a loopback port of its own,
// with `sys`'s max_use and max_idle.  SIGHUP calls a reload that returns
// `reload_ok` (and, when true, makes max_use `reload_max_use`).
class LoopProcess
{
public:
    // `bind_itself`: the loop binds the port (as --listen does) instead of
    // being passed the socket (as from systemd); only then does a stop
    // drain the backlog.
    LoopProcess(const SysConfig& sys, unsigned max_children, bool reload_ok = true, unsigned reload_max_use = 100,
                bool bind_itself = false, unsigned spares = default_spare_handlers)
    {
        const int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        BOOST_REQUIRE(bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        BOOST_REQUIRE(listen(l, 64) == 0);
        socklen_t len = sizeof a;
        getsockname(l, reinterpret_cast<sockaddr*>(&a), &len);
        addr_ = a;
        if (bind_itself)
            close(l); // the port, free again for the loop to bind
        pid_ = fork();
        BOOST_REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            log_setup_terminal(LogLevel::Error);
            Config cfg;
            cfg.sys = sys;
            ListenOptions o;
            if (bind_itself) {
                o.address = "127.0.0.1";
                o.port = std::to_string(ntohs(a.sin_port));
            } else {
                o.passed = {{l, "test"}};
            }
            o.max_children = max_children;
            o.spare_handlers = spares;
            const auto reload = [&] {
                if (reload_ok)
                    cfg.sys.max_use = reload_max_use;
                return reload_ok;
            };
            _exit(listen_loop(cfg, o, reload, [] { return std::make_unique<WhoServer>(); }));
        }
        if (!bind_itself)
            close(l);
    }
    pid_t pid() const { return pid_; }
    // A connection once the loop listens (it binds after the fork).
    int open_when_listening() const
    {
        for (int i = 0; i < 500; ++i) {
            if (const int c = open(); c >= 0)
                return c;
            std::this_thread::sleep_for(10ms);
        }
        return -1;
    }
    ~LoopProcess()
    {
        if (pid_ > 0) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
    }

    // A new connection, left open; -1 if it failed.
    int open() const
    {
        const int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        const timeval tv{10, 0};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (connect(c, reinterpret_cast<const sockaddr*>(&addr_), sizeof addr_) == 0)
            return c;
        close(c);
        return -1;
    }
    // A new connection closed for writing, its whole answer.
    Answer ask() const
    {
        const int c = open();
        Answer out;
        if (c >= 0) {
            shutdown(c, SHUT_WR);
            std::string text;
            char buf[64];
            ssize_t n;
            while ((n = read(c, buf, sizeof buf)) > 0)
                text.append(buf, static_cast<std::size_t>(n));
            std::sscanf(text.c_str(), "%d %d", &out.pid, &out.n);
        }
        close(c);
        return out;
    }
    void signal(int sig) const { kill(pid_, sig); }
    // The loop's exit status after SIGTERM, -1 if it did not end within 10 s.
    int stop()
    {
        kill(pid_, SIGTERM);
        for (int i = 0; i < 1000; ++i) {
            int status = 0;
            if (waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            }
            std::this_thread::sleep_for(10ms);
        }
        return -1;
    }

private:
    pid_t pid_ = -1;
    sockaddr_in addr_{};
};

SysConfig reuse(unsigned max_use, unsigned max_idle = 100)
{
    SysConfig s;
    s.max_use = max_use;
    s.max_idle = max_idle;
    return s;
}

// The first line a connection opened with open() was answered: "PID N".
Answer first_answer(int c)
{
    char buf[64] = {};
    Answer a;
    if (c >= 0 && read(c, buf, sizeof buf - 1) > 0)
        std::sscanf(buf, "%d %d", &a.pid, &a.n);
    return a;
}

// The state letter of /proc/PID/stat ('T' stopped, 'Z' zombie), '?' if gone.
char proc_state(pid_t pid)
{
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(f, line);
    const auto paren = line.rfind(')');
    return paren != std::string::npos && paren + 2 < line.size() ? line[paren + 2] : '?';
}

bool reaches_state(pid_t pid, char state)
{
    for (int i = 0; i < 1000; ++i) {
        if (proc_state(pid) == state)
            return true;
        std::this_thread::sleep_for(10ms);
    }
    return false;
}

// The sockets a process holds, as the inodes /proc/PID/fd links name.
std::set<std::string> socket_inodes(pid_t pid)
{
    std::set<std::string> out;
    const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
        std::error_code ec;
        const std::string target = std::filesystem::read_symlink(e.path(), ec).string();
        if (!ec && target.rfind("socket:", 0) == 0)
            out.insert(target);
    }
    return out;
}

bool holds_sockets(pid_t pid, std::size_t n)
{
    for (int i = 0; i < 1000; ++i) {
        if (socket_inodes(pid).size() == n)
            return true;
        std::this_thread::sleep_for(10ms);
    }
    return false;
}

// The loop's handler processes now.
std::set<pid_t> children(pid_t pid)
{
    std::ifstream f("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
    std::set<pid_t> out;
    for (pid_t c; f >> c;)
        out.insert(c);
    return out;
}

bool has_children(pid_t pid, std::size_t n)
{
    for (int i = 0; i < 1000; ++i) {
        if (children(pid).size() == n)
            return true;
        std::this_thread::sleep_for(10ms);
    }
    return false;
}

bool gone(pid_t pid)
{
    for (int i = 0; i < 1000; ++i) {
        if (kill(pid, 0) != 0)
            return true;
        std::this_thread::sleep_for(10ms);
    }
    return false;
}

} // namespace

BOOST_AUTO_TEST_SUITE(listen_loop_handlers)

// One handler at most: each connection waits for the previous one, so the
// order of answers is certain.
BOOST_AUTO_TEST_CASE(one_handler_serves_max_use_connections_then_another_starts)
{
    LoopProcess loop(reuse(3), 1);
    std::vector<Answer> got;
    for (int i = 0; i < 7; ++i)
        got.push_back(loop.ask());
    for (int i = 0; i < 7; ++i) {
        BOOST_TEST_CONTEXT("connection " << i)
        {
            BOOST_TEST(got[i].pid > 0);
            BOOST_TEST(got[i].n == i % 3 + 1);
            BOOST_TEST((got[i].pid == got[i / 3 * 3].pid));
        }
    }
    BOOST_TEST(got[0].pid != got[3].pid);
    BOOST_TEST(got[3].pid != got[6].pid);
    BOOST_TEST(gone(got[0].pid), "the handler exits after its max_use-th connection");
    BOOST_TEST(loop.stop() == 0);
}

BOOST_AUTO_TEST_CASE(max_use_1_is_a_process_per_connection)
{
    LoopProcess loop(reuse(1), 4);
    const Answer a = loop.ask(), b = loop.ask(), c = loop.ask();
    BOOST_TEST(a.n == 1);
    BOOST_TEST(b.n == 1);
    BOOST_TEST(c.n == 1);
    BOOST_TEST(a.pid != b.pid);
    BOOST_TEST(b.pid != c.pid);
    BOOST_TEST(gone(a.pid));
    BOOST_TEST(loop.stop() == 0);
}

BOOST_AUTO_TEST_CASE(concurrent_connections_get_handlers_of_their_own)
{
    LoopProcess loop(reuse(100), 2);
    const Answer first = loop.ask();
    BOOST_TEST(first.n == 1);
    // A connection held open keeps its handler busy: the next one is not
    // left waiting for it, another handler takes it.
    const int held = loop.open();
    BOOST_REQUIRE(held >= 0);
    char buf[64] = {};
    BOOST_TEST(read(held, buf, sizeof buf - 1) > 0, "the held connection is served");
    Answer busy;
    std::sscanf(buf, "%d %d", &busy.pid, &busy.n);
    const Answer second = loop.ask();
    BOOST_TEST(second.pid > 0);
    BOOST_TEST(second.pid != busy.pid);
    close(held);
    // At the cap of 2: the next connection goes to one of the two.
    const Answer third = loop.ask();
    BOOST_TEST((third.pid == busy.pid || third.pid == second.pid));
    BOOST_TEST(third.n >= 2);
    BOOST_TEST(loop.stop() == 0);
    BOOST_TEST(gone(busy.pid), "an idle handler ends at stop");
    BOOST_TEST(gone(second.pid));
}

// A new connection while every handler is busy goes to a spare started
// before it came: it waits for no fork.
BOOST_AUTO_TEST_CASE(a_spare_is_ready_for_the_connection_after_the_last_idle_one)
{
    LoopProcess loop(reuse(100), 4);
    const int held = loop.open();
    const Answer a = first_answer(held);
    BOOST_REQUIRE(a.pid > 0);
    BOOST_REQUIRE_MESSAGE(has_children(loop.pid(), 2), "the handler and a spare");
    const std::set<pid_t> ready = children(loop.pid());
    // Given nothing until it says it is ready (this server's warm-up is
    // nothing): the loop hears that at once.
    std::this_thread::sleep_for(500ms);
    const int second = loop.open();
    const Answer b = first_answer(second);
    BOOST_TEST(b.pid != a.pid);
    BOOST_TEST(ready.count(b.pid) == 1u, "served by the spare, running before the connection");
    BOOST_TEST(b.n == 1);
    BOOST_TEST(has_children(loop.pid(), 3), "another spare");
    close(held);
    close(second);
    // Idle handlers that have served come before a spare: the next
    // connection goes to one of them.
    std::this_thread::sleep_for(300ms);
    const Answer c = loop.ask();
    BOOST_TEST((c.pid == a.pid || c.pid == b.pid));
    BOOST_TEST(c.n == 2);
    BOOST_TEST(loop.stop() == 0);
}

BOOST_AUTO_TEST_CASE(no_spare_with_spare_handlers_0_nor_at_the_cap)
{
    LoopProcess none(reuse(100), 4, true, 100, false, 0);
    const int held = none.open();
    BOOST_REQUIRE(first_answer(held).pid > 0);
    std::this_thread::sleep_for(300ms);
    BOOST_TEST(children(none.pid()).size() == 1u, "forks only on demand");
    close(held);
    BOOST_TEST(none.stop() == 0);

    LoopProcess full(reuse(100), 1);
    const int h = full.open();
    BOOST_REQUIRE(first_answer(h).pid > 0);
    std::this_thread::sleep_for(300ms);
    BOOST_TEST(children(full.pid()).size() == 1u, "a spare counts within --max-children");
    close(h);
    BOOST_TEST(full.stop() == 0);
}

BOOST_AUTO_TEST_CASE(max_idle_ends_an_idle_handler)
{
    LoopProcess loop(reuse(100, 1), 2);
    const Answer a = loop.ask();
    BOOST_TEST(a.n == 1);
    const auto t0 = std::chrono::steady_clock::now();
    BOOST_TEST(gone(a.pid));
    BOOST_TEST((std::chrono::steady_clock::now() - t0 >= 500ms), "not before max_idle");
    const Answer b = loop.ask();
    BOOST_TEST(b.pid != a.pid);
    BOOST_TEST(b.n == 1);
    BOOST_TEST(loop.stop() == 0);
}

BOOST_AUTO_TEST_CASE(a_killed_handler_costs_later_clients_nothing)
{
    LoopProcess loop(reuse(100), 1);
    Answer last = loop.ask();
    for (int i = 0; i < 20; ++i) {
        // Killed while idle, and the next connection at once: at worst the
        // loop gives it to the dying handler, and then to another.
        kill(last.pid, SIGKILL);
        const Answer next = loop.ask();
        BOOST_TEST_CONTEXT("round " << i)
        {
            BOOST_TEST(next.pid > 0, "answered");
            BOOST_TEST(next.pid != last.pid);
            BOOST_TEST(next.n == 1);
        }
        last = next;
    }
    const Answer again = loop.ask();
    BOOST_TEST(again.pid == last.pid, "the cap of 1 is not used up by the dead");
    BOOST_TEST(again.n == 2);
    BOOST_TEST(loop.stop() == 0);
}

BOOST_AUTO_TEST_CASE(a_reload_retires_every_handler)
{
    LoopProcess loop(reuse(100), 1, true, 2);
    const Answer a = loop.ask();
    loop.signal(SIGHUP);
    BOOST_TEST(gone(a.pid), "the idle handler with the old config exits");
    const Answer b = loop.ask(), c = loop.ask(), d = loop.ask();
    BOOST_TEST(b.pid != a.pid);
    BOOST_TEST((b.n == 1 && c.n == 2 && c.pid == b.pid), "the new handler, reused");
    BOOST_TEST((d.pid != c.pid && d.n == 1), "max_use from the new config: 2");
    BOOST_TEST(loop.stop() == 0);
}

// Handlers retire all the time here, by every path the parent has: after
// their max_use-th connection (2), as soon as they are idle (max_idle 0:
// retired at the loop's next turn) and at reloads, which come every few
// milliseconds, while clients connect back to back.  A connection given to
// a handler at the moment it retires is still served: every one is answered.
BOOST_AUTO_TEST_CASE(no_connection_is_lost_to_a_handler_that_retires)
{
    LoopProcess loop(reuse(2, 0), 3, true, 2);
    BOOST_REQUIRE(loop.ask().pid > 0); // the loop is up: SIGHUP is a reload now
    std::atomic<bool> clients_done{false};
    std::thread reloads([&] {
        while (!clients_done) {
            loop.signal(SIGHUP);
            std::this_thread::sleep_for(3ms);
        }
    });
    std::atomic<int> answered{0}, unanswered{0};
    std::vector<std::thread> clients;
    for (int t = 0; t < 4; ++t)
        clients.emplace_back([&] {
            for (int i = 0; i < 100; ++i)
                ++(loop.ask().pid > 0 ? answered : unanswered);
        });
    for (auto& t : clients)
        t.join();
    clients_done = true;
    reloads.join();
    BOOST_TEST(unanswered.load() == 0);
    BOOST_TEST(answered.load() == 400);
    BOOST_TEST(loop.stop() == 0);
}

BOOST_AUTO_TEST_CASE(a_failed_reload_keeps_the_handlers)
{
    LoopProcess loop(reuse(100), 1, false);
    const Answer a = loop.ask();
    loop.signal(SIGHUP);
    std::this_thread::sleep_for(200ms);
    const Answer b = loop.ask();
    BOOST_TEST(b.pid == a.pid);
    BOOST_TEST(b.n == 2);
    BOOST_TEST(loop.stop() == 0);
}

// The review's case: --max-children 2, both held, 50 more in the backlog,
// then SIGTERM.  The backlog is drained no further than the cap: with both
// handlers busy, no handler is started for the 50 (their connections are
// reset when the socket closes).
BOOST_AUTO_TEST_CASE(a_stop_drains_the_backlog_no_further_than_the_cap)
{
    LoopProcess loop(reuse(100), 2, true, 100, true);
    const int h1 = loop.open_when_listening();
    const Answer a = first_answer(h1);
    const int h2 = loop.open();
    const Answer b = first_answer(h2);
    BOOST_REQUIRE(a.pid > 0);
    BOOST_REQUIRE(b.pid > 0);
    BOOST_REQUIRE(a.pid != b.pid);
    std::vector<int> queued;
    for (int i = 0; i < 50; ++i)
        queued.push_back(loop.open());
    BOOST_TEST(std::count(queued.begin(), queued.end(), -1) == 0, "50 connections wait in the backlog");
    std::this_thread::sleep_for(200ms);
    BOOST_TEST(loop.stop() == 0);
    int started = 0;
    for (const int c : queued) {
        const Answer q = first_answer(c);
        if (q.pid > 0 && q.pid != a.pid && q.pid != b.pid)
            ++started;
        close(c);
    }
    BOOST_TEST(started == 0, started << " handlers started past --max-children 2 at stop");
    close(h1);
    close(h2);
}

// Up to the cap, a stop still hands what waits to a handler: an idle one,
// or one started while fewer than --max-children run.
BOOST_AUTO_TEST_CASE(a_stop_serves_the_backlog_up_to_the_cap)
{
    LoopProcess loop(reuse(100), 3, true, 100, true);
    const int h1 = loop.open_when_listening();
    const Answer a = first_answer(h1);
    BOOST_REQUIRE(a.pid > 0);
    // The loop is stopped with SIGSTOP so that the next two wait in the backlog.
    loop.signal(SIGSTOP);
    BOOST_REQUIRE(reaches_state(loop.pid(), 'T'));
    const int q1 = loop.open(), q2 = loop.open(), q3 = loop.open();
    kill(loop.pid(), SIGTERM);
    loop.signal(SIGCONT);
    const Answer r1 = first_answer(q1), r2 = first_answer(q2), r3 = first_answer(q3);
    BOOST_TEST(loop.stop() == 0);
    const int served = (r1.pid > 0) + (r2.pid > 0) + (r3.pid > 0);
    BOOST_TEST(served == 2, "two of the three fit under the cap of 3 beside the held one: " << served);
    for (const int c : {h1, q1, q2, q3})
        close(c);
}

// Two handlers die holding connections they never took (stopped while
// idle, given one each, killed): both connections go to new handlers, and
// the one forked first holds no copy of the other's connection (a fork
// without exec keeps every descriptor the parent had open).
BOOST_AUTO_TEST_CASE(a_redispatched_connection_is_not_inherited_by_another_handler)
{
    LoopProcess loop(reuse(100), 2);
    const int held = loop.open();
    const Answer a = first_answer(held);
    const Answer b = loop.ask();
    BOOST_REQUIRE(a.pid > 0);
    BOOST_REQUIRE(b.pid > 0);
    BOOST_REQUIRE(a.pid != b.pid);
    close(held);
    std::this_thread::sleep_for(300ms); // both report their connection done: idle
    kill(a.pid, SIGSTOP);
    kill(b.pid, SIGSTOP);
    BOOST_REQUIRE(reaches_state(a.pid, 'T'));
    BOOST_REQUIRE(reaches_state(b.pid, 'T'));
    // What the loop holds before: its socket, the handlers' control
    // sockets, anything this test process left open (inherited by every
    // fork alike).
    const std::set<std::string> before = socket_inodes(loop.pid());
    const int c1 = loop.open(), c2 = loop.open();
    BOOST_REQUIRE(c1 >= 0);
    BOOST_REQUIRE(c2 >= 0);
    BOOST_REQUIRE_MESSAGE(holds_sockets(loop.pid(), before.size() + 2), "the loop accepted both and gave them out");
    loop.signal(SIGSTOP); // so that it reaps both deaths at once
    BOOST_REQUIRE(reaches_state(loop.pid(), 'T'));
    kill(a.pid, SIGKILL);
    kill(b.pid, SIGKILL);
    BOOST_REQUIRE(reaches_state(a.pid, 'Z'));
    BOOST_REQUIRE(reaches_state(b.pid, 'Z'));
    loop.signal(SIGCONT);
    const Answer r1 = first_answer(c1), r2 = first_answer(c2);
    BOOST_REQUIRE(r1.pid > 0);
    BOOST_REQUIRE(r2.pid > 0);
    BOOST_TEST(r1.pid != r2.pid);
    BOOST_TEST((r1.n == 1 && r2.n == 1), "each served by a new handler");
    const auto s1 = socket_inodes(r1.pid), s2 = socket_inodes(r2.pid);
    std::vector<std::string> shared;
    for (const auto& inode : s1)
        if (s2.count(inode) && !before.count(inode))
            shared.push_back(inode);
    BOOST_TEST(shared.empty(), "handlers " << r1.pid << " and " << r2.pid << " share " << shared.size()
                                           << " socket(s): one holds the other's client");
    close(c1);
    close(c2);
    BOOST_TEST(loop.stop() == 0);
}

BOOST_AUTO_TEST_SUITE_END()
