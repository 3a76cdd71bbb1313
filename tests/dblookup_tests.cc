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
    MapConfig q;
    q.service = "virtual";
    q.database = "mail";
    q.query = "SELECT goto FROM alias WHERE address = %s";
    BOOST_CHECK_THROW(build_statement(q), ConfigError);
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
        {ER_LOCK_WAIT_TIMEOUT, "HY000", false},
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
