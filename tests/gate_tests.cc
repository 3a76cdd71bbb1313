// gate: a handler's connection admitted or refused by its peer, a pipe
// always admitted, refusals logged once a minute per address across
// processes (the shared file), the warning for a socket open to others.
// Each case runs in a forked child: it sets RUNTIME_DIRECTORY and the log.
#include "gate.hh"

#include "child_check.hh"
#include "log.hh"
#include "util.hh"

#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

using namespace sockmapd;

namespace
{

AllowList list_of(std::initializer_list<const char*> entries)
{
    std::vector<AllowRule> rules;
    for (const char* e : entries) {
        std::string why;
        rules.push_back(parse_allow_rule(e, why).value());
    }
    return AllowList(std::move(rules));
}

// Runs `body(dir, log)` in a forked child with a fresh runtime directory
// and a log file at warning, removed afterwards.
std::string in_dir(const std::function<std::string(const std::string&, const std::string&)>& body)
{
    return in_child([&] {
        char dir[] = "/tmp/gate-tests-XXXXXX";
        if (!mkdtemp(dir))
            return std::string("mkdtemp");
        setenv("RUNTIME_DIRECTORY", dir, 1);
        const std::string log = std::string(dir) + "/log";
        log_setup(LogLevel::Warning, log);
        std::string out = body(dir, log);
        std::filesystem::remove_all(dir);
        return out;
    });
}

std::string text_of(const std::string& path)
{
    std::string out;
    read_file(path, out, 1 << 20);
    return out;
}

std::size_t count(const std::string& hay, const std::string& needle)
{
    std::size_t n = 0;
    for (auto at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1))
        ++n;
    return n;
}

