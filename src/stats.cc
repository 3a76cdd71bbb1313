#include "stats.hh"

#include <cstdlib>
#include <cstring>
#include <new>
#include <sys/stat.h>
#include <unistd.h>

namespace sockmapd
{

namespace
{

constexpr char stats_magic[8] = {'s', 'o', 'c', 'k', 's', 't', 'a', 't'};
constexpr std::uint32_t stats_layout = 2; // 2: a map's cache_hits and stale_answers

constexpr const char* result_labels[stats_results] = {"OK", "NOTFOUND", "TEMP", "TIMEOUT", "PERM"};
constexpr const char* end_labels[stats_session_ends] = {"client_closed", "idle_timeout", "max_session",
                                                        "protocol_error", "connection_lost"};

bool region_valid(const void* p)
{
    const auto* r = static_cast<const StatsRegion*>(p);
    return std::memcmp(r->magic, stats_magic, sizeof stats_magic) == 0 && r->layout == stats_layout &&
           r->size == sizeof(StatsRegion);
}

void region_init(void* p)
{
    // The memory is zero: each atomic starts at 0 (lock-free, no state
    // besides its value); only the header is written.
    auto* r = new (p) StatsRegion;
    std::memcpy(r->magic, stats_magic, sizeof stats_magic);
    r->layout = stats_layout;
    r->size = sizeof(StatsRegion);
    r->created.store(static_cast<std::uint64_t>(std::time(nullptr)), std::memory_order_relaxed);
}

// A slot's name, as far as it is terminated within the slot.
std::string_view slot_name(const char (&name)[stats_name_size])
{
    return std::string_view(name, strnlen(name, stats_name_size));
}

// The slot named `name`, else a free one claimed for it; nullptr when full.
template <class Slot, std::size_t N> Slot* claim(Slot (&slots)[N], std::string_view name)
{
    name = name.substr(0, stats_name_size - 1);
    for (Slot& s : slots)
        if (s.state.load(std::memory_order_acquire) == 2 && slot_name(s.name) == name)
            return &s;
    for (Slot& s : slots) {
        std::uint32_t expected = 0;
        if (s.state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
            std::memset(s.name, 0, sizeof s.name);
            std::memcpy(s.name, name.data(), name.size());
            s.state.store(2, std::memory_order_release);
            return &s;
        }
    }
    return nullptr;
}

std::uint64_t get(const Counter& c)
{
    return c.load(std::memory_order_relaxed);
}

// A label value: backslash, double quote and newline escaped; other
// control bytes (there are none in names we wrote) blanked.
std::string label(std::string_view v)
{
    std::string out;
    for (const char c : v) {
        if (c == '\\' || c == '"')
            out += {'\\', c};
        else if (c == '\n')
            out += "\\n";
        else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
            out += ' ';
        else
            out += c;
    }
    return out;
}

class Writer
{
public:
    void family(const char* name, const char* type, const char* help)
    {
        out_ += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    }
    void sample(std::string_view name, std::string_view labels, std::uint64_t v)
    {
        out_.append(name);
        if (!labels.empty())
            out_.append("{").append(labels).append("}");
        out_ += " " + std::to_string(v) + "\n";
    }
    void sample(std::string_view name, std::string_view labels, double v)
    {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.6f", v);
        out_.append(name);
        if (!labels.empty())
            out_.append("{").append(labels).append("}");
        out_ += std::string(" ") + buf + "\n";
    }
    std::string take() { return std::move(out_); }

private:
    std::string out_;
};

struct MapSums {
    std::uint64_t results[stats_results] = {};
    std::uint64_t executions = 0;
    std::uint64_t cache_hits = 0;
    std::uint64_t stale_answers = 0;
    std::uint64_t latency[stats_latency_buckets] = {};
    std::uint64_t latency_sum_us = 0;
};

struct HostSums {
    std::uint64_t connects = 0, connect_failures = 0, query_failures = 0, marked_down = 0;
    bool down = false;
};

std::string seconds_label(std::uint64_t us)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", static_cast<double>(us) / 1e6);
    return buf;
}

} // namespace

