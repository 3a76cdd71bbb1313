#include "dblookup.hh"

#include "log.hh"
#include "mariadb.hh"

#include <mysqld_error.h>

#include <algorithm>

namespace sockmapd
{

// One schema's connection, the host it goes to, and the statements
// prepared on it (declared after `conn` so they are destroyed first).
struct DbLookup::Link {
    std::string database;
    std::optional<std::size_t> host;
    std::unique_ptr<DbConnection> conn;
    std::map<std::string, DbStatement, std::less<>> stmts;
    Clock::time_point last_used{};
    bool confirmed = false; // a statement succeeded since connecting
    // --check-config: this schema had no host; later maps reuse the verdict.
    int check_rc = 0;
    std::string check_message;

    void drop()
    {
        stmts.clear();
        conn.reset();
        host.reset();
        confirmed = false;
    }
};

namespace
{

void require_identifier(const MapConfig& map, const char* field, const std::string& value)
{
    if (!valid_identifier(value))
        throw ConfigError("postmaps \"" + map.service + "\": " + field + " \"" + value +
                          "\" is not a valid identifier");
}

// Credentials or schema wrong: a configuration problem, not an outage.
bool config_connect_error(unsigned code)
{
    return code == ER_ACCESS_DENIED_ERROR || code == ER_DBACCESS_DENIED_ERROR || code == ER_BAD_DB_ERROR;
}

std::string where(const Endpoint& host, const std::string& database)
{
    return host.name() + (database.empty() ? std::string() : " (database " + database + ")");
}

} // namespace

std::string quote_identifier(std::string_view name)
{
    std::string out = "`";
    for (char c : name) {
        if (c == '`')
            out += '`';
        out += c;
    }
    out += '`';
    return out;
}

StatementPlan build_statement(const MapConfig& map)
{
    if (!map.query.empty()) {
        CompiledQuery q = compile_query(map.query, map.service);
        StatementPlan plan;
        plan.sql = std::move(q.sql);
        plan.params = std::move(q.params);
        plan.has_reason = true;
        plan.query = true;
        return plan;
    }
    if (!map.database.empty())
        require_identifier(map, "database", map.database);
    require_identifier(map, "table", map.table);
    require_identifier(map, "key", map.key);
    if (!map.value.empty())
        require_identifier(map, "value", map.value);
    if (!map.reason.empty())
        require_identifier(map, "reason", map.reason);

    StatementPlan plan;
    plan.existence = map.value.empty();
    plan.has_reason = !map.reason.empty();
    plan.sql = "SELECT " + quote_identifier(plan.existence ? map.key : map.value);
    if (plan.has_reason)
        plan.sql += ", " + quote_identifier(map.reason);
    plan.sql += " FROM ";
    if (!map.database.empty())
        plan.sql += quote_identifier(map.database) + ".";
    plan.sql += quote_identifier(map.table) + " WHERE " + quote_identifier(map.key) + " = ?";
    plan.params = {KeyPart::Whole};
    return plan;
}

std::optional<std::vector<std::string_view>> bind_values(const StatementPlan& plan, std::string_view key)
{
    const std::optional<Address> addr = split_address(key);
    std::vector<std::string_view> out;
    out.reserve(plan.params.size());
    for (KeyPart part : plan.params) {
        switch (part) {
        case KeyPart::Whole:
            out.push_back(key);
            break;
        case KeyPart::Local:
            if (!addr || addr->local.empty())
                return std::nullopt;
            out.push_back(addr->local);
            break;
        case KeyPart::Domain:
            if (!addr || addr->domain.empty())
                return std::nullopt;
            out.push_back(addr->domain);
            break;
        }
    }
    return out;
}

ResultJoiner::ResultJoiner(bool first_only, std::size_t limit, std::string format)
    : first_only_(first_only), limit_(limit), format_(std::move(format))
{
}

bool ResultJoiner::add(const Column& value, const Column* reason)
{
    if (too_long_)
        return false;
    if (value.too_long) {
        too_long_ = true;
        return false;
    }
    // A row without a value contributes nothing, its reason included.
    if (value.null || value.data.empty() || (first_only_ && !joined_.empty()))
        return true;
    if (!joined_.empty())
        joined_ += ',';
    if (format_.empty())
        joined_ += value.data;
    else
        joined_ += format_result(format_, value.data);
    if (!have_reason_ && reason && !reason->null && (reason->too_long || !reason->data.empty())) {
        if (reason->too_long) {
            too_long_ = true;
            return false;
        }
        reason_ = reason->data;
        have_reason_ = true;
    }
    if (joined_.size() + (have_reason_ ? 1 + reason_.size() : 0) > limit_) {
        too_long_ = true;
        joined_.clear();
        return false;
    }
    return true;
}

LookupResult ResultJoiner::finish() const
{
    if (too_long_)
        return {Outcome::PermFail, "result too long"};
    if (joined_.empty())
        return {Outcome::NotFound, {}};
    return {Outcome::Found, have_reason_ ? joined_ + " " + reason_ : joined_};
}

DbLookup::DbLookup(const Config& cfg)
    : cfg_(cfg), hosts_(parse_hosts(cfg_.db)), state_(runtime_dir(), cfg_.db.retry_interval)
{
}

DbLookup::~DbLookup() = default;

const StatementPlan& DbLookup::plan_for(const MapConfig& map)
{
    auto it = plans_.find(map.service);
    if (it == plans_.end())
        it = plans_.emplace(map.service, build_statement(map)).first;
    return it->second;
}

DbLookup::Link& DbLookup::link_for(const std::string& database)
{
    auto& slot = links_[database];
    if (!slot) {
        slot = std::make_unique<Link>();
        slot->database = database;
    }
    return *slot;
}

bool DbLookup::connect_next(Link& link, std::vector<bool>& tried, std::optional<DbError>& last,
                            std::optional<std::size_t> prefer)
{
    std::vector<std::size_t> order = state_.order(hosts_);
    if (prefer)
        order.insert(order.begin(), *prefer);
    for (std::size_t idx : order) {
        if (tried[idx])
            continue;
        tried[idx] = true;
        const Endpoint& host = hosts_[idx];
        try {
            link.conn = std::make_unique<DbConnection>(host, connect_options(cfg_.db, link.database));
            link.host = idx;
            link.confirmed = false;
            link.last_used = Clock::now();
            log_info("connected to database host " + where(host, link.database) + ", server " +
                         link.conn->server_version(),
                     {{"SOCKMAP_DB_HOST", host.name()}});
            return true;
        } catch (const DbError& e) {
            log_warning("cannot connect to database host " + where(host, link.database) + ": " + e.what(),
                        {{"SOCKMAP_DB_HOST", host.name()}});
            state_.mark_down(host);
            last = e;
        }
    }
    return false;
}

DbStatement& DbLookup::statement(Link& link, const MapConfig& map, const StatementPlan& plan)
{
    auto it = link.stmts.find(map.service);
    if (it != link.stmts.end())
        return it->second;
    it = link.stmts.try_emplace(map.service, *link.conn, plan.sql).first;
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

// One execution of the map's statement on `link`'s connection; throws
// DbError, or ConfigError from statement().
LookupResult DbLookup::run_once(Link& link, const MapConfig& map, const StatementPlan& plan,
                                const std::vector<std::string_view>& values)
{
    DbStatement& stmt = statement(link, map, plan);
    ResultJoiner joiner(plan.existence, kMaxResult, map.result_format);
    stmt.run(values, kMaxResult, [&](const std::vector<Column>& cols) {
        if (cols.empty())
            return false;
        return joiner.add(cols[0], plan.has_reason && cols.size() > 1 ? &cols[1] : nullptr);
    });
    link.last_used = Clock::now();
    if (!link.confirmed) {
        state_.mark_up(hosts_[*link.host]);
        link.confirmed = true;
    }
    LookupResult r = joiner.finish();
    if (r.outcome == Outcome::PermFail)
        log_error("map " + map.service + ": result longer than " + std::to_string(kMaxResult) + " bytes, answered PERM",
                  {{"SOCKMAP_MAP", map.service}});
    return r;
}

LookupResult DbLookup::lookup(std::string_view map, std::string_view key)
{
    const MapConfig* mc = cfg_.find_map(map);
    if (!mc)
        return {Outcome::NoSuchMap, {}};
    const std::string name(map);
    // log_debug() takes a finished string: build it only when it is wanted.
    if (log_enabled(LogLevel::Debug))
        log_debug("lookup in " + name + ": " + log_escape(key), {{"SOCKMAP_MAP", map}});

    const StatementPlan* plan = nullptr;
    try {
        plan = &plan_for(*mc);
    } catch (const ConfigError& e) {
        log_error(e.what(), {{"SOCKMAP_MAP", map}});
        return {Outcome::TempFail, "map " + name + " cannot be queried"};
    }
    if (!mc->lowercase && mc->strip_extension.empty())
        return lookup_key(*mc, *plan, key); // the key as sent: no candidate list to build
    LookupResult r{Outcome::NotFound, {}};
    for (const std::string& candidate : key_candidates(*mc, key)) {
        if (candidate != key && log_enabled(LogLevel::Debug))
            log_debug("lookup in " + name + " as: " + log_escape(candidate), {{"SOCKMAP_MAP", map}});
        // Only NotFound moves on to the reduced key: after a failure the
        // full key's answer is unknown, and the reduced one might be wrong.
        r = lookup_key(*mc, *plan, candidate);
        if (r.outcome != Outcome::NotFound)
            break;
    }
    return r;
}

LookupResult DbLookup::lookup_key(const MapConfig& mc, const StatementPlan& plan, std::string_view key)
{
    const std::string& name = mc.service;
    const std::string_view map = name;
    if (!domain_allowed(mc, key)) {
        if (log_enabled(LogLevel::Debug))
            log_debug("map " + name + ": key outside the domain list, not looked up", {{"SOCKMAP_MAP", map}});
        return {Outcome::NotFound, {}};
    }
    const auto values = bind_values(plan, key);
    if (!values) {
        if (log_enabled(LogLevel::Debug))
            log_debug("map " + name + ": key lacks the part %u/%d need, not looked up", {{"SOCKMAP_MAP", map}});
        return {Outcome::NotFound, {}};
    }

    Link& link = link_for(mc.database);
    std::vector<bool> tried(hosts_.size(), false);
    if (link.conn)
        tried[*link.host] = true; // a kept connection is this request's first try
    std::optional<DbError> last;
    std::optional<std::size_t> prefer;
    bool stale_retry_done = false;
    for (;;) {
        bool opened_now = false;
        if (!link.conn) {
            if (!connect_next(link, tried, last, prefer))
                break;
            opened_now = true;
            prefer.reset();
        }
        const Endpoint& host = hosts_[*link.host];
        try {
            return run_once(link, mc, plan, *values);
        } catch (const ConfigError& e) {
            log_error(e.what(), {{"SOCKMAP_MAP", map}, {"SOCKMAP_DB_HOST", host.name()}});
            link.last_used = Clock::now();
            return {Outcome::TempFail, "map " + name + " cannot be queried"};
        } catch (const DbError& e) {
            if (!is_connection_error(e.code, e.sqlstate)) {
                // The statement, not the server, is wrong: other hosts hold
                // the same schema, so mail waits (TEMP) rather than bounces.
                log_error("map " + name + ": query failed on " + where(host, link.database) + ": " + e.what(),
                          {{"SOCKMAP_MAP", map}, {"SOCKMAP_DB_HOST", host.name()}});
                link.stmts.erase(name);
                link.last_used = Clock::now();
                return {Outcome::TempFail, "lookup failed in map " + name};
            }
            log_warning("database host " + where(host, link.database) + " failed during map " + name + ": " + e.what(),
                        {{"SOCKMAP_MAP", map}, {"SOCKMAP_DB_HOST", host.name()}});
            const std::size_t idx = *link.host;
            link.drop();
            last = e;
            if (!opened_now && !e.timed_out && !stale_retry_done) {
                // A connection kept from an earlier request may just have gone
                // stale (server restarted, wait_timeout): one fresh connection
                // to the same host before calling it down.
                stale_retry_done = true;
                tried[idx] = false;
                prefer = idx;
            } else {
                state_.mark_down(hosts_[idx]);
                if (e.timed_out)
                    drop_links_to(idx);
            }
        }
    }
    if (last && last->timed_out)
        return {Outcome::Timeout, "database query timed out"};
    return {Outcome::TempFail, "no database host available"};
}

// A host that let a query time out is hung for every schema on it: the
// other schemas' connections to it go too, so their next lookups fail over
// at once instead of each waiting read_timeout on the same host.
void DbLookup::drop_links_to(std::size_t host)
{
    for (auto& [db, link] : links_)
        if (link->conn && link->host == host)
            link->drop();
}

std::optional<Clock::time_point> DbLookup::next_wakeup() const
{
    if (cfg_.db.db_idle_timeout == 0)
        return std::nullopt;
    std::optional<Clock::time_point> next;
    for (const auto& [db, link] : links_) {
        if (!link->conn)
            continue;
        auto t = link->last_used + std::chrono::seconds(cfg_.db.db_idle_timeout);
        if (!next || t < *next)
            next = t;
    }
    return next;
}

void DbLookup::wakeup(Clock::time_point now)
{
    if (cfg_.db.db_idle_timeout == 0)
        return;
    for (auto& [db, link] : links_) {
        if (!link->conn || link->last_used + std::chrono::seconds(cfg_.db.db_idle_timeout) > now)
            continue;
        log_info("closing idle database connection to " + where(hosts_[*link->host], link->database));
        link->drop();
    }
}

int DbLookup::check_map(const MapConfig& map, std::string& message)
{
    const StatementPlan* plan = nullptr;
    try {
        plan = &plan_for(map);
    } catch (const ConfigError& e) {
        message = e.what();
        return 78;
    }
    Link& link = link_for(map.database);
    if (link.check_rc != 0) {
        message = link.check_message;
        return link.check_rc;
    }
    std::vector<bool> tried(hosts_.size(), false);
    std::optional<DbError> last;
    for (;;) {
        if (!link.conn && !connect_next(link, tried, last, std::nullopt))
            break;
        try {
            statement(link, map, *plan);
            if (!link.confirmed) {
                state_.mark_up(hosts_[*link.host]);
                link.confirmed = true;
            }
            message = "ok";
            return 0;
        } catch (const ConfigError& e) {
            message = e.what();
            return 78;
        } catch (const DbError& e) {
            if (!is_connection_error(e.code, e.sqlstate)) {
                message = "cannot prepare the statement: " + std::string(e.what());
                return 78;
            }
            state_.mark_down(hosts_[*link.host]);
            link.drop();
            last = e;
        }
    }
    link.check_rc = last && config_connect_error(last->code) ? 78 : 75;
    link.check_message = "no database host answered";
    if (last)
        link.check_message += " (last error: " + std::string(last->what()) + ")";
    message = link.check_message;
    return link.check_rc;
}

int check_maps_online(const Config& cfg, std::ostream& out)
{
    std::unique_ptr<DbLookup> db;
    try {
        db = std::make_unique<DbLookup>(cfg);
    } catch (const ConfigError& e) {
        out << e.what() << "\n";
        return 78;
    }
    int rc = 0;
    for (const auto& map : cfg.maps) {
        std::string message;
        const int r = db->check_map(map, message);
        out << map.service << ": " << message << "\n";
        if (r == 78 || (r == 75 && rc == 0))
            rc = r;
    }
    return rc;
}

} // namespace sockmapd
