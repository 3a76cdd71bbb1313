#include "config.hh"
#include "statement.hh" // valid_identifier

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

using namespace sockmapd;

namespace
{

// A config in the Go sockmapd's format: every scalar a JSON string.
const std::string go_config = R"({
  "sysconfig": {"port": "2224", "listen": "0.0.0.0", "logfile": "", "loglevel": "info",
                "run_as_user": "nobody", "run_as_group": "nogroup", "idle_timeout": "60", "max_session": "600"},
  "database": {"host": ["db1.example.org", "db2.example.org:3307", "unix:/run/mysqld/mysqld.sock"],
               "port": "3306", "username": "sockmapd", "password": "secret",
               "connect_timeout": "3", "read_timeout": "4", "write_timeout": "4"},
  "postmaps": [
    {"service": "recipient", "database": "dbmail", "table": "dbmail_aliases", "key": "alias", "value": "deliver_to", "reason": ""},
    {"service": "sender", "database": "dbmail", "table": "sender_access", "key": "sender", "value": "action", "reason": "why"}
  ]
})";

const std::string minimal = R"({"database": {"host": "localhost"},
  "postmaps": [{"service": "m", "database": "d", "table": "t", "key": "k"}]})";

// Replaces the first occurrence of `from` in `text`.
std::string with(std::string text, const std::string& from, const std::string& to)
{
    const auto pos = text.find(from);
    BOOST_REQUIRE(pos != std::string::npos);
    return text.replace(pos, from.size(), to);
}

std::string error_of(const std::string& text)
{
    try {
        parse_config(text, "test.json");
    } catch (const ConfigError& e) {
        return e.what();
    }
    return "";
}

std::vector<std::string> lines_of(const std::string& text)
{
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        out.push_back(line);
    return out;
}

struct TempFile {
    explicit TempFile(const std::string& content, mode_t mode = 0600)
    {
        char tmpl[] = "/tmp/sockmapd-test-XXXXXX";
        const int fd = mkstemp(tmpl);
        BOOST_REQUIRE(fd >= 0);
        BOOST_REQUIRE(write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
        fchmod(fd, mode);
        close(fd);
        path = tmpl;
    }
    ~TempFile() { unlink(path.c_str()); }
    std::string path;
};

} // namespace

BOOST_AUTO_TEST_SUITE(config)

BOOST_AUTO_TEST_CASE(go_format_loads)
{
    const Config c = parse_config(go_config);
    BOOST_TEST(c.sys.port == "2224");
    BOOST_TEST(c.sys.idle_timeout == 60u);
    BOOST_TEST(c.sys.max_session == 600u);
    BOOST_REQUIRE(c.db.hosts.size() == 3u);
    // Parsed once, here, in order, with the default port filled in.
    BOOST_TEST(c.db.hosts[0].name() == "db1.example.org:3306");
    BOOST_TEST(c.db.hosts[1].name() == "db2.example.org:3307");
    BOOST_TEST(c.db.hosts[2].name() == "unix:/run/mysqld/mysqld.sock");
    BOOST_TEST(c.db.port == 3306u);
    BOOST_TEST(c.db.connect_timeout == 3u);
    BOOST_TEST(c.db.password == "secret");
    BOOST_TEST(c.maps.size() == 2u);
    BOOST_REQUIRE(c.find_map("sender") != nullptr);
    BOOST_TEST(c.find_map("sender")->reason == "why");
    BOOST_TEST(c.find_map("recipient")->reason.empty());
    BOOST_TEST(c.find_map("nosuch") == nullptr);
}

BOOST_AUTO_TEST_CASE(numbers_work_too)
{
    const Config c = parse_config(with(with(go_config, R"("port": "3306")", R"("port": 3307)"),
                                       R"("idle_timeout": "60")", R"("idle_timeout": 30)"));
    BOOST_TEST(c.db.port == 3307u);
    BOOST_TEST(c.db.hosts[0].name() == "db1.example.org:3307"); // the port applies to the hosts
    BOOST_TEST(c.sys.idle_timeout == 30u);
    BOOST_TEST(parse_config(with(go_config, R"("idle_timeout": "60")", R"("core_dumps": true)")).sys.core_dumps);
    BOOST_TEST(parse_config(with(go_config, R"("port": "2224")", R"("port": 2225)")).sys.port == "2225");
    const Config r = parse_config(
        with(go_config, R"("idle_timeout": "60")", R"("idle_timeout": "60", "max_use": 1, "max_idle": "30")"));
    BOOST_TEST(r.sys.max_use == 1u);
    BOOST_TEST(r.sys.max_idle == 30u);
}

