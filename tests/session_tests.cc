#include "log.hh"
#include "netstring.hh"
#include "session.hh"
#include "socketmap.hh"
#include "util.hh"

#include "child_check.hh"

#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <atomic>
#include <fcntl.h>
#include <functional>
#include <map>
#include <netinet/in.h>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

using namespace sockmapd;

namespace
{

// A lookup double: a fixed table per map, and scripted failures.
class TableLookup : public Lookup
{
public:
    LookupResult lookup(std::string_view map, std::string_view key) override
    {
        ++calls;
        if (map == "down")
            return {Outcome::TempFail, "database down"};
        if (map == "slow")
            return {Outcome::Timeout, "query timed out"};
        if (map != "m")
            return {Outcome::NoSuchMap, {}};
        const auto it = table.find(std::string(key));
        if (it == table.end())
            return {Outcome::NotFound, {}};
        return {Outcome::Found, it->second};
    }
    std::map<std::string, std::string> table{{"a@x", "b@y"}, {"k,with, commas", "v"}};
    int calls = 0;
};

// Runs a whole session over a socketpair: writes `input`, shuts down the
// write side, collects everything the session answered.
std::string converse(const std::string& input, Lookup& lookup, SessionStats* stats = nullptr, SessionLimits limits = {})
{
    int sv[2];
    BOOST_REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    SessionStats st;
    std::thread server([&] {
        st = run_session(sv[1], sv[1], lookup, limits);
        shutdown(sv[1], SHUT_WR);
    });
    std::thread writer([&] {
        std::size_t off = 0;
        while (off < input.size()) {
            const ssize_t n = send(sv[0], input.data() + off, input.size() - off, MSG_NOSIGNAL);
            if (n <= 0)
                break;
            off += static_cast<std::size_t>(n);
        }
        shutdown(sv[0], SHUT_WR);
    });
    std::string out;
    char buf[65536];
    ssize_t n;
    while ((n = read(sv[0], buf, sizeof buf)) > 0)
        out.append(buf, static_cast<std::size_t>(n));
    writer.join();
    server.join();
    close(sv[0]);
    close(sv[1]);
    if (stats)
        *stats = st;
    return out;
}

// What `body` logged at `level` (into a scratch file); in a forked child,
// which may change the log set-up.
std::string logged(LogLevel level, const std::function<void()>& body)
{
    char dir[] = "/tmp/sockmapd-session-XXXXXX";
    if (!mkdtemp(dir))
        return "mkdtemp failed";
    const std::string file = std::string(dir) + "/s.log";
    log_init(LogFacts{});
    log_setup(level, file);
    body();
    std::string text;
    read_file(file, text, 1 << 20);
    unlink(file.c_str());
    rmdir(dir);
    return text;
}

std::string ns(const std::string& s)
{
    std::string out;
    netstring_append(out, s);
    return out;
}

} // namespace

BOOST_AUTO_TEST_SUITE(session)

BOOST_AUTO_TEST_CASE(answers_each_request_in_order)
{
    TableLookup t;
    SessionStats st;
    const std::string out = converse(ns("m a@x") + ns("m nobody") + ns("m k,with, commas") + ns("other k") +
                                         ns("nospace") + ns("down k") + ns("slow k") + ns("m a@x"),
                                     t, &st);
    BOOST_TEST(out == ns("OK b@y") + ns("NOTFOUND ") + ns("OK v") + ns("PERM unknown map") +
                          ns("PERM request without map name and key") + ns("TEMP database down") +
                          ns("TIMEOUT query timed out") + ns("OK b@y"));
    BOOST_TEST(st.requests == 8u);
    BOOST_TEST(st.hits == 3u);
    BOOST_TEST(st.misses == 1u);
    BOOST_TEST(st.errors == 4u);
    BOOST_TEST(static_cast<int>(st.end) == static_cast<int>(EndReason::Eof));
}

