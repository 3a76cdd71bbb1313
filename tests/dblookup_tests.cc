#include "dblookup.hh"
#include "mariadb.hh"

#include <boost/test/unit_test.hpp>

#include <errmsg.h>
#include <mysqld_error.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <sstream>

using namespace sockmapd;

namespace
{

MapConfig table_map(std::string value = "deliver_to", std::string reason = "")
{
    MapConfig m;
    m.service = "recipient";
    m.database = "dbmail";
    m.table = "dbmail_aliases";
    m.key = "alias";
    m.value = std::move(value);
    m.reason = std::move(reason);
    return m;
}

Column col(std::optional<std::string_view> v)
{
    Column c;
    c.null = !v;
    if (v)
        c.data = *v;
    return c;
}

Column too_long()
{
    Column c;
    c.null = false;
    c.too_long = true;
    return c;
}

// A loopback port nobody listens on: connections are refused at once.
unsigned closed_port()
{
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(s);
    return ntohs(a.sin_port);
}

Config config_with_host(const std::string& host)
{
    Config c;
    c.db.hosts = {host};
    c.db.username = "nobody";
    c.db.connect_timeout = 1;
    c.maps = {table_map()};
    return c;
}

// Keeps the failover state of these tests out of the real runtime directory.
struct ScratchRuntimeDir {
    std::string path;
    std::string saved;
    bool had = false;
    ScratchRuntimeDir()
    {
        std::string tmpl = "/tmp/sockmapd-dblookup-test.XXXXXX";
        BOOST_REQUIRE(::mkdtemp(tmpl.data()));
        path = tmpl;
        if (const char* s = std::getenv("RUNTIME_DIRECTORY")) {
            had = true;
            saved = s;
        }
        ::setenv("RUNTIME_DIRECTORY", path.c_str(), 1);
    }
    ~ScratchRuntimeDir()
    {
        if (had)
            ::setenv("RUNTIME_DIRECTORY", saved.c_str(), 1);
        else
            ::unsetenv("RUNTIME_DIRECTORY");
        std::system(("rm -rf '" + path + "'").c_str());
    }
};

} // namespace

BOOST_AUTO_TEST_SUITE(dblookup)

BOOST_AUTO_TEST_CASE(quoting_identifiers)
{
    BOOST_TEST(quote_identifier("alias") == "`alias`");
    BOOST_TEST(quote_identifier("a`b") == "`a``b`");
    BOOST_TEST(quote_identifier("``") == "``````");
    BOOST_TEST(quote_identifier("") == "``");
}

BOOST_AUTO_TEST_CASE(statements_for_table_maps)
{
    struct Case {
        MapConfig map;
        std::string sql;
        bool existence, has_reason;
    };
    MapConfig exists = table_map("");
    exists.table = "recipients";
    exists.key = "address";
    MapConfig exists_reason = exists;
    exists_reason.reason = "why";
    const std::vector<Case> cases = {
        {table_map(), "SELECT `deliver_to` FROM `dbmail`.`dbmail_aliases` WHERE `alias` = ?", false, false},
        {table_map("action", "reason"), "SELECT `action`, `reason` FROM `dbmail`.`dbmail_aliases` WHERE `alias` = ?",
         false, true},
        {exists, "SELECT `address` FROM `dbmail`.`recipients` WHERE `address` = ?", true, false},
        {exists_reason, "SELECT `address`, `why` FROM `dbmail`.`recipients` WHERE `address` = ?", true, true},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.sql)
        {
            const StatementPlan p = build_statement(c.map);
            BOOST_TEST(p.sql == c.sql);
            BOOST_TEST(p.existence == c.existence);
            BOOST_TEST(p.has_reason == c.has_reason);
            BOOST_TEST(p.params.size() == 1u);
        }
    }
}

BOOST_AUTO_TEST_CASE(statements_refuse_bad_identifiers)
{
    const std::vector<std::pair<std::string MapConfig::*, std::string>> bad = {
        {&MapConfig::table, "t`; DROP TABLE x; --"},
        {&MapConfig::key, "a b"},
        {&MapConfig::value, "v'"},
        {&MapConfig::reason, "r\""},
        {&MapConfig::database, "db.x"},
        {&MapConfig::table, ""},
        {&MapConfig::key, ""},
    };
    for (const auto& [field, text] : bad) {
        BOOST_TEST_CONTEXT("identifier \"" << text << "\"")
        {
            MapConfig m = table_map("deliver_to", "reason");
            m.*field = text;
            BOOST_CHECK_THROW(build_statement(m), ConfigError);
        }
    }
}