StatResult stat_result(std::string_view status)
{
    if (status == "OK")
        return StatResult::Ok;
    if (status == "NOTFOUND")
        return StatResult::NotFound;
    if (status == "TEMP")
        return StatResult::Temp;
    if (status == "TIMEOUT")
        return StatResult::Timeout;
    return StatResult::Perm;
}

void Stats::open(const std::string& dir)
{
    close();
    if (!dir.empty())
        shm_ = SharedRegion::attach(
            dir + "/" + stats_file_name, sizeof(StatsRegion), [](const void* p) { return region_valid(p); },
            [](void* p) { region_init(p); });
    if (!shm_) {
        open_private();
        return;
    }
    r_ = static_cast<StatsRegion*>(shm_.data());
}

void Stats::open_private()
{
    close();
    shm_ = SharedRegion::anonymous(sizeof(StatsRegion));
    if (!shm_)
        return;
    region_init(shm_.data());
    r_ = static_cast<StatsRegion*>(shm_.data());
}

void Stats::close()
{
    forget_maps();
    hosts_.clear();
    r_ = nullptr;
    shm_.reset();
}

void Stats::configure(const std::vector<std::string>& maps, const std::vector<std::string>& hosts)
{
    forget_maps();
    if (!r_)
        return;
    for (const auto& m : maps)
        if (MapCounters* c = claim(r_->maps, m))
            maps_.emplace(m, c);
    for (const auto& h : hosts)
        claim_host(h);
}

HostCounters* Stats::claim_host(std::string_view name)
{
    if (!r_)
        return nullptr;
    if (const auto it = hosts_.find(name); it != hosts_.end())
        return it->second;
    HostCounters* c = claim(r_->hosts, name);
    if (c)
        hosts_.emplace(std::string(name), c);
    return c;
}

void Stats::host(const std::string& name, HostEvent e)
{
#ifndef SOCKMAPD_NO_STATS
    HostCounters* c = claim_host(name);
    if (!c)
        return;
    switch (e) {
    case HostEvent::Connected:
        add(c->connects);
        break;
    case HostEvent::ConnectFailed:
        add(c->connect_failures);
        break;
    case HostEvent::QueryFailed:
        add(c->query_failures);
        break;
    }
#else
    (void)name, (void)e;
#endif
}

void Stats::host_marked(const std::string& name, std::time_t until)
{
#ifndef SOCKMAPD_NO_STATS
    HostCounters* c = claim_host(name);
    if (!c)
        return;
    if (until > 0)
        add(c->marked_down);
    c->down_until.store(static_cast<std::uint64_t>(until), std::memory_order_relaxed);
#else
    (void)name, (void)until;
#endif
}

StatsSummary Stats::summary() const
{
    StatsSummary s;
    if (!r_)
        return s;
    for (const MapCounters& m : r_->maps) {
        for (const Counter& c : m.results)
            s.lookups += get(c);
        s.temp += get(m.results[static_cast<unsigned>(StatResult::Temp)]) +
                  get(m.results[static_cast<unsigned>(StatResult::Timeout)]);
    }
    return s;
}

void Stats::handlers(std::uint64_t running, std::uint64_t idle, std::uint64_t max)
{
    with([&](StatsRegion& r) {
        r.handlers_running.store(running, std::memory_order_relaxed);
        r.handlers_idle.store(idle, std::memory_order_relaxed);
        r.handlers_max.store(max, std::memory_order_relaxed);
    });
}

std::string stats_file_to_read()
{
    if (const char* rd = std::getenv("RUNTIME_DIRECTORY"); rd && *rd) {
        std::string dir(rd);
        dir = dir.substr(0, dir.find(':'));
        return dir + "/" + stats_file_name;
    }
    const std::string run = std::string("/run/sockmapd/") + stats_file_name;
    struct stat st {
    };
    if (::stat(run.c_str(), &st) == 0)
        return run;
    return "/tmp/sockmapd-" + std::to_string(geteuid()) + "/" + stats_file_name;
}

SharedRegion peek_stats(const std::string& path)
{
    SharedRegion shm = SharedRegion::peek(path, sizeof(StatsRegion));
    if (shm && !region_valid(shm.data()))
        return {};
    return shm;
}

