#include "config.hh"

#include "jsonread.hh"
#include "socketmap.hh" // max_map_name_length
#include "util.hh"

#include <json/json.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <sys/stat.h>

namespace sockmapd
{

namespace
{

constexpr std::size_t max_config_size = 1 << 20;
constexpr std::size_t max_init_command = 4096;

LogLevel parse_level(const std::string& s, const std::string& path)
{
    const std::string l = ascii_lower(s);
    if (l == "error" || l == "err")
        return LogLevel::Error;
    if (l == "warning" || l == "warn")
        return LogLevel::Warning;
    if (l == "info" || l == "notice" || l.empty())
        return LogLevel::Info;
    if (l == "debug")
        return LogLevel::Debug;
    fail_at(path, "must be one of error, warning, info, debug, not \"" + s + "\"");
}

void check_port_text(const std::string& s, const std::string& path)
{
    if (!parse_port(s))
        fail_at(path, "must be a port number 1-65535, not \"" + s + "\"");
}

// Each is one SQL statement the server checks on connect; here only what
// could never work: empty text, or a NUL byte (the C API takes C strings).
void check_init_commands(const std::vector<std::string>& cmds, const std::string& path)
{
    for (std::size_t i = 0; i < cmds.size(); ++i) {
        const std::string& c = cmds[i];
        const std::string where = cmds.size() > 1 ? path + "[" + std::to_string(i) + "]" : path;
        if (std::all_of(c.begin(), c.end(), [](unsigned char ch) { return std::isspace(ch); }))
            fail_at(where, "is empty: give an SQL statement such as \"SET SESSION wsrep_sync_wait = 1\"");
        if (c.find('\0') != std::string::npos)
            fail_at(where, "contains a NUL byte");
        if (c.size() > max_init_command)
            fail_at(where, "is longer than " + std::to_string(max_init_command) + " bytes");
    }
}

// A user or group given by number must fit an id: privileges.cc reads
// digits that name no account as the id itself.
void check_account_text(const std::string& s, const std::string& path, const char* what)
{
    if (!all_digits(s))
        return;
    constexpr unsigned long long max_id = 4294967294ULL; // (uid_t)-1 means "no id"
    if (!parse_decimal(s, max_id))
        fail_at(path, "\"" + s + "\" is too large for a " + what + " id (at most " + std::to_string(max_id) + ")");
}

// sysconfig.allow: every entry checked, each problem named with its index.
AllowList parse_allow(Object& o, Problems& p)
{
    const Json::Value* v = o.get("allow");
    if (!v)
        return {};
    const std::vector<std::string> entries = o.list("allow");
    if (v->isArray() && v->empty())
        p.add("sysconfig.allow: an empty list would refuse every client: list the addresses that may connect "
              "(\"unix\" for a unix socket), or leave the key out");
    std::vector<AllowRule> rules;
    for (std::size_t i = 0; i < entries.size(); ++i) {
        std::string why;
        if (const auto r = parse_allow_rule(entries[i], why))
            rules.push_back(*r);
        else
            p.add((v->isArray() ? "sysconfig.allow[" + std::to_string(i) + "]" : "sysconfig.allow") + ": " + why);
    }
    return AllowList(std::move(rules));
}

SysConfig parse_sys(const Json::Value& v, Problems& p)
{
    SysConfig s;
    Object o(v, "sysconfig", p);
    s.port = o.str("port", s.port);
    p.guard([&] { check_port_text(s.port, "sysconfig.port"); });
    s.listen = o.str("listen", s.listen);
    if (s.listen.empty())
        s.listen = "0.0.0.0";
    s.logfile = o.str("logfile");
    const std::string level = o.str("loglevel", "info");
    p.guard([&] { s.loglevel = parse_level(level, "sysconfig.loglevel"); });
    s.run_as_user = o.str("run_as_user");
    p.guard([&] { check_account_text(s.run_as_user, "sysconfig.run_as_user", "user"); });
    s.run_as_group = o.str("run_as_group");
    p.guard([&] { check_account_text(s.run_as_group, "sysconfig.run_as_group", "group"); });
    s.idle_timeout = o.num("idle_timeout", s.idle_timeout, 1, 86400);
    s.max_session = o.num("max_session", s.max_session, 0, 7 * 86400);
    s.allow = parse_allow(o, p);
    s.max_use = o.num("max_use", s.max_use, 1, 1000000);
    s.max_idle = o.num("max_idle", s.max_idle, 1, 86400);
    s.core_dumps = o.boolean("core_dumps", false);
    o.finish();
    return s;
}

void parse_tls(const Json::Value& v, TlsConfig& tls, Problems& p)
{
    Object to(v, "database.tls", p);
    tls.ca = to.str("ca");
    tls.cert = to.str("cert");
    tls.key = to.str("key");
    tls.verify_server = to.boolean("verify_server", true);
    to.finish();
    if (tls.cert.empty() != tls.key.empty())
        p.add("database.tls: cert and key go together");
}

DatabaseConfig parse_database(const Json::Value& v, Problems& p)
{
    DatabaseConfig d;
    Object o(v, "database", p);
    const std::vector<std::string> hosts = o.list("host");
    d.port = o.num("port", d.port, 1, 65535);
    if (hosts.empty())
        p.add("database.host: missing (required): at least one database host");
    for (std::size_t i = 0; i < hosts.size(); ++i) {
        std::string why;
        if (const auto ep = parse_endpoint(hosts[i], d.port, &why))
            d.hosts.push_back(*ep);
        else
            p.add((hosts.size() == 1 ? "database.host" : "database.host[" + std::to_string(i) + "]") + ": " + why);
    }
    d.username = o.str("username");
    d.password = o.str("password");
    d.password_file = o.str("password_file");
    if (!d.password.empty() && !d.password_file.empty())
        p.add("database.password_file: set either password or password_file, not both");
    d.connect_timeout = o.num("connect_timeout", d.connect_timeout, 1, 3600);
    d.read_timeout = o.num("read_timeout", d.read_timeout, 1, 3600);
    d.write_timeout = o.num("write_timeout", d.write_timeout, 1, 3600);
    d.db_idle_timeout = o.num("db_idle_timeout", d.db_idle_timeout, 1, 86400);
    d.retry_interval = o.num("retry_interval", d.retry_interval, 0, 86400);
    d.init_command = o.list("init_command");
    p.guard([&] { check_init_commands(d.init_command, "database.init_command"); });
    if (const Json::Value* t = o.get("tls"))
        parse_tls(*t, d.tls, p);
    o.finish();
    return d;
}

void parse_map_fields(CompiledMap& m, Object& o, const std::string& path, Problems& p);

CompiledMap parse_map(const Json::Value& v, const std::string& path, Problems& outer)
{
    CompiledMap m;
    Problems p;
    Object o(v, path, p);
    if (!v.isObject()) {
        outer.merge(p, "");
        return m;
    }
    m.service = o.str("service");
    bool named = false;
    if (m.service.empty())
        p.add(path + ".service: missing (required): the map name clients ask for");
    else if (!printable_name(m.service) || m.service.size() > max_map_name_length)
        p.add(path + ".service: \"" + m.service + "\" must be a word without spaces, at most " +
              std::to_string(max_map_name_length) + " bytes");
    else
        named = true;
    parse_map_fields(m, o, path, p);
    // Past the name, messages name the map as well as its place in the list.
    outer.merge(p, named ? "; map \"" + m.service + "\"" : "");
    return m;
}

SearchOrder parse_search(const std::string& s, const std::string& path)
{
    if (s == "exact" || s.empty())
        return SearchOrder::Exact;
    if (s == "access")
        return SearchOrder::Access;
    if (s == "transport")
        return SearchOrder::Transport;
    if (s == "virtual")
        return SearchOrder::Virtual;
    fail_at(path, "must be one of exact, access, transport, virtual, not \"" + s + "\"");
}

// `search` and the parent domain style that goes with it.
void parse_search_fields(MapConfig& m, Object& o, const std::string& path, Problems& p)
{
    const std::string search = o.str("search", "exact");
    p.guard([&] { m.search = parse_search(search, path + ".search"); });
    m.parent_matches_subdomains = m.search == SearchOrder::Access;
    if (o.get("parent_domain_matches_subdomains")) {
        m.parent_matches_subdomains = o.boolean("parent_domain_matches_subdomains", m.parent_matches_subdomains);
        if (m.search != SearchOrder::Access && m.search != SearchOrder::Transport)
            p.add(path + ".parent_domain_matches_subdomains: only for \"search\": \"access\" or \"transport\", "
                         "the orders that try parent domains");
    }
}

CachePolicy parse_cache(const Json::Value& v, const std::string& path, Problems& p)
{
    CachePolicy c;
    Object o(v, path, p);
    c.ttl = o.num("ttl", 0, 0, 86400);
    c.negative_ttl = o.num("negative_ttl", c.ttl, 0, 86400);
    c.stale_if_error = o.num("stale_if_error", 0, 0, 7 * 86400);
    o.finish();
    return c;
}

void parse_map_fields(CompiledMap& m, Object& o, const std::string& path, Problems& p)
{
    m.database = o.str("database");
    if (m.database.empty())
        p.add(path + ".database: missing (required)");
    m.table = o.str("table");
    m.key = o.str("key");
    m.value = o.str("value");
    m.reason = o.str("reason");
    m.query = o.str("query");
    m.result_format = o.str("result_format");
    m.lowercase = o.boolean("lowercase", false);
    m.strip_extension = o.str("strip_extension");
    for (auto d : o.list("domain")) {
        d = ascii_lower(d);
        if (!printable_name(d) || d.find('@') != std::string::npos)
            p.add(path + ".domain: \"" + d + "\" is not a domain name");
        else
            m.domains.push_back(d);
    }
    parse_search_fields(m, o, path, p);
    if (const Json::Value* c = o.get("cache"))
        m.cache = parse_cache(*c, path + ".cache", p);
    o.finish();

    // The map's one compilation: what a lookup would refuse is refused here.
    if (auto plan = plan_map(m, [&](std::string_view field, const std::string& what) {
            p.add(path + "." + std::string(field) + ": " + what);
        }))
        m.plan = std::move(*plan);
    if (m.strip_extension.size() > 8 || (!m.strip_extension.empty() && !printable_name(m.strip_extension)) ||
        m.strip_extension.find('@') != std::string::npos)
        p.add(path + ".strip_extension: must be a few delimiter characters such as \"+\"");
}

void parse_maps(const Json::Value* maps, Config& c, Problems& p)
{
    if (!maps || !maps->isArray() || maps->empty()) {
        p.add("postmaps: must be a list with at least one map");
        return;
    }
    for (Json::ArrayIndex i = 0; i < maps->size(); ++i) {
        const std::string path = "postmaps[" + std::to_string(i) + "]";
        CompiledMap m = parse_map((*maps)[i], path, p);
        for (std::size_t j = 0; j < c.maps.size(); ++j)
            if (!m.service.empty() && c.maps[j].service == m.service)
                p.add(path + ".service: \"" + m.service + "\" is already used by postmaps[" + std::to_string(j) + "]");
        c.maps.push_back(std::move(m));
    }
}

// util's read_file(), its failures as ConfigError naming `what`.
std::string read_config_file(const std::string& path, const std::string& what)
{
    std::string text;
    switch (const int err = read_file(path, text, max_config_size)) {
    case 0:
        return text;
    case EISDIR:
        fail_at(what, path + " is a directory, not a file");
    case EFBIG:
        fail_at(what, path + " is larger than 1 MiB");
    default:
        fail_at(what, "cannot read " + path + ": " + std::strerror(err));
    }
}

std::string resolve_password_file(const std::string& file, const std::string& config_path)
{
    if (file.front() == '/')
        return file;
    if (const char* creds = std::getenv("CREDENTIALS_DIRECTORY"); creds && *creds)
        return std::string(creds) + "/" + file;
    const auto slash = config_path.rfind('/');
    return slash == std::string::npos ? file : config_path.substr(0, slash + 1) + file;
}

} // namespace

Config parse_config(std::string_view text, const std::string& origin)
{
    const Json::Value root = parse_json_object(text, origin);
    Problems p;
    Config c;
    Object top(root, "", p);
    if (const Json::Value* s = top.get("sysconfig"))
        c.sys = parse_sys(*s, p);
    if (const Json::Value* db = top.get("database"))
        c.db = parse_database(*db, p);
    else
        p.add("database: missing (required)");
    parse_maps(top.get("postmaps"), c, p);
    top.finish();
    p.raise_if_any(origin);
    return c;
}

Config load_config(const std::string& path)
{
    Config c = parse_config(read_config_file(path, "config"), path);
    if (!c.db.password_file.empty()) {
        const std::string file = resolve_password_file(c.db.password_file, path);
        std::string pw = read_config_file(file, path + ": database.password_file");
        while (!pw.empty() && (pw.back() == '\n' || pw.back() == '\r'))
            pw.pop_back();
        c.db.password = std::move(pw);
    } else if (!c.db.password.empty()) {
        struct stat st {
        };
        if (stat(path.c_str(), &st) == 0 && (st.st_mode & S_IROTH))
            c.warnings.push_back(path + " holds database.password and is readable by others: chmod o-r " + path +
                                 ", or use password_file");
    }
    return c;
}

} // namespace sockmapd
