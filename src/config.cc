#include "config.hh"

#include "failover.hh"
#include "mapkey.hh"

#include <json/json.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
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

// Every problem of one file, each a line "key.path: what".  The file is
// checked whole and the problems are reported together, so a missing
// section does not hide a typo elsewhere.
class Problems {
public:
    void add(std::string line) { lines_.push_back(std::move(line)); }

    // Runs a check that throws ConfigError at its first finding; that
    // finding becomes one problem and checking goes on.
    template <class Check> bool guard(Check&& check)
    {
        try {
            check();
            return true;
        } catch (const ConfigError& e) {
            add(e.what());
            return false;
        }
    }

    // Takes over `other`'s problems, `suffix` appended to each.
    void merge(const Problems& other, const std::string& suffix)
    {
        for (const auto& line : other.lines_)
            add(line + suffix);
    }

    bool empty() const { return lines_.empty(); }

    // ConfigError with every problem, a line each, prefixed with `origin`.
    void raise_if_any(const std::string& origin) const
    {
        if (lines_.empty())
            return;
        std::string text;
        for (const auto& line : lines_)
            text += (text.empty() ? "" : "\n") + origin + ": " + line;
        throw ConfigError(text);
    }

private:
    std::vector<std::string> lines_;
};

bool iequals(std::string_view a, std::string_view b)
{
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

// Edit distance with adjacent transpositions ("vaule" is one step from
// "value"), compared without case.
std::size_t edit_distance(std::string_view a, std::string_view b)
{
    const auto low = [](char c) { return std::tolower(static_cast<unsigned char>(c)); };
    std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
    for (std::size_t i = 0; i <= a.size(); ++i)
        d[i][0] = i;
    for (std::size_t j = 0; j <= b.size(); ++j)
        d[0][j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i)
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t cost = low(a[i - 1]) == low(b[j - 1]) ? 0 : 1;
            d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
            if (i > 1 && j > 1 && low(a[i - 1]) == low(b[j - 2]) && low(a[i - 2]) == low(b[j - 1]))
                d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
        }
    return d[a.size()][b.size()];
}

// The known key closest to an unknown one, if it is close enough to be a typo.
std::string nearest_key(std::string_view unknown, const std::vector<std::string>& known)
{
    std::string best;
    std::size_t best_distance = std::numeric_limits<std::size_t>::max();
    for (const auto& k : known) {
        const std::size_t dist = edit_distance(unknown, k);
        if (dist < best_distance) {
            best = k;
            best_distance = dist;
        }
    }
    const std::size_t allowed = std::min<std::size_t>(unknown.size(), best.size()) <= 4 ? 1 : 2;
    return best_distance <= allowed ? best : std::string();
}

// A JSON object whose members are read by name.  Names match without
// regard to case, as Go's encoding/json matches them ("Database", "Host"),
// so the Go sockmapd's files load; two members that differ only in case
// are a problem.  finish() reports the members nobody asked for, which
// catches typos such as "tabel", and names the nearest known key.
// Problems go to a Problems list; a member with a problem reads as its default.
class Object {
public:
    Object(const Json::Value& v, std::string path, Problems& problems)
        : v_(v), path_(std::move(path)), problems_(problems)
    {
        if (!v_.isObject())
            problems_.add(path_ + ": must be an object");
    }

    std::string member_path(const std::string& name) const { return path_.empty() ? name : path_ + "." + name; }

    // The member `name` (any case), or nullptr if absent or null.
    const Json::Value* get(const char* name)
    {
        asked_.emplace_back(name);
        if (!v_.isObject())
            return nullptr;
        const Json::Value* found = nullptr;
        std::string spelled;
        for (auto it = v_.begin(); it != v_.end(); ++it) {
            const std::string member = it.name();
            if (!iequals(member, name))
                continue;
            matched_.insert(member);
            if (found) {
                problems_.add(member_path(member) + ": the same key as \"" + spelled +
                              "\" (keys match without regard to case): give it once");
                continue;
            }
            found = &*it;
            spelled = member;
        }
        return found && !found->isNull() ? found : nullptr;
    }

    // Strings; numbers are taken as their decimal text ("port": 2224).
    std::string str(const char* name, std::string def = {})
    {
        return field(def, [&] { return str_or_throw(name, def); });
    }