BOOST_AUTO_TEST_CASE(empty_session_ends_cleanly)
{
    TableLookup t;
    SessionStats st;
    BOOST_TEST(converse("", t, &st).empty());
    BOOST_TEST(static_cast<int>(st.end) == static_cast<int>(EndReason::Eof));
    BOOST_TEST(t.calls == 0);
}

BOOST_AUTO_TEST_CASE(key_limit_does_not_depend_on_the_map_name)
{
    TableLookup t;
    SessionStats st;
    const std::string longest_name(max_map_name_length, 'n');
    const std::string longest_key(max_key_length, 'k');
    // The longest key behind the longest name is looked up; one byte more
    // is PERM without a lookup, and the session goes on.
    const std::string out =
        converse(ns(longest_name + " " + longest_key) + ns("m " + longest_key + "k") + ns("m a@x"), t, &st);
    BOOST_TEST(out == ns("PERM unknown map") + ns("PERM key too long") + ns("OK b@y"));
    BOOST_TEST(t.calls == 2);
    BOOST_TEST(static_cast<int>(st.end) == static_cast<int>(EndReason::Eof));
}

BOOST_AUTO_TEST_CASE(framing_error_answers_perm_and_closes)
{
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"x:", "PERM netstring length is not a number"},  {"01:a,", "PERM netstring length with leading zero"},
        {"10102:", "PERM netstring length over limit"},   {"3:m ab", "PERM netstring without terminating comma"},
        {"50:m a", "PERM end of input inside netstring"}, {":", "PERM netstring without length"},
    };
    for (const auto& [input, reply] : cases) {
        TableLookup t;
        SessionStats st;
        // The valid request before the broken one is still answered; the
        // one after it is not.
        // (For the truncated frame the trailing request is swallowed by it.)
        const std::string out = converse(ns("m a@x") + input + ns("m a@x"), t, &st);
        BOOST_TEST_CONTEXT("input " << input)
        {
            BOOST_TEST(out == ns("OK b@y") + ns(reply));
            BOOST_TEST(static_cast<int>(st.end) == static_cast<int>(EndReason::ProtocolError));
        }
    }
}

BOOST_AUTO_TEST_CASE(pipelined_thousand_requests)
{
    TableLookup t;
    std::string in, want;
    for (int i = 0; i < 1000; ++i) {
        in += ns(i % 2 ? "m a@x" : "m none");
        want += ns(i % 2 ? "OK b@y" : "NOTFOUND ");
    }
    BOOST_TEST(converse(in, t) == want);
    BOOST_TEST(t.calls == 1000);
}

BOOST_AUTO_TEST_CASE(idle_client_is_dropped)
{
    int sv[2];
    BOOST_REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    TableLookup t;
    const auto start = Clock::now();
    // One byte, then silence: the dribble must not keep the session alive.
    BOOST_REQUIRE(write(sv[0], "1", 1) == 1);
    const SessionStats st = run_session(sv[1], sv[1], t, {std::chrono::seconds(1), std::chrono::seconds(60)});
    const auto took_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
    BOOST_TEST(static_cast<int>(st.end) == static_cast<int>(EndReason::Idle));
    BOOST_TEST(took_ms >= 900);
    BOOST_TEST(took_ms < 5000);
    close(sv[0]);
    close(sv[1]);
}

BOOST_AUTO_TEST_CASE(wakeup_is_called_while_idle)
{
    struct Waker : TableLookup {
        std::optional<Clock::time_point> next_wakeup() const override { return when; }
        void wakeup(Clock::time_point) override
        {
            ++wakeups;
            when.reset();
        }
        std::optional<Clock::time_point> when = Clock::now() + std::chrono::milliseconds(100);
        int wakeups = 0;
    } w;
    int sv[2];
    BOOST_REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    run_session(sv[1], sv[1], w, {std::chrono::seconds(1), std::chrono::seconds(60)});
    BOOST_TEST(w.wakeups == 1);
    close(sv[0]);
    close(sv[1]);
}

