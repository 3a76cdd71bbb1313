// dblookup — answers socketmap lookups from MariaDB.
//
// DbLookup is lazy: the constructor only checks the host list (ConfigError)
// and never connects.  A lookup of an unknown map is NoSuchMap without
// touching the database.  Otherwise it opens (once) a connection for the
// map's database (schema) to the first host that answers, in the order
// HostState gives (hosts marked down are tried last, never skipped
// outright), prepares the map's statement on first use and reuses it.  The
// key is always a bound parameter.  Results: Found with the joined values,
// NotFound, PermFail "result too long" past kMaxResult, TempFail when the
// database failed (connection errors move on to the next host within the
// request; statement errors such as an unknown column do not), Timeout when
// the last failure was a read timeout.  Never throws from lookup().
//
// check_maps_online() is --check-config without --offline: connect and
// prepare every map's statement, one line per map to `out`; returns 0, 78
// (a map's table/column/database/credentials are wrong) or 75 (no host
// answered).
#pragma once

#include "config.hh"
#include "failover.hh"
#include "lookup.hh"

#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace sockmapd
{

struct Column; // mariadb.hh
class DbError; // mariadb.hh

// Socketmap replies are at most 100000 bytes; "OK " takes three.
constexpr std::size_t kMaxResult = 100000 - 3;

// What a map's lookup sends to the database.  Each parameter is a part of
// the key (only the whole key so far).
enum class KeyPart { Whole };

struct StatementPlan {
    std::string sql;
    std::vector<KeyPart> params;
    bool has_reason = false; // the second column is the reason
    bool existence = false;  // no value column: answer the stored key
};

// `name` back-quoted for SQL (backticks doubled).
std::string quote_identifier(std::string_view name);

// SELECT `value`[, `reason`] FROM `db`.`table` WHERE `key` = ?
// (the key column instead of value for existence maps).  Throws ConfigError
// for a map it cannot build (invalid identifiers, `query` templates).
StatementPlan build_statement(const MapConfig& map);

// The parameter values for one lookup; nullopt: the key cannot match.
std::optional<std::vector<std::string_view>> bind_values(const StatementPlan& plan, std::string_view key);

// Collects rows into an answer: non-NULL, non-empty values joined with ','
// (only the first for existence maps), then " <reason>" from the first row
// with a non-empty reason.  add() returns false once the answer cannot fit.
class ResultJoiner
{
public:
    explicit ResultJoiner(bool first_only = false, std::size_t limit = kMaxResult);
    bool add(const Column& value, const Column* reason);
    LookupResult finish() const;
    bool too_long() const { return too_long_; }

private:
    bool first_only_;
    std::size_t limit_;
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
    LookupResult run_once(Link& link, const MapConfig& map, const StatementPlan& plan,
                          const std::vector<std::string_view>& values);
    // Connects `link` to the next host not yet in `tried` (`prefer` first);
    // false when none is left, `last` then holds the last error.
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