    // Non-negative integers, as numbers or as strings of digits (Go format).
    unsigned num(const char* name, unsigned def, unsigned min, unsigned max)
    {
        return field(def, [&] { return num_or_throw(name, def, min, max); });
    }

    // Booleans, also as "true"/"false"/"yes"/"no"/"1"/"0" strings.
    bool boolean(const char* name, bool def)
    {
        return field(def, [&] { return boolean_or_throw(name, def); });
    }

    // A list of strings; a single string is a list of one.
    std::vector<std::string> list(const char* name)
    {
        return field(std::vector<std::string>{}, [&] { return list_or_throw(name); });
    }

    void finish() const
    {
        if (!v_.isObject())
            return;
        for (const auto& name : v_.getMemberNames()) {
            if (matched_.count(name))
                continue;
            std::string line = member_path(name) + ": unknown key";
            if (const std::string near = nearest_key(name, asked_); !near.empty())
                line += " (did you mean \"" + near + "\"?)";
            problems_.add(line);
        }
    }

private:
    template <class T, class Read> T field(T def, Read&& read)
    {
        T out = def;
        problems_.guard([&] { out = read(); });
        return out;
    }

    std::string str_or_throw(const char* name, const std::string& def)
    {
        const Json::Value* m = get(name);
        if (!m)
            return def;
        if (m->isString())
            return m->asString();
        if (m->isIntegral())
            return m->isUInt64() ? std::to_string(m->asUInt64()) : std::to_string(m->asInt64());
        fail(member_path(name), m->isNumeric() ? "must be a string or a whole number" : "must be a string");
    }

