#include "pool.hh"

#include "log.hh"
#include "stats.hh"

#include <cstdint>
#include <ctime>

namespace sockmapd
{

// The hosts one run() has tried: a bit each, no allocation for the usual
// handful of hosts.
class Pool::Tried
{
public:
    explicit Tried(std::size_t hosts) : big_(hosts > 64 ? hosts : 0, false) {}
    bool has(std::size_t i) const { return big_.empty() ? (small_ >> i) & 1U : big_[i]; }
    void set(std::size_t i, bool on)
    {
        if (!big_.empty())
            big_[i] = on;
        else if (on)
            small_ |= std::uint64_t{1} << i;
        else
            small_ &= ~(std::uint64_t{1} << i);
    }

private:
    std::uint64_t small_ = 0;
    std::vector<bool> big_;
};

// One schema's connection and the host it goes to.
struct Pool::Slot {
    std::string database;
    std::unique_ptr<Link> link;
    std::size_t host = 0;
    Clock::time_point last_used{};
    bool confirmed = false; // work succeeded since connecting

    void drop()
    {
        link.reset();
        confirmed = false;
    }
    std::string label(const std::vector<Endpoint>& hosts) const { return host_label(hosts[host], database); }
};

Pool::Pool(std::vector<Endpoint> hosts, HostState state, unsigned idle_timeout, Connector connect)
    : hosts_(std::move(hosts)), state_(std::move(state)), idle_timeout_(idle_timeout), connect_(std::move(connect))
{
}

Pool::~Pool() = default;

Pool::Slot& Pool::slot_for(const std::string& database)
{
    auto& slot = slots_[database];
    if (!slot) {
        slot = std::make_unique<Slot>();
        slot->database = database;
    }
    return *slot;
}

bool Pool::connect_next(Slot& slot, Tried& tried, std::optional<DbError>& last, std::optional<std::size_t> prefer,
                        std::optional<std::size_t>& failed_on)
{
    std::vector<std::size_t> order = state_.order(hosts_);
    if (prefer)
        order.insert(order.begin(), *prefer);
    for (const std::size_t idx : order) {
        if (tried.has(idx))
            continue;
        tried.set(idx, true);
        slot.host = idx;
        const Endpoint& host = hosts_[idx];
        try {
            slot.link = connect_(host, slot.database);
            slot.confirmed = false;
            slot.last_used = Clock::now();
            stats().host(host.name(), Stats::HostEvent::Connected);
            log_info("connected to database host " + slot.label(hosts_) + ", server " + slot.link->server_version(),
                     {{"SOCKMAP_DB_HOST", host.name()}});
            return true;
        } catch (const DbError& e) {
            last = e;
            stats().host(host.name(), Stats::HostEvent::ConnectFailed);
            failed_on = idx;
            if (is_server_full(e.code)) {
                // Up, but full: not a failed host for the others.  Logged
                // at error: the server's limit is below what the handlers
                // need (doc/postfix.md, "Sizing").
                log_error("database host " + slot.label(hosts_) +
                              " is full, not marked down (raise its max_connections or lower "
                              "db_idle_timeout): " +
                              e.what(),
                          {{"SOCKMAP_DB_HOST", host.name()}});
                continue;
            }
            // A refused login is a configuration fault an administrator must
            // see even with loglevel error; an unreachable host may be one of
            // several.
            log_msg(is_login_error(e.code) ? LogLevel::Error : LogLevel::Warning,
                    (is_login_error(e.code) ? "database host " + slot.label(hosts_) + " refused the login: "
                                            : "cannot connect to database host " + slot.label(hosts_) + ": ") +
                        e.what(),
                    {{"SOCKMAP_DB_HOST", host.name()}});
            state_.mark_down(host);
            stats().host_marked(host.name(), std::time(nullptr) + state_.retry_interval());
        }
    }
    return false;
}

std::optional<DbError> Pool::run(const std::string& database, std::string_view map, Work work)
{
    Slot& slot = slot_for(database);
    Tried tried(hosts_.size());
    if (slot.link)
        tried.set(slot.host, true); // a kept connection is this run's first try
    std::optional<DbError> last;
    std::optional<std::size_t> prefer;
    bool stale_retry_done = false;
    std::optional<std::size_t> failed_on; // the last host that failed in this run
    for (;;) {
        bool opened_now = false;
        if (!slot.link) {
            if (!connect_next(slot, tried, last, prefer, failed_on)) {
                log_error("no database host answered for map " + std::string(map) + database_suffix(database) +
                              (last ? std::string("; last error: ") + last->what() : std::string()),
                          {{"SOCKMAP_MAP", map}});
                return last;
            }
            opened_now = true;
            prefer.reset();
        }
        const std::size_t idx = slot.host;
        try {
            work(*slot.link, hosts_[idx]);
        } catch (const DbError& e) {
            slot.last_used = Clock::now();
            if (!is_connection_error(e.code, e.sqlstate))
                throw; // the work, not the server, is wrong
            log_warning("database host " + slot.label(hosts_) + " failed during map " + std::string(map) + ": " +
                            e.what(),
                        {{"SOCKMAP_DB_HOST", hosts_[idx].name()}});
            slot.drop();
            last = e;
            stats().host(hosts_[idx].name(), Stats::HostEvent::QueryFailed);
            failed_on = idx;
            if (!opened_now && !e.timed_out && !stale_retry_done) {
                // One fresh connection to the same host before calling it down.
                stale_retry_done = true;
                tried.set(idx, false);
                prefer = idx;
            } else {
                state_.mark_down(hosts_[idx]);
                stats().host_marked(hosts_[idx].name(), std::time(nullptr) + state_.retry_interval());
                if (e.timed_out)
                    drop_connections_to(idx);
            }
            continue;
        } catch (...) {
            slot.last_used = Clock::now();
            throw;
        }
        slot.last_used = Clock::now();
        if (!slot.confirmed) {
            state_.mark_up(hosts_[idx]);
            stats().host_marked(hosts_[idx].name(), 0);
            slot.confirmed = true;
        }
        if (failed_on && *failed_on != idx)
            stats().failover(); // another host answered for one that failed
        return std::nullopt;
    }
}

// A host that let a query time out is hung for every schema on it: the
// other schemas' connections to it go too, so their next runs fail over
// at once instead of each waiting read_timeout on the same host.
void Pool::drop_connections_to(std::size_t host)
{
    for (auto& [db, slot] : slots_)
        if (slot->link && slot->host == host)
            slot->drop();
}

std::optional<Clock::time_point> Pool::next_wakeup() const
{
    if (idle_timeout_ == 0)
        return std::nullopt;
    std::optional<Clock::time_point> next;
    for (const auto& [db, slot] : slots_) {
        if (!slot->link)
            continue;
        const auto t = slot->last_used + std::chrono::seconds(idle_timeout_);
        if (!next || t < *next)
            next = t;
    }
    return next;
}

void Pool::close_idle(Clock::time_point now)
{
    if (idle_timeout_ == 0)
        return;
    for (auto& [db, slot] : slots_) {
        if (!slot->link || slot->last_used + std::chrono::seconds(idle_timeout_) > now)
            continue;
        log_info("closing idle database connection to " + slot->label(hosts_));
        slot->drop();
    }
}

} // namespace sockmapd
