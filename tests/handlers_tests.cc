#include "handlers.hh"

#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

using namespace sockmapd;
using namespace std::chrono_literals;

namespace
{

// A descriptor that is really open, so that the table's Fd has something
// to own and a test can see it closed.
Fd open_fd()
{
    return Fd(open("/dev/null", O_RDONLY | O_CLOEXEC));
}

bool is_open(int fd)
{
    return fd >= 0 && fcntl(fd, F_GETFD) != -1;
}

const Clock::time_point t0 = Clock::now();

// A server double: writes "n" (its count of connections) into each
// connection; counts its wake-ups between connections.
class CountingServer : public ConnectionServer
{
public:
    void serve(int fd) override
    {
        const std::string n = std::to_string(++served);
        BOOST_REQUIRE(write(fd, n.data(), n.size()) == static_cast<ssize_t>(n.size()));
    }
    std::optional<Clock::time_point> next_wakeup() const override
    {
        return wake_every ? std::optional(Clock::now() + 5ms) : std::nullopt;
    }
    void wakeup(Clock::time_point) override { ++wakeups; }
    void warm_up() override { warmed = served == 0; }

    int served = 0;
    int wakeups = 0;
    bool wake_every = false;
    bool warmed = false; // warm_up() ran before any connection
};

std::pair<Fd, Fd> pair_of(int type)
{
    int sv[2];
    BOOST_REQUIRE(socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) == 0);
    return {Fd(sv[0]), Fd(sv[1])};
}

std::string read_all(int fd)
{
    std::string out;
    char buf[64];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        out.append(buf, static_cast<std::size_t>(n));
    return out;
}

// One byte from the handler: it finished a connection.
bool heard_done(int ctl)
{
    char c = 0;
    return recv(ctl, &c, 1, 0) == 1 && c == 'd';
}

} // namespace

BOOST_AUTO_TEST_SUITE(handler_table)

BOOST_AUTO_TEST_CASE(next_connection_goes_to_the_handler_idle_the_shortest)
{
    HandlerTable t({100, 100s});
    BOOST_TEST(!t.next_idle());
    t.started(11, open_fd(), open_fd(), "a", t0);
    t.started(12, open_fd(), open_fd(), "b", t0);
    t.started(13, open_fd(), open_fd(), "c", t0);
    BOOST_TEST(!t.next_idle(), "all busy");
    BOOST_TEST(t.idle() == 0u);
    t.finished(12, t0 + 1s);
    t.finished(11, t0 + 2s);
    t.finished(13, t0 + 3s);
    BOOST_TEST(t.idle() == 3u);
    BOOST_TEST(*t.next_idle() == 13);
    t.given(13, open_fd(), "d");
    BOOST_TEST(*t.next_idle() == 11);
    t.given(11, open_fd(), "e");
    BOOST_TEST(*t.next_idle() == 12);
    BOOST_TEST(t.find(11)->given == 2u);
    BOOST_TEST(t.find(11)->peer == "e");
    BOOST_TEST(t.running() == 3u);
}

BOOST_AUTO_TEST_CASE(a_spare_is_idle_and_taken_only_when_no_other_is)
{
    HandlerTable t({100, 100s});
    t.started(11, open_fd(), open_fd(), "a", t0);
    t.started(12, open_fd(), Fd(), "", t0 + 2s);
    BOOST_TEST(t.idle() == 0u, "a spare getting ready is given nothing");
    BOOST_TEST(t.idle_or_warming() == 1u);
    BOOST_TEST(!t.next_idle());
    BOOST_TEST(t.find(12)->given == 0u);
    t.finished(12, t0 + 2s); // its byte: ready
    BOOST_TEST(t.idle() == 1u);
    BOOST_TEST(*t.next_idle() == 12);
    t.finished(11, t0 + 1s);
    BOOST_TEST(*t.next_idle() == 11, "one that has served, though idle longer");
    t.given(11, open_fd(), "b");
    BOOST_TEST(*t.next_idle() == 12);
    t.given(12, open_fd(), "c");
    BOOST_TEST(t.find(12)->given == 1u);
    BOOST_TEST(!t.next_idle());
    BOOST_TEST(t.retire_expired(t0 + 200s) == 0u, "busy now");
}

