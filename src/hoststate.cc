#include "hoststate.hh"

#include "log.hh"
#include "util.hh"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>

namespace sockmapd
{

namespace
{

constexpr std::size_t max_state_file = 64 * 1024;
constexpr const char* state_file_name = "failover.state";
constexpr const char* lock_file_name = "failover.lock";

std::time_t wall_now()
{
    return std::time(nullptr);
}

// A directory we may keep state in: a real directory, ours, not writable by others.
bool safe_dir(const std::string& dir)
{
    struct stat st {
    };
    if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        return false;
    return st.st_uid == ::geteuid() && (st.st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

// Root does not write into a directory another user owns (its files would
// be unreadable to that user); others may use what they can write.
bool root_may_use(const std::string& dir)
{
    if (::geteuid() != 0)
        return true;
    struct stat st {
    };
    // A directory that is not there holds nothing: reading and writing
    // the state fail later, and say so.
    return ::stat(dir.c_str(), &st) != 0 || st.st_uid == 0;
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

// Without the lock we only risk losing a concurrent mark.
int take_lock(const std::string& path)
{
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0)
        lock_within(fd, std::chrono::milliseconds(1000)); // else proceed unlocked
    return fd;
}

// Once per process: the lookups and the gate both ask.
void warn_no_runtime_dir(const std::string& why)
{
    static bool warned = false;
    if (!warned)
        log_warning("failover state: " + why + "; failed database hosts are remembered in this process only");
    warned = true;
}

} // namespace

std::string runtime_dir()
{
    if (const char* env = std::getenv("RUNTIME_DIRECTORY"); env && *env) {
        // systemd lists several directories separated by ':'; the first is ours.
        std::string dir(env);
        dir = dir.substr(0, dir.find(':'));
        if (!dir.empty()) {
            if (root_may_use(dir))
                return dir;
            warn_no_runtime_dir("RUNTIME_DIRECTORY " + dir + " belongs to another user");
            return {};
        }
    }
    if (::access("/run/sockmapd", W_OK | X_OK) == 0 && root_may_use("/run/sockmapd"))
        return "/run/sockmapd";
    std::string dir = "/tmp/sockmapd-" + std::to_string(::geteuid());
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
        warn_no_runtime_dir("cannot create " + dir + ": " + std::strerror(errno));
        return {};
    }
    if (safe_dir(dir))
        return dir;
    warn_no_runtime_dir(dir + " is not a directory of uid " + std::to_string(::geteuid()) +
                        " that only it may write (another user may have created it; give sockmapd a runtime "
                        "directory: /run/sockmapd, or RUNTIME_DIRECTORY)");
    return {};
}

std::string runtime_dir_for_command()
{
    return ::geteuid() == 0 ? std::string() : runtime_dir();
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
        if (name.empty() || !printable_name(name) || until <= now)
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
        file_ = dir + "/" + state_file_name;
        lock_ = dir + "/" + lock_file_name;
    }
}

void HostState::load(std::time_t now)
{
    if (file_.empty()) {
        std::erase_if(down_, [now](const auto& kv) { return kv.second <= now; });
        return;
    }
    std::string text;
    // Far larger than any real state (EFBIG) is garbage: read as empty.
    const int err = read_file(file_, text, max_state_file, false);
    if (err == 0 || err == ENOENT || err == EFBIG) {
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