namespace
{

MapConfig query_map(std::string query)
{
    MapConfig m;
    m.service = "virtual";
    m.database = "mail";
    m.query = std::move(query);
    return m;
}

// "s", "u", "d" for each parameter, in order.
std::string letters(const std::vector<KeyPart>& params)
{
    std::string out;
    for (KeyPart p : params)
        out += p == KeyPart::Whole ? 's' : p == KeyPart::Local ? 'u' : 'd';
    return out;
}

} // namespace

BOOST_AUTO_TEST_CASE(statements_for_query_maps)
{
    struct Case {
        std::string tmpl;
        std::string sql;
        std::string params;
    };
    const std::vector<Case> cases = {
        {"SELECT goto FROM alias WHERE address = %s AND active = 1",
         "SELECT goto FROM alias WHERE address = ? AND active = 1", "s"},
        {"SELECT maildir FROM mailbox WHERE local_part = %u AND domain = %d",
         "SELECT maildir FROM mailbox WHERE local_part = ? AND domain = ?", "ud"},
        {"SELECT a FROM t WHERE d = %d AND u = %u AND s = %s AND d2 = %d",
         "SELECT a FROM t WHERE d = ? AND u = ? AND s = ? AND d2 = ?", "dusd"},
        // %% is a literal percent sign, also right before an escape.
        {"SELECT a FROM t WHERE x = %s AND n % 2 = 0 AND b = 100%%", "", ""},
        {"SELECT a % 3 FROM t WHERE x = %s", "", ""},
        {"SELECT a %% 3 FROM t WHERE x = %s", "SELECT a % 3 FROM t WHERE x = ?", "s"},
        {"SELECT a FROM t WHERE x = %%%s", "SELECT a FROM t WHERE x = %?", "s"},
        {"SELECT a FROM t WHERE x = %s%%", "SELECT a FROM t WHERE x = ?%", "s"},
        {"SELECT a FROM t WHERE x = %%s OR y = %s", "SELECT a FROM t WHERE x = %s OR y = ?", "s"},
        // Postfix-style quoted escapes: still bound, never pasted.
        {"SELECT goto FROM alias WHERE address='%s'", "SELECT goto FROM alias WHERE address=?", "s"},
        {"SELECT goto FROM alias WHERE address=\"%s\"", "SELECT goto FROM alias WHERE address=?", "s"},
        {"SELECT a FROM t WHERE k = '%u@%d'", "SELECT a FROM t WHERE k = CONCAT(?, '@', ?)", "ud"},
        {"SELECT a FROM t WHERE k = '@%d'", "SELECT a FROM t WHERE k = CONCAT('@', ?)", "d"},
        {"SELECT a FROM t WHERE k LIKE '%%@%d'", "SELECT a FROM t WHERE k LIKE CONCAT('%@', ?)", "d"},
        {"SELECT a FROM t WHERE k = 'it''s %s'", "SELECT a FROM t WHERE k = CONCAT('it''s ', ?)", "s"},
        {"SELECT a FROM t WHERE k = 'a\\' %s'", "SELECT a FROM t WHERE k = CONCAT('a\\' ', ?)", "s"},
        {"SELECT a FROM t WHERE k LIKE 'x\\%%%s'", "SELECT a FROM t WHERE k LIKE CONCAT('x\\%', ?)", "s"},
        // Text that merely looks special stays text.
        {"SELECT 'what?', \"50%% off\" FROM t WHERE k = %s", "SELECT 'what?', \"50% off\" FROM t WHERE k = ?", "s"},
        {"SELECT `we?ird``col` FROM t WHERE k = %s", "SELECT `we?ird``col` FROM t WHERE k = ?", "s"},
        {"SELECT a FROM t WHERE k = %s -- who? 100%%\nAND b = 1", "SELECT a FROM t WHERE k = ? -- who? 100%\nAND b = 1",
         "s"},
        {"SELECT a /* it's? */ FROM t # don't?\nWHERE k = %s", "SELECT a /* it's? */ FROM t # don't?\nWHERE k = ?",
         "s"},
        {"SELECT a-1 FROM t WHERE k = %s --", "SELECT a-1 FROM t WHERE k = ? --", "s"},
        {"SELECT a--1 FROM t WHERE k = %s", "SELECT a--1 FROM t WHERE k = ?", "s"},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.tmpl)
        {
            if (c.sql.empty()) { // config.cc refuses these; so does the compiler
                BOOST_CHECK_THROW(build_statement(query_map(c.tmpl)), ConfigError);
                continue;
            }
            const StatementPlan p = build_statement(query_map(c.tmpl));
            BOOST_TEST(p.sql == c.sql);
            BOOST_TEST(letters(p.params) == c.params);
            BOOST_TEST(p.query);
            BOOST_TEST(p.has_reason); // a second column, if selected
            BOOST_TEST(!p.existence);
        }
    }
}

