// pool — a handler's database connections, one per schema, and the only
// code that fails over between hosts.
//
// Pool::run() runs one piece of work (a lookup, a statement check) on the
// schema's connection, connecting lazily.  The policy, all of it here:
// - hosts are tried in the order HostState gives: not marked down first,
//   in configured order, then the marked ones (tried last, never skipped);
// - a host that refuses the connection or fails with a connection error is
//   marked down (shared with other handlers) and the next host is tried,
//   within the same run();
// - a host that is full (1040 too many connections, 1203 the user's
//   max_user_connections) is up and answering: the next host is tried for
//   this run, but it is not marked down, so other handlers and later runs
//   still try it in its place (a slot frees as soon as any client leaves);
//   with no other host the lookup alone answers TEMP;
// - a connection kept from an earlier run that fails is retried once on a
//   fresh connection to the same host before that host is called down (it
//   may just have gone stale: server restart, wait_timeout);
// - a host that let a query time out is hung for every schema: all the
//   pool's connections to it are closed, so other schemas fail over at once;
// - the first success on a new connection clears the host's down mark.
// Errors about the work itself (DbError that is not a connection error,
// StatementMismatch, ...) propagate to the caller; the connection stays.
// close_idle() closes connections unused for `idle_timeout` seconds.
#pragma once

#include "endpoint.hh"
#include "hoststate.hh"
#include "lookup.hh"
#include "mariadb.hh"
#include "util.hh"

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sockmapd
{

class Pool
{
public:
    // The pool's hold on one open database connection, one per schema; the
    // caller's subclass holds the driver's state (the connection, its
    // prepared statements).
    struct Link {
        virtual ~Link() = default;
        virtual std::string server_version() const { return {}; }
    };
    // Opens a link to `host` for `database`; throws DbError.
    using Connector = std::function<std::unique_ptr<Link>(const Endpoint& host, const std::string& database)>;
    // Work on an open link; throws DbError on failure.
    using Work = FunctionRef<void(Link& link, const Endpoint& host)>;

    // `hosts` not empty.  idle_timeout 0: connections are never closed idle.
    Pool(std::vector<Endpoint> hosts, HostState state, unsigned idle_timeout, Connector connect);
    ~Pool();
    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;

    // Runs `work` on `database`'s connection, failing over as above.
    // nullopt: it ran.  Otherwise every host failed; the error of the last
    // one.  `map`: the map the work is for, named in log lines.
    std::optional<DbError> run(const std::string& database, std::string_view map, Work work);

    std::optional<Clock::time_point> next_wakeup() const;
    void close_idle(Clock::time_point now);

private:
    struct Slot;
    class Tried;
    Slot& slot_for(const std::string& database);
    // Connects `slot` to the first host in order not yet in `tried`
    // (`prefer` first); false when none is left, `last` then holds the
    // last error.
    // `failed_on`: set to each host that fails.
    bool connect_next(Slot& slot, Tried& tried, std::optional<DbError>& last, std::optional<std::size_t> prefer,
                      std::optional<std::size_t>& failed_on);
    void drop_connections_to(std::size_t host);

    std::vector<Endpoint> hosts_;
    HostState state_;
    unsigned idle_timeout_;
    Connector connect_;
    std::map<std::string, std::unique_ptr<Slot>, std::less<>> slots_;
};

} // namespace sockmapd
