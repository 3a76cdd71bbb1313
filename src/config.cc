#include "config.hh"

#include "failover.hh"
#include "mapkey.hh"

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

namespace sockmapd {

namespace {

constexpr std::size_t max_config_size = 1 << 20;
constexpr std::size_t max_init_command = 4096;

[[noreturn]] void fail(const std::string& path, const std::string& what)
{
    throw ConfigError(path + ": " + what);
}

// A JSON object whose members are read by name; finish() reports the
// members nobody asked for, which catches typos such as "tabel".
class Object {
public:
    Object(const Json::Value& v, std::string path) : v_(v), path_(std::move(path))
    {
        if (!v_.isObject())
            fail(path_, "must be an object");
    }

    std::string member_path(const char* name) const { return path_.empty() ? name : path_ + "." + name; }

    const Json::Value* get(const char* name)
    {
        known_.insert(name);
        const Json::Value* m = v_.find(name, name + std::strlen(name));
        return m && !m->isNull() ? m : nullptr;
    }

    // Strings; numbers are taken as their decimal text ("port": 2224).
    std::string str(const char* name, std::string def = {})
    {
        const Json::Value* m = get(name);
        if (!m)
            return def;
        if (m->isString())
            return m->asString();
        if (m->isIntegral())
            return m->isUInt64() ? std::to_string(m->asUInt64()) : std::to_string(m->asInt64());
        fail(member_path(name), "must be a string");
    }