// A TCP connection on loopback: {accepted fd, client fd}; the client
// bound to `from`.
std::pair<int, int> tcp_pair(const char* from)
{
    const int l = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    socklen_t len = sizeof sa;
    if (bind(l, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || listen(l, 1) != 0 ||
        getsockname(l, reinterpret_cast<sockaddr*>(&sa), &len) != 0)
        return {-1, -1};
    const int c = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in me{};
    me.sin_family = AF_INET;
    inet_pton(AF_INET, from, &me.sin_addr);
    if (bind(c, reinterpret_cast<sockaddr*>(&me), sizeof me) != 0 ||
        connect(c, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
        return {-1, -1};
    const int a = accept(l, nullptr, nullptr);
    close(l);
    return {a, c};
}

} // namespace

BOOST_AUTO_TEST_SUITE(gate)

BOOST_AUTO_TEST_CASE(a_pipe_is_never_refused)
{
    BOOST_TEST(in_dir([](const std::string&, const std::string& log) {
                   int p[2];
                   if (pipe(p) != 0)
                       return std::string("pipe");
                   if (!admit_connection(list_of({"127.0.0.1/32"}), p[0]))
                       return std::string("a pipe was refused");
                   return text_of(log).empty() ? std::string() : "logged: " + text_of(log);
               }) == "");
}

BOOST_AUTO_TEST_CASE(unix_peers_by_the_word)
{
    BOOST_TEST(in_dir([](const std::string&, const std::string& log) {
                   int sv[2];
                   if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
                       return std::string("socketpair");
                   if (!admit_connection(list_of({"unix"}), sv[0]))
                       return std::string("\"unix\" refused a unix peer");
                   if (!admit_connection(AllowList(), sv[0]))
                       return std::string("no list refused a unix peer");
                   if (admit_connection(list_of({"127.0.0.1/32", "::1"}), sv[0]))
                       return std::string("a unix peer admitted without \"unix\"");
                   const std::string t = text_of(log);
                   if (count(t, "refused a connection from unix: not in sysconfig.allow") != 1)
                       return "log: " + t;
                   return std::string();
               }) == "");
}

BOOST_AUTO_TEST_CASE(tcp_peers_by_address_and_refusals_throttled_across_processes)
{
    BOOST_TEST(in_dir([](const std::string& dir, const std::string& log) {
                   const AllowList allow = list_of({"127.0.0.1/32"});
                   const auto [served, sc] = tcp_pair("127.0.0.1");
                   if (served < 0 || !admit_connection(allow, served))
                       return std::string("127.0.0.1 refused");
                   for (int i = 0; i < 5; ++i) {
                       const auto [refused, rc] = tcp_pair("127.0.0.2");
                       if (refused < 0 || admit_connection(allow, refused))
                           return std::string("127.0.0.2 admitted");
                       close(refused);
                       close(rc);
                   }
                   const std::string t = text_of(log);
                   if (count(t, "refused a connection from 127.0.0.2: not in sysconfig.allow") != 1)
                       return "one line for five refusals: " + t;
                   // What the next handler process reads: the refusals not logged.
                   const std::string state = text_of(dir + "/refused.state");
                   if (state.find(" 4 127.0.0.0/24\n") == std::string::npos)
                       return "state: " + state;
                   return std::string();
               }) == "");
}

// The review's case: decoy addresses fill the refusal log's table before
// the real one comes.  Decoys from one network share its line; past 256
// networks the new ones share a line that names the address it is for.
BOOST_AUTO_TEST_CASE(decoys_cannot_keep_an_address_out_of_the_log)
{
    BOOST_TEST(in_dir([](const std::string&, const std::string& log) {
                   const AllowList allow = list_of({"192.0.2.1"});
                   auto refused = [&](Gate& gate, const std::string& addr) {
                       sockaddr_storage ss{};
                       if (addr.find(':') != std::string::npos) {
                           auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
                           s6->sin6_family = AF_INET6;
                           inet_pton(AF_INET6, addr.c_str(), &s6->sin6_addr);
                       } else {
                           auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
                           s4->sin_family = AF_INET;
                           inet_pton(AF_INET, addr.c_str(), &s4->sin_addr);
                       }
                       return !gate.admit(allow, reinterpret_cast<const sockaddr*>(&ss));
                   };
                   {
                       Gate gate; // the accept loop's: the table in this process
                       for (int i = 1; i <= 1000; ++i)
                           if (!refused(gate, "2001:db8::" + std::to_string(i)))
                               return std::string("a decoy admitted");
                       if (!refused(gate, "2001:db8:0:1::5"))
                           return std::string("admitted");
                   }
                   std::string t = text_of(log);
                   if (count(t, "refused a connection from") != 2 ||
                       count(t, "refused a connection from 2001:db8:0:1::5: not in sysconfig.allow\n") != 1)
                       return "1000 decoys of one /64, then another /64: " + t;
                   {
                       Gate gate;
                       for (int i = 0; i < 256; ++i)
                           if (!refused(gate, "10." + std::to_string(i / 128) + "." + std::to_string(i % 128) + ".1"))
                               return std::string("a decoy admitted");
                       if (!refused(gate, "198.51.100.7") || !refused(gate, "203.0.113.8"))
                           return std::string("admitted");
                   }
                   t = text_of(log);
                   if (count(t, "refused a connection from 198.51.100.7: not in sysconfig.allow (one line a minute "
                                "for the networks not seen before") != 1)
                       return "the 257th network's address is not in the log: " +
                              t.substr(t.size() > 600 ? t.size() - 600 : 0);
                   if (count(t, "refused a connection from") != 2 + 257)
                       return "one line a network, one for the rest: " + std::to_string(count(t, "refused"));
                   return std::string();
               }) == "");
}

BOOST_AUTO_TEST_CASE(unusable_state_file_logs_every_refusal)
{
    BOOST_TEST(in_dir([](const std::string&, const std::string& log) {
                   setenv("RUNTIME_DIRECTORY", "/nonexistent/sockmapd", 1);
                   int sv[2];
                   if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
                       return std::string("socketpair");
                   for (int i = 0; i < 3; ++i)
                       if (admit_connection(list_of({"::1"}), sv[0]))
                           return std::string("admitted");
                   const std::string t = text_of(log);
                   return count(t, "refused a connection from unix") == 3 ? std::string() : "log: " + t;
               }) == "");
}

BOOST_AUTO_TEST_CASE(open_sockets_warn_loopback_does_not)
{
    BOOST_TEST(in_dir([](const std::string&, const std::string& log) {
                   const int any = socket(AF_INET, SOCK_STREAM, 0), lo = socket(AF_INET, SOCK_STREAM, 0);
                   sockaddr_in sa{};
                   sa.sin_family = AF_INET; // 0.0.0.0, port chosen by the kernel
                   if (bind(any, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
                       return std::string("bind 0.0.0.0");
                   inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
                   if (bind(lo, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
                       return std::string("bind 127.0.0.1");
                   warn_if_open(AllowList(), lo);
                   if (!text_of(log).empty())
                       return "loopback warned: " + text_of(log);
                   warn_if_open(list_of({"192.0.2.25"}), any);
                   if (!text_of(log).empty())
                       return "warned with an allow-list: " + text_of(log);
                   warn_if_open(AllowList(), any);
                   const std::string t = text_of(log);
                   if (count(t, "listening on 0.0.0.0:") != 1 ||
                       t.find("every host that reaches it may query every map") == std::string::npos)
                       return "log: " + t;
                   return std::string();
               }) == "");
}

BOOST_AUTO_TEST_SUITE_END()