BOOST_AUTO_TEST_CASE(query_templates_refused_name_the_map)
{
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"SELECT a FROM t WHERE k = %x", "unknown escape %x"},
        {"SELECT a FROM t WHERE k = %s AND b = 5%", "lone '%'"},
        {"SELECT a FROM t WHERE k = 1", "uses none of"},
        {"SELECT a FROM t WHERE k = '%%s'", "uses none of"},
        {"SELECT a FROM t WHERE k = ? OR k = %s", "'?' of its own"},
        {"SELECT a FROM t WHERE k = %s /* %s */", "inside a comment"},
        {"SELECT a FROM t WHERE k = %s -- %u", "inside a comment"},
        {"SELECT a FROM t WHERE k = %s # %d", "inside a comment"},
        {"SELECT a FROM t WHERE k = %s /* never closed", "unterminated /* comment"},
        {"SELECT `%s` FROM t WHERE k = %s", "inside a back-quoted identifier"},
        {"SELECT a FROM t WHERE k = %s AND `b = 1", "unterminated back-quoted"},
        {"SELECT a FROM t WHERE k = '%s", "unterminated quoted string"},
        {"SELECT a FROM t WHERE k = '%s\\", "unterminated quoted string"},
        {"SELECT a FROM t WHERE k = _utf8mb4'%s'", "prefixed string"},
        {"SELECT a FROM t WHERE k = X'%s'", "prefixed string"},
        {"SELECT a FROM t WHERE k = 'x\\%s'", "backslash right before"},
    };
    for (const auto& [tmpl, message] : cases) {
        BOOST_TEST_CONTEXT(tmpl)
        {
            try {
                build_statement(query_map(tmpl));
                BOOST_ERROR("no ConfigError");
            } catch (const ConfigError& e) {
                const std::string what = e.what();
                BOOST_TEST(what.find("postmaps \"virtual\": query") == 0, what);
                BOOST_TEST(what.find(message) != std::string::npos, what);
            }
        }
    }
    // Prefixes without escapes are plain SQL.
    BOOST_TEST(build_statement(query_map("SELECT _utf8mb4'x' FROM t WHERE k = %s")).sql ==
               "SELECT _utf8mb4'x' FROM t WHERE k = ?");
}

BOOST_AUTO_TEST_CASE(key_parts_for_templates)
{
    using Views = std::vector<std::string_view>;
    const StatementPlan whole = build_statement(query_map("SELECT a FROM t WHERE k = %s"));
    const StatementPlan parts = build_statement(query_map("SELECT a FROM t WHERE u = %u AND d = %d AND s = %s"));
    const StatementPlan local = build_statement(query_map("SELECT a FROM t WHERE u = %u"));
    const StatementPlan domain = build_statement(query_map("SELECT a FROM t WHERE d = %d"));
    struct Case {
        const StatementPlan& plan;
        std::string key;
        std::optional<Views> values;
    };
    const std::vector<Case> cases = {
        {parts, "alice@example.org", Views{"alice", "example.org", "alice@example.org"}},
        // The last '@' splits: a quoted local part may hold one.
        {parts, "\"a@b\"@example.org", Views{"\"a@b\"", "example.org", "\"a@b\"@example.org"}},
        {parts, "a@b@c", Views{"a@b", "c", "a@b@c"}},
        // Without '@' a query needing %u or %d is not run (Postfix: %d).
        {parts, "alice", std::nullopt},
        {local, "alice", std::nullopt},
        {domain, "example.org", std::nullopt},
        {whole, "alice", Views{"alice"}},
        // Empty parts: like Postfix, %u needs a local part, %d a domain.
        {local, "@example.org", std::nullopt},
        {domain, "@example.org", Views{"example.org"}},
        {domain, "alice@", std::nullopt},
        {local, "alice@", Views{"alice"}},
        {whole, "@example.org", Views{"@example.org"}},
        {whole, "", Views{""}},
        {parts, "@", std::nullopt},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.plan.sql << " / " << c.key)
        {
            const auto v = bind_values(c.plan, c.key);
            BOOST_REQUIRE(v.has_value() == c.values.has_value());
            if (v)
                BOOST_TEST(*v == *c.values, boost::test_tools::per_element());
        }
    }
}

