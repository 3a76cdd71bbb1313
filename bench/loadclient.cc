// loadclient — socketmap load generator for the benchmark.
//
//   loadclient steady ADDR MAP KEYFILE [--conns N] [--seconds S] [--warmup N]
//       N connections (default 1) each doing sequential lookups, one request
//       outstanding per connection (how Postfix uses a socketmap connection),
//       for S seconds after N warm-up lookups per connection.
//   loadclient cold ADDR MAP KEYFILE [--count N] [--gap-us U] [--source IP]
//       a new connection per lookup: connect, send, first reply, close; the
//       latency is measured from before connect() to the complete reply.
//   loadclient refused ADDR MAP KEYFILE [--count N] [--gap-us U] [--source IP]
//       the same from an address the server refuses (sysconfig.allow):
//       connect, send, and the server's close (EOF or a reset) instead of
//       a reply; any reply byte is an error.  Counted as "refused".
//
// --raw-values (either mode): a found value may come without "OK " (the Go
// sockmapd's replies).
// ADDR is HOST:PORT (IPv4) or a unix socket path.  Keys are read one per
// line from KEYFILE and used round-robin.  Prints one JSON object: request
// count, seconds, requests/s, p50/p99/max latency in microseconds and the
// reply counts by status word.  Exits 1 on any transport error or if any
// reply is neither OK nor NOTFOUND (the run would not measure lookups).
#include "client.hh"

#include <cinttypes>
#include <poll.h>

