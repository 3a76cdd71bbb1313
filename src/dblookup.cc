#include "dblookup.hh"

#include "log.hh"
#include "mapkey.hh"
#include "mariadb.hh"

#include <unistd.h>

namespace sockmapd
{

namespace
{

// One schema's connection and the statements prepared on it (declared
// after `conn` so they are destroyed first).
struct DbLink : Pool::Connection {
    DbLink(const Endpoint& host, const DatabaseConfig& db, const std::string& database) : conn(host, db, database) {}
    std::string server_version() const override { return conn.server_version(); }

    DbConnection conn;
    std::map<std::string, DbStatement, std::less<>> stmts;
};

// The map's statement on `link`, prepared now if needed; throws DbError,
// or ConfigError when its parameter or column count does not fit the plan.
DbStatement& prepared(DbLink& link, const MapConfig& map, const StatementPlan& plan)
{
    auto it = link.stmts.find(map.service);
    if (it != link.stmts.end())
        return it->second;
    it = link.stmts.try_emplace(map.service, link.conn, plan.sql).first;
    // The server's own count of '?' is the final word on what the SQL means
    // (executable comments, sql_mode) - a mismatch would bind key parts to
    // the wrong places.
    const unsigned params = it->second.param_count();
    const unsigned columns = it->second.column_count();
    std::string wrong;
    if (params != plan.params.size())
        wrong = "the server counts " + std::to_string(params) + " parameters in the statement, the query binds " +
                std::to_string(plan.params.size()) + " (%s, %u, %d)";
    else if (plan.query && (columns < 1 || columns > 2))
        wrong = "the query returns " + std::to_string(columns) +
                " columns; it must select the value and, optionally, a reason";
    if (!wrong.empty()) {
        link.stmts.erase(it);
        throw ConfigError("postmaps \"" + map.service + "\": " + wrong);
    }
    return it->second;
}

Pool::Connector connector(const DatabaseConfig& db)
{
    return [&db](const Endpoint& host, const std::string& database) {
        return std::make_unique<DbLink>(host, db, database);
    };
}

// What --check-config says about an exact map holding rows Postfix never
// asks for; empty when it holds none or the probe could not tell (timed out).
std::string domain_rows_warning(DbLink& link, const MapConfig& map, const std::string& probe)
{
    bool found = false;
    try {
        DbStatement stmt(link.conn, probe);
        stmt.run({}, 16, [&](const std::vector<Column>&) {
            found = true;
            return false;
        });
    } catch (const DbError&) {
        return {};
    }
    if (!found)
        return {};
    return "postmaps \"" + map.service +
           "\": the table holds keys without a local part (a domain, \"@domain\" or \"user@\") but "
           "\"search\" is \"exact\": Postfix asks a socketmap for the full address only and never finds "
           "them; if Postfix uses this map, set \"search\" to \"access\", \"transport\" or \"virtual\" "
           "(Sendmail maps stay exact: Sendmail asks for the domain itself)";
}

std::string where(const Endpoint& host, const std::string& database)
{
    return host.name() + (database.empty() ? std::string() : " (database " + database + ")");
}

} // namespace

DbLookup::DbLookup(const Config& cfg, HostState state)
    : cfg_(cfg), pool_(cfg_.db.hosts, std::move(state), cfg_.db.db_idle_timeout, connector(cfg_.db))
{
}

DbLookup::DbLookup(const Config& cfg) : DbLookup(cfg, HostState(runtime_dir(), cfg.db.retry_interval)) {}

const StatementPlan& DbLookup::plan_for(const MapConfig& map)
{
    auto it = plans_.find(map.service);
    if (it == plans_.end())
        it = plans_.emplace(map.service, build_statement(map)).first;
    return it->second;
}

LookupResult DbLookup::lookup(std::string_view map, std::string_view key)
{
    const MapConfig* mc = cfg_.find_map(map);
    if (!mc)
        return {Outcome::NoSuchMap, {}};
    // log_debug() takes a finished string: build it only when it is wanted.
    if (log_enabled(LogLevel::Debug))
        log_debug("lookup in " + mc->service + ": " + log_escape(key), {{"SOCKMAP_MAP", map}});

    const StatementPlan* plan = nullptr;
    try {
        plan = &plan_for(*mc);
    } catch (const ConfigError& e) {
        log_error(e.what(), {{"SOCKMAP_MAP", map}});
        return {Outcome::TempFail, "map " + mc->service + " cannot be queried"};
    }
    const KeyCandidates keys(*mc, key);
    if (!keys.searchable()) {
        if (log_enabled(LogLevel::Debug))
            log_debug("map " + mc->service + ": domain longer than " + std::to_string(max_search_domain) +
                          " bytes, not searched",
                      {{"SOCKMAP_MAP", map}});
        return {Outcome::PermFail, "domain too long to search"};
    }
    // The steps that can match: the domain list and the key parts the
    // statement binds leave some out without asking, as Postfix does.
    std::vector<Step> steps;
    steps.reserve(keys.size());
    for (const std::string_view candidate : keys) {
        if (!domain_allowed(*mc, candidate)) {
            if (log_enabled(LogLevel::Debug))
                log_debug("map " + mc->service + ": " + log_escape(candidate) +
                              " outside the domain list, not looked up",
                          {{"SOCKMAP_MAP", map}});
            continue;
        }
        auto values = bind_values(*plan, candidate);
        if (!values) {
            if (log_enabled(LogLevel::Debug))
                log_debug("map " + mc->service + ": " + log_escape(candidate) +
                              " lacks the part %u/%d need, not looked up",
                          {{"SOCKMAP_MAP", map}});
            continue;
        }
        steps.push_back({candidate, std::move(*values)});
    }
    if (steps.empty())
        return {Outcome::NotFound, {}};
    return search(*mc, *plan, key, steps);
}

LookupResult DbLookup::search(const MapConfig& mc, const StatementPlan& plan, std::string_view key,
                              const std::vector<Step>& steps)
{
    const std::string& name = mc.service;
    const std::string_view map = name;
    LookupResult answer;
    std::optional<DbError> failed;
    try {
        // The whole walk is one piece of work on one connection: when it
        // breaks half-way the pool runs it again from the start on the next
        // host, and any other failure ends it.  Only NotFound moves on to a
        // shorter key: after a failure the longer key's answer is unknown,
        // and a shorter one might be wrong.
        failed = pool_.run(mc.database, name, [&](Pool::Connection& conn, const Endpoint& host) {
            DbLink& link = static_cast<DbLink&>(conn);
            try {
                DbStatement& stmt = prepared(link, mc, plan);
                for (const Step& step : steps) {
                    if (step.key != key && log_enabled(LogLevel::Debug))
                        log_debug("lookup in " + name + " as: " + log_escape(step.key), {{"SOCKMAP_MAP", map}});
                    ResultJoiner joiner(plan.existence, max_value_length, &plan.format);
                    stmt.run(step.values, max_value_length, [&](const std::vector<Column>& cols) {
                        if (cols.empty())
                            return false;
                        return joiner.add(cols[0], plan.has_reason && cols.size() > 1 ? &cols[1] : nullptr);
                    });
                    answer = joiner.finish();
                    if (answer.outcome != Outcome::NotFound)
                        break;
                }
            } catch (const ConfigError& e) {
                log_error(e.what(), {{"SOCKMAP_MAP", map}, {"SOCKMAP_DB_HOST", host.name()}});
                throw;
            } catch (const DbError& e) {
                if (!is_connection_error(e.code, e.sqlstate)) {
                    // The statement, not the server, is wrong: other hosts
                    // hold the same schema, so mail waits (TEMP) rather than
                    // bounces.
                    log_error("map " + name + ": query failed on " + where(host, mc.database) + ": " + e.what(),
                              {{"SOCKMAP_MAP", map}, {"SOCKMAP_DB_HOST", host.name()}});
                    link.stmts.erase(name);
                }
                throw;
            }
        });
    } catch (const ConfigError&) {
        return {Outcome::TempFail, "map " + name + " cannot be queried"};
    } catch (const DbError&) {
        return {Outcome::TempFail, "lookup failed in map " + name};
    }
    if (failed) {
        if (failed->timed_out)
            return {Outcome::Timeout, "database query timed out"};
        if (is_login_error(failed->code))
            return {Outcome::TempFail, "database login refused"};
        return {Outcome::TempFail, "no database host available"};
    }
    if (answer.outcome == Outcome::PermFail)
        log_error("map " + name + ": result longer than " + std::to_string(max_value_length) + " bytes, answered PERM",
                  {{"SOCKMAP_MAP", map}});
    return answer;
}

int DbLookup::check_map(const MapConfig& map, std::string& message, std::string& warning)
{
    const StatementPlan* plan = nullptr;
    try {
        plan = &plan_for(map);
    } catch (const ConfigError& e) {
        message = e.what();
        return 78;
    }
    if (const auto it = unreachable_.find(map.database); it != unreachable_.end()) {
        message = it->second.second;
        return it->second.first;
    }
    std::optional<DbError> failed;
    try {
        failed = pool_.run(map.database, map.service, [&](Pool::Connection& conn, const Endpoint&) {
            DbLink& link = static_cast<DbLink&>(conn);
            prepared(link, map, *plan);
            if (const auto probe = domain_rows_probe(map))
                warning = domain_rows_warning(link, map, *probe);
        });
    } catch (const ConfigError& e) {
        message = e.what();
        return 78;
    } catch (const DbError& e) {
        message = "cannot prepare the statement: " + std::string(e.what());
        return 78;
    }
    if (!failed) {
        message = "ok";
        return 0;
    }
    const int rc = is_login_error(failed->code) ? 78 : 75;
    message = "no database host answered (last error: " + std::string(failed->what()) + ")";
    unreachable_[map.database] = {rc, message};
    return rc;
}

int check_maps_online(const Config& cfg, std::ostream& out, std::ostream& warn)
{
    // Run as root (an administrator's check), down marks stay in this
    // process: a state file root created would be unreadable to the
    // service user's handlers afterwards.
    DbLookup db(cfg, HostState(::geteuid() == 0 ? std::string() : runtime_dir(), cfg.db.retry_interval));
    int rc = 0;
    for (const auto& map : cfg.maps) {
        std::string message, warning;
        const int r = db.check_map(map, message, warning);
        out << map.service << ": " << message << "\n";
        if (!warning.empty())
            warn << "sockmapd: warning: " << warning << "\n";
        if (r == 78 || (r == 75 && rc == 0))
            rc = r;
    }
    return rc;
}

} // namespace sockmapd
