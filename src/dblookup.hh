// dblookup — the map logic of a lookup answered from MariaDB.
//
// DbLookup::lookup(): an unknown map is NoSuchMap without touching the
// database.  Otherwise each of the map's KeyCandidates (mapkey.hh) in turn,
// the next only while the answer is NotFound: the domain list, the key
// parts the statement binds (statement.hh; a key that cannot match is
// NotFound without a query), then the map's prepared statement run through
// the Pool (pool.hh), which connects lazily and fails over.  The rows are
// joined by ResultJoiner.  Results: Found, NotFound, PermFail "result too
// long", TempFail when the database failed, refused the login or the map's
// statement cannot be built or run, Timeout when the last host timed out.
// Never throws from lookup().
//
// check_maps_online() is --check-config without --offline: connect and
// prepare every map's statement through the same Pool, one line per map to
// `out`; returns 0, 78 (a map's table/column/query/database/credentials are
// wrong; the line carries the database's message) or 75 (no host answered).
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
    int check_map(const MapConfig& map, std::string& message);

private:
    const StatementPlan& plan_for(const MapConfig& map);
    LookupResult lookup_key(const MapConfig& map, const StatementPlan& plan, std::string_view key);

    Config cfg_;
    Pool pool_;
    std::map<std::string, StatementPlan, std::less<>> plans_;
    std::map<std::string, std::pair<int, std::string>, std::less<>> unreachable_; // schema -> check verdict
};

int check_maps_online(const Config& cfg, std::ostream& out);

} // namespace sockmapd