namespace
{

// A client that sends 200 requests for a 90000-byte value and never reads a
// reply: how the session ends under `limits`, and how long it took.
std::pair<EndReason, long long> never_reading_client(const SessionLimits& limits)
{
    int sv[2];
    BOOST_REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    TableLookup t;
    t.table["big"] = std::string(90000, 'v');
    std::string in;
    for (int i = 0; i < 200; ++i)
        in += ns("m big");
    std::thread writer([&] {
        std::size_t off = 0;
        while (off < in.size()) {
            const ssize_t n = send(sv[0], in.data() + off, in.size() - off, MSG_NOSIGNAL);
            if (n <= 0)
                break;
            off += static_cast<std::size_t>(n);
        }
    });
    const auto start = Clock::now();
    const SessionStats st = run_session(sv[1], sv[1], t, limits);
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - start).count();
    shutdown(sv[1], SHUT_RDWR);
    writer.join();
    close(sv[0]);
    close(sv[1]);
    return {st.end, secs};
}

} // namespace

BOOST_AUTO_TEST_CASE(client_that_never_reads_is_dropped)
{
    const auto [end, secs] = never_reading_client({std::chrono::seconds(1), std::chrono::seconds(60)});
    BOOST_TEST(static_cast<int>(end) == static_cast<int>(EndReason::ClientGone));
    BOOST_TEST(secs < 10);
}

BOOST_AUTO_TEST_CASE(max_session_zero_is_no_age_limit)
{
    TableLookup t;
    SessionStats st;
    const SessionLimits limits{std::chrono::seconds(60), std::chrono::seconds(0)};
    BOOST_TEST(converse(ns("m a@x"), t, &st, limits) == ns("OK b@y"));
    BOOST_TEST(static_cast<int>(st.end) == static_cast<int>(EndReason::Eof));
}

// Between requests a client may wait up to idle_timeout (Sendmail: an SMTP
// command); inside one it may not: the stall limit counts from its first byte.
BOOST_AUTO_TEST_CASE(unfinished_request_ends_at_stall_limit_not_idle_timeout)
{
    int sv[2];
    BOOST_REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    TableLookup t;
    const std::string req = ns("m a@x") + "5:m a";
    BOOST_REQUIRE(write(sv[0], req.data(), req.size()) == static_cast<ssize_t>(req.size()));
    const auto start = Clock::now();
    const SessionStats st =
        run_session(sv[1], sv[1], t, {std::chrono::seconds(60), std::chrono::seconds(0), std::chrono::seconds(1)});
    const auto took_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
    BOOST_TEST(static_cast<int>(st.end) == static_cast<int>(EndReason::Idle));
    BOOST_TEST(st.requests == 1u);
    BOOST_TEST(took_ms >= 900);
    BOOST_TEST(took_ms < 10000);
    close(sv[0]);
    close(sv[1]);
}

BOOST_AUTO_TEST_CASE(unread_replies_end_at_stall_limit_not_idle_timeout)
{
    const auto [end, secs] =
        never_reading_client({std::chrono::seconds(60), std::chrono::seconds(0), std::chrono::seconds(1)});
    BOOST_TEST(static_cast<int>(end) == static_cast<int>(EndReason::ClientGone));
    BOOST_TEST(secs < 10);
}

