// dbrunner — a map's statements on MariaDB: the StatementRunner sockmapd
// uses (dblookup.hh), and --check-config's check of each map.
//
// MariaDbRunner runs a lookup's walk through the Pool (pool.hh: lazy
// connections per schema, failover, down-marks) on a link that holds the
// Connector/C connection (mariadb.hh) and one prepared statement per map,
// prepared on first use and reused.  The server's own count of parameters
// (and, for query maps, of columns) must fit the plan, else
// StatementMismatch.  An error of the statement itself is logged with the
// host and drops that statement (it is prepared again next time); a
// connection error is the pool's to fail over.  What became of the run is
// classified here, from the driver's codes, into the RunOutcome the lookup
// gets.  Logs name the map, never the key.
//
// check_map() connects and prepares one map's statement, the
// --check-config verdict: Ok, Wrong (a map's table, column, query,
// database or the credentials; the message carries the database's words)
// or Unreachable (no host answered; kept for the other maps of the schema).
// Its warning: the map holds rows Postfix cannot reach with the map's
// search order (statement.hh domain_rows_probe).  The driver module itself
// knows nothing of maps or plans.
#pragma once

#include "config.hh"
#include "dblookup.hh"
#include "hoststate.hh"
#include "mariadb.hh" // DbError
#include "pool.hh"

#include <map>
#include <optional>
#include <string>

namespace sockmapd
{

struct MapCheck {
    enum class Verdict { Ok, Wrong, Unreachable };
    Verdict verdict = Verdict::Ok;
    std::string message; // "ok", or what is wrong
    std::string warning; // empty: none
};

// What a run answers when every host failed, from the last one's error.
RunOutcome every_host_failed(const DbError& last);

class MariaDbRunner : public StatementRunner
{
public:
    // Never connects here.  `state`: where down hosts are remembered.
    MariaDbRunner(const DatabaseConfig& db, HostState state);
    // Down-marks in the runtime directory, shared with other handlers.
    explicit MariaDbRunner(const DatabaseConfig& db);

    RunOutcome run(const CompiledMap& map, Walk walk) override;
    std::optional<Clock::time_point> next_wakeup() const override { return pool_.next_wakeup(); }
    void close_idle(Clock::time_point now) override { pool_.close_idle(now); }

    MapCheck check_map(const CompiledMap& map);

private:
    DatabaseConfig db_;
    Pool pool_;
    std::map<std::string, MapCheck, std::less<>> unreachable_; // schema -> its verdict
};

} // namespace sockmapd