namespace {

using namespace bench;

struct Result {
    std::vector<std::uint32_t> lat_ns;
    std::uint64_t started = 0, ended = 0;
    Counts counts;
};

void record(Result& r, const Conn& c)
{
    const std::uint64_t t = now_ns();
    r.lat_ns.push_back(static_cast<std::uint32_t>(std::min<std::uint64_t>(t - c.sent_at, UINT32_MAX)));
    r.ended = t;
}

Result run_steady(const Address& a, const std::vector<std::string>& reqs, int nconns, double seconds, int warmup)
{
    std::vector<Conn> conns(static_cast<std::size_t>(nconns));
    Counts warm;
    for (std::size_t i = 0; i < conns.size(); ++i) {
        conns[i].fd = connect_to(a);
        conns[i].next_key = (i * reqs.size() / conns.size()) % reqs.size();
    }
    // Warm-up: every handler has started and opened its database connection.
    for (int w = 0; w < warmup; ++w) {
        for (auto& c : conns)
            send_request(c, reqs);
        for (auto& c : conns)
            read_reply(c, warm);
    }
    if (warm.other)
        die("warm-up reply: " + warm.first_other);

    Result r;
    r.lat_ns.reserve(1 << 20);
    r.started = now_ns();
    const std::uint64_t deadline = r.started + static_cast<std::uint64_t>(seconds * 1e9);
    if (nconns == 1) {
        Conn& c = conns[0];
        while (now_ns() < deadline) {
            send_request(c, reqs);
            read_reply(c, r.counts);
            record(r, c);
        }
    } else {
        std::vector<pollfd> pfds(conns.size());
        for (std::size_t i = 0; i < conns.size(); ++i) {
            pfds[i] = {conns[i].fd, POLLIN, 0};
            send_request(conns[i], reqs);
        }
        std::size_t in_flight = conns.size();
        char buf[4096];
        while (in_flight > 0) {
            const int n = poll(pfds.data(), pfds.size(), 10000);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                die("no reply within 10 s");
            for (std::size_t i = 0; i < conns.size(); ++i) {
                if (!pfds[i].revents)
                    continue;
                Conn& c = conns[i];
                const ssize_t got = recv(c.fd, buf, sizeof buf, 0);
                if (got <= 0)
                    die("server closed the connection");
                c.in.append(buf, static_cast<std::size_t>(got));
                while (c.busy && take_reply(c, r.counts)) {
                    c.busy = false;
                    record(r, c);
                    if (now_ns() < deadline)
                        send_request(c, reqs);
                    else {
                        pfds[i].events = 0;
                        pfds[i].fd = -1;
                        --in_flight;
                    }
                }
            }
        }
    }
    for (auto& c : conns)
        close(c.fd);
    return r;
}

// Sends one request and waits for the server to close: true if it did
// without a byte of reply.
bool closed_without_reply(Conn& c, const std::vector<std::string>& reqs)
{
    send_request(c, reqs);
    char buf[256];
    for (;;) {
        const ssize_t n = recv(c.fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
        if (n < 0)
            die(std::string("recv: ") + std::strerror(errno));
        return false;
    }
}

Result run_refused(const Address& a, const std::vector<std::string>& reqs, int count, int gap_us, const char* source)
{
    Result r;
    r.lat_ns.reserve(static_cast<std::size_t>(count));
    r.started = now_ns();
    for (int i = 0; i < count; ++i) {
        Conn c;
        c.next_key = static_cast<std::size_t>(i) % reqs.size();
        const std::uint64_t t0 = now_ns();
        c.fd = connect_to(a, source);
        // A send into a connection already reset is a close too.
        const bool closed = closed_without_reply(c, reqs);
        c.sent_at = t0;
        record(r, c);
        close(c.fd);
        if (closed)
            ++r.counts.refused;
        else if (r.counts.other++ == 0)
            r.counts.first_other = "a reply to a refused client";
        if (gap_us > 0)
            usleep(static_cast<useconds_t>(gap_us));
    }
    return r;
}

Result run_cold(const Address& a, const std::vector<std::string>& reqs, int count, int gap_us, const char* source)
{
    Result r;
    r.lat_ns.reserve(static_cast<std::size_t>(count));
    r.started = now_ns();
    std::size_t k = 0;
    for (int i = 0; i < count; ++i) {
        Conn c;
        c.next_key = k;
        k = (k + 1) % reqs.size();
        const std::uint64_t t0 = now_ns();
        c.fd = connect_to(a, source);
        send_request(c, reqs);
        c.sent_at = t0;
        read_reply(c, r.counts);
        record(r, c);
        close(c.fd);
        if (gap_us > 0)
            usleep(static_cast<useconds_t>(gap_us));
    }
    return r;
}

void print_json(const char* mode, int conns, Result& r)
{
    const double secs = static_cast<double>(r.ended - r.started) / 1e9;
    const std::size_t n = r.lat_ns.size();
    const double p50 = percentile_us(r.lat_ns, 0.50);
    const double p99 = percentile_us(r.lat_ns, 0.99);
    const double mx = n ? *std::max_element(r.lat_ns.begin(), r.lat_ns.end()) / 1000.0 : 0;
    std::printf("{\"mode\": \"%s\", \"conns\": %d, \"requests\": %zu, \"seconds\": %.4f, \"rps\": %.1f, "
                "\"p50_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f, \"ok\": %" PRIu64 ", \"notfound\": %" PRIu64
                ", \"refused\": %" PRIu64 ", \"other\": %" PRIu64 "}\n",
                mode, conns, n, secs, secs > 0 ? static_cast<double>(n) / secs : 0.0, p50, p99, mx, r.counts.ok,
                r.counts.notfound, r.counts.refused, r.counts.other);
}

int usage()
{
    std::fprintf(stderr, "usage: loadclient steady ADDR MAP KEYFILE [--conns N] [--seconds S] [--warmup N]\n"
                         "       loadclient cold ADDR MAP KEYFILE [--count N] [--gap-us U] [--source IP]\n"
                         "       loadclient refused ADDR MAP KEYFILE [--count N] [--gap-us U] [--source IP]\n"
                         "       (each with --raw-values)\n");
    return 64;
}

} // namespace

int main(int argc, char** argv)
{
    bench::program = "loadclient";
    if (argc < 5)
        return usage();
    const std::string mode = argv[1];
    const Address addr = parse_address(argv[2]);
    const auto reqs = load_requests(argv[4], argv[3]);
    int conns = 1, warmup = 50, count = 200, gap_us = 2000;
    double seconds = 2.0;
    const char* source = nullptr;
    for (int i = 5; i < argc; i += 2) {
        const std::string opt = argv[i];
        if (opt == "--raw-values") {
            bench::raw_values = true;
            --i;
            continue;
        }
        if (i + 1 >= argc)
            return usage();
        if (opt == "--conns")
            conns = std::max(1, std::atoi(argv[i + 1]));
        else if (opt == "--seconds")
            seconds = std::atof(argv[i + 1]);
        else if (opt == "--warmup")
            warmup = std::max(1, std::atoi(argv[i + 1]));
        else if (opt == "--count")
            count = std::max(1, std::atoi(argv[i + 1]));
        else if (opt == "--gap-us")
            gap_us = std::max(0, std::atoi(argv[i + 1]));
        else if (opt == "--source")
            source = argv[i + 1];
        else
            return usage();
    }
    Result r;
    if (mode == "steady")
        r = run_steady(addr, reqs, conns, seconds, warmup);
    else if (mode == "cold")
        r = run_cold(addr, reqs, count, gap_us, source);
    else if (mode == "refused")
        r = run_refused(addr, reqs, count, gap_us, source);
    else
        return usage();
    print_json(mode.c_str(), mode == "steady" ? conns : 1, r);
    if (r.counts.other) {
        std::fprintf(stderr, "loadclient: %" PRIu64 " replies were not OK/NOTFOUND, first: %s\n", r.counts.other,
                     r.counts.first_other.c_str());
        return 1;
    }
    return 0;
}