BOOST_AUTO_TEST_CASE(template_keys_are_bound_not_pasted)
{
    const StatementPlan p = build_statement(query_map("SELECT a FROM t WHERE k = '%s' AND u = %u AND d = %d"));
    BOOST_TEST(p.sql == "SELECT a FROM t WHERE k = ? AND u = ? AND d = ?");
    for (const auto& key : {std::string("x' OR '1'='1@y' OR '1'='1"), std::string("%s%d@%u%%"), std::string("a\\'@\\"),
                            std::string("n\0l@d\0m", 7), std::string("??@?")}) {
        BOOST_TEST_CONTEXT(key)
        {
            const auto v = bind_values(p, key);
            BOOST_REQUIRE(v.has_value());
            const auto at = key.rfind('@');
            BOOST_TEST((*v)[0] == key);
            BOOST_TEST((*v)[1] == key.substr(0, at));
            BOOST_TEST((*v)[2] == key.substr(at + 1));
        }
    }
}

BOOST_AUTO_TEST_CASE(keys_are_bound_not_pasted)
{
    const StatementPlan p = build_statement(table_map());
    for (const auto& key :
         {std::string("x' OR '1'='1"), std::string("a\0b", 3), std::string("`;--"), std::string("")}) {
        const auto v = bind_values(p, key);
        BOOST_REQUIRE(v.has_value());
        BOOST_REQUIRE(v->size() == 1u);
        BOOST_TEST((*v)[0] == key);
        BOOST_TEST(p.sql.find(key.empty() ? std::string("no such text") : key) == std::string::npos);
    }
}

BOOST_AUTO_TEST_CASE(joining_results)
{
    using Row = std::pair<std::optional<std::string_view>, std::optional<std::string_view>>;
    struct Case {
        const char* name;
        std::vector<Row> rows;
        bool first_only;
        Outcome outcome;
        std::string text;
    };
    const auto none = std::nullopt;
    const std::vector<Case> cases = {
        {"no rows", {}, false, Outcome::NotFound, ""},
        {"one value", {{"a@x", none}}, false, Outcome::Found, "a@x"},
        {"joined in order", {{"a", none}, {"b", none}, {"c", none}}, false, Outcome::Found, "a,b,c"},
        {"NULL and empty skipped",
         {{none, none}, {"a", none}, {"", none}, {none, none}, {"b", none}},
         false,
         Outcome::Found,
         "a,b"},
        {"only NULL", {{none, none}}, false, Outcome::NotFound, ""},
        {"only empty", {{"", none}, {"", none}}, false, Outcome::NotFound, ""},
        {"reason appended", {{"REJECT", "spam source"}}, false, Outcome::Found, "REJECT spam source"},
        {"NULL reason", {{"OK", none}}, false, Outcome::Found, "OK"},
        {"empty reason", {{"DUNNO", ""}}, false, Outcome::Found, "DUNNO"},
        {"first non-empty reason", {{"a", ""}, {"b", "second"}, {"c", "third"}}, false, Outcome::Found, "a,b,c second"},
        {"reason of a value-less row ignored",
         {{none, "orphan"}, {"", "orphan2"}, {"a", none}},
         false,
         Outcome::Found,
         "a"},
        {"reason without any value", {{none, "why"}}, false, Outcome::NotFound, ""},
        {"values with commas and spaces kept", {{"a b", none}, {"c,d", none}}, false, Outcome::Found, "a b,c,d"},
        {"existence: first stored key", {{"Bob@X", none}, {"bob@x", none}}, true, Outcome::Found, "Bob@X"},
        {"existence: empty keys skipped", {{"", none}, {"k", "why"}}, true, Outcome::Found, "k why"},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.name)
        {
            ResultJoiner j(c.first_only);
            for (const auto& [v, r] : c.rows) {
                const Column vc = col(v), rc = col(r);
                j.add(vc, &rc);
            }
            const LookupResult res = j.finish();
            BOOST_TEST((res.outcome == c.outcome));
            BOOST_TEST(res.text == c.text);
        }
    }
}

