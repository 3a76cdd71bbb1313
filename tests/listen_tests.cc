#include "listen.hh"

#include <boost/test/unit_test.hpp>

#include <string>

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
            BOOST_TEST(o.max_children == 64u);
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
