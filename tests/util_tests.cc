#include "util.hh"

#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>

using namespace sockmapd;

BOOST_AUTO_TEST_SUITE(util)

BOOST_AUTO_TEST_CASE(decimals_never_throw)
{
    BOOST_TEST(parse_decimal("0").value() == 0u);
    BOOST_TEST(parse_decimal("4294967296").value() == 4294967296ULL);
    BOOST_TEST(parse_decimal("18446744073709551615").value() == UINT64_MAX);
    for (const char* bad : {"", "-1", "+1", " 1", "1 ", "1x", "0x10", "18446744073709551616", "99999999999999999999"})
        BOOST_TEST(!parse_decimal(bad).has_value(), bad);
    BOOST_TEST(parse_decimal("65535", 65535).value() == 65535u);
    BOOST_TEST(!parse_decimal("65536", 65535).has_value());
}

BOOST_AUTO_TEST_CASE(digits)
{
    for (const char* yes : {"0", "0123", "18446744073709551616"})
        BOOST_TEST(all_digits(yes), yes);
    for (const char* no : {"", " 1", "1 ", "+1", "-1", "1a", "\xd9\xa1", "1.0"})
        BOOST_TEST(!all_digits(no), no);
}

BOOST_AUTO_TEST_CASE(ascii_case_folding)
{
    BOOST_TEST(ascii_lower("Alice.Smith@EXAMPLE.Org") == "alice.smith@example.org");
    // UTF-8 bytes are left alone: "Ä" stays "Ä", the text stays valid UTF-8.
    BOOST_TEST(ascii_lower("M\xC3\x9C"
                           "LLER@EX\xC3\x84MPLE.ORG") == "m\xC3\x9C"
                                                         "ller@ex\xC3\x84mple.org");
    BOOST_TEST(ascii_lower(std::string("A\0B", 3)) == std::string("a\0b", 3));
    BOOST_TEST(ascii_lower("@[]`{}^_~") == "@[]`{}^_~"); // neighbours of A-Z, a-z untouched
    BOOST_TEST(ascii_iequals("PostMaster", "postmaster"));
    BOOST_TEST(ascii_iequals("", ""));
    BOOST_TEST(!ascii_iequals("postmaster", "postmaste"));
    BOOST_TEST(!ascii_iequals("@", "`")); // 0x40 and 0x60 differ by the case bit but are no letters
    BOOST_TEST(!ascii_iequals("\xC3\x84", "\xC3\xA4"));
}

BOOST_AUTO_TEST_CASE(ports)
{
    BOOST_TEST(parse_port("1").value() == 1u);
    BOOST_TEST(parse_port("65535").value() == 65535u);
    for (const char* bad : {"0", "65536", "", "33o6", "-1", "123456"})
        BOOST_TEST(!parse_port(bad).has_value(), bad);
}

BOOST_AUTO_TEST_CASE(printable_names_and_host_port)
{
    BOOST_TEST(printable_name("db1:3306"));
    for (const std::string& bad :
         {std::string(""), std::string("a b"), std::string("a\n"), std::string("a\x7f"), std::string("a\0b", 3)})
        BOOST_TEST(!printable_name(bad));
    BOOST_TEST(host_port("db1", 3306) == "db1:3306");
    BOOST_TEST(host_port("::1", 3306) == "[::1]:3306");
}

BOOST_AUTO_TEST_CASE(socket_addresses_for_logs)
{
    sockaddr_in v4{};
    v4.sin_family = AF_INET;
    v4.sin_port = htons(2224);
    BOOST_REQUIRE(inet_pton(AF_INET, "192.0.2.1", &v4.sin_addr) == 1);
    BOOST_TEST(socket_address_name(reinterpret_cast<const sockaddr*>(&v4)) == "192.0.2.1:2224");
    sockaddr_in6 v6{};
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(25);
    BOOST_REQUIRE(inet_pton(AF_INET6, "2001:db8::1", &v6.sin6_addr) == 1);
    BOOST_TEST(socket_address_name(reinterpret_cast<const sockaddr*>(&v6)) == "[2001:db8::1]:25");
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    BOOST_TEST(socket_address_name(reinterpret_cast<const sockaddr*>(&un)) == "unix");
    sockaddr other{};
    other.sa_family = AF_APPLETALK;
    BOOST_TEST(socket_address_name(&other).empty());
}

BOOST_AUTO_TEST_CASE(reading_files)
{
    char tmpl[] = "/tmp/sockmapd-util-test.XXXXXX";
    BOOST_REQUIRE(::mkdtemp(tmpl));
    const std::string dir = tmpl;
    std::ofstream(dir + "/f") << "hello";
    std::string out = "old";
    BOOST_TEST(read_file(dir + "/f", out, 100) == 0);
    BOOST_TEST(out == "hello");
    BOOST_TEST(read_file(dir + "/f", out, 4) == EFBIG);
    BOOST_TEST(out.empty());
    BOOST_TEST(read_file(dir + "/missing", out, 100) == ENOENT);
    BOOST_TEST(::symlink("f", (dir + "/link").c_str()) == 0);
    BOOST_TEST(read_file(dir + "/link", out, 100, true) == 0);
    BOOST_TEST(read_file(dir + "/link", out, 100, false) == ELOOP);
    BOOST_TEST(read_file(dir, out, 100) == EISDIR);
    std::system(("rm -rf '" + dir + "'").c_str());
}

BOOST_AUTO_TEST_CASE(fd_closes_once_and_moves)
{
    int fds[2];
    BOOST_REQUIRE(::pipe(fds) == 0);
    {
        Fd a(fds[0]);
        Fd b(std::move(a));
        BOOST_TEST(!a);
        BOOST_TEST(b.get() == fds[0]);
        Fd c;
        c = std::move(b);
        BOOST_TEST(c.get() == fds[0]);
        BOOST_TEST(::fcntl(fds[0], F_GETFD) != -1);
    }
    BOOST_TEST(::fcntl(fds[0], F_GETFD) == -1); // closed when c went
    Fd w(fds[1]);
    const int raw = w.release();
    BOOST_TEST(!w);
    BOOST_TEST(::close(raw) == 0); // still open after release()
}

BOOST_AUTO_TEST_SUITE_END()