BOOST_AUTO_TEST_CASE(finished_closes_the_parents_copy_of_the_connection)
{
    HandlerTable t({100, 100s});
    Fd conn = open_fd();
    const int fd = conn.get();
    t.started(11, open_fd(), std::move(conn), "a", t0);
    BOOST_TEST(is_open(fd));
    t.finished(11, t0);
    BOOST_TEST(!is_open(fd));
    BOOST_TEST(*t.next_idle() == 11);
}

BOOST_AUTO_TEST_CASE(max_use_retires_with_the_last_connection_given)
{
    HandlerTable t({3, 100s});
    Fd ctl = open_fd();
    const int fd = ctl.get();
    t.started(11, std::move(ctl), open_fd(), "a", t0);
    t.finished(11, t0);
    t.given(11, open_fd(), "b");
    t.finished(11, t0);
    BOOST_TEST(is_open(fd));
    t.given(11, open_fd(), "c"); // the third
    BOOST_TEST(!is_open(fd), "its control socket is closed at once: it gets nothing more");
    BOOST_TEST(static_cast<bool>(t.find(11)->conn), "the third connection is still being served");
    t.finished(11, t0);
    BOOST_TEST(!t.next_idle());
    BOOST_TEST(t.idle() == 0u);
    BOOST_TEST(t.running() == 1u, "running until reaped");
    t.erase(11);
    BOOST_TEST(t.running() == 0u);
}

BOOST_AUTO_TEST_CASE(max_use_1_is_one_connection_per_process)
{
    HandlerTable t({1, 100s});
    t.started(11, open_fd(), open_fd(), "a", t0);
    BOOST_TEST(!static_cast<bool>(t.find(11)->ctl));
    t.finished(11, t0);
    BOOST_TEST(!t.next_idle());
}

BOOST_AUTO_TEST_CASE(max_idle_retires_idle_handlers_only)
{
    HandlerTable t({100, 10s});
    BOOST_TEST(!t.next_expiry());
    t.started(11, open_fd(), open_fd(), "a", t0);
    t.started(12, open_fd(), open_fd(), "b", t0);
    t.started(13, open_fd(), open_fd(), "c", t0);
    BOOST_TEST(!t.next_expiry(), "none idle");
    t.finished(11, t0 + 1s);
    t.finished(12, t0 + 4s);
    BOOST_TEST((*t.next_expiry() == t0 + 11s));
    BOOST_TEST(t.retire_expired(t0 + 10s) == 0u);
    BOOST_TEST(t.retire_expired(t0 + 11s) == 1u);
    BOOST_TEST(!static_cast<bool>(t.find(11)->ctl));
    BOOST_TEST((*t.next_expiry() == t0 + 14s));
    BOOST_TEST(t.retire_expired(t0 + 100s) == 1u);
    BOOST_TEST(static_cast<bool>(t.find(13)->ctl), "busy: not retired however long it works");
    BOOST_TEST(!t.next_expiry());
}

BOOST_AUTO_TEST_CASE(retire_all_at_reload_or_stop)
{
    HandlerTable t({100, 100s});
    t.started(11, open_fd(), open_fd(), "a", t0);
    t.started(12, open_fd(), open_fd(), "b", t0);
    t.finished(11, t0);
    t.retire_all();
    BOOST_TEST(!t.next_idle());
    BOOST_TEST(!static_cast<bool>(t.find(11)->ctl));
    BOOST_TEST(!static_cast<bool>(t.find(12)->ctl));
    BOOST_TEST(static_cast<bool>(t.find(12)->conn), "the busy one finishes its connection");
    t.retire(99); // unknown: nothing
    BOOST_TEST(t.running() == 2u);
}

