#include "failover.hh"

#include "log.hh"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace sockmapd
{

namespace
{

constexpr std::size_t kMaxStateFile = 64 * 1024;
constexpr const char* kStateName = "failover.state";
constexpr const char* kLockName = "failover.lock";

std::time_t wall_now()
{
    return std::time(nullptr);
}

bool parse_port(std::string_view s, unsigned& port)
{
    if (s.empty() || s.size() > 5)
        return false;
    unsigned v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size() || v == 0 || v > 65535)
        return false;
    port = v;
    return true;
}

// Names go into log lines and the state file, one per line.
bool printable(std::string_view s)
{
    for (unsigned char c : s)
        if (c <= ' ' || c == 0x7f)
            return false;
    return true;
}

class Fd
{
public:
    explicit Fd(int fd = -1) : fd_(fd) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd()
    {
        if (fd_ >= 0)
            ::close(fd_);
    }
    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }

private:
    int fd_;
};

// A directory we may keep state in: a real directory, ours, not writable by others.
bool safe_dir(const std::string& dir)
{
    struct stat st {
    };
    if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        return false;
    return st.st_uid == ::geteuid() && (st.st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

bool read_small_file(const std::string& path, std::string& out, int& err)
{
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) {
        err = errno;
        return false;
    }
    out.clear();
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = errno;
            return false;
        }
        if (n == 0)
            return true;
        if (out.size() + static_cast<std::size_t>(n) > kMaxStateFile) {
            // Far larger than any real state: treat as garbage.
            out.clear();
            return true;
        }
        out.append(buf, static_cast<std::size_t>(n));
    }
}

bool write_all(int fd, std::string_view data)
{
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

// Bounded wait: a stopped process holding the lock must not stall lookups;
// without the lock we only risk losing a concurrent mark.
int take_lock(const std::string& path)
{
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -1;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(1000);
    while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if ((errno != EWOULDBLOCK && errno != EINTR) || std::chrono::steady_clock::now() > deadline)
            break; // proceed unlocked
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return fd;
}

} // namespace

std::string Endpoint::name() const
{
    if (kind == Kind::Unix)
        return "unix:" + path;
    if (host.find(':') != std::string::npos)
        return "[" + host + "]:" + std::to_string(port);
    return host + ":" + std::to_string(port);
}

Endpoint parse_endpoint(std::string_view spec, unsigned default_port)
{
    const std::string quoted = "\"" + std::string(spec) + "\": ";
    if (spec.empty())
        throw ConfigError("empty entry");
    if (!printable(spec))
        throw ConfigError(quoted + "contains spaces or control characters");
    Endpoint ep;
    if (spec.substr(0, 5) == "unix:") {
        ep.kind = Endpoint::Kind::Unix;
        ep.path = std::string(spec.substr(5));
        if (ep.path.empty() || ep.path[0] != '/')
            throw ConfigError(quoted + "a unix socket needs an absolute path (unix:/path)");
        return ep;
    }
    ep.port = default_port;
    std::string_view host = spec;
    std::string_view port;
    if (spec[0] == '[') {
        auto close = spec.find(']');
        if (close == std::string_view::npos)
            throw ConfigError(quoted + "missing ']'");
        host = spec.substr(1, close - 1);
        auto rest = spec.substr(close + 1);
        if (!rest.empty()) {
            if (rest[0] != ':')
                throw ConfigError(quoted + "expected ':port' after ']'");
            port = rest.substr(1);
            if (port.empty())
                throw ConfigError(quoted + "empty port");
        }
        if (host.find(':') == std::string_view::npos)
            throw ConfigError(quoted + "brackets are for IPv6 addresses");
    } else {
        auto colon = spec.find(':');
        if (colon != std::string_view::npos) {
            if (spec.find(':', colon + 1) != std::string_view::npos)
                throw ConfigError(quoted + "an IPv6 address needs brackets: [" + std::string(spec) + "]:3306");
            host = spec.substr(0, colon);
            port = spec.substr(colon + 1);
            if (port.empty())
                throw ConfigError(quoted + "empty port");
        }
    }
    if (host.empty())
        throw ConfigError(quoted + "empty host name");
    if (!port.empty() && !parse_port(port, ep.port))
        throw ConfigError(quoted + "port must be a number from 1 to 65535");
    if (ep.port == 0 || ep.port > 65535)
        throw ConfigError(quoted + "port must be a number from 1 to 65535");
    ep.host = std::string(host);
    return ep;
}

std::vector<Endpoint> parse_hosts(const DatabaseConfig& db)
{
    if (db.hosts.empty())
        throw ConfigError("database.host: missing (required): at least one database host");
    std::vector<Endpoint> out;
    out.reserve(db.hosts.size());
    for (std::size_t i = 0; i < db.hosts.size(); ++i) {
        try {
            out.push_back(parse_endpoint(db.hosts[i], db.port));
        } catch (const ConfigError& e) {
            const std::string path =
                db.hosts.size() == 1 ? "database.host" : "database.host[" + std::to_string(i) + "]";
            throw ConfigError(path + ": " + e.what());
        }
    }
    return out;
}

