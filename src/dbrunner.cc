#include "dbrunner.hh"

#include "log.hh"
#include "mariadb.hh"
#include "rundir.hh"

namespace sockmapd
{

namespace
{

// One schema's connection and the statements prepared on it, a map each
// (declared after `conn` so they are destroyed first).
struct PreparedLink : Pool::Link {
    PreparedLink(const Endpoint& host, const DatabaseConfig& db, const std::string& database) : conn(host, db, database)
    {
    }
    std::string server_version() const override { return conn.server_version(); }

    DbConnection conn;
    std::map<std::string, DbStatement, std::less<>> stmts;
};

// The map's statement on `link`, prepared now if needed; throws DbError,
// or StatementMismatch when its parameter or column count does not fit the
// plan.
DbStatement& prepared(PreparedLink& link, const CompiledMap& map)
{
    const StatementPlan& plan = map.plan;
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
        throw StatementMismatch("postmaps \"" + map.service + "\": " + wrong);
    }
    return it->second;
}

Pool::Connector connector(const DatabaseConfig& db)
{
    return [&db](const Endpoint& host, const std::string& database) {
        return std::make_unique<PreparedLink>(host, db, database);
    };
}

// What --check-config says about an exact map holding rows Postfix never
// asks for; empty when it holds none or the probe could not tell (timed out).
std::string domain_rows_warning(PreparedLink& link, const MapConfig& map, const std::string& probe)
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

} // namespace

RunOutcome every_host_failed(const DbError& last)
{
    if (last.timed_out)
        return RunOutcome::TimedOut;
    if (is_login_error(last.code))
        return RunOutcome::LoginRefused;
    if (is_server_full(last.code))
        return RunOutcome::ServerFull;
    return RunOutcome::Unavailable;
}

MariaDbRunner::MariaDbRunner(const DatabaseConfig& db, HostState state)
    : db_(db), pool_(db_.hosts, std::move(state), db_.db_idle_timeout, connector(db_))
{
}

MariaDbRunner::MariaDbRunner(const DatabaseConfig& db) : MariaDbRunner(db, HostState(runtime_dir(), db.retry_interval))
{
}

RunOutcome MariaDbRunner::run(const CompiledMap& map, Walk walk)
{
    const std::string& name = map.service;
    std::optional<DbError> failed;
    try {
        failed = pool_.run(map.database, name, [&](Pool::Link& pooled, const Endpoint& host) {
            PreparedLink& link = static_cast<PreparedLink&>(pooled);
            try {
                DbStatement& stmt = prepared(link, map);
                // The walk learns only that a statement failed; the error
                // goes on to the pool, which fails over or gives it back.
                std::optional<DbError> error;
                walk([&](const std::vector<std::string_view>& values, std::size_t cap, Rows rows) {
                    try {
                        stmt.run(values, cap, rows);
                        return true;
                    } catch (DbError& e) {
                        error.emplace(std::move(e));
                        return false;
                    }
                });
                if (error)
                    throw DbError(std::move(*error));
            } catch (const StatementMismatch& e) {
                log_error(e.what(), {{"SOCKMAP_MAP", name}, {"SOCKMAP_DB_HOST", host.name()}});
                throw;
            } catch (const DbError& e) {
                if (!is_connection_error(e.code, e.sqlstate)) {
                    // The statement, not the server, is wrong: other hosts hold
                    // the same schema, so mail waits (TEMP) rather than bounces.
                    log_error("map " + name + ": query failed on " + host_label(host, map.database) + ": " + e.what(),
                              {{"SOCKMAP_MAP", name}, {"SOCKMAP_DB_HOST", host.name()}});
                    link.stmts.erase(name);
                }
                throw;
            }
        });
    } catch (const StatementMismatch&) {
        return RunOutcome::Mismatch;
    } catch (const DbError&) {
        return RunOutcome::StatementFailed;
    }
    return failed ? every_host_failed(*failed) : RunOutcome::Ran;
}

MapCheck MariaDbRunner::check_map(const CompiledMap& map)
{
    MapCheck c;
    if (const auto it = unreachable_.find(map.database); it != unreachable_.end())
        return it->second;
    std::optional<DbError> failed;
    try {
        failed = pool_.run(map.database, map.service, [&](Pool::Link& pooled, const Endpoint&) {
            PreparedLink& link = static_cast<PreparedLink&>(pooled);
            prepared(link, map);
            if (const auto probe = domain_rows_probe(map))
                c.warning = domain_rows_warning(link, map, *probe);
        });
    } catch (const StatementMismatch& e) {
        return {MapCheck::Verdict::Wrong, e.what(), {}};
    } catch (const DbError& e) {
        return {MapCheck::Verdict::Wrong, "cannot prepare the statement: " + std::string(e.what()), {}};
    }
    if (!failed) {
        c.message = "ok";
        return c;
    }
    // A refused login is the config's fault, not an outage.
    c.verdict = is_login_error(failed->code) ? MapCheck::Verdict::Wrong : MapCheck::Verdict::Unreachable;
    c.message = "no database host answered (last error: " + std::string(failed->what()) + ")";
    c.warning.clear();
    unreachable_[map.database] = c;
    return c;
}

} // namespace sockmapd
