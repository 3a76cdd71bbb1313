// client.hh — the pieces of a socketmap client the benchmark tools share:
// addresses (HOST:PORT or a unix path), blocking connections with one
// request in flight, key files turned into netstring requests, reply
// counting by status word, and percentiles.  Any transport error ends the
// program (exit 1): a benchmark with a broken connection measures nothing.
#pragma once

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <vector>

namespace bench {

inline const char* program = "bench";
// The Go sockmapd sends a found value raw (no "OK "): with this set, a reply
// that is no status word counts as found.
inline bool raw_values = false;

[[noreturn]] inline void die(const std::string& what)
{
    std::fprintf(stderr, "%s: %s\n", program, what.c_str());
    std::exit(1);
}

inline std::uint64_t now_ns()
{
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<std::uint64_t>(ts.tv_nsec);
}

struct Address {
    bool unix_socket = false;
    sockaddr_in in{};
    sockaddr_un un{};
};

inline Address parse_address(const std::string& s)
{
    Address a;
    if (!s.empty() && s[0] == '/') {
        a.unix_socket = true;
        a.un.sun_family = AF_UNIX;
        if (s.size() >= sizeof a.un.sun_path)
            die("unix path too long: " + s);
        std::memcpy(a.un.sun_path, s.c_str(), s.size() + 1);
        return a;
    }
    const auto colon = s.rfind(':');
    if (colon == std::string::npos)
        die("address must be HOST:PORT or /path: " + s);
    a.in.sin_family = AF_INET;
    a.in.sin_port = htons(static_cast<std::uint16_t>(std::atoi(s.c_str() + colon + 1)));
    if (inet_pton(AF_INET, s.substr(0, colon).c_str(), &a.in.sin_addr) != 1)
        die("bad IPv4 address: " + s);
    return a;
}

// `source`: the IPv4 address to connect from (a loopback one, such as
// 127.0.0.2); nullptr: the kernel's choice.
inline int connect_to(const Address& a, const char* source = nullptr)
{
    const int fd = socket(a.unix_socket ? AF_UNIX : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die(std::string("socket: ") + std::strerror(errno));
    if (source && !a.unix_socket) {
        sockaddr_in from{};
        from.sin_family = AF_INET;
        if (inet_pton(AF_INET, source, &from.sin_addr) != 1)
            die(std::string("bad source address: ") + source);
        if (bind(fd, reinterpret_cast<const sockaddr*>(&from), sizeof from) != 0)
            die(std::string("bind ") + source + ": " + std::strerror(errno));
    }
    const int r = a.unix_socket ? connect(fd, reinterpret_cast<const sockaddr*>(&a.un), sizeof a.un)
                                : connect(fd, reinterpret_cast<const sockaddr*>(&a.in), sizeof a.in);
    if (r != 0)
        die(std::string("connect: ") + std::strerror(errno));
    if (!a.unix_socket) {
        const int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

inline std::vector<std::string> load_requests(const std::string& path, const std::string& map)
{
    std::ifstream f(path);
    if (!f)
        die("cannot read " + path);
    std::vector<std::string> out;
    std::string line;
    while (std::getline(f, line)) {
        if (line.empty())
            continue;
        const std::string payload = map + " " + line;
        out.push_back(std::to_string(payload.size()) + ":" + payload + ",");
    }
    if (out.empty())
        die("no keys in " + path);
    return out;
}

struct Counts {
    std::uint64_t ok = 0, notfound = 0, refused = 0, other = 0;
    std::string first_other;
};

// One connection with at most one request in flight.
struct Conn {
    int fd = -1;
    std::size_t next_key = 0;
    std::uint64_t sent_at = 0;
    bool busy = false;
    std::string in;
};

inline void send_request(Conn& c, const std::vector<std::string>& reqs)
{
    const std::string& r = reqs[c.next_key];
    c.next_key = (c.next_key + 1) % reqs.size();
    c.sent_at = now_ns();
    const char* p = r.data();
    std::size_t n = r.size();
    while (n > 0) {
        const ssize_t w = send(c.fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die(std::string("send: ") + std::strerror(errno));
        p += w;
        n -= static_cast<std::size_t>(w);
    }
    c.busy = true;
}

// Takes one complete reply off c.in if there is one.
inline bool take_reply(Conn& c, Counts& counts)
{
    const auto colon = c.in.find(':');
    if (colon == std::string::npos)
        return false;
    const std::size_t len = std::strtoul(c.in.c_str(), nullptr, 10);
    if (c.in.size() < colon + 1 + len + 1)
        return false;
    if (c.in[colon + 1 + len] != ',')
        die("bad reply framing: " + c.in.substr(0, 60));
    const std::string_view payload(c.in.data() + colon + 1, len);
    const auto status_word = [&] {
        for (const std::string_view w : {"TEMP", "TIMEOUT", "PERM", "NOTFOUND"})
            if (payload.substr(0, w.size()) == w)
                return true;
        return false;
    };
    if (payload.substr(0, 3) == "OK " || (raw_values && !payload.empty() && !status_word()))
        ++counts.ok;
    else if (payload == "NOTFOUND ")
        ++counts.notfound;
    else {
        if (counts.other++ == 0)
            counts.first_other = std::string(payload);
    }
    c.in.erase(0, colon + 1 + len + 1);
    return true;
}

// Reads until one reply is complete (blocking socket).
inline void read_reply(Conn& c, Counts& counts)
{
    char buf[4096];
    while (!take_reply(c, counts)) {
        const ssize_t n = recv(c.fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die(n == 0 ? "server closed the connection" : std::string("recv: ") + std::strerror(errno));
        c.in.append(buf, static_cast<std::size_t>(n));
    }
    c.busy = false;
}

inline double percentile_us(std::vector<std::uint32_t>& v, double p)
{
    if (v.empty())
        return 0;
    const std::size_t idx = std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())));
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(idx), v.end());
    return v[idx] / 1000.0;
}

} // namespace bench
