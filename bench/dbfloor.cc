// dbfloor — the database floor for the benchmark: libmariadb in-process,
// the same prepared SELECT sockmapd runs, no socketmap, no process per
// connection.
//
//   dbfloor steady CONN KEYFILE SQL [--seconds S] [--warmup N]
//       one connection, one prepared statement executed in a loop.
//   dbfloor cold CONN KEYFILE SQL [--count N]
//       per lookup: init, connect, prepare, execute, fetch, close — the
//       database part of a cold sockmapd handler.
//
// CONN is "tcp:HOST:PORT:USER:PASSWORD:DB" or "unix:PATH:USER:PASSWORD:DB".
// The client options are sockmapd's (timeouts, no reconnect, utf8mb4,
// explicit protocol); parameters and results are bound as strings.
// Prints one JSON object like loadclient's.
#include "client.hh"

#include <mysql.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <string>
#include <vector>

namespace {

using bench::die;
using bench::now_ns;
using bench::percentile_us;

struct Target {
    bool unix_socket = false;
    std::string host, path, user, password, db;
    unsigned port = 0;
};

std::vector<std::string> split(const std::string& s, char sep)
{
    std::vector<std::string> out;
    std::size_t start = 0;
    for (;;) {
        const auto p = s.find(sep, start);
        out.push_back(s.substr(start, p - start));
        if (p == std::string::npos)
            return out;
        start = p + 1;
    }
}

Target parse_target(const std::string& s)
{
    const auto f = split(s, ':');
    Target t;
    if (f.size() == 6 && f[0] == "tcp") {
        t.host = f[1];
        t.port = static_cast<unsigned>(std::atoi(f[2].c_str()));
        t.user = f[3];
        t.password = f[4];
        t.db = f[5];
    } else if (f.size() == 5 && f[0] == "unix") {
        t.unix_socket = true;
        t.path = f[1];
        t.user = f[2];
        t.password = f[3];
        t.db = f[4];
    } else {
        die("CONN must be tcp:HOST:PORT:USER:PASSWORD:DB or unix:PATH:USER:PASSWORD:DB");
    }
    return t;
}

MYSQL* connect_db(const Target& t)
{
    MYSQL* m = mysql_init(nullptr);
    if (!m)
        die("mysql_init failed");
    const unsigned connect_timeout = 2, rw_timeout = 5, no_infile = 0;
    const my_bool off = 0, on = 1;
    const unsigned proto = t.unix_socket ? MYSQL_PROTOCOL_SOCKET : MYSQL_PROTOCOL_TCP;
    mysql_optionsv(m, MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout);
    mysql_optionsv(m, MYSQL_OPT_READ_TIMEOUT, &rw_timeout);
    mysql_optionsv(m, MYSQL_OPT_WRITE_TIMEOUT, &rw_timeout);
    mysql_optionsv(m, MYSQL_OPT_RECONNECT, &off);
    mysql_optionsv(m, MYSQL_REPORT_DATA_TRUNCATION, &on);
    mysql_optionsv(m, MYSQL_OPT_LOCAL_INFILE, &no_infile);
    mysql_optionsv(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_optionsv(m, MYSQL_OPT_PROTOCOL, &proto);
    if (!mysql_real_connect(m, t.unix_socket ? "localhost" : t.host.c_str(), t.user.c_str(), t.password.c_str(),
                            t.db.c_str(), t.unix_socket ? 0 : t.port, t.unix_socket ? t.path.c_str() : nullptr, 0))
        die(std::string("connect: ") + mysql_error(m));
    return m;
}

// A prepared statement with one string parameter and string result columns.
class Stmt {
public:
    Stmt(MYSQL* m, const std::string& sql) : s_(mysql_stmt_init(m))
    {
        if (!s_ || mysql_stmt_prepare(s_, sql.data(), sql.size()) != 0)
            die(std::string("prepare: ") + (s_ ? mysql_stmt_error(s_) : mysql_error(m)));
        const unsigned n = mysql_stmt_field_count(s_);
        bufs_.assign(n, std::string(1024, '\0'));
        lens_.assign(n, 0);
        nulls_.assign(n, 0);
        res_.assign(n, MYSQL_BIND{});
        for (unsigned i = 0; i < n; ++i) {
            res_[i].buffer_type = MYSQL_TYPE_STRING;
            res_[i].buffer = bufs_[i].data();
            res_[i].buffer_length = bufs_[i].size();
            res_[i].length = &lens_[i];
            res_[i].is_null = &nulls_[i];
        }
        if (n && mysql_stmt_bind_result(s_, res_.data()))
            die(std::string("bind_result: ") + mysql_stmt_error(s_));
    }
    ~Stmt() { mysql_stmt_close(s_); }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;

    // true: at least one non-empty value.
    bool run(const std::string& key)
    {
        MYSQL_BIND p{};
        unsigned long plen = key.size();
        p.buffer_type = MYSQL_TYPE_STRING;
        p.buffer = const_cast<char*>(key.data());
        p.buffer_length = key.size();
        p.length = &plen;
        if (mysql_stmt_bind_param(s_, &p) || mysql_stmt_execute(s_))
            die(std::string("execute: ") + mysql_stmt_error(s_));
        bool found = false;
        for (;;) {
            const int rc = mysql_stmt_fetch(s_);
            if (rc == MYSQL_NO_DATA)
                break;
            if (rc == 1)
                die(std::string("fetch: ") + mysql_stmt_error(s_));
            if (!res_.empty() && !nulls_[0] && lens_[0] > 0)
                found = true;
        }
        mysql_stmt_free_result(s_);
        return found;
    }

private:
    MYSQL_STMT* s_;
    std::vector<std::string> bufs_;
    std::vector<unsigned long> lens_;
    std::vector<my_bool> nulls_;
    std::vector<MYSQL_BIND> res_;
};

std::vector<std::string> load_keys(const std::string& path)
{
    std::ifstream f(path);
    if (!f)
        die("cannot read " + path);
    std::vector<std::string> out;
    std::string line;
    while (std::getline(f, line))
        if (!line.empty())
            out.push_back(line);
    if (out.empty())
        die("no keys in " + path);
    return out;
}


} // namespace

int main(int argc, char** argv)
{
    bench::program = "dbfloor";
    if (argc < 5) {
        std::fprintf(stderr, "usage: dbfloor steady|cold CONN KEYFILE SQL [--seconds S] [--warmup N] [--count N]\n");
        return 64;
    }
    const std::string mode = argv[1];
    const Target t = parse_target(argv[2]);
    const auto keys = load_keys(argv[3]);
    const std::string sql = argv[4];
    double seconds = 2.0;
    int warmup = 50, count = 200;
    for (int i = 5; i + 1 < argc; i += 2) {
        const std::string opt = argv[i];
        if (opt == "--seconds")
            seconds = std::atof(argv[i + 1]);
        else if (opt == "--warmup")
            warmup = std::atoi(argv[i + 1]);
        else if (opt == "--count")
            count = std::atoi(argv[i + 1]);
        else
            die("unknown option " + opt);
    }
    if (mysql_library_init(0, nullptr, nullptr))
        die("mysql_library_init failed");

    std::vector<std::uint32_t> lat;
    lat.reserve(1 << 20);
    std::uint64_t found = 0, started = 0, ended = 0;
    std::size_t k = 0;
    auto record = [&](std::uint64_t t0) {
        ended = now_ns();
        lat.push_back(static_cast<std::uint32_t>(std::min<std::uint64_t>(ended - t0, UINT32_MAX)));
    };
    if (mode == "steady") {
        MYSQL* m = connect_db(t);
        {
            Stmt st(m, sql);
            for (int i = 0; i < warmup; ++i)
                st.run(keys[k++ % keys.size()]);
            started = now_ns();
            const std::uint64_t deadline = started + static_cast<std::uint64_t>(seconds * 1e9);
            while (now_ns() < deadline) {
                const std::uint64_t t0 = now_ns();
                found += st.run(keys[k++ % keys.size()]);
                record(t0);
            }
        }
        mysql_close(m);
    } else if (mode == "cold") {
        started = now_ns();
        for (int i = 0; i < count; ++i) {
            const std::uint64_t t0 = now_ns();
            MYSQL* m = connect_db(t);
            {
                Stmt st(m, sql);
                found += st.run(keys[k++ % keys.size()]);
            }
            record(t0);
            mysql_close(m);
        }
    } else {
        die("mode must be steady or cold");
    }
    mysql_library_end();

    const double secs = static_cast<double>(ended - started) / 1e9;
    const std::size_t n = lat.size();
    const double p50 = percentile_us(lat, 0.50), p99 = percentile_us(lat, 0.99);
    const double mx = n ? *std::max_element(lat.begin(), lat.end()) / 1000.0 : 0;
    std::printf("{\"mode\": \"%s\", \"requests\": %zu, \"seconds\": %.4f, \"rps\": %.1f, \"p50_us\": %.1f, "
                "\"p99_us\": %.1f, \"max_us\": %.1f, \"ok\": %" PRIu64 ", \"notfound\": %" PRIu64 "}\n",
                mode.c_str(), n, secs, secs > 0 ? static_cast<double>(n) / secs : 0.0, p50, p99, mx, found,
                static_cast<std::uint64_t>(n) - found);
    return 0;
}
