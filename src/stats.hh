// stats — counters shared by every process of one service, and their
// report in the Prometheus text format.
//
// StatsRegion is a fixed layout of lock-free atomics in a SharedRegion
// (shm.hh): the file `stats` in the runtime directory when there is one
// (so the accept loop, its reused handlers, handlers started afresh by
// Accept=yes or xinetd, and `sockmapd --stats` all see the same figures),
// else an anonymous mapping the accept loop's handlers inherit.  It lives
// as long as the file (or the accept loop): a handler that retires, is
// killed, or a reload loses nothing.  Counting is a relaxed atomic add: no
// lock and no system call per lookup.
//
// Maps and hosts have fixed slots, claimed by name (lock-free: a slot's
// state goes free -> naming -> named) and never given back, so a reload
// that adds, drops or reorders maps keeps every sum; two processes that
// claim one name at once make two slots, summed by name in the report.
// Only configured names (configure()) get a slot: requests for any other
// map name (a client's choice) count as "other".  With more names than
// slots, the rest count as "other" too.
//
// stats() is the process's one Stats; before open() (or when no region
// could be had) every count is a no-op.  Built with SOCKMAPD_NO_STATS, all
// counting compiles to nothing (make bench compares the two builds).
// format_prometheus() renders a region; it trusts nothing in it but the
// layout (names are bounded and escaped).
#pragma once

#include "lookup.hh" // Clock
#include "shm.hh"

