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
// StatementRunner is all DbLookup knows of the database: a run answers
// one RunOutcome, the only way a database failure reaches the lookup (no
// driver error, no exception); rows arrive as row.hh's Row.  sockmapd's
// runner is MariaDbRunner (dbrunner.hh: the pool of connections and
// Connector/C behind it, where driver codes are classified); unit tests
// hand it a table.  DbLookup holds the maps it answers, not the config
// (no credentials).
#pragma once

#include "lookup.hh"
#include "row.hh"
#include "statement.hh"
#include "util.hh"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sockmapd
{

// What became of a run, classified by the runner.  Four kinds: it ran;
// the database is unavailable (every host failed, the last one in one of
// three ways); the last host timed out; the map is broken on the server
// (not failed over: every host holds the same schema).
enum class RunOutcome {
    Ran,             // the walk ran to its end on one connection
    Unavailable,     // unreachable, lost, shutting down, ...
    LoginRefused,    // unavailable: the login was refused (user, password, schema)
    ServerFull,      // unavailable: the server was full (too many connections)
    TimedOut,        // the last host let the query run past read_timeout
    StatementFailed, // map broken: the server failed its statement (unknown column, missing table)
    Mismatch,        // map broken: the server reads the statement otherwise than the plan
};

class StatementRunner
{
public:
    // Gets each row of a result; false: stop reading.
    using Rows = FunctionRef<bool(const Row& row)>;
    // Executes the map's statement with `values` bound (one per '?');
    // columns longer than `cap` arrive flagged too_long.  false: the
    // statement failed, the walk must end (run() says how it failed).
    using Execute = FunctionRef<bool(const std::vector<std::string_view>& values, std::size_t cap, Rows rows)>;
    // One lookup's statements, all on one connection.
    using Walk = FunctionRef<void(Execute execute)>;

    virtual ~StatementRunner() = default;

    // Runs `walk` with `map`'s statement (map.plan) on a connection to
    // map.database, failing over between hosts: when a connection breaks
    // the walk may run again from its start on another host.  Never
    // throws for a database failure.
    virtual RunOutcome run(const CompiledMap& map, Walk walk) = 0;

    // When close_idle() has work (an idle connection); nullopt: never.
    virtual std::optional<Clock::time_point> next_wakeup() const { return std::nullopt; }
    virtual void close_idle(Clock::time_point /*now*/) {}
};

class DbLookup : public Lookup
{
public:
    // Answers `maps`; never connects here; `runner` must outlive the lookup.
    DbLookup(std::vector<CompiledMap> maps, StatementRunner& runner);

    LookupResult lookup(std::string_view map, std::string_view key) override;
    std::optional<Clock::time_point> next_wakeup() const override { return runner_.next_wakeup(); }
    void wakeup(Clock::time_point now) override { runner_.close_idle(now); }

private:
    // One key of the search and the values its statement binds.
    struct Step {
        std::string_view key;
        std::vector<std::string_view> values;
    };
    LookupResult search(const CompiledMap& map, std::string_view key, const std::vector<Step>& steps);

    std::vector<CompiledMap> maps_;
    StatementRunner& runner_;
};

} // namespace sockmapd