    unsigned num_or_throw(const char* name, unsigned def, unsigned min, unsigned max)
    {
        const Json::Value* m = get(name);
        if (!m)
            return def;
        const std::string range = "must be between " + std::to_string(min) + " and " + std::to_string(max);
        unsigned long long n = 0;
        if (m->isUInt64()) {
            n = m->asUInt64();
        } else if (m->isString()) {
            const std::string s = m->asString();
            if (s.empty() || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
                fail(member_path(name), "must be a whole number, not \"" + s + "\"");
            const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
            if (ec != std::errc() || end != s.data() + s.size())
                fail(member_path(name), range + ", not " + s);
        } else if (m->isDouble() && m->asDouble() >= 0 && std::floor(m->asDouble()) == m->asDouble()) {
            fail(member_path(name), range); // a whole number past 64 bits
        } else {
            fail(member_path(name), "must be a whole number");
        }
        if (n < min || n > max)
            fail(member_path(name), range);
        return static_cast<unsigned>(n);
    }

    bool boolean_or_throw(const char* name, bool def)
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

    std::vector<std::string> list_or_throw(const char* name)
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

    const Json::Value& v_;
    std::string path_;
    Problems& problems_;
    std::vector<std::string> asked_;
    std::set<std::string> matched_;
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

// A user or group given by number must fit an id: privileges.cc reads
// digits that name no account as the id itself.
void check_account_text(const std::string& s, const std::string& path, const char* what)
{
    if (s.empty() || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return;
    unsigned long long id = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), id);
    constexpr unsigned long long max_id = 4294967294ULL; // (uid_t)-1 means "no id"
    if (ec != std::errc() || end != s.data() + s.size() || id > max_id)
        fail(path, "\"" + s + "\" is too large for a " + what + " id (at most " + std::to_string(max_id) + ")");
}

SysConfig parse_sys(const Json::Value& v, Problems& p)
{
    SysConfig s;
    Object o(v, "sysconfig", p);
    s.port = o.str("port", s.port);
    p.guard([&] { check_port_text(s.port, "sysconfig.port"); });
    s.listen = o.str("listen", s.listen);
    if (s.listen.empty())
        s.listen = "127.0.0.1";
    s.logfile = o.str("logfile");
    const std::string level = o.str("loglevel", "info");
    p.guard([&] { s.loglevel = parse_level(level, "sysconfig.loglevel"); });
    s.run_as_user = o.str("run_as_user");
    p.guard([&] { check_account_text(s.run_as_user, "sysconfig.run_as_user", "user"); });
    s.run_as_group = o.str("run_as_group");
    p.guard([&] { check_account_text(s.run_as_group, "sysconfig.run_as_group", "group"); });
    s.idle_timeout = o.num("idle_timeout", s.idle_timeout, 1, 86400);
    s.max_session = o.num("max_session", s.max_session, 1, 7 * 86400);
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
    d.hosts = o.list("host");
    d.port = o.num("port", d.port, 1, 65535);
    p.guard([&] { parse_hosts(d); }); // the same parser the lookups use: what loads, connects
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

void parse_map_fields(MapConfig& m, Object& o, const std::string& path, Problems& p);

MapConfig parse_map(const Json::Value& v, const std::string& path, Problems& outer)
{
    MapConfig m;
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
    else if (has_control_or_space(m.service) || m.service.size() > 100)
        p.add(path + ".service: \"" + m.service + "\" must be a word without spaces, at most 100 bytes");
    else
        named = true;
    parse_map_fields(m, o, path, p);
    // Past the name, messages name the map as well as its place in the list.
    outer.merge(p, named ? "; map \"" + m.service + "\"" : "");
    return m;
}

void check_query(const MapConfig& m, const std::string& path)
{
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
}

void parse_map_fields(MapConfig& m, Object& o, const std::string& path, Problems& p)
{
    m.database = o.str("database");
    p.guard([&] { check_identifier(m.database, path + ".database", true); });
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
            p.add(path + ".domain: \"" + d + "\" is not a domain name");
        else
            m.domains.push_back(d);
    }
    o.finish();

    if (!m.query.empty()) {
        p.guard([&] { check_query(m, path); });
    } else {
        p.guard([&] { check_identifier(m.table, path + ".table", true); });
        p.guard([&] { check_identifier(m.key, path + ".key", true); });
        p.guard([&] { check_identifier(m.value, path + ".value", false); });
        p.guard([&] { check_identifier(m.reason, path + ".reason", false); });
    }
    p.guard([&] { check_template(m.result_format, "s", path + ".result_format"); });
    if (m.strip_extension.size() > 8 || has_control_or_space(m.strip_extension) ||
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
        MapConfig m = parse_map((*maps)[i], path, p);
        for (std::size_t j = 0; j < c.maps.size(); ++j)
            if (!m.service.empty() && c.maps[j].service == m.service)
                p.add(path + ".service: \"" + m.service + "\" is already used by postmaps[" + std::to_string(j) + "]");
        c.maps.push_back(std::move(m));
    }
}

// jsoncpp's report of a syntax error, as "line L, column C: what", once:
// it lists an error with its place, sometimes again with "See Line ..."
// and a second finding about the same spot.
std::string first_json_error(const std::string& errors)
{
    std::istringstream in(errors);
    std::string place;
    std::string what;
    std::getline(in, place);
    std::getline(in, what);
    const auto trim = [](std::string t) {
        t.erase(0, std::min(t.find_first_not_of(" *"), t.size()));
        if (const auto see = t.find(" See Line "); see != std::string::npos)
            t.erase(see);
        while (!t.empty() && (t.back() == ' ' || t.back() == '\n'))
            t.pop_back();
        return t;
    };
    place = trim(place);
    what = trim(what);
    if (place.rfind("Line ", 0) != 0 || what.empty())
        return trim(errors); // not the usual shape: jsoncpp's own words, whatever they are
    place[0] = 'l';
    if (const auto col = place.find(", Column "); col != std::string::npos)
        place[col + 2] = 'c';
    return place + ": " + what;
}

Json::Value parse_json(std::string_view text, const std::string& origin)
{
    if (text.find_first_not_of(" \t\r\n") == std::string_view::npos)
        throw ConfigError(origin + ": the file is empty (a JSON object with \"database\" and \"postmaps\" is needed)");
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
    if (!parsed)
        throw ConfigError(origin + ": not valid JSON: " + first_json_error(errors));
    if (!root.isObject())
        throw ConfigError(origin + ": the top level must be a JSON object, {\"database\": {...}, \"postmaps\": [...]}, not " +
                          (root.isArray() ? "an array" : "a single value"));
    return root;
}

std::string read_file(const std::string& path, const std::string& what)
{
    struct stat st {};
    if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
        fail(what, path + " is a directory, not a file");
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
    const Json::Value root = parse_json(text, origin);
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
    Config c = parse_config(read_file(path, "config"), path);
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
