#include "hoststate.hh"

#include "log.hh"
#include "util.hh"

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>

namespace sockmapd
{

namespace
{

constexpr std::size_t max_state_file = 64 * 1024;
constexpr std::string_view state_file_stem = "failover"; // failover.state, failover.lock

std::time_t wall_now()
{
    return std::time(nullptr);
}

} // namespace

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

HostState::HostState(const std::string& dir, unsigned retry_interval)
    : file_(dir, state_file_stem, max_state_file), retry_interval_(retry_interval)
{
}

void HostState::load(std::time_t now)
{
    if (!file_.usable()) {
        std::erase_if(down_, [now](const auto& kv) { return kv.second <= now; });
        return;
    }
    std::string text;
    // Far larger than any real state (EFBIG) is garbage: read as empty.
    const int err = file_.read(text);
    if (err == 0 || err == ENOENT || err == EFBIG) {
        down_ = parse_state(text, now, retry_interval_);
        return;
    }
    unreadable(err);
}

void HostState::unreadable(int err)
{
    if (!warned_) {
        log_warning("failover state " + file_.path() + " unreadable (" + std::strerror(err) +
                    "); remembering failed hosts in this process only");
        warned_ = true;
    }
    file_.drop();
}

bool HostState::apply(const std::string& name, std::time_t until)
{
    if (until) {
        down_[name] = until;
        return true;
    }
    return down_.erase(name) != 0;
}

void HostState::update(const std::string& name, std::time_t until)
{
    const std::time_t now = wall_now();
    if (!file_.usable()) {
        load(now);
        apply(name, until);
        return;
    }
    int err = 0;
    const auto done = file_.update(
        std::chrono::milliseconds(1000), SharedFile::WhenBusy::Proceed,
        [&](std::string_view text) -> std::optional<std::string> {
            down_ = parse_state(text, now, retry_interval_);
            if (!apply(name, until))
                return std::nullopt; // nothing to clear
            return format_state(down_);
        },
        err);
    if (done == SharedFile::Update::Unreadable) {
        unreadable(err);
        apply(name, until);
    } else if (done == SharedFile::Update::Unwritable) {
        if (!warned_) {
            log_warning("cannot write failover state " + file_.path() + " (" + std::strerror(err) +
                        "); remembering failed hosts in this process only");
            warned_ = true;
        }
        file_.drop();
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