BOOST_AUTO_TEST_CASE(result_format_applies_to_each_value)
{
    {
        ResultJoiner j(false, kMaxResult, "smtp:[%s]");
        const Column none = col(std::nullopt), why = col("why");
        BOOST_TEST(j.add(col("mx1.example.org"), &none));
        BOOST_TEST(j.add(col(""), nullptr)); // empty values are skipped, not formatted
        BOOST_TEST(j.add(col(std::nullopt), nullptr));
        BOOST_TEST(j.add(col("mx2.example.org"), &why));
        BOOST_TEST(j.finish().text == "smtp:[mx1.example.org],smtp:[mx2.example.org] why");
    }
    {
        // %% is a percent sign; the value is inserted as is, its own % included.
        ResultJoiner j(false, kMaxResult, "%s is 100%% %s");
        BOOST_TEST(j.add(col("50%s"), nullptr));
        BOOST_TEST(j.finish().text == "50%s is 100% 50%s");
    }
    {
        // Existence maps format the stored key.
        ResultJoiner j(true, kMaxResult, "REJECT %s is blocked");
        BOOST_TEST(j.add(col("bad@x"), nullptr));
        BOOST_TEST(j.add(col("bad2@x"), nullptr));
        BOOST_TEST(j.finish().text == "REJECT bad@x is blocked");
    }
    {
        // The limit applies to the formatted text.
        ResultJoiner j(false, 12, "[%s]");
        BOOST_TEST(j.add(col("abcd"), nullptr));  // "[abcd]" = 6
        BOOST_TEST(!j.add(col("efgh"), nullptr)); // "[abcd],[efgh]" = 13
        BOOST_TEST((j.finish().outcome == Outcome::PermFail));
        ResultJoiner k(false, 13, "[%s]");
        BOOST_TEST(k.add(col("abcd"), nullptr));
        BOOST_TEST(k.add(col("efgh"), nullptr));
        BOOST_TEST(k.finish().text == "[abcd],[efgh]");
    }
}

BOOST_AUTO_TEST_CASE(joining_respects_the_limit)
{
    const std::string at_limit(kMaxResult, 'x');
    {
        ResultJoiner j;
        BOOST_TEST(j.add(col(at_limit), nullptr));
        BOOST_TEST(j.finish().text.size() == kMaxResult);
        BOOST_TEST(kMaxResult + 3 == 100000u); // "OK " + value is the whole reply
    }
    {
        ResultJoiner j;
        const std::string over(kMaxResult + 1, 'x');
        BOOST_TEST(!j.add(col(over), nullptr));
        BOOST_TEST((j.finish().outcome == Outcome::PermFail));
        BOOST_TEST(j.finish().text == "result too long");
    }
    {
        // Many small rows adding up.
        ResultJoiner j(false, 10);
        BOOST_TEST(j.add(col("aaaa"), nullptr));
        BOOST_TEST(j.add(col("bbbbb"), nullptr)); // "aaaa,bbbbb" = 10
        BOOST_TEST(!j.add(col("c"), nullptr));
        BOOST_TEST((j.finish().outcome == Outcome::PermFail));
        BOOST_TEST(!j.add(col("d"), nullptr)); // stays too long
    }
    {
        // The reason counts too.
        ResultJoiner j(false, 10);
        const Column r = col("0123456789");
        BOOST_TEST(!j.add(col("a"), &r));
        BOOST_TEST((j.finish().outcome == Outcome::PermFail));
    }
    {
        // A column the driver did not even read.
        ResultJoiner j;
        BOOST_TEST(!j.add(too_long(), nullptr));
        BOOST_TEST((j.finish().outcome == Outcome::PermFail));
    }
    {
        // A too-long reason only matters if it would be used.
        ResultJoiner j;
        const Column r1 = col("first"), r2 = too_long();
        BOOST_TEST(j.add(col("a"), &r1));
        BOOST_TEST(j.add(col("b"), &r2));
        BOOST_TEST(j.finish().text == "a,b first");
        ResultJoiner k;
        BOOST_TEST(!k.add(col("a"), &r2));
        BOOST_TEST((k.finish().outcome == Outcome::PermFail));
    }
}