BOOST_AUTO_TEST_CASE(defaults)
{
    const Config c = parse_config(minimal);
    // Sendmail's connections outlive Timeout.command (1 h); no age limit.
    BOOST_TEST(c.sys.idle_timeout == 7200u);
    BOOST_TEST(c.sys.max_session == 0u);
    BOOST_TEST(parse_config(with(go_config, R"("max_session": "600")", R"("max_session": "0")")).sys.max_session == 0u);
    BOOST_TEST(c.sys.max_use == 100u); // Postfix's master.cf defaults
    BOOST_TEST(c.sys.max_idle == 100u);
    BOOST_TEST(!c.sys.core_dumps);
    BOOST_TEST(c.db.connect_timeout == 2u);
    BOOST_TEST(c.db.read_timeout == 5u);
    BOOST_TEST(c.db.db_idle_timeout == 10u);
    BOOST_TEST(c.db.retry_interval == 30u);
    BOOST_REQUIRE(c.db.hosts.size() == 1u);
    BOOST_TEST(c.db.hosts[0].name() == "localhost:3306");
    BOOST_TEST(c.db.tls.verify_server);
    BOOST_TEST(!c.db.tls.enabled());
    BOOST_TEST(static_cast<int>(c.sys.loglevel) == static_cast<int>(LogLevel::Info));
}