#include <atomic>
#include <cstdint>
#include <ctime>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace sockmapd
{

using Counter = std::atomic<std::uint64_t>;

inline constexpr std::size_t stats_max_maps = 64;
inline constexpr std::size_t stats_max_hosts = 32;
inline constexpr std::size_t stats_name_size = 124;
// Upper bounds of the lookup latency buckets, in microseconds (+Inf after).
inline constexpr std::uint64_t stats_latency_bounds_us[] = {
    250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};
inline constexpr std::size_t stats_latency_buckets = std::size(stats_latency_bounds_us) + 1;

// A reply's status word, as counted.
enum class StatResult : unsigned { Ok, NotFound, Temp, Timeout, Perm };
inline constexpr std::size_t stats_results = 5;
StatResult stat_result(std::string_view status); // "OK", "NOTFOUND", "TEMP", "TIMEOUT", "PERM"

// Session ends in the order of session.hh's EndReason.
inline constexpr std::size_t stats_session_ends = 5;
enum class StatRefusal : unsigned { Allow, PerPeer };

struct MapCounters {
    std::atomic<std::uint32_t> state; // 0 free, 1 being named, 2 named
    char name[stats_name_size];
    Counter results[stats_results];
    Counter executions;
    Counter cache_hits;                     // answered from the answer cache, fresh (cache.hh)
    Counter stale_answers;                  // answered from it stale: no database host answered
    Counter latency[stats_latency_buckets]; // per bucket, not cumulative
    Counter latency_sum_us;
};

struct HostCounters {
    std::atomic<std::uint32_t> state;
    char name[stats_name_size];
    Counter connects;
    Counter connect_failures;
    Counter query_failures; // a connection lost during a lookup
    Counter marked_down;
    Counter down_until; // epoch seconds; 0: not marked down
};

struct StatsRegion {
    char magic[8];
    std::uint32_t layout;
    std::uint32_t size;
    Counter created; // epoch seconds
    Counter accepted;
    Counter refused[2]; // StatRefusal
    Counter cap_reached;
    Counter waited_at_cap;
    Counter other_results[stats_results];
    Counter sessions[stats_session_ends];
    Counter handlers_started;
    Counter handlers_exited;
    Counter handlers_killed;
    Counter handlers_running; // gauges: the accept loop's
    Counter handlers_idle;
    Counter handlers_max;
    Counter reloads_ok;
    Counter reloads_failed;
    Counter failovers;
    MapCounters maps[stats_max_maps];
    HostCounters hosts[stats_max_hosts];
};

inline constexpr const char* stats_file_name = "stats";

struct StatsSummary {
    std::uint64_t lookups = 0; // of configured maps
    std::uint64_t temp = 0;    // of those, TEMP and TIMEOUT
};

class Stats
{
public:
    // The file `stats` in `dir`, else (no dir, or it cannot be had) an
    // anonymous region for this process and its children.
    void open(const std::string& dir);
    // The anonymous region alone (tests).
    void open_private();
    void close();
    const StatsRegion* region() const { return r_; }
    StatsSummary summary() const;

    // The names that get slots; the others count as "other".
    void configure(const std::vector<std::string>& maps, const std::vector<std::string>& hosts);

    [[gnu::always_inline]] void lookup(std::string_view map, StatResult result, Clock::duration took)
    {
#ifndef SOCKMAPD_NO_STATS
        if (!r_)
            return;
        if (MapCounters* m = find_map(map)) {
            add(m->results[static_cast<unsigned>(result)]);
            const auto us =
                static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(took).count());
            std::size_t b = 0;
            while (b < std::size(stats_latency_bounds_us) && us > stats_latency_bounds_us[b])
                ++b;
            add(m->latency[b]);
            add(m->latency_sum_us, us);
        } else {
            add(r_->other_results[static_cast<unsigned>(result)]);
        }
#else
        (void)map, (void)result, (void)took;
#endif
    }
    // Every statement executed: per_map(map, &MapCounters::executions)
    // written out, because the member pointer is not inlined there and
    // costs the hot path 18 instructions a lookup (bench-instructions:
    // 6,860 against 6,842).
    void executed(std::string_view map)
    {
#ifndef SOCKMAPD_NO_STATS
        if (r_)
            if (MapCounters* m = find_map(map))
                add(m->executions);
#else
        (void)map;
#endif
    }
    void cache_hit(std::string_view map)
    {
        per_map(map, &MapCounters::cache_hits);
    }
    void stale_answer(std::string_view map)
    {
        per_map(map, &MapCounters::stale_answers);
    }
    void session_end(unsigned reason)
    {
        if (reason < stats_session_ends)
            with([&](StatsRegion& r) { add(r.sessions[reason]); });
    }
    void accepted()
    {
        with([](StatsRegion& r) { add(r.accepted); });
    }
    void refused(StatRefusal why)
    {
        with([&](StatsRegion& r) { add(r.refused[static_cast<unsigned>(why)]); });
    }
    void cap_reached()
    {
        with([](StatsRegion& r) { add(r.cap_reached); });
    }
    void waited_at_cap()
    {
        with([](StatsRegion& r) { add(r.waited_at_cap); });
    }
    void handler_started()
    {
        with([](StatsRegion& r) { add(r.handlers_started); });
    }
    void handler_exited(bool killed)
    {
        with([&](StatsRegion& r) { add(killed ? r.handlers_killed : r.handlers_exited); });
    }
    void reloaded(bool ok)
    {
        with([&](StatsRegion& r) { add(ok ? r.reloads_ok : r.reloads_failed); });
    }
    void failover()
    {
        with([](StatsRegion& r) { add(r.failovers); });
    }
    void handlers(std::uint64_t running, std::uint64_t idle, std::uint64_t max);
    // A database host's events, by Endpoint::name().
    enum class HostEvent { Connected, ConnectFailed, QueryFailed };
    void host(const std::string& name, HostEvent e);
    // Marked down until `until` (epoch seconds), or up again (until 0).
    void host_marked(const std::string& name, std::time_t until);

private:
    static void add(Counter& c, std::uint64_t n = 1)
    {
        c.fetch_add(n, std::memory_order_relaxed);
    }
    template <class F> void with(F f)
    {
#ifndef SOCKMAPD_NO_STATS
        if (r_)
            f(*r_);
#else
        (void)f;
#endif
    }
    void per_map(std::string_view map, Counter MapCounters::*c)
    {
#ifndef SOCKMAPD_NO_STATS
        if (r_)
            if (MapCounters* m = find_map(map))
                add(m->*c);
#else
        (void)map, (void)c;
#endif
    }
    // A lookup asks for its map's counters two or three times (each
    // execution, a cache hit, the answer): the last map found is kept, so
    // that only the first asks the table by name.
    [[gnu::always_inline]] MapCounters* find_map(std::string_view name) const
    {
        if (last_map_ && name == last_map_name_)
            return last_map_;
        const auto it = maps_.find(name);
        if (it == maps_.end())
            return nullptr;
        last_map_name_ = it->first;
        last_map_ = it->second;
        return last_map_;
    }
    void forget_maps()
    {
        maps_.clear();
        last_map_ = nullptr;
        last_map_name_ = {};
    }
    MapCounters* claim_map(std::string_view name);
    HostCounters* claim_host(std::string_view name);

    SharedRegion shm_;
    StatsRegion* r_ = nullptr;
    std::map<std::string, MapCounters*, std::less<>> maps_;
    mutable std::string_view last_map_name_; // a key of maps_
    mutable MapCounters* last_map_ = nullptr;
    std::map<std::string, HostCounters*, std::less<>> hosts_;
};

// The process's counters (inline: a lookup asks for them a few times).
inline Stats& stats()
{
    static Stats s;
    return s;
}

// The region's file for a report: $RUNTIME_DIRECTORY's, else
// /run/sockmapd's, else /tmp/sockmapd-<uid>'s.
std::string stats_file_to_read();

// A read-only view of the file; empty when it is missing or of another
// layout.
SharedRegion peek_stats(const std::string& path);

// The text format (version 0.0.4) of every figure at `now` (epoch
// seconds: a host is down while its mark lasts).
std::string format_prometheus(const StatsRegion& r, std::time_t now, std::string_view version);

} // namespace sockmapd