BOOST_AUTO_TEST_CASE(connection_errors)
{
    struct Case {
        unsigned code;
        const char* sqlstate;
        bool connection;
    };
    const std::vector<Case> cases = {
        {CR_SERVER_GONE_ERROR, "HY000", true},
        {CR_SERVER_LOST, "HY000", true},
        {CR_CONNECTION_ERROR, "HY000", true},
        {CR_CONN_HOST_ERROR, "HY000", true},
        {CR_UNKNOWN_HOST, "HY000", true},
        {CR_ERR_NET_READ, "HY000", true},
        {ER_CON_COUNT_ERROR, "08004", true},
        {ER_ACCESS_DENIED_ERROR, "28000", true},
        {ER_SERVER_SHUTDOWN, "08S01", true},
        {ER_CONNECTION_KILLED, "70100", true},
        {ER_UNKNOWN_COM_ERROR, "08S01", true},
        {ER_UNKNOWN_STMT_HANDLER, "HY000", true},
        {9999, "08S01", true}, // any connection-exception SQLSTATE
        {ER_BAD_FIELD_ERROR, "42S22", false},
        {ER_NO_SUCH_TABLE, "42S02", false},
        {ER_PARSE_ERROR, "42000", false},
        {ER_TABLEACCESS_DENIED_ERROR, "42000", false},
        {ER_LOCK_WAIT_TIMEOUT, "HY000", true}, // a Galera causal read the node could not complete
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT("code " << c.code)
        {
            BOOST_TEST(is_connection_error(c.code, c.sqlstate) == c.connection);
        }
    }
}

BOOST_AUTO_TEST_CASE(db_error_carries_the_databases_words)
{
    const DbError e(1054, "42S22", "Unknown column 'nope' in 'field list'");
    BOOST_TEST(std::string(e.what()) == "1054 (42S22): Unknown column 'nope' in 'field list'");
    BOOST_TEST(e.code == 1054u);
    BOOST_TEST(e.sqlstate == "42S22");
    BOOST_TEST(!e.timed_out);
}

BOOST_AUTO_TEST_CASE(lazy_and_unknown_maps)
{
    ScratchRuntimeDir rt;
    const Config cfg = config_with_host("127.0.0.1:" + std::to_string(closed_port()));
    DbLookup db(cfg); // never connects here
    BOOST_TEST(!db.next_wakeup().has_value());
    const LookupResult r = db.lookup("nosuchmap", "key");
    BOOST_TEST((r.outcome == Outcome::NoSuchMap));
    BOOST_TEST(!db.next_wakeup().has_value());
    db.wakeup(Clock::now()); // harmless without connections
}

BOOST_AUTO_TEST_CASE(unreachable_host_is_temp_never_notfound)
{
    ScratchRuntimeDir rt;
    const Config cfg = config_with_host("127.0.0.1:" + std::to_string(closed_port()));
    DbLookup db(cfg);
    for (int i = 0; i < 2; ++i) { // the second time the host is marked down, and still tried
        const LookupResult r = db.lookup("recipient", "postmaster@example.org");
        BOOST_TEST((r.outcome == Outcome::TempFail));
        BOOST_TEST(!r.text.empty());
    }
    std::ostringstream out;
    BOOST_TEST(check_maps_online(cfg, out) == 75);
    BOOST_TEST(out.str().find("recipient: no database host answered") == 0);
}

BOOST_AUTO_TEST_CASE(bad_host_list_is_a_config_error)
{
    Config cfg = config_with_host("db1:notaport");
    BOOST_CHECK_THROW(DbLookup{cfg}, ConfigError);
    std::ostringstream out;
    BOOST_TEST(check_maps_online(cfg, out) == 78);
}

BOOST_AUTO_TEST_SUITE_END()