BOOST_AUTO_TEST_CASE(serving_counts_the_busy_handlers_of_one_peer)
{
    HandlerTable t({100, 100s});
    t.started(11, open_fd(), open_fd(), "a:1", t0, -1, "a");
    t.started(12, open_fd(), open_fd(), "a:2", t0, -1, "a");
    t.started(13, open_fd(), open_fd(), "b:1", t0, -1, "b");
    BOOST_TEST(t.serving("a") == 2u);
    t.finished(11, t0);
    BOOST_TEST(t.serving("a") == 1u, "an idle handler serves no one");
    t.given(11, open_fd(), "b:2", "b");
    BOOST_TEST(t.serving("b") == 2u, "the key goes with the connection, not the handler");
    BOOST_TEST(t.serving("a") == 1u);
    t.erase(12);
    BOOST_TEST(t.serving("a") == 0u, "nothing is left behind when a handler is gone");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(control_socket)

BOOST_AUTO_TEST_CASE(connections_one_after_another_until_eof)
{
    auto [parent, child] = pair_of(SOCK_SEQPACKET);
    CountingServer server;
    auto [c1, s1] = pair_of(SOCK_STREAM);
    unsigned served = 0;
    std::thread handler(
        [&, ctl = child.get(), first = s1.release()] { served = serve_connections(ctl, Fd(first), server); });
    BOOST_TEST(read_all(c1.get()) == "1", "the first connection, then closed for the client");
    BOOST_TEST(heard_done(parent.get()));
    for (const char* want : {"2", "3"}) {
        auto [c, s] = pair_of(SOCK_STREAM);
        BOOST_TEST(give_connection(parent.get(), s.get()));
        s.reset(); // the parent's copy: the handler's is what serves
        BOOST_TEST(read_all(c.get()) == want);
        BOOST_TEST(heard_done(parent.get()));
    }
    parent.reset(); // retired
    handler.join();
    BOOST_TEST(served == 3u);
}

BOOST_AUTO_TEST_CASE(a_spare_warms_up_says_so_then_serves)
{
    auto [parent, child] = pair_of(SOCK_SEQPACKET);
    CountingServer server;
    unsigned served = 0;
    std::thread handler([&, ctl = child.get()] { served = serve_connections(ctl, Fd(), server); });
    BOOST_TEST(heard_done(parent.get()), "ready");
    BOOST_TEST(server.warmed);
    auto [c, s] = pair_of(SOCK_STREAM);
    BOOST_TEST(give_connection(parent.get(), s.get()));
    s.reset();
    BOOST_TEST(read_all(c.get()) == "1");
    BOOST_TEST(heard_done(parent.get()));
    parent.reset();
    handler.join();
    BOOST_TEST(served == 1u);
}

BOOST_AUTO_TEST_CASE(a_connection_given_before_retiring_is_still_served)
{
    auto [parent, child] = pair_of(SOCK_SEQPACKET);
    CountingServer server;
    auto [c1, s1] = pair_of(SOCK_STREAM);
    auto [c2, s2] = pair_of(SOCK_STREAM);
    BOOST_TEST(give_connection(parent.get(), s2.get()));
    s2.reset();
    parent.reset();
    const unsigned served = serve_connections(child.get(), std::move(s1), server);
    BOOST_TEST(served == 2u);
    BOOST_TEST(read_all(c1.get()) == "1");
    BOOST_TEST(read_all(c2.get()) == "2");
}

BOOST_AUTO_TEST_CASE(the_server_is_woken_while_idle)
{
    auto [parent, child] = pair_of(SOCK_SEQPACKET);
    CountingServer server;
    server.wake_every = true;
    auto [c1, s1] = pair_of(SOCK_STREAM);
    std::thread handler([&, ctl = child.get(), first = s1.release()] { serve_connections(ctl, Fd(first), server); });
    BOOST_TEST(heard_done(parent.get()));
    std::this_thread::sleep_for(100ms);
    parent.reset();
    handler.join();
    BOOST_TEST(server.wakeups >= 2, server.wakeups << " wake-ups in 100 ms at one per 5 ms");
}

BOOST_AUTO_TEST_CASE(giving_to_a_handler_that_is_gone_fails)
{
    auto [parent, child] = pair_of(SOCK_SEQPACKET);
    auto [c, s] = pair_of(SOCK_STREAM);
    child.reset();
    BOOST_TEST(!give_connection(parent.get(), s.get()));
}

BOOST_AUTO_TEST_SUITE_END()
