#include "util.hh"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <thread>

namespace sockmapd
{

bool all_digits(std::string_view s)
{
    if (s.empty())
        return false;
    for (const char c : s)
        if (c < '0' || c > '9')
            return false;
    return true;
}

std::string ascii_lower(std::string_view s)
{
    std::string out(s);
    for (char& c : out)
        c = ascii_lower(c);
    return out;
}

bool ascii_iequals(std::string_view a, std::string_view b)
{
    if (a.size() != b.size())
        return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (ascii_lower(a[i]) != ascii_lower(b[i]))
            return false;
    return true;
}

std::optional<std::uint64_t> parse_decimal(std::string_view s, std::uint64_t max)
{
    if (!all_digits(s))
        return std::nullopt;
    std::uint64_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size() || v > max)
        return std::nullopt;
    return v;
}

std::optional<unsigned> parse_port(std::string_view s)
{
    const auto v = parse_decimal(s, 65535);
    if (!v || *v == 0)
        return std::nullopt;
    return static_cast<unsigned>(*v);
}

bool printable_name(std::string_view s)
{
    if (s.empty())
        return false;
    for (const unsigned char c : s)
        if (c <= ' ' || c == 0x7f)
            return false;
    return true;
}

std::string host_port(std::string_view host, unsigned port)
{
    const std::string p = ":" + std::to_string(port);
    if (host.find(':') != std::string_view::npos)
        return "[" + std::string(host) + "]" + p;
    return std::string(host) + p;
}

std::string socket_address_name(const sockaddr* sa)
{
    char host[INET6_ADDRSTRLEN] = "";
    switch (sa->sa_family) {
    case AF_INET: {
        const auto* sin = reinterpret_cast<const sockaddr_in*>(sa);
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
        return host_port(host, ntohs(sin->sin_port));
    }
    case AF_INET6: {
        const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(sa);
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
        return host_port(host, ntohs(sin6->sin6_port));
    }
    case AF_UNIX:
        return "unix";
    }
    return {};
}

int read_file(const std::string& path, std::string& out, std::size_t limit, bool follow_links)
{
    out.clear();
    const Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | (follow_links ? 0 : O_NOFOLLOW)));
    if (!fd)
        return errno;
    // Read in pieces: sizing the string to the limit up front would
    // zero-fill (and fault in) the whole limit in every handler.
    char buf[16384];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return 0;
        if (out.size() + static_cast<std::size_t>(n) > limit) {
            out.clear();
            return EFBIG;
        }
        out.append(buf, static_cast<std::size_t>(n));
    }
}

bool lock_within(int fd, std::chrono::milliseconds limit)
{
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if ((errno != EWOULDBLOCK && errno != EINTR) || std::chrono::steady_clock::now() > deadline)
            return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
}

void Fd::reset(int fd)
{
    if (fd_ >= 0 && fd_ != fd)
        ::close(fd_);
    fd_ = fd;
}

} // namespace sockmapd
