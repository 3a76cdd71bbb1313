// dblookup — the map logic of a lookup answered from a database.
//
// DbLookup::lookup(): an unknown map is NoSuchMap without touching the
// database.  Otherwise the map's KeyCandidates (mapkey.hh, its rewrites and
// search order) less those the domain list or the key parts the statement
// binds leave out (statement.hh; a key that cannot match is not asked),
// each in turn through the map's statement, the next only while the answer
// is NotFound; the whole walk is one StatementRunner::run(), on one
// connection.  The rows are joined by ResultJoiner.  Results: Found,
// NotFound, PermFail "result too long" or KeyCandidates::refusal() (a domain
// too long, too deep or with a label too long to search, nothing asked),
// TempFail when the database failed at any step, refused the login or the
// map's statement cannot be built or run, Timeout when the last host timed
// out: never a shorter key's answer after a failure.  Never throws from
// lookup().
//
// A map with "cache" (mapconfig.hh CachePolicy) and an AnswerCache
// (cache.hh, the listener's) is looked up there first, under the key the
// client sent, so a search walk is one entry: a found answer younger than
// ttl, a NotFound younger than negative_ttl is the answer without the
// database.  Otherwise the database is asked; a Found or NotFound it gives
// is stored.  When no database host answered (RunOutcome Unavailable,
// ServerFull, TimedOut: not a refused login, not a broken map, never
// PermFail), an entry at most stale_if_error old is served instead of
// TEMP/TIMEOUT, and logged (a warning at most once a minute for the whole
// service).
//
// StatementRunner is all DbLookup knows of the database: a run answers
// one RunOutcome, the only way a database failure reaches the lookup (no
// driver error, no exception); rows arrive as row.hh's Row.  sockmapd's
// runner is MariaDbRunner (dbrunner.hh: the pool of connections and
// Connector/C behind it, where driver codes are classified); unit tests
// hand it a table.  DbLookup holds the maps it answers, not the config
// (no credentials).
//
// Every execution is paid from the session's QueryBudget; a lookup whose
// walk the budget cannot pay is TempFail "query budget spent" without a
// query, warned about once per session.  "result too long" is logged once
// per session too: both are the client's to repeat.
#pragma once

#include "cache.hh"
#include "lookup.hh"
#include "mapkey.hh" // Candidate
#include "row.hh"
#include "statement.hh"
#include "util.hh"

#include <cstdint>
#include <functional>
#include <map>
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

// A session's allowance of statement executions: `capacity` at the start,
// one spent per execution, `per_second` back each second up to capacity,
// and all of it back when the client has caught up with its replies
// (Lookup::batch_over()).  A client that waits for each reply, as Postfix
// and Sendmail do, starts every request with the whole capacity, which is
// far more than one request may try (mapkey.hh max_candidate_keys): it is
// never short.  A client that pipelines shares one capacity among all it
// sent ahead, and the refill rate past it: pipelining does not multiply
// what it may make the database do.
class QueryBudget
{
public:
    // 2048: a batch of a thousand pipelined lookups of a few keys each is
    // answered whole; 1024 a second: a tenth of what one connection could
    // make a local MariaDB run (the review measured 10,240 a second).
    static constexpr unsigned default_capacity = 2048;
    static constexpr unsigned default_per_second = 1024;

    explicit QueryBudget(unsigned capacity = default_capacity, unsigned per_second = default_per_second)
        : capacity_(capacity), per_second_(per_second), left_(capacity)
    {
    }
    // Whether `n` executions can be paid at `now` (the refill counted).
    bool affords(std::size_t n, Clock::time_point now);
    // Pays one execution (never below zero).
    void spend();
    void fill() { left_ = capacity_; }
    unsigned left() const { return left_; }
    unsigned capacity() const { return capacity_; }
    unsigned per_second() const { return per_second_; }

private:
    unsigned capacity_;
    unsigned per_second_;
    unsigned left_;
    Clock::time_point refilled_{};
};

class DbLookup : public Lookup
{
public:
    // Answers `maps`; never connects here; `runner` and `cache` (may be
    // null: no cache) must outlive the lookup.  `database`: a hash of what
    // else the answers depend on (the database hosts), in the cache's keys.
    DbLookup(std::vector<CompiledMap> maps, StatementRunner& runner, QueryBudget budget = QueryBudget(),
             AnswerCache* cache = nullptr, std::uint64_t database = 0);

    LookupResult lookup(std::string_view map, std::string_view key) override;
    std::optional<Clock::time_point> next_wakeup() const override { return runner_.next_wakeup(); }
    void wakeup(Clock::time_point now) override { runner_.close_idle(now); }
    void session_started() override;
    void batch_over() override { budget_.fill(); }
    // Before any lookup: the first map's database connection opened and
    // its statement prepared, nothing executed or counted.  A spare
    // handler's, so that its first client waits for neither that nor the
    // pages the driver first writes (copied from the parent after a fork).
    void warm_up();

    // Tests: the clock of the cache's ages, in milliseconds (by default
    // steady_clock, which every process on the host shares).
    void set_clock(std::function<std::int64_t()> now_ms) { now_ms_ = std::move(now_ms); }

private:
    // An answer, and whether the database gave it or no host answered.
    struct Answer {
        LookupResult result;
        bool from_database = false; // the walk ran: Found/NotFound may be stored
        bool unavailable = false;   // no database host answered: a stale entry may stand in
    };
    LookupResult cached(const CompiledMap& map, std::string_view key);
    Answer answer(const CompiledMap& map, std::string_view key);
    Answer search(const CompiledMap& map, std::string_view key);

    std::vector<CompiledMap> maps_;
    StatementRunner& runner_;
    QueryBudget budget_;
    bool warned_budget_ = false;
    bool warned_too_long_ = false;
    AnswerCache* cache_;
    std::function<std::int64_t()> now_ms_;
    std::map<std::string, std::uint64_t, std::less<>> fingerprints_; // map -> what its answers depend on
    // Scratch of one lookup, kept to spare allocations: the key's
    // candidates, those that can match, and the values one statement binds.
    KeyCandidates keys_;
    std::vector<Candidate> steps_;
    std::vector<std::string_view> values_;
    // The step of steps_ whose values values_ holds, or no_step.
    static constexpr std::size_t no_step = static_cast<std::size_t>(-1);
    std::size_t bound_ = no_step;
};

} // namespace sockmapd
