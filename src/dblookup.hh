// dblookup — answers socketmap lookups from MariaDB.
//
// DbLookup is lazy: the constructor only checks the host list (ConfigError)
// and never connects.  A lookup of an unknown map is NoSuchMap without
// touching the database.  Otherwise the key goes through the map's key
// handling (mapkey.hh): lowercase, then each of key_candidates() in turn
// (the full key; the key without its extension only when the full key is
// NotFound), each candidate checked against the domain list and split for
// %u/%d first; a candidate that cannot match is NotFound without a query.
// For a candidate that can, it opens (once) a connection for the map's
// database (schema) to the first host that answers, in the order HostState
// gives (hosts marked down are tried last, never skipped outright),
// prepares the map's statement on first use (checking its parameter and
// column counts) and reuses it.  Key parts are always bound parameters.
// Results: Found with the joined values (result_format applied to each),
// NotFound, PermFail "result too long" past kMaxResult, TempFail when the
// database failed (connection errors move on to the next host within the
// request; statement errors such as an unknown column do not) or the map's
// statement cannot be built, Timeout when the last failure was a read
// timeout.  A TempFail or Timeout on the full key is the answer: the
// reduced key is never tried after it.  Never throws from lookup().
//
// check_maps_online() is --check-config without --offline: connect and
// prepare every map's statement (query templates included), one line per
// map to `out`; returns 0, 78 (a map's table/column/query/database/
// credentials are wrong; the line carries the database's message) or 75
// (no host answered).
#pragma once

#include "config.hh"
#include "failover.hh"
#include "lookup.hh"
#include "mapkey.hh"

#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace sockmapd
{

struct Column;     // mariadb.hh
class DbError;     // mariadb.hh
class DbStatement; // mariadb.hh

// Socketmap replies are at most 100000 bytes; "OK " takes three.
constexpr std::size_t kMaxResult = 100000 - 3;

// What a map's lookup sends to the database.  Each parameter is a part of
// the key.
struct StatementPlan {
    std::string sql;
    std::vector<KeyPart> params;
    bool has_reason = false; // the second column, if any, is the reason
    bool existence = false;  // no value column: answer the stored key
    bool query = false;      // from a `query` template: one or two columns
};

// `name` back-quoted for SQL (backticks doubled).
std::string quote_identifier(std::string_view name);

// SELECT `value`[, `reason`] FROM `db`.`table` WHERE `key` = ?
// (the key column instead of value for existence maps), or the map's
// `query` compiled by compile_query().  Throws ConfigError naming the map
// for a map it cannot build (invalid identifiers, bad templates).
StatementPlan build_statement(const MapConfig& map);

// The parameter values for one lookup (views into `key`); nullopt: the key
// cannot match without asking, because the statement needs %u or %d and the
// key has no '@', or the part it needs is empty ("@domain" for %u, "user@"
// for %d), as Postfix suppresses such queries.
std::optional<std::vector<std::string_view>> bind_values(const StatementPlan& plan, std::string_view key);

// Collects rows into an answer: non-NULL, non-empty values, each through
// `format` (result_format, empty: as is), joined with ',' (only the first
// for existence maps), then " <reason>" from the first row with a non-empty
// reason.  add() returns false once the answer cannot fit in `limit`.
class ResultJoiner
{
public:
    explicit ResultJoiner(bool first_only = false, std::size_t limit = kMaxResult, std::string format = {});
    bool add(const Column& value, const Column* reason);
    LookupResult finish() const;
    bool too_long() const { return too_long_; }

private:
    bool first_only_;
    std::size_t limit_;
    std::string format_;
    std::string joined_;
    std::string reason_;
    bool have_reason_ = false;
    bool too_long_ = false;
};

class DbLookup : public Lookup
{
public:
    explicit DbLookup(const Config& cfg); // throws ConfigError for a bad host list
    ~DbLookup() override;
    DbLookup(const DbLookup&) = delete;
    DbLookup& operator=(const DbLookup&) = delete;

    LookupResult lookup(std::string_view map, std::string_view key) override;
    std::optional<Clock::time_point> next_wakeup() const override;
    void wakeup(Clock::time_point now) override;

    // For check_maps_online(): connect and prepare one map's statement.
    // Returns 0 and "ok", or 78/75 and the reason.
    int check_map(const MapConfig& map, std::string& message);

    struct Link; // one schema's connection and statements

private:
    const StatementPlan& plan_for(const MapConfig& map);
    Link& link_for(const std::string& database);
    // One candidate key: domain list, key split, then the database.
    LookupResult lookup_key(const MapConfig& map, const StatementPlan& plan, std::string_view key);
    // The map's statement on `link`, prepared now if needed; throws DbError,
    // or ConfigError when its parameter or column count does not fit the plan.
    DbStatement& statement(Link& link, const MapConfig& map, const StatementPlan& plan);
    LookupResult run_once(Link& link, const MapConfig& map, const StatementPlan& plan,
                          const std::vector<std::string_view>& values);
    // Connects `link` to the next host not yet in `tried` (`prefer` first);
    // false when none is left, `last` then holds the last error.
    void drop_links_to(std::size_t host);
    bool connect_next(Link& link, std::vector<bool>& tried, std::optional<DbError>& last,
                      std::optional<std::size_t> prefer);

    Config cfg_;
    std::vector<Endpoint> hosts_;
    HostState state_;
    std::map<std::string, StatementPlan, std::less<>> plans_;
    std::map<std::string, std::unique_ptr<Link>, std::less<>> links_;
};

int check_maps_online(const Config& cfg, std::ostream& out);

} // namespace sockmapd
