#include "mariadb.hh" // Column
#include "statement.hh"

#include <boost/test/unit_test.hpp>

#include <optional>
#include <string>
#include <vector>

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

} // namespace

BOOST_AUTO_TEST_SUITE(statement)

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

BOOST_AUTO_TEST_CASE(probe_for_rows_postfix_cannot_reach)
{
    const auto probe = domain_rows_probe(table_map());
    BOOST_REQUIRE(probe.has_value());
    BOOST_TEST(*probe == "SET STATEMENT max_statement_time = 2 FOR SELECT 1 FROM `dbmail`.`dbmail_aliases` "
                         "WHERE `alias` NOT LIKE '_%@_%' LIMIT 1");
    // A map with a search order reaches its domain rows; a query map's key
    // column is unknown; an identifier the statement would refuse is not probed.
    MapConfig searching = table_map();
    searching.search = SearchOrder::Access;
    BOOST_TEST(!domain_rows_probe(searching).has_value());
    MapConfig q = table_map();
    q.query = "SELECT goto FROM alias WHERE address = %s";
    BOOST_TEST(!domain_rows_probe(q).has_value());
    MapConfig bad = table_map();
    bad.table = "t; DROP TABLE x";
    BOOST_TEST(!domain_rows_probe(bad).has_value());
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

BOOST_AUTO_TEST_CASE(escapes_are_read_in_one_place)
{
    std::size_t i = 0;
    BOOST_TEST(read_escape("%s", i, "s") == 's');
    BOOST_TEST(i == 2u);
    i = 1;
    BOOST_TEST(read_escape("x%%", i, "") == '%');
    BOOST_TEST(i == 3u);
    i = 0;
    BOOST_CHECK_THROW(read_escape("%", i, "sud"), ConfigError);
    try {
        read_escape("%d", i, "s");
        BOOST_ERROR("no ConfigError");
    } catch (const ConfigError& e) {
        BOOST_TEST(std::string(e.what()) == "unknown escape %d (use %s, or %%)");
    }
    BOOST_TEST(i == 0u); // not moved on a refusal
}

BOOST_AUTO_TEST_CASE(result_formats)
{
    auto format = [](std::string_view f, std::string_view value) {
        std::string out;
        ResultFormat(f).append(out, value);
        return out;
    };
    BOOST_TEST(format("", "mx.example.org") == "mx.example.org");
    BOOST_TEST(format("smtp:[%s]", "mx.example.org") == "smtp:[mx.example.org]");
    BOOST_TEST(format("%s", "v") == "v");
    BOOST_TEST(format("%s %s", "v") == "v v");
    BOOST_TEST(format("100%% %s", "v") == "100% v");
    BOOST_TEST(format("%%s", "v") == "%s");
    BOOST_TEST(format("[%s]", "%s%d%%") == "[%s%d%%]"); // the value is not a template
    BOOST_TEST(format("x%s", "") == "x");
    BOOST_TEST(format("no value", "v") == "no value");
    BOOST_CHECK_THROW(ResultFormat("50%"), ConfigError);
    BOOST_CHECK_THROW(ResultFormat("smtp:[%d]"), ConfigError);
}

BOOST_AUTO_TEST_CASE(bad_result_format_names_the_map)
{
    MapConfig m = table_map();
    m.result_format = "[%u]";
    try {
        build_statement(m);
        BOOST_ERROR("no ConfigError");
    } catch (const ConfigError& e) {
        BOOST_TEST(std::string(e.what()) == "postmaps \"recipient\": result_format: unknown escape %u (use %s, or %%)");
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
            BOOST_TEST(p.sql.find(key) == std::string::npos); // the key reaches the server as a value only
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
    BOOST_TEST(p.sql == "SELECT `deliver_to` FROM `dbmail`.`dbmail_aliases` WHERE `alias` = ?");
    for (const auto& key :
         {std::string("x' OR '1'='1"), std::string("a\0b", 3), std::string("`;--"), std::string("")}) {
        BOOST_TEST_CONTEXT(key)
        {
            const auto v = bind_values(p, key);
            BOOST_REQUIRE(v.has_value());
            BOOST_REQUIRE(v->size() == 1u);
            BOOST_TEST((*v)[0] == key);
            // The key reaches the server as a value only: not in the SQL,
            // and the value is the key's own bytes, not a copy of them.
            BOOST_TEST((key.empty() || p.sql.find(key) == std::string::npos));
            BOOST_TEST(((*v)[0].data() == key.data()));
        }
    }
}

BOOST_AUTO_TEST_CASE(joining_results)
{
    using Row = std::pair<std::optional<std::string_view>, std::optional<std::string_view>>;
    struct Case {
        const char* name;
        std::vector<Row> rows;
        Join join;
        Outcome outcome;
        std::string text;
    };
    const auto none = std::nullopt;
    const std::vector<Case> cases = {
        {"no rows", {}, Join::All, Outcome::NotFound, ""},
        {"one value", {{"a@x", none}}, Join::All, Outcome::Found, "a@x"},
        {"joined in order", {{"a", none}, {"b", none}, {"c", none}}, Join::All, Outcome::Found, "a,b,c"},
        {"NULL and empty skipped",
         {{none, none}, {"a", none}, {"", none}, {none, none}, {"b", none}},
         Join::All,
         Outcome::Found,
         "a,b"},
        {"only NULL", {{none, none}}, Join::All, Outcome::NotFound, ""},
        {"only empty", {{"", none}, {"", none}}, Join::All, Outcome::NotFound, ""},
        {"reason appended", {{"REJECT", "spam source"}}, Join::All, Outcome::Found, "REJECT spam source"},
        {"NULL reason", {{"OK", none}}, Join::All, Outcome::Found, "OK"},
        {"empty reason", {{"DUNNO", ""}}, Join::All, Outcome::Found, "DUNNO"},
        {"first non-empty reason",
         {{"a", ""}, {"b", "second"}, {"c", "third"}},
         Join::All,
         Outcome::Found,
         "a,b,c second"},
        {"reason of a value-less row ignored",
         {{none, "orphan"}, {"", "orphan2"}, {"a", none}},
         Join::All,
         Outcome::Found,
         "a"},
        {"reason without any value", {{none, "why"}}, Join::All, Outcome::NotFound, ""},
        {"values with commas and spaces kept", {{"a b", none}, {"c,d", none}}, Join::All, Outcome::Found, "a b,c,d"},
        {"existence: first stored key", {{"Bob@X", none}, {"bob@x", none}}, Join::FirstOnly, Outcome::Found, "Bob@X"},
        {"existence: empty keys skipped", {{"", none}, {"k", "why"}}, Join::FirstOnly, Outcome::Found, "k why"},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.name)
        {
            ResultJoiner j(c.join);
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
        const ResultFormat f("smtp:[%s]");
        ResultJoiner j(Join::All, max_value_length, &f);
        const Column none = col(std::nullopt), why = col("why");
        BOOST_TEST(j.add(col("mx1.example.org"), &none));
        BOOST_TEST(j.add(col(""), nullptr)); // empty values are skipped, not formatted
        BOOST_TEST(j.add(col(std::nullopt), nullptr));
        BOOST_TEST(j.add(col("mx2.example.org"), &why));
        BOOST_TEST(j.finish().text == "smtp:[mx1.example.org],smtp:[mx2.example.org] why");
    }
    {
        // %% is a percent sign; the value is inserted as is, its own % included.
        const ResultFormat f("%s is 100%% %s");
        ResultJoiner j(Join::All, max_value_length, &f);
        BOOST_TEST(j.add(col("50%s"), nullptr));
        BOOST_TEST(j.finish().text == "50%s is 100% 50%s");
    }
    {
        // Existence maps format the stored key.
        const ResultFormat f("REJECT %s is blocked");
        ResultJoiner j(Join::FirstOnly, max_value_length, &f);
        BOOST_TEST(j.add(col("bad@x"), nullptr));
        BOOST_TEST(j.add(col("bad2@x"), nullptr));
        BOOST_TEST(j.finish().text == "REJECT bad@x is blocked");
    }
    {
        // The limit applies to the formatted text.
        const ResultFormat f("[%s]");
        ResultJoiner j(Join::All, 12, &f);
        BOOST_TEST(j.add(col("abcd"), nullptr));  // "[abcd]" = 6
        BOOST_TEST(!j.add(col("efgh"), nullptr)); // "[abcd],[efgh]" = 13
        BOOST_TEST((j.finish().outcome == Outcome::PermFail));
        ResultJoiner k(Join::All, 13, &f);
        BOOST_TEST(k.add(col("abcd"), nullptr));
        BOOST_TEST(k.add(col("efgh"), nullptr));
        BOOST_TEST(k.finish().text == "[abcd],[efgh]");
    }
}

BOOST_AUTO_TEST_CASE(joining_respects_the_limit)
{
    const std::string at_limit(max_value_length, 'x');
    {
        ResultJoiner j;
        BOOST_TEST(j.add(col(at_limit), nullptr));
        BOOST_TEST(j.finish().text.size() == max_value_length);
    }
    {
        ResultJoiner j;
        const std::string over(max_value_length + 1, 'x');
        BOOST_TEST(!j.add(col(over), nullptr));
        BOOST_TEST((j.finish().outcome == Outcome::PermFail));
        BOOST_TEST(j.finish().text == "result too long");
    }
    {
        // Many small rows adding up.
        ResultJoiner j(Join::All, 10);
        BOOST_TEST(j.add(col("aaaa"), nullptr));
        BOOST_TEST(j.add(col("bbbbb"), nullptr)); // "aaaa,bbbbb" = 10
        BOOST_TEST(!j.add(col("c"), nullptr));
        BOOST_TEST((j.finish().outcome == Outcome::PermFail));
        BOOST_TEST(!j.add(col("d"), nullptr)); // stays too long
    }
    {
        // The reason counts too.
        ResultJoiner j(Join::All, 10);
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

BOOST_AUTO_TEST_SUITE_END()