    // Non-negative integers, as numbers or as strings of digits (Go format).
    unsigned num(const char* name, unsigned def, unsigned min, unsigned max)
    {
        const Json::Value* m = get(name);
        if (!m)
            return def;
        unsigned long long n = 0;
        if (m->isUInt64()) {
            n = m->asUInt64();
        } else if (m->isString()) {
            const std::string s = m->asString();
            if (s.empty() || s.size() > 10 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
                fail(member_path(name), "must be a whole number, not \"" + s + "\"");
            n = std::stoull(s);
        } else {
            fail(member_path(name), "must be a whole number");
        }
        if (n < min || n > max)
            fail(member_path(name), "must be between " + std::to_string(min) + " and " + std::to_string(max));
        return static_cast<unsigned>(n);
    }

    // Booleans, also as "true"/"false"/"yes"/"no"/"1"/"0" strings.
    bool boolean(const char* name, bool def)
    {
        const Json::Value* m = get(name);
        if (!m)
            return def;
        if (m->isBool())
            return m->asBool();
        if (m->isString()) {
            const std::string s = m->asString();
            if (s == "true" || s == "yes" || s == "1" || s == "on")
                return true;
            if (s == "false" || s == "no" || s == "0" || s == "off" || s.empty())
                return false;
        }
        if (m->isIntegral() && (m->asInt64() == 0 || m->asInt64() == 1))
            return m->asInt64() == 1;
        fail(member_path(name), "must be true or false");
    }

    // A list of strings; a single string is a list of one.
    std::vector<std::string> list(const char* name)
    {
        const Json::Value* m = get(name);
        std::vector<std::string> out;
        if (!m)
            return out;
        if (m->isString()) {
            out.push_back(m->asString());
            return out;
        }
        if (!m->isArray())
            fail(member_path(name), "must be a string or a list of strings");
        for (Json::ArrayIndex i = 0; i < m->size(); ++i) {
            if (!(*m)[i].isString())
                fail(member_path(name) + "[" + std::to_string(i) + "]", "must be a string");
            out.push_back((*m)[i].asString());
        }
        return out;
    }

    void finish() const
    {
        for (const auto& name : v_.getMemberNames())
            if (!known_.count(name))
                fail(path_.empty() ? name : path_ + "." + name, "unknown key");
    }

private:
    const Json::Value& v_;
    std::string path_;
    std::set<std::string> known_;
};

LogLevel parse_level(const std::string& s, const std::string& path)
{
    std::string l = s;
    std::transform(l.begin(), l.end(), l.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (l == "error" || l == "err")
        return LogLevel::Error;
    if (l == "warning" || l == "warn")
        return LogLevel::Warning;
    if (l == "info" || l == "notice" || l.empty())
        return LogLevel::Info;
    if (l == "debug")
        return LogLevel::Debug;
    fail(path, "must be one of error, warning, info, debug, not \"" + s + "\"");
}

bool has_control_or_space(std::string_view s)
{
    return std::any_of(s.begin(), s.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u <= 0x20 || u == 0x7f;
    });
}

void check_port_text(const std::string& s, const std::string& path)
{
    if (s.empty() || s.size() > 5 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        std::stoul(s) == 0 || std::stoul(s) > 65535)
        fail(path, "must be a port number 1-65535, not \"" + s + "\"");
}

// Percent escapes allowed in a template; anything else names the map.
void check_template(const std::string& t, const std::string& allowed, const std::string& path)
{
    for (std::size_t i = 0; i < t.size(); ++i) {
        if (t[i] != '%')
            continue;
        if (i + 1 == t.size())
            fail(path, "ends with a lone '%' (write %% for a percent sign)");
        const char c = t[++i];
        if (c == '%' || allowed.find(c) != std::string::npos)
            continue;
        std::string known;
        for (const char a : allowed)
            known += std::string("%") + a + ", ";
        fail(path, std::string("unknown escape %") + c + " (use " + known + "or %%)");
    }
}

bool uses_escape(const std::string& t, char esc)
{
    for (std::size_t i = 0; i + 1 < t.size(); ++i) {
        if (t[i] != '%')
            continue;
        if (t[i + 1] == esc)
            return true;
        ++i;    // skip the escaped character, "%%s" is a literal "%s"
    }
    return false;
}

void check_identifier(const std::string& s, const std::string& path, bool required)
{
    if (s.empty()) {
        if (required)
            fail(path, "missing (required)");
        return;
    }
    if (!valid_identifier(s))
        fail(path, "\"" + s + "\" is not a valid identifier (letters, digits, _ and $, at most 64)");
}

// Each is one SQL statement the server checks on connect; here only what
// could never work: empty text, or a NUL byte (the C API takes C strings).
void check_init_commands(const std::vector<std::string>& cmds, const std::string& path)
{
    for (std::size_t i = 0; i < cmds.size(); ++i) {
        const std::string& c = cmds[i];
        const std::string where = cmds.size() > 1 ? path + "[" + std::to_string(i) + "]" : path;
        if (std::all_of(c.begin(), c.end(), [](unsigned char ch) { return std::isspace(ch); }))
            fail(where, "is empty: give an SQL statement such as \"SET SESSION wsrep_sync_wait = 1\"");
        if (c.find('\0') != std::string::npos)
            fail(where, "contains a NUL byte");
        if (c.size() > max_init_command)
            fail(where, "is longer than " + std::to_string(max_init_command) + " bytes");
    }
}

SysConfig parse_sys(const Json::Value& v)
{
    SysConfig s;
    Object o(v, "sysconfig");
    s.port = o.str("port", s.port);
    check_port_text(s.port, "sysconfig.port");
    s.listen = o.str("listen", s.listen);
    if (s.listen.empty())
        s.listen = "127.0.0.1";
    s.logfile = o.str("logfile");
    s.loglevel = parse_level(o.str("loglevel", "info"), "sysconfig.loglevel");
    s.run_as_user = o.str("run_as_user");
    s.run_as_group = o.str("run_as_group");
    s.idle_timeout = o.num("idle_timeout", s.idle_timeout, 1, 86400);
    s.max_session = o.num("max_session", s.max_session, 1, 7 * 86400);
    o.finish();
    return s;
}

DatabaseConfig parse_database(const Json::Value& v)
{
    DatabaseConfig d;
    Object o(v, "database");
    d.hosts = o.list("host");
    d.port = o.num("port", d.port, 1, 65535);
    parse_hosts(d); // the same parser the lookups use: what loads, connects
    d.username = o.str("username");
    d.password = o.str("password");
    d.password_file = o.str("password_file");
    if (!d.password.empty() && !d.password_file.empty())
        fail("database.password_file", "set either password or password_file, not both");
    d.connect_timeout = o.num("connect_timeout", d.connect_timeout, 1, 3600);
    d.read_timeout = o.num("read_timeout", d.read_timeout, 1, 3600);
    d.write_timeout = o.num("write_timeout", d.write_timeout, 1, 3600);
    d.db_idle_timeout = o.num("db_idle_timeout", d.db_idle_timeout, 1, 86400);
    d.retry_interval = o.num("retry_interval", d.retry_interval, 0, 86400);
    d.init_command = o.list("init_command");
    check_init_commands(d.init_command, "database.init_command");
    if (const Json::Value* t = o.get("tls")) {
        Object to(*t, "database.tls");
        d.tls.ca = to.str("ca");
        d.tls.cert = to.str("cert");
        d.tls.key = to.str("key");
        d.tls.verify_server = to.boolean("verify_server", true);
        to.finish();
        if (d.tls.cert.empty() != d.tls.key.empty())
            fail("database.tls", "cert and key go together");
    }
    o.finish();
    return d;
}

void parse_map_fields(MapConfig& m, Object& o, const std::string& path);

MapConfig parse_map(const Json::Value& v, const std::string& path)
{
    MapConfig m;
    Object o(v, path);
    m.service = o.str("service");
    if (m.service.empty())
        fail(path + ".service", "missing (required): the map name clients ask for");
    if (has_control_or_space(m.service) || m.service.size() > 100)
        fail(path + ".service", "\"" + m.service + "\" must be a word without spaces, at most 100 bytes");
    // Past this point messages name the map as well as its place in the list.
    try {
        parse_map_fields(m, o, path);
    } catch (const ConfigError& e) {
        throw ConfigError(std::string(e.what()) + "; map \"" + m.service + "\"");
    }
    return m;
}

void parse_map_fields(MapConfig& m, Object& o, const std::string& path)
{
    m.database = o.str("database");
    check_identifier(m.database, path + ".database", true);
    m.table = o.str("table");
    m.key = o.str("key");
    m.value = o.str("value");
    m.reason = o.str("reason");
    m.query = o.str("query");
    m.result_format = o.str("result_format");
    m.lowercase = o.boolean("lowercase", false);
    m.strip_extension = o.str("strip_extension");
    for (auto d : o.list("domain")) {
        std::transform(d.begin(), d.end(), d.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        if (d.empty() || has_control_or_space(d) || d.find('@') != std::string::npos)
            fail(path + ".domain", "\"" + d + "\" is not a domain name");
        m.domains.push_back(d);
    }
    o.finish();

    if (!m.query.empty()) {
        if (!m.table.empty() || !m.key.empty() || !m.value.empty() || !m.reason.empty())
            fail(path + ".query", "give either query or table/key/value/reason, not both");
        check_template(m.query, "sud", path + ".query");
        if (!uses_escape(m.query, 's') && !uses_escape(m.query, 'u') && !uses_escape(m.query, 'd'))
            fail(path + ".query", "uses none of %s, %u, %d: it would not depend on the key");
        // The compiler the lookups use, so --offline sees what they would refuse.
        try {
            compile_query(m.query, m.service);
        } catch (const ConfigError& e) {
            std::string why = e.what();
            if (const auto at = why.find(": query "); at != std::string::npos)
                why.erase(0, at + 8);
            fail(path + ".query", why);
        }
    } else {
        check_identifier(m.table, path + ".table", true);
        check_identifier(m.key, path + ".key", true);
        check_identifier(m.value, path + ".value", false);
        check_identifier(m.reason, path + ".reason", false);
    }
    check_template(m.result_format, "s", path + ".result_format");
    if (m.strip_extension.size() > 8 || has_control_or_space(m.strip_extension) ||
        m.strip_extension.find('@') != std::string::npos)
        fail(path + ".strip_extension", "must be a few delimiter characters such as \"+\"");
}

std::string read_file(const std::string& path, const std::string& what)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        fail(what, "cannot read " + path + ": " + std::strerror(errno));
    // Read in small pieces: sizing the string to the 1 MiB limit up front
    // zero-fills (and faults in) a megabyte in every handler.
    std::string text;
    char chunk[16384];
    while (in.read(chunk, sizeof chunk) || in.gcount() > 0) {
        text.append(chunk, static_cast<std::size_t>(in.gcount()));
        if (text.size() > max_config_size)
            fail(what, path + " is larger than 1 MiB");
    }
    return text;
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

bool valid_identifier(std::string_view s)
{
    if (s.empty() || s.size() > 64)
        return false;
    return std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '$';
    });
}

const MapConfig* Config::find_map(std::string_view service) const
{
    for (const auto& m : maps)
        if (m.service == service)
            return &m;
    return nullptr;
}

Config parse_config(std::string_view text, const std::string& origin)
{
    Json::CharReaderBuilder builder;
    Json::CharReaderBuilder::strictMode(&builder.settings_);
    builder["collectComments"] = false;
    const std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
    Json::Value root;
    std::string errors;
    bool parsed = false;
    try {
        parsed = reader->parse(text.data(), text.data() + text.size(), &root, &errors);
    } catch (const std::exception& e) {
        // jsoncpp throws for some inputs instead of reporting them (nesting
        // past its depth limit); a bad file must still be exit 78, not abort.
        errors = e.what();
    }
    if (!parsed) {
        std::replace(errors.begin(), errors.end(), '\n', ' ');
        while (!errors.empty() && errors.back() == ' ')
            errors.pop_back();
        throw ConfigError(origin + ": not valid JSON: " + errors);
    }

    Config c;
    Object top(root, "");
    if (const Json::Value* s = top.get("sysconfig"))
        c.sys = parse_sys(*s);
    const Json::Value* db = top.get("database");
    if (!db)
        fail("database", "missing (required)");
    c.db = parse_database(*db);
    const Json::Value* maps = top.get("postmaps");
    if (!maps || !maps->isArray() || maps->empty())
        fail("postmaps", "must be a list with at least one map");
    for (Json::ArrayIndex i = 0; i < maps->size(); ++i) {
        const std::string path = "postmaps[" + std::to_string(i) + "]";
        MapConfig m = parse_map((*maps)[i], path);
        for (std::size_t j = 0; j < c.maps.size(); ++j)
            if (c.maps[j].service == m.service)
                fail(path + ".service", "\"" + m.service + "\" is already used by postmaps[" + std::to_string(j) + "]");
        c.maps.push_back(std::move(m));
    }
    top.finish();
    return c;
}

Config load_config(const std::string& path)
{
    const std::string text = read_file(path, "config");
    Config c;
    try {
        c = parse_config(text, path);
    } catch (const ConfigError& e) {
        const std::string what = e.what();
        if (what.rfind(path + ":", 0) == 0)
            throw;
        throw ConfigError(path + ": " + what);
    }
    if (!c.db.password_file.empty()) {
        const std::string file = resolve_password_file(c.db.password_file, path);
        std::string pw = read_file(file, path + ": database.password_file");
        while (!pw.empty() && (pw.back() == '\n' || pw.back() == '\r'))
            pw.pop_back();
        c.db.password = std::move(pw);
    } else if (!c.db.password.empty()) {
        struct stat st {};
        if (stat(path.c_str(), &st) == 0 && (st.st_mode & S_IROTH))
            c.warnings.push_back(path + " holds database.password and is readable by others: chmod o-r " + path +
                                 ", or use password_file");
    }
    return c;
}

} // namespace sockmapd