BOOST_AUTO_TEST_CASE(errors_name_the_key)
{
    struct Case {
        std::string text;
        std::string message; // must appear in the error
    };
    const std::vector<Case> cases = {
        {with(go_config, R"("table": "dbmail_aliases")", R"("tabel": "dbmail_aliases")"),
         "postmaps[0].tabel: unknown key"},
        {with(go_config, R"("table": "sender_access")", R"("tabel": "sender_access")"),
         "postmaps[1].tabel: unknown key"},
        {with(go_config, R"("value": "action")", R"("vaule": "action")"), "postmaps[1].vaule: unknown key"},
        {with(go_config, R"("sysconfig": {)", R"("sysconfig": {"colour": "red", )"), "sysconfig.colour: unknown key"},
        {with(go_config, R"("database": {)", R"("database": {"hots": "x", )"), "database.hots: unknown key"},
        {with(go_config, R"("postmaps")", R"("extra": 1, "postmaps")"), "extra: unknown key"},
        {with(go_config, R"("port": "3306")", R"("port": "33o6")"), "database.port: must be a whole number"},
        {with(go_config, R"("port": "3306")", R"("port": "70000")"), "database.port: must be between 1 and 65535"},
        {with(go_config, R"("port": "3306")", R"("port": -1)"), "database.port: must be a whole number"},
        {with(go_config, R"("port": "3306")", R"("port": [1])"), "database.port: must be a whole number"},
        {with(go_config, R"("read_timeout": "4")", R"("read_timeout": "0")"), "database.read_timeout: must be between"},
        {with(go_config, R"("idle_timeout": "60")", R"("idle_timeout": true)"),
         "sysconfig.idle_timeout: must be a whole number"},
        {with(go_config, R"("idle_timeout": "60")", R"("idle_timeout": "60", "max_use": 0)"),
         "sysconfig.max_use: must be between 1 and 1000000"},
        {with(go_config, R"("idle_timeout": "60")", R"("idle_timeout": "60", "max_use": "many")"),
         "sysconfig.max_use: must be a whole number"},
        {with(go_config, R"("idle_timeout": "60")", R"("idle_timeout": "60", "max_idle": 0)"),
         "sysconfig.max_idle: must be between 1 and 86400"},
        {with(go_config, R"("idle_timeout": "60")", R"("idle_timeout": "60", "max_idel": 5)"),
         "sysconfig.max_idel: unknown key"},
        {with(go_config, R"("username": "sockmapd")", R"("username": ["a"])"), "database.username: must be a string"},
        {with(go_config, R"("loglevel": "info")", R"("loglevel": "verbose")"), "sysconfig.loglevel: must be one of"},
        {with(go_config, R"("table": "dbmail_aliases")", R"("table": "x; DROP TABLE y")"),
         "postmaps[0].table: \"x; DROP TABLE y\" is not a valid identifier"},
        {with(go_config, R"("key": "alias")", R"("key": "a`b")"), "postmaps[0].key:"},
        {with(go_config, R"("database": "dbmail")", R"("database": "")"), "postmaps[0].database: missing"},
        {with(go_config, R"("table": "dbmail_aliases", )", ""), "postmaps[0].table: missing"},
        {with(go_config, R"("service": "sender")", R"("service": "recipient")"),
         "postmaps[1].service: \"recipient\" is already used by postmaps[0]"},
        {with(go_config, R"("service": "sender")", R"("service": "two words")"), "postmaps[1].service:"},
        {with(go_config, R"("db1.example.org", )", R"("db1.example.org:99999", )"),
         "database.host[0]: \"db1.example.org:99999\": port must be a number"},
        {with(go_config, R"("db1.example.org", )", R"("::1", )"),
         "database.host[0]: \"::1\": an IPv6 address needs brackets"},
        {with(go_config, R"("unix:/run/mysqld/mysqld.sock")", R"("unix:relative.sock")"),
         "database.host[2]: \"unix:relative.sock\": a unix socket needs an absolute path"},
        {with(go_config, R"("password": "secret")", R"("password": "secret", "password_file": "/x")"),
         "database.password_file: set either"},
        {R"({"postmaps": [{"service": "m", "database": "d", "table": "t", "key": "k"}]})", "database: missing"},
        {R"({"database": {"host": "h"}, "postmaps": []})", "postmaps: must be a list with at least one map"},
        {R"({"database": {}, "postmaps": [{"service": "m", "database": "d", "table": "t", "key": "k"}]})",
         "database.host: missing"},
        {R"([1, 2])", "the top level must be a JSON object"},
        {R"({"database": )", "not valid JSON"},
        {std::string(5000, '['), "not valid JSON"},
        {R"({"database": )" + std::string(5000, '['), "not valid JSON"},
        {with(minimal, R"("key": "k")", R"("key": "k", "query": "SELECT 1")"), "postmaps[0].query: give either"},
        {with(minimal, R"("table": "t", "key": "k")", R"("query": "SELECT v FROM t WHERE k = %x")"),
         "postmaps[0].query: unknown escape %x"},
        {with(minimal, R"("table": "t", "key": "k")", R"("query": "SELECT v FROM t WHERE k = 1")"),
         "postmaps[0].query: uses none of"},
        {with(minimal, R"("table": "t", "key": "k")", R"("query": "SELECT v FROM t WHERE k = '%%s'")"),
         "postmaps[0].query: uses none of"},
        {with(minimal, R"("table": "t", "key": "k")", R"("query": "SELECT v FROM t /* %s */ WHERE k = %s")"),
         "postmaps[0].query: has %s inside a comment"},
        {with(minimal, R"("table": "t", "key": "k")", R"("query": "SELECT v FROM t WHERE k = %s AND x = ?")"),
         "postmaps[0].query: has a '?' of its own"},
        {with(minimal, R"("key": "k")", R"("key": "k", "result_format": "smtp:[%d]")"),
         "postmaps[0].result_format: unknown escape %d"},
        {with(minimal, R"("key": "k")", R"("key": "k", "result_format": "50%")"),
         "postmaps[0].result_format: ends with a lone"},
        {with(minimal, R"("key": "k")", R"("key": "k", "domain": ["ok.org", "a@b"])"), "postmaps[0].domain:"},
        {with(minimal, R"("key": "k")", R"("key": "k", "lowercase": "maybe")"),
         "postmaps[0].lowercase: must be true or false"},
        {with(minimal, R"("key": "k")", R"("key": "k", "search": "acces")"),
         "postmaps[0].search: must be one of exact, access, transport, virtual, not \"acces\""},
        {with(minimal, R"("key": "k")", R"("key": "k", "search": "Access")"), "postmaps[0].search: must be one of"},
        {with(minimal, R"("key": "k")", R"("key": "k", "search": ["access"])"), "postmaps[0].search: must be a string"},
        {with(minimal, R"("key": "k")", R"("key": "k", "serach": "access")"),
         "postmaps[0].serach: unknown key (did you mean \"search\"?)"},
        {with(minimal, R"("key": "k")", R"("key": "k", "search": "virtual", "parent_domain_matches_subdomains": true)"),
         "postmaps[0].parent_domain_matches_subdomains: only for \"search\": \"access\" or \"transport\""},
        {with(minimal, R"("key": "k")", R"("key": "k", "parent_domain_matches_subdomains": false)"),
         "postmaps[0].parent_domain_matches_subdomains: only for"},
        {with(minimal, R"("key": "k")", R"("key": "k", "search": "access", "parent_domain_matches_subdomains": "x")"),
         "postmaps[0].parent_domain_matches_subdomains: must be true or false"},
        {with(minimal, R"("key": "k")", R"("key": "k", "cache": {"tll": 60})"),
         "postmaps[0].cache.tll: unknown key (did you mean \"ttl\"?)"},
        {with(minimal, R"("key": "k")", R"("key": "k", "cache": {"ttl": -1})"), "postmaps[0].cache.ttl: "},
        {with(minimal, R"("key": "k")", R"("key": "k", "cache": {"stale_if_error": 604801})"),
         "postmaps[0].cache.stale_if_error: "},
        {with(minimal, R"("key": "k")", R"("key": "k", "cache": {"negative_ttl": "x"})"),
         "postmaps[0].cache.negative_ttl: "},
        {with(minimal, R"("key": "k")", R"("key": "k", "cache": 60)"), "postmaps[0].cache: must be an object"},
        {with(minimal, R"("host": "localhost")", R"("host": "localhost", "tls": {"cert": "/c"})"),
         "database.tls: cert and key go together"},
        {with(minimal, R"("host": "localhost")", R"("host": "localhost", "tls": {"cafile": "/c"})"),
         "database.tls.cafile: unknown key"},
        {with(minimal, R"("host": "localhost")", R"("host": "localhost", "init_commmand": "SET x = 1")"),
         "database.init_commmand: unknown key"},
        {with(minimal, R"("host": "localhost")", R"("host": "localhost", "init_command": "")"),
         "database.init_command: is empty"},
        {with(minimal, R"("host": "localhost")", R"("host": "localhost", "init_command": " \n")"),
         "database.init_command: is empty"},
        {with(minimal, R"("host": "localhost")", R"("host": "localhost", "init_command": ["SET a = 1", ""])"),
         "database.init_command[1]: is empty"},
        {with(minimal, R"("host": "localhost")",
              R"("host": "localhost", "init_command": "SET a = 1\u0000; DROP TABLE t")"),
         "database.init_command: contains a NUL byte"},
        {with(minimal, R"("host": "localhost")",
              R"("host": "localhost", "init_command": ")" + std::string(4097, 'x') + "\""),
         "database.init_command: is longer than 4096 bytes"},
        {with(minimal, R"("host": "localhost")", R"("host": "localhost", "init_command": 1)"),
         "database.init_command: must be a string"},
        {with(minimal, R"("host": "localhost")", R"("host": "localhost", "init_command": {"sql": "SET a = 1"})"),
         "database.init_command: must be a string"},
        {with(minimal, R"("host": "localhost")", R"("host": "localhost", "init_command": ["SET a = 1", 2])"),
         "database.init_command[1]: must be a string"},
    };
    for (const auto& c : cases) {
        const std::string err = error_of(c.text);
        BOOST_TEST_CONTEXT("want \"" << c.message << "\"")
        {
            BOOST_TEST(err.find(c.message) != std::string::npos, err);
        }
    }
}

// Every problem of a file in one run, each on a line of its own with its key path.
BOOST_AUTO_TEST_CASE(every_problem_reported_at_once)
{
    struct Case {
        std::string text;
        std::vector<std::string> lines; // exactly these, in this order
    };
    const std::vector<Case> cases = {
        {R"({"postmaps":[{"service":"x","tabel":"t"}]})",
         {"test.json: database: missing (required)", "test.json: postmaps[0].database: missing (required); map \"x\"",
          "test.json: postmaps[0].tabel: unknown key (did you mean \"table\"?); map \"x\"",
          "test.json: postmaps[0].table: missing (required); map \"x\"",
          "test.json: postmaps[0].key: missing (required); map \"x\""}},
        {R"({"sysconfig": {"idle_timeout": "soon", "colour": 1}, "database": {"host": "h", "port": "x"},
             "postmaps": [{"service": "a", "database": "d", "table": "t", "key": "k", "vaule": "v"},
                          7,
                          {"service": "a", "database": "d", "query": "SELECT %q"}]})",
         {"test.json: sysconfig.idle_timeout: must be a whole number, not \"soon\"",
          "test.json: sysconfig.colour: unknown key", "test.json: database.port: must be a whole number, not \"x\"",
          "test.json: postmaps[0].vaule: unknown key (did you mean \"value\"?); map \"a\"",
          "test.json: postmaps[1]: must be an object",
          "test.json: postmaps[2].query: unknown escape %q (use %s, %u, %d, or %%); map \"a\"",
          "test.json: postmaps[2].service: \"a\" is already used by postmaps[0]"}},
    };
    for (const auto& c : cases) {
        BOOST_TEST(lines_of(error_of(c.text)) == c.lines, boost::test_tools::per_element());
    }
}

// Syntax errors: the place once, as "line L, column C", and jsoncpp's first finding only.
BOOST_AUTO_TEST_CASE(json_syntax_errors_give_line_and_column_once)
{
    struct Case {
        std::string text;
        std::string message; // the whole message
    };
    const std::vector<Case> cases = {
        {"{\n  \"database\": {\"host\": \"x\",}\n}\n",
         "test.json: not valid JSON: line 2, column 28: Missing '}' or object member name"},
        {"{\n  \"a\": 1\n  \"b\": 2\n}",
         "test.json: not valid JSON: line 3, column 3: Missing ',' or '}' in object declaration"},
        {R"({"a": "\q"})", "test.json: not valid JSON: line 1, column 7: Bad escape sequence in string"},
        {R"({"a": 1, "a": 2})", "test.json: not valid JSON: line 1, column 10: Duplicate key: 'a'"},
        {"", "test.json: the file is empty (a JSON object with \"database\" and \"postmaps\" is needed)"},
        {" \n", "test.json: the file is empty (a JSON object with \"database\" and \"postmaps\" is needed)"},
        {"[]",
         "test.json: the top level must be a JSON object, {\"database\": {...}, \"postmaps\": [...]}, not an array"},
    };
    for (const auto& c : cases)
        BOOST_TEST(error_of(c.text) == c.message);
    // Nesting past jsoncpp's limit still has one message, no place needed.
    const std::string deep = error_of(std::string(5000, '['));
    BOOST_TEST(deep.find("not valid JSON") != std::string::npos, deep);
    BOOST_TEST(deep.find('\n') == std::string::npos, deep);
}

// Go's encoding/json matches keys without regard to case: its files load.
BOOST_AUTO_TEST_CASE(keys_match_without_case)
{
    const Config c = parse_config(R"({"SysConfig": {"Port": "2225", "LogLevel": "debug"},
        "Database": {"Host": ["h1", "h2:3307"], "PORT": "3308", "UserName": "u", "TLS": {"CA": "/ca"}},
        "PostMaps": [{"Service": "m", "DataBase": "d", "Table": "t", "Key": "k", "Value": "v"}]})");
    BOOST_TEST(c.sys.port == "2225");
    BOOST_TEST(static_cast<int>(c.sys.loglevel) == static_cast<int>(LogLevel::Debug));
    BOOST_REQUIRE(c.db.hosts.size() == 2u);
    BOOST_TEST(c.db.hosts[0].name() == "h1:3308");
    BOOST_TEST(c.db.hosts[1].name() == "h2:3307");
    BOOST_TEST(c.db.port == 3308u);
    BOOST_TEST(c.db.username == "u");
    BOOST_TEST(c.db.tls.ca == "/ca");
    BOOST_REQUIRE(c.maps.size() == 1u);
    BOOST_TEST(c.maps[0].value == "v");

    // Two spellings of one key are ambiguous, not "last one wins".
    const std::string twice = error_of(with(minimal, R"("host": "localhost")", R"("host": "a", "Host": "b")"));
    BOOST_TEST(twice.find("database.Host: the same key as \"host\"") != std::string::npos, twice);
}

// Unknown keys stay errors; the message offers the nearest known key when it looks like a typo.
BOOST_AUTO_TEST_CASE(unknown_keys_suggest_the_nearest)
{
    struct Case {
        std::string from, to;
        std::string message; // the problem's whole line after "test.json: "
    };
    const std::vector<Case> cases = {
        {R"("key": "k")", R"("key": "k", "vaule": "v")",
         "postmaps[0].vaule: unknown key (did you mean \"value\"?); map \"m\""},
        {R"("table": "t")", R"("tabel": "t")", "postmaps[0].tabel: unknown key (did you mean \"table\"?); map \"m\""},
        {R"("key": "k")", R"("kye": "k")", "postmaps[0].kye: unknown key (did you mean \"key\"?); map \"m\""},
        {R"("key": "k")", R"("key": "k", "Resultformat": "%s")",
         "postmaps[0].Resultformat: unknown key (did you mean \"result_format\"?); map \"m\""},
        {R"("host": "localhost")", R"("hosts": "localhost")", "database.hosts: unknown key (did you mean \"host\"?)"},
        {R"("host": "localhost")", R"("host": "localhost", "pasword_file": "x")",
         "database.pasword_file: unknown key (did you mean \"password_file\"?)"},
        {R"("host": "localhost")", R"("host": "localhost", "colour": "red")", "database.colour: unknown key"},
        {R"("host": "localhost")", R"("host": "localhost", "tls": {"cafile": "/c"})",
         "database.tls.cafile: unknown key"},
        {R"("postmaps")", R"("postmap": [], "postmaps")", "postmap: unknown key (did you mean \"postmaps\"?)"},
    };
    for (const auto& c : cases) {
        const std::string err = error_of(with(minimal, c.from, c.to));
        const auto lines = lines_of(err);
        const bool listed = std::find(lines.begin(), lines.end(), "test.json: " + c.message) != lines.end();
        BOOST_TEST_CONTEXT(c.to)
        {
            BOOST_TEST(listed, err);
        }
    }
}

// Numbers past their field's range are config errors naming the key, never an exception of their own.
BOOST_AUTO_TEST_CASE(numbers_too_large_are_config_errors)
{
    const std::string huge = "99999999999999999999";
    struct Case {
        std::string from, to, message;
    };
    const std::vector<Case> cases = {
        {R"("run_as_user": "nobody")", R"("run_as_user": ")" + huge + "\"",
         "sysconfig.run_as_user: \"" + huge + "\" is too large for a user id (at most 4294967294)"},
        {R"("run_as_group": "nogroup")", R"("run_as_group": "4294967295")",
         "sysconfig.run_as_group: \"4294967295\" is too large for a group id (at most 4294967294)"},
        {R"("port": "2224")", R"("port": ")" + huge + "\"", "sysconfig.port: must be a port number 1-65535"},
        {R"("port": "3306")", R"("port": ")" + huge + "\"", "database.port: must be between 1 and 65535, not " + huge},
        {R"("port": "3306")", R"("port": )" + huge, "database.port: must be between 1 and 65535"},
        {R"("connect_timeout": "3")", R"("connect_timeout": "4294967296")",
         "database.connect_timeout: must be between 1 and 3600"},
        {R"("idle_timeout": "60")", R"("idle_timeout": 1e30)", "sysconfig.idle_timeout: must be between 1 and 86400"},
        {R"("max_session": "600")", R"("max_session": ")" + huge + huge + "\"",
         "sysconfig.max_session: must be between 0 and 604800"},
        {R"("idle_timeout": "60")", R"("idle_timeout": 2.5)", "sysconfig.idle_timeout: must be a whole number"},
    };
    for (const auto& c : cases) {
        const std::string err = error_of(with(go_config, c.from, c.to));
        BOOST_TEST_CONTEXT(c.to)
        {
            BOOST_TEST(err.find(c.message) != std::string::npos, err);
        }
    }
    // Ids that fit are left to the system to resolve (--check-config looks them up).
    BOOST_TEST(
        parse_config(with(go_config, R"("run_as_user": "nobody")", R"("run_as_user": "4294967294")")).sys.run_as_user ==
        "4294967294");
}

BOOST_AUTO_TEST_CASE(a_directory_is_not_a_config)
{
    try {
        load_config("/tmp");
        BOOST_FAIL("a directory loaded");
    } catch (const ConfigError& e) {
        BOOST_TEST(std::string(e.what()) == "config: /tmp is a directory, not a file");
    }
}

BOOST_AUTO_TEST_CASE(feature_fields)
{
    const Config c = parse_config(with(minimal, R"("table": "t", "key": "k")",
                                       R"("query": "SELECT goto FROM alias WHERE address = %s AND x = '100%%'",
                                           "lowercase": true, "strip_extension": "+", "domain": ["Example.ORG"],
                                           "result_format": "smtp:[%s]")"));
    const MapConfig& m = c.maps.at(0);
    BOOST_TEST(m.lowercase);
    BOOST_TEST(m.strip_extension == "+");
    BOOST_TEST(m.domains == std::vector<std::string>{"example.org"});
    BOOST_TEST(m.result_format == "smtp:[%s]");
    BOOST_TEST(m.query.find("%s") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(search_order)
{
    struct Case {
        std::string fields; // added to the minimal map
        SearchOrder search;
        bool parent;
    };
    const std::vector<Case> cases = {
        {"", SearchOrder::Exact, false},
        {R"(, "search": "exact")", SearchOrder::Exact, false},
        // Postfix's default parent_domain_matches_subdomains lists
        // smtpd_access_maps, not transport_maps.
        {R"(, "search": "access")", SearchOrder::Access, true},
        {R"(, "search": "access", "parent_domain_matches_subdomains": false)", SearchOrder::Access, false},
        {R"(, "search": "transport")", SearchOrder::Transport, false},
        {R"(, "search": "transport", "parent_domain_matches_subdomains": "yes")", SearchOrder::Transport, true},
        {R"(, "search": "virtual")", SearchOrder::Virtual, false},
        {R"(, "Search": "virtual")", SearchOrder::Virtual, false}, // keys without case, as every key
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.fields)
        {
            const Config cfg = parse_config(with(minimal, R"("key": "k")", R"("key": "k")" + c.fields));
            BOOST_TEST(static_cast<int>(cfg.maps.at(0).search) == static_cast<int>(c.search));
            BOOST_TEST(cfg.maps.at(0).parent_matches_subdomains == c.parent);
        }
    }
}

BOOST_AUTO_TEST_CASE(cache_policy)
{
    BOOST_TEST(!parse_config(minimal).maps.at(0).cache.enabled());
    const auto policy = [](const std::string& fields) {
        return parse_config(with(minimal, R"("key": "k")", R"("key": "k", "cache": )" + fields)).maps.at(0).cache;
    };
    const CachePolicy full = policy(R"({"ttl": 60, "negative_ttl": "30", "stale_if_error": 3600})");
    BOOST_TEST(full.ttl == 60u);
    BOOST_TEST(full.negative_ttl == 30u);
    BOOST_TEST(full.stale_if_error == 3600u);
    // negative_ttl follows ttl unless given; stale_if_error is 0 unless given.
    const CachePolicy ttl = policy(R"({"TTL": 60})");
    BOOST_TEST(ttl.negative_ttl == 60u);
    BOOST_TEST(ttl.stale_if_error == 0u);
    BOOST_TEST(policy(R"({"stale_if_error": 600})").enabled());
    BOOST_TEST(!policy("{}").enabled());
}

BOOST_AUTO_TEST_CASE(init_command)
{
    BOOST_TEST(parse_config(minimal).db.init_command.empty());
    // The Go format's plain string, and a list run in order.
    const Config one = parse_config(with(minimal, R"("host": "localhost")",
                                         R"("host": "localhost", "init_command": "SET SESSION wsrep_sync_wait = 1")"));
    BOOST_TEST(one.db.init_command == std::vector<std::string>{"SET SESSION wsrep_sync_wait = 1"});
    const Config two = parse_config(with(minimal, R"("host": "localhost")",
                                         R"("host": "localhost", "init_command": ["SET SESSION wsrep_sync_wait = 1",
                                                                                   "SET SESSION max_statement_time = 2"])"));
    BOOST_TEST(two.db.init_command ==
               (std::vector<std::string>{"SET SESSION wsrep_sync_wait = 1", "SET SESSION max_statement_time = 2"}));
    BOOST_TEST(parse_config(with(minimal, R"("host": "localhost")", R"("host": "localhost", "init_command": [])"))
                   .db.init_command.empty());
}

BOOST_AUTO_TEST_CASE(identifiers)
{
    for (const char* good : {"a", "dbmail_aliases", "T1", "x$y", "_"})
        BOOST_TEST(valid_identifier(good), good);
    for (const char* bad : {"", "a b", "a`b", "a;b", "a.b", "a'b", "ä"})
        BOOST_TEST(!valid_identifier(bad), bad);
    BOOST_TEST(!valid_identifier(std::string(65, 'a')));
}

BOOST_AUTO_TEST_CASE(load_reads_password_file_and_warns)
{
    const TempFile pw("s3cret\n");
    const TempFile cfg(
        with(minimal, R"("host": "localhost")", R"("host": "localhost", "password_file": ")" + pw.path + "\""));
    const Config c = load_config(cfg.path);
    BOOST_TEST(c.db.password == "s3cret");
    BOOST_TEST(c.warnings.empty());

    const TempFile open_cfg(with(minimal, R"("host": "localhost")", R"("host": "localhost", "password": "pw")"), 0644);
    const Config o = load_config(open_cfg.path);
    BOOST_REQUIRE(o.warnings.size() == 1u);
    BOOST_TEST(o.warnings[0].find("readable by others") != std::string::npos);
    BOOST_TEST(o.warnings[0].find("\"pw\"") == std::string::npos);

    const TempFile missing(
        with(minimal, R"("host": "localhost")", R"("host": "localhost", "password_file": "/nonexistent/pw")"));
    BOOST_CHECK_THROW(load_config(missing.path), ConfigError);
    BOOST_CHECK_THROW(load_config("/nonexistent/config.json"), ConfigError);
}

BOOST_AUTO_TEST_CASE(credentials_directory)
{
    char dir[] = "/tmp/sockmapd-creds-XXXXXX";
    BOOST_REQUIRE(mkdtemp(dir) != nullptr);
    const std::string file = std::string(dir) + "/db-password";
    std::ofstream(file) << "fromcreds";
    setenv("CREDENTIALS_DIRECTORY", dir, 1);
    const TempFile cfg(
        with(minimal, R"("host": "localhost")", R"("host": "localhost", "password_file": "db-password")"));
    const Config c = load_config(cfg.path);
    unsetenv("CREDENTIALS_DIRECTORY");
    unlink(file.c_str());
    rmdir(dir);
    BOOST_TEST(c.db.password == "fromcreds");
}

// sysconfig.allow: every bad entry named by its index, the list loaded
// as rules; without the key nobody is refused.
BOOST_AUTO_TEST_CASE(allow_list)
{
    BOOST_TEST(!parse_config(minimal).sys.allow.restricts());
    const std::string sys = R"({"sysconfig": {"allow": ALLOW}, )";
    const auto with_allow = [&](const std::string& allow) { return with(sys, "ALLOW", allow) + minimal.substr(1); };
    const Config c = parse_config(with_allow(R"(["192.0.2.25", "2001:db8::/48", "::ffff:10.0.0.1", "unix"])"));
    BOOST_TEST(c.sys.allow.text() == "192.0.2.25/32, 2001:db8::/48, 10.0.0.1/32, unix");
    BOOST_TEST(parse_config(with_allow(R"("127.0.0.1")")).sys.allow.text() == "127.0.0.1/32", "a single string");
    BOOST_TEST(!parse_config(with_allow("null")).sys.allow.restricts(), "null is no list");
    struct Case {
        std::string allow, message;
    };
    const std::vector<Case> cases = {
        {R"(["127.0.0.1", "mta.example.org", "10.0.0.1/8"])",
         "sysconfig.allow[1]: \"mta.example.org\": host names are not looked up"},
        {R"(["127.0.0.1", "mta.example.org", "10.0.0.1/8"])", "sysconfig.allow[2]: \"10.0.0.1/8\" has bits set"},
        {R"("::1/200")", "sysconfig.allow: \"::1/200\": the prefix length after / must be 0-128"},
        {"[]", "sysconfig.allow: an empty list would refuse every client"},
        {"[1]", "sysconfig.allow[0]: must be a string"},
        {R"({"a": 1})", "sysconfig.allow: must be a string or a list of strings"},
    };
    for (const auto& k : cases) {
        try {
            parse_config(with_allow(k.allow), "cfg.json");
            BOOST_ERROR("accepted: " + k.allow);
        } catch (const ConfigError& e) {
            BOOST_TEST(std::string(e.what()).find(k.message) != std::string::npos, e.what());
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()
