// dblookup — the map logic of a lookup answered from MariaDB.
//
// DbLookup::lookup(): an unknown map is NoSuchMap without touching the
// database.  Otherwise the map's KeyCandidates (mapkey.hh, its rewrites and
// search order) less those the domain list or the key parts the statement
// binds leave out (statement.hh; a key that cannot match is not asked),
// each in turn through the map's one prepared statement, the next only
// while the answer is NotFound; the whole walk runs on one connection of
// the Pool (pool.hh), which connects lazily and fails over.  The rows are
// joined by ResultJoiner.  Results: Found, NotFound, PermFail "result too
// long" or "domain too long to search", TempFail when the database failed
// at any step, refused the login or the map's statement cannot be built or
// run, Timeout when the last host timed out: never a shorter key's answer
// after a failure.  Never throws from lookup().
//
// check_maps_online() is --check-config without --offline: connect and
// prepare every map's statement through the same Pool, one line per map to
// `out`, a line per warning to `warn`; returns 0, 78 (a map's
// table/column/query/database/credentials are wrong; the line carries the
// database's message) or 75 (no host answered).  Warnings do not change it.
#pragma once

#include "config.hh"
#include "lookup.hh"
#include "pool.hh"
#include "statement.hh"

#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace sockmapd
{

class DbLookup : public Lookup
{
public:
    // Never connects here.  `state`: where down hosts are remembered.
    DbLookup(const Config& cfg, HostState state);
    explicit DbLookup(const Config& cfg);

    LookupResult lookup(std::string_view map, std::string_view key) override;
    std::optional<Clock::time_point> next_wakeup() const override { return pool_.next_wakeup(); }
    void wakeup(Clock::time_point now) override { pool_.close_idle(now); }

    // Connects and prepares one map's statement: 0 and "ok", or 78/75 and
    // the reason.  A schema no host answered for keeps its verdict.
    // `warning`: set when the map holds rows Postfix cannot reach with the
    // map's search order (statement.hh domain_rows_probe).
    int check_map(const MapConfig& map, std::string& message, std::string& warning);

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
    Pool pool_;
    std::map<std::string, StatementPlan, std::less<>> plans_;
    std::map<std::string, std::pair<int, std::string>, std::less<>> unreachable_; // schema -> check verdict
};

int check_maps_online(const Config& cfg, std::ostream& out, std::ostream& warn);

} // namespace sockmapd
