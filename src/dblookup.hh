// dblookup — the map logic of a lookup answered from a database.
//
// DbLookup::lookup(): an unknown map is NoSuchMap without touching the
// database.  Otherwise the map's KeyCandidates (mapkey.hh, its rewrites and
// search order) less those the domain list or the key parts the statement
// binds leave out (statement.hh; a key that cannot match is not asked),
// each in turn through the map's statement, the next only while the answer
// is NotFound; the whole walk is one StatementRunner::run(), on one
// connection.  The rows are joined by ResultJoiner.  Results: Found,
// NotFound, PermFail "result too long" or "domain too long to search",
// TempFail when the database failed at any step, refused the login or the
// map's statement cannot be built or run, Timeout when the last host timed
// out: never a shorter key's answer after a failure.  Never throws from
// lookup().
//
// StatementRunner is all DbLookup knows of the database: sockmapd's is
// MariaDbRunner (dbrunner.hh: the pool of connections and Connector/C
// behind it); unit tests hand it a table.
#pragma once

#include "config.hh"
#include "lookup.hh"
#include "mariadb.hh" // Column, DbError
#include "statement.hh"
#include "util.hh"

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sockmapd
{

class StatementRunner
{
public:
    // Gets each row of a result; false: stop reading.
    using Rows = FunctionRef<bool(const std::vector<Column>& row)>;
    // Executes the map's statement with `values` bound (one per '?');
    // columns longer than `cap` arrive flagged too_long.  Throws DbError.
    using Execute = FunctionRef<void(const std::vector<std::string_view>& values, std::size_t cap, Rows rows)>;
    // One lookup's statements, all on one connection.
    using Walk = FunctionRef<void(Execute execute)>;

    virtual ~StatementRunner() = default;

    // Runs `walk` with `map`'s statement (from `plan`) on a connection to
    // map.database, failing over between hosts: when a connection breaks
    // the walk may run again from its start on another host.  nullopt: the
    // walk ran.  Otherwise every host failed; the last one's error (its
    // timed_out set when that host let the query time out).  Throws DbError
    // for an error of the statement itself (unknown column, missing table),
    // StatementMismatch when the server reads the statement otherwise than
    // the plan.
    virtual std::optional<DbError> run(const MapConfig& map, const StatementPlan& plan, Walk walk) = 0;

    // When close_idle() has work (an idle connection); nullopt: never.
    virtual std::optional<Clock::time_point> next_wakeup() const { return std::nullopt; }
    virtual void close_idle(Clock::time_point /*now*/) {}
};

class DbLookup : public Lookup
{
public:
    // Never connects here; `runner` must outlive the lookup.
    DbLookup(const Config& cfg, StatementRunner& runner);

    LookupResult lookup(std::string_view map, std::string_view key) override;
    std::optional<Clock::time_point> next_wakeup() const override { return runner_.next_wakeup(); }
    void wakeup(Clock::time_point now) override { runner_.close_idle(now); }

private:
    // One key of the search and the values its statement binds.
    struct Step {
        std::string_view key;
        std::vector<std::string_view> values;
    };
    const StatementPlan& plan_for(const MapConfig& map);
    LookupResult search(const MapConfig& map, const StatementPlan& plan, std::string_view key,
                        const std::vector<Step>& steps);

    Config cfg_;
    StatementRunner& runner_;
    std::map<std::string, StatementPlan, std::less<>> plans_;
};

} // namespace sockmapd