std::string format_prometheus(const StatsRegion& r, std::time_t now, std::string_view version)
{
    std::map<std::string, MapSums> maps;
    for (const MapCounters& m : r.maps) {
        if (m.state.load(std::memory_order_acquire) != 2)
            continue;
        MapSums& s = maps[label(slot_name(m.name))];
        for (std::size_t i = 0; i < stats_results; ++i)
            s.results[i] += get(m.results[i]);
        s.executions += get(m.executions);
        s.cache_hits += get(m.cache_hits);
        s.stale_answers += get(m.stale_answers);
        for (std::size_t i = 0; i < stats_latency_buckets; ++i)
            s.latency[i] += get(m.latency[i]);
        s.latency_sum_us += get(m.latency_sum_us);
    }
    std::map<std::string, HostSums> hosts;
    for (const HostCounters& h : r.hosts) {
        if (h.state.load(std::memory_order_acquire) != 2)
            continue;
        HostSums& s = hosts[std::string(slot_name(h.name))];
        s.connects += get(h.connects);
        s.connect_failures += get(h.connect_failures);
        s.query_failures += get(h.query_failures);
        s.marked_down += get(h.marked_down);
        s.down = s.down || get(h.down_until) > static_cast<std::uint64_t>(now);
    }

    Writer w;
    w.family("sockmapd_build_info", "gauge", "The running build's version (always 1).");
    w.sample("sockmapd_build_info", "version=\"" + label(version) + "\"", std::uint64_t{1});
    w.family("sockmapd_stats_created_seconds", "gauge",
             "When these counters started (Unix time): they count from then, across handlers and reloads.");
    w.sample("sockmapd_stats_created_seconds", "", get(r.created));

    w.family("sockmapd_lookups_total", "counter", "Requests for a configured map, by map and reply status.");
    for (const auto& [name, s] : maps)
        for (std::size_t i = 0; i < stats_results; ++i)
            w.sample("sockmapd_lookups_total", "map=\"" + name + "\",result=\"" + result_labels[i] + "\"",
                     s.results[i]);
    w.family("sockmapd_other_requests_total", "counter",
             "Requests for no configured map (unknown map name, malformed request, unreadable config), by reply "
             "status.");
    for (std::size_t i = 0; i < stats_results; ++i)
        w.sample("sockmapd_other_requests_total", std::string("result=\"") + result_labels[i] + "\"",
                 get(r.other_results[i]));
    w.family("sockmapd_statement_executions_total", "counter",
             "Statements executed for a map's lookups (a search walk runs one per key tried).");
    for (const auto& [name, s] : maps)
        w.sample("sockmapd_statement_executions_total", "map=\"" + name + "\"", s.executions);
    w.family("sockmapd_cache_hits_total", "counter",
             "Lookups answered from the answer cache within ttl (negative_ttl), without the database.");
    for (const auto& [name, s] : maps)
        w.sample("sockmapd_cache_hits_total", "map=\"" + name + "\"", s.cache_hits);
    w.family("sockmapd_stale_answers_total", "counter",
             "Lookups answered from the answer cache past ttl because no database host answered "
             "(stale_if_error).");
    for (const auto& [name, s] : maps)
        w.sample("sockmapd_stale_answers_total", "map=\"" + name + "\"", s.stale_answers);
    w.family("sockmapd_lookup_duration_seconds", "histogram", "Time from a request read to its reply, by map.");
    for (const auto& [name, s] : maps) {
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i < stats_latency_buckets; ++i) {
            cumulative += s.latency[i];
            const std::string le =
                i < std::size(stats_latency_bounds_us) ? seconds_label(stats_latency_bounds_us[i]) : "+Inf";
            w.sample("sockmapd_lookup_duration_seconds_bucket", "map=\"" + name + "\",le=\"" + le + "\"", cumulative);
        }
        w.sample("sockmapd_lookup_duration_seconds_sum", "map=\"" + name + "\"",
                 static_cast<double>(s.latency_sum_us) / 1e6);
        w.sample("sockmapd_lookup_duration_seconds_count", "map=\"" + name + "\"", cumulative);
    }

    w.family("sockmapd_db_connects_total", "counter", "Database connections opened, by host.");
    for (const auto& [name, s] : hosts)
        w.sample("sockmapd_db_connects_total", "host=\"" + label(name) + "\"", s.connects);
    w.family("sockmapd_db_connect_failures_total", "counter",
             "Database connections that failed to open (refused, unreachable, login refused, full), by host.");
    for (const auto& [name, s] : hosts)
        w.sample("sockmapd_db_connect_failures_total", "host=\"" + label(name) + "\"", s.connect_failures);
    w.family("sockmapd_db_query_failures_total", "counter", "Connections lost or timed out during a lookup, by host.");
    for (const auto& [name, s] : hosts)
        w.sample("sockmapd_db_query_failures_total", "host=\"" + label(name) + "\"", s.query_failures);
    w.family("sockmapd_db_marked_down_total", "counter", "Times a host was marked down, by host.");
    for (const auto& [name, s] : hosts)
        w.sample("sockmapd_db_marked_down_total", "host=\"" + label(name) + "\"", s.marked_down);
    w.family("sockmapd_db_host_down", "gauge", "1 while a host is marked down (tried last), else 0.");
    for (const auto& [name, s] : hosts)
        w.sample("sockmapd_db_host_down", "host=\"" + label(name) + "\"", std::uint64_t{s.down});
    w.family("sockmapd_db_failovers_total", "counter",
             "Lookups answered by another host after the one tried first failed.");
    w.sample("sockmapd_db_failovers_total", "", get(r.failovers));

    w.family("sockmapd_connections_accepted_total", "counter", "Client connections served.");
    w.sample("sockmapd_connections_accepted_total", "", get(r.accepted));
    w.family("sockmapd_connections_refused_total", "counter",
             "Client connections closed unserved: outside sysconfig.allow, or past --max-per-peer.");
    w.sample("sockmapd_connections_refused_total", "reason=\"allow\"", get(r.refused[0]));
    w.sample("sockmapd_connections_refused_total", "reason=\"per_peer\"", get(r.refused[1]));
    w.family("sockmapd_connections_waited_total", "counter",
             "Connections that waited in the backlog because every handler was busy (--max-children).");
    w.sample("sockmapd_connections_waited_total", "", get(r.waited_at_cap));
    w.family("sockmapd_handler_cap_reached_total", "counter",
             "Times every handler was busy and new connections had to wait.");
    w.sample("sockmapd_handler_cap_reached_total", "", get(r.cap_reached));
    w.family("sockmapd_sessions_total", "counter", "Client sessions ended, by reason.");
    for (std::size_t i = 0; i < stats_session_ends; ++i)
        w.sample("sockmapd_sessions_total", std::string("end=\"") + end_labels[i] + "\"", get(r.sessions[i]));

    w.family("sockmapd_handlers_running", "gauge", "Handler processes of the accept loop now.");
    w.sample("sockmapd_handlers_running", "", get(r.handlers_running));
    w.family("sockmapd_handlers_idle", "gauge", "Of those, idle ones waiting for a connection.");
    w.sample("sockmapd_handlers_idle", "", get(r.handlers_idle));
    w.family("sockmapd_handlers_max", "gauge", "The accept loop's --max-children.");
    w.sample("sockmapd_handlers_max", "", get(r.handlers_max));
    w.family("sockmapd_handlers_started_total", "counter", "Handler processes the accept loop forked.");
    w.sample("sockmapd_handlers_started_total", "", get(r.handlers_started));
    w.family("sockmapd_handlers_exited_total", "counter", "Handler processes ended, by how.");
    w.sample("sockmapd_handlers_exited_total", "how=\"exit\"", get(r.handlers_exited));
    w.sample("sockmapd_handlers_exited_total", "how=\"killed\"", get(r.handlers_killed));
    w.family("sockmapd_reloads_total", "counter", "Reloads (SIGHUP), by outcome (failed: the old config kept).");
    w.sample("sockmapd_reloads_total", "result=\"ok\"", get(r.reloads_ok));
    w.sample("sockmapd_reloads_total", "result=\"failed\"", get(r.reloads_failed));
    return w.take();
}

} // namespace sockmapd