namespace
{

// Every lookup takes `delay`: a database query that takes its time.
struct SlowLookup : TableLookup {
    explicit SlowLookup(std::chrono::milliseconds d) : delay(d) {}
    LookupResult lookup(std::string_view map, std::string_view key) override
    {
        std::this_thread::sleep_for(delay);
        return TableLookup::lookup(map, key);
    }
    std::chrono::milliseconds delay;
};

std::string batch(int n)
{
    std::string in;
    for (int i = 0; i < n; ++i)
        in += ns("m a@x");
    return in;
}

// A connected TCP pair on loopback: {client, server}.
std::pair<int, int> tcp_pair()
{
    const int l = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    BOOST_REQUIRE(bind(l, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    BOOST_REQUIRE(listen(l, 1) == 0);
    BOOST_REQUIRE(getsockname(l, reinterpret_cast<sockaddr*>(&sa), &len) == 0);
    const int c = socket(AF_INET, SOCK_STREAM, 0);
    BOOST_REQUIRE(connect(c, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    const int s = accept(l, nullptr, nullptr);
    BOOST_REQUIRE(s >= 0);
    close(l);
    return {c, s};
}

} // namespace

// Thirty requests sent at once to a map whose query takes 200 ms: the
// session ends at max_session between two of them, not 6 s later.
BOOST_AUTO_TEST_CASE(max_session_cuts_a_pipelined_batch)
{
    int sv[2];
    BOOST_REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    SlowLookup t(std::chrono::milliseconds(200));
    const std::string in = batch(30);
    BOOST_REQUIRE(write(sv[0], in.data(), in.size()) == static_cast<ssize_t>(in.size()));
    const auto start = Clock::now();
    const SessionStats st = run_session(sv[1], sv[1], t, {std::chrono::seconds(30), std::chrono::seconds(1)});
    const auto took_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
    BOOST_TEST(static_cast<int>(st.end) == static_cast<int>(EndReason::MaxSession));
    BOOST_TEST(t.calls < 10);
    BOOST_TEST(took_ms < 2500);
    // The replies to what was answered reached the client.
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    char buf[4096];
    const ssize_t n = read(sv[0], buf, sizeof buf);
    BOOST_TEST(std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0) == [&] {
        std::string want;
        for (int i = 0; i < t.calls; ++i)
            want += ns("OK b@y");
        return want;
    }());
    close(sv[0]);
    close(sv[1]);
}

// A TCP client that sent thirty slow requests and closed at once: the
// handler notices between two of them instead of answering all thirty.
BOOST_AUTO_TEST_CASE(vanished_client_is_noticed_within_a_batch)
{
    const auto [client, server] = tcp_pair();
    SlowLookup t(std::chrono::milliseconds(200));
    const std::string in = batch(30);
    BOOST_REQUIRE(write(client, in.data(), in.size()) == static_cast<ssize_t>(in.size()));
    close(client);
    const auto start = Clock::now();
    const SessionStats st = run_session(server, server, t, {std::chrono::seconds(30), std::chrono::seconds(60)});
    const auto took_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
    BOOST_TEST(static_cast<int>(st.end) == static_cast<int>(EndReason::ClientGone));
    BOOST_TEST(t.calls <= 4);
    BOOST_TEST(took_ms < 2000);
    close(server);
}

// A client that only shut its write side still gets every reply.
BOOST_AUTO_TEST_CASE(half_closed_client_gets_the_whole_batch)
{
    SlowLookup t(std::chrono::milliseconds(30));
    SessionStats st;
    const std::string out = converse(batch(10), t, &st);
    BOOST_TEST(out == [] {
        std::string want;
        for (int i = 0; i < 10; ++i)
            want += ns("OK b@y");
        return want;
    }());
    BOOST_TEST(static_cast<int>(st.end) == static_cast<int>(EndReason::Eof));
}

// The map name is the client's: a debug log line shows it escaped, in the
// message and in the SOCKMAP_MAP field alike.
BOOST_AUTO_TEST_CASE(map_name_is_logged_escaped)
{
    BOOST_TEST(in_child([] {
                   TableLookup t;
                   const std::string text = logged(LogLevel::Debug, [&] {
                       converse(ns("x\n*\t*\t*\t*\t*\troot\ttouch\t/tmp/pwned\n#\x1b\xff k"), t);
                   });
                   const std::string escaped =
                       "x\\x0a*\\x09*\\x09*\\x09*\\x09*\\x09root\\x09touch\\x09/tmp/pwned\\x0a#\\x1b\\xff";
                   if (text.find("map " + escaped + " key") == std::string::npos ||
                       text.find("SOCKMAP_MAP=" + escaped) == std::string::npos)
                       return "not escaped: " + text;
                   if (text.find("\n*") != std::string::npos || text.find('\x1b') != std::string::npos ||
                       text.find('\xff') != std::string::npos)
                       return "raw bytes: " + text;
                   return std::string();
               }) == "");
}

// The review's flood: 20 KB of "1:x," was 5,001 log lines.  Each is still
// answered PERM; the session warns once and counts them.
BOOST_AUTO_TEST_CASE(malformed_requests_are_warned_about_once_and_counted)
{
    BOOST_TEST(in_child([] {
                   TableLookup t;
                   SessionStats st;
                   std::string flood;
                   for (int i = 0; i < 5000; ++i)
                       flood += "1:x,";
                   std::string out;
                   const std::string text =
                       logged(LogLevel::Info, [&] { out = converse(flood + ns("m a@x"), t, &st); });
                   std::size_t lines = 0;
                   for (const char c : text)
                       lines += c == '\n';
                   if (lines > 1)
                       return std::to_string(lines) + " log lines: " + text.substr(0, 500);
                   if (text.find("request without map name and key") == std::string::npos)
                       return "not warned: " + text;
                   if (st.malformed != 5000 || st.errors != 5000 || st.requests != 5001 || st.hits != 1)
                       return "counts: " + std::to_string(st.malformed) + " malformed, " + std::to_string(st.errors) +
                              " errors";
                   std::string want;
                   for (int i = 0; i < 5000; ++i)
                       want += ns("PERM request without map name and key");
                   if (out != want + ns("OK b@y"))
                       return "replies: " + out.substr(out.size() > 200 ? out.size() - 200 : 0);
                   return std::string();
               }) == "");
}

// What a Lookup hears: the session's start, and that the client caught up
// with its replies - before each request of a client that waits for them,
// not in the middle of a batch it sent at once.
BOOST_AUTO_TEST_CASE(the_lookup_hears_when_the_client_has_caught_up)
{
    struct Hearing : TableLookup {
        void session_started() override { events += 'S'; }
        void batch_over() override
        {
            events += 'B';
            ++batches_over;
        }
        LookupResult lookup(std::string_view map, std::string_view key) override
        {
            events += 'L';
            return TableLookup::lookup(map, key);
        }
        std::string events;               // read once the session has ended
        std::atomic<int> batches_over{0}; // read while it runs
    };
    Hearing pipelined;
    std::string batch;
    for (int i = 0; i < 50; ++i)
        batch += ns("m a@x");
    int sv[2];
    BOOST_REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    BOOST_REQUIRE(write(sv[0], batch.data(), batch.size()) == static_cast<ssize_t>(batch.size()));
    shutdown(sv[0], SHUT_WR);
    run_session(sv[1], sv[1], pipelined, {});
    close(sv[0]);
    close(sv[1]);
    BOOST_TEST(pipelined.events.substr(0, 2) == "SL", "the batch was there at the first read: " << pipelined.events);
    BOOST_TEST(pipelined.events.find("LB") == pipelined.events.rfind("LB"), "no catching up mid-batch");

    Hearing waiting;
    BOOST_REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    std::thread server([&] { run_session(sv[1], sv[1], waiting, {}); });
    for (int i = 0; i < 3; ++i) {
        // The session is back at its read once it has said the batch is over
        // (a fixed pause was not always enough on a busy machine).
        for (int w = 0; w < 10000 && waiting.batches_over.load() < i + 1; ++w)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        BOOST_REQUIRE(waiting.batches_over.load() == i + 1);
        const std::string req = ns("m a@x");
        BOOST_REQUIRE(write(sv[0], req.data(), req.size()) == static_cast<ssize_t>(req.size()));
        char buf[64];
        BOOST_REQUIRE(read(sv[0], buf, sizeof buf) > 0);
    }
    shutdown(sv[0], SHUT_WR);
    server.join();
    close(sv[0]);
    close(sv[1]);
    BOOST_TEST(waiting.events.substr(0, 7) == "SBLBLBL", waiting.events);
}

BOOST_AUTO_TEST_SUITE_END()