std::string runtime_dir()
{
    if (const char* env = std::getenv("RUNTIME_DIRECTORY"); env && *env) {
        // systemd lists several directories separated by ':'; the first is ours.
        std::string dir(env);
        dir = dir.substr(0, dir.find(':'));
        if (!dir.empty())
            return dir;
    }
    if (::access("/run/sockmapd", W_OK | X_OK) == 0)
        return "/run/sockmapd";
    std::string dir = "/tmp/sockmapd-" + std::to_string(::geteuid());
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
        return {};
    return safe_dir(dir) ? dir : std::string();
}

DownMap parse_state(std::string_view text, std::time_t now, unsigned retry_interval)
{
    DownMap out;
    while (!text.empty()) {
        auto nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
        if (nl == std::string_view::npos)
            break; // an unterminated last line is a torn write
        auto sp = line.find(' ');
        if (sp == std::string_view::npos || sp == 0)
            continue;
        long long until = 0;
        auto [end, ec] = std::from_chars(line.data(), line.data() + sp, until);
        if (ec != std::errc() || end != line.data() + sp)
            continue;
        auto name = line.substr(sp + 1);
        if (name.empty() || !printable(name) || until <= now)
            continue;
        const long long limit = static_cast<long long>(now) + retry_interval;
        out[std::string(name)] = static_cast<std::time_t>(until > limit ? limit : until);
    }
    return out;
}

std::string format_state(const DownMap& down)
{
    std::string out;
    for (const auto& [name, until] : down)
        out += std::to_string(static_cast<long long>(until)) + " " + name + "\n";
    return out;
}

std::vector<std::size_t> try_order(const std::vector<Endpoint>& hosts, const DownMap& down, std::time_t now)
{
    std::vector<std::size_t> up, later;
    for (std::size_t i = 0; i < hosts.size(); ++i) {
        auto it = down.find(hosts[i].name());
        (it != down.end() && it->second > now ? later : up).push_back(i);
    }
    up.insert(up.end(), later.begin(), later.end());
    return up;
}

HostState::HostState(std::string dir, unsigned retry_interval) : retry_interval_(retry_interval)
{
    if (!dir.empty()) {
        file_ = dir + "/" + kStateName;
        lock_ = dir + "/" + kLockName;
    }
}

void HostState::load(std::time_t now)
{
    if (file_.empty()) {
        std::erase_if(down_, [now](const auto& kv) { return kv.second <= now; });
        return;
    }
    std::string text;
    int err = 0;
    if (read_small_file(file_, text, err) || err == ENOENT) {
        down_ = parse_state(text, now, retry_interval_);
        return;
    }
    if (!warned_) {
        log_warning("failover state " + file_ + " unreadable (" + std::strerror(err) +
                    "); remembering failed hosts in this process only");
        warned_ = true;
    }
    file_.clear();
}

void HostState::update(const std::string& name, std::time_t until)
{
    const std::time_t now = wall_now();
    if (file_.empty()) {
        load(now);
        if (until)
            down_[name] = until;
        else
            down_.erase(name);
        return;
    }
    Fd lock(take_lock(lock_));
    load(now);
    if (until)
        down_[name] = until;
    else if (down_.erase(name) == 0)
        return; // nothing to clear
    if (file_.empty())
        return; // load() fell back to memory only

    // Readers see the old file or the new one, never a torn one.
    std::string tmp = file_ + ".XXXXXX";
    int fd = ::mkstemp(tmp.data());
    bool ok = fd >= 0;
    int err = errno;
    if (ok) {
        ok = write_all(fd, format_state(down_));
        err = errno;
        if (::close(fd) != 0 && ok) {
            ok = false;
            err = errno;
        }
        if (ok && ::rename(tmp.c_str(), file_.c_str()) != 0) {
            ok = false;
            err = errno;
        }
        if (!ok)
            ::unlink(tmp.c_str());
    }
    if (!ok) {
        if (!warned_) {
            log_warning("cannot write failover state " + file_ + " (" + std::strerror(err) +
                        "); remembering failed hosts in this process only");
            warned_ = true;
        }
        file_.clear();
    }
}

std::vector<std::size_t> HostState::order(const std::vector<Endpoint>& hosts)
{
    const std::time_t now = wall_now();
    load(now);
    return try_order(hosts, down_, now);
}

bool HostState::is_down(const Endpoint& host)
{
    const std::time_t now = wall_now();
    load(now);
    auto it = down_.find(host.name());
    return it != down_.end() && it->second > now;
}

void HostState::mark_down(const Endpoint& host)
{
    if (retry_interval_ == 0)
        return;
    update(host.name(), wall_now() + static_cast<std::time_t>(retry_interval_));
}

void HostState::mark_up(const Endpoint& host)
{
    // Called right after a connection that order() chose, which has just
    // read the file: its view decides, so a healthy host costs no second
    // read.  A mark set since then is only a hint and expires by itself;
    // update() re-reads under the lock before writing.
    const auto it = down_.find(host.name());
    if (it == down_.end() || it->second <= wall_now())
        return;
    update(host.name(), 0);
}

} // namespace sockmapd
