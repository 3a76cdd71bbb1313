// DbLookup alone: a table stands in for the database (StatementRunner), so
// every rewrite, the domain list, what is bound and each outcome is checked
// without a server.  The real runner is dbrunner_tests' and the black-box
// suites'.
#include "dblookup.hh"
#include "stats.hh"

#include "mapkey.hh"

#include <boost/test/unit_test.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

using namespace sockmapd;

namespace
{

using Cells = std::vector<std::optional<std::string>>; // nullopt: NULL
using Values = std::vector<std::string>;

// What the runner did, and what it answers: rows per bound values, or a
// scripted failure.
class TableRunner : public StatementRunner
{
public:
    RunOutcome run(const CompiledMap& map, Walk walk) override
    {
        ++runs;
        maps.push_back(map.service);
        sql.push_back(map.plan.sql);
        if (mismatch)
            return RunOutcome::Mismatch;
        if (every_host_fails)
            return *every_host_fails;
        if (break_first_walk) {
            // A connection lost mid-walk: the pool runs the walk again on
            // the next host.
            break_first_walk = false;
            walk([](const std::vector<std::string_view>&, std::size_t, Rows rows) {
                Column stale{false, false, "stale"};
                rows({stale});
                return false; // "Lost connection to server during query"
            });
        }
        bool failed = false;
        walk([&](const std::vector<std::string_view>& values, std::size_t cap, Rows rows) {
            executed.emplace_back(values.begin(), values.end());
            if (statement_error) {
                failed = true; // "Unknown column 'x' in 'field list'"
                return false;
            }
            const auto it = table.find(executed.back());
            if (it == table.end())
                return true;
            for (const Cells& r : it->second) {
                std::vector<Column> cols;
                for (const auto& cell : r)
                    cols.push_back({!cell.has_value(), cell && cell->size() > cap,
                                    cell && cell->size() <= cap ? std::string_view(*cell) : std::string_view()});
                if (!rows(cols))
                    break;
            }
            return true;
        });
        return failed ? RunOutcome::StatementFailed : RunOutcome::Ran;
    }
    std::optional<Clock::time_point> next_wakeup() const override { return wakeup_at; }
    void close_idle(Clock::time_point now) override { closed_at = now; }

    std::map<Values, std::vector<Cells>> table;
    std::optional<RunOutcome> every_host_fails;
    bool statement_error = false;
    bool mismatch = false;
    bool break_first_walk = false;
    std::optional<Clock::time_point> wakeup_at;
    std::optional<Clock::time_point> closed_at;

    int runs = 0;
    std::vector<std::string> maps;
    std::vector<std::string> sql;
    std::vector<Values> executed;
};

MapConfig table_map(const std::string& service = "recipient")
{
    MapConfig m;
    m.service = service;
    m.database = "dbmail";
    m.table = "aliases";
    m.key = "alias";
    m.value = "deliver_to";
    return m;
}

MapConfig query_map(const std::string& query)
{
    MapConfig m;
    m.service = "q";
    m.database = "mail";
    m.query = query;
    return m;
}

// A lookup on one map over `runner`.
struct Fixture {
    explicit Fixture(const MapConfig& map, QueryBudget budget = QueryBudget()) : maps{compile_map(map)}
    {
        lookup.emplace(maps, runner, budget);
    }
    LookupResult operator()(std::string_view key) { return lookup->lookup(maps[0].service, key); }

    std::vector<CompiledMap> maps;
    TableRunner runner;
    std::optional<DbLookup> lookup;
};

bool is(const LookupResult& r, Outcome o)
{
    return r.outcome == o;
}

// The first bound value of each statement run: the key each step asked.
std::vector<std::string> asked(const TableRunner& r)
{
    std::vector<std::string> out;
    for (const auto& v : r.executed)
        out.push_back(v.empty() ? std::string() : v[0]);
    return out;
}

} // namespace

BOOST_AUTO_TEST_SUITE(dblookup)

BOOST_AUTO_TEST_CASE(unknown_map_asks_nothing)
{
    Fixture f(table_map());
    BOOST_TEST(is(f.lookup->lookup("nosuchmap", "key"), Outcome::NoSuchMap));
    BOOST_TEST(f.runner.runs == 0);
}

BOOST_AUTO_TEST_CASE(found_and_not_found)
{
    Fixture f(table_map());
    f.runner.table[{"postmaster@example.org"}] = {{"root@example.org"}};
    const LookupResult hit = f("postmaster@example.org");
    BOOST_TEST(is(hit, Outcome::Found));
    BOOST_TEST(hit.text == "root@example.org");
    BOOST_TEST(is(f("nobody@example.org"), Outcome::NotFound));
    BOOST_TEST(f.runner.runs == 2);
    BOOST_TEST(f.runner.maps == (std::vector<std::string>{"recipient", "recipient"}));
}

// A spare handler's warm-up: the first map's statement reached (the real
// runner connects and prepares it), nothing executed; then lookups as ever.
BOOST_AUTO_TEST_CASE(warm_up_reaches_the_first_map_and_executes_nothing)
{
    Fixture f(table_map());
    f.lookup->warm_up();
    BOOST_TEST(f.runner.runs == 1);
    BOOST_TEST(f.runner.maps == (std::vector<std::string>{"recipient"}));
    BOOST_TEST(f.runner.executed.empty());
    f.runner.table[{"postmaster@example.org"}] = {{"root@example.org"}};
    BOOST_TEST(f("postmaster@example.org").text == "root@example.org");
}

BOOST_AUTO_TEST_CASE(rows_joined_nulls_and_empty_values_skipped)
{
    MapConfig m = table_map();
    m.reason = "why";
    Fixture f(m);
    f.runner.table[{"team"}] = {{"alice", std::nullopt},
                                {std::nullopt, "ignored"},
                                {"", "ignored too"},
                                {"bob", "listed"},
                                {"carol", "second"}};
    BOOST_TEST(f("team").text == "alice,bob,carol listed");
    f.runner.table[{"nothing"}] = {{std::nullopt, "a reason"}, {"", std::nullopt}};
    BOOST_TEST(is(f("nothing"), Outcome::NotFound));
}

BOOST_AUTO_TEST_CASE(existence_map_answers_the_first_stored_key)
{
    MapConfig m = table_map("exists");
    m.value.clear();
    Fixture f(m);
    f.runner.table[{"bob@example.org"}] = {{"Bob@Example.org"}, {"bob@example.org"}};
    BOOST_TEST(f("bob@example.org").text == "Bob@Example.org");
    BOOST_TEST(f.runner.sql[0].find("SELECT `alias` FROM") == 0u);
}

BOOST_AUTO_TEST_CASE(result_format_applies_to_each_value)
{
    MapConfig m = table_map("transport");
    m.result_format = "smtp:[%s]";
    Fixture f(m);
    f.runner.table[{"example.org"}] = {{"relay1"}, {"relay2"}};
    BOOST_TEST(f("example.org").text == "smtp:[relay1],smtp:[relay2]");
}

BOOST_AUTO_TEST_CASE(keys_are_bound_never_part_of_the_sql)
{
    Fixture f(table_map());
    const std::vector<std::string> keys = {"x' OR '1'='1", "a\"b`c\\d;--", std::string("nul\0byte", 8), "%s %u"};
    for (const auto& k : keys)
        f(k);
    BOOST_TEST_REQUIRE(f.runner.executed.size() == keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) {
        BOOST_TEST(f.runner.executed[i] == Values{keys[i]});
        BOOST_TEST(f.runner.sql[i] == "SELECT `deliver_to` FROM `dbmail`.`aliases` WHERE `alias` = ?");
    }
}

BOOST_AUTO_TEST_CASE(query_binds_the_parts_it_names)
{
    Fixture f(query_map("SELECT goto FROM alias WHERE local = %u AND domain = %d AND address = %s"));
    f.runner.table[{"user", "example.org", "user@example.org"}] = {{"dest@example.net"}};
    BOOST_TEST(f("user@example.org").text == "dest@example.net");
    BOOST_TEST(f.runner.sql[0] == "SELECT goto FROM alias WHERE local = ? AND domain = ? AND address = ?");
    // The last '@' splits; a key without one, or with the needed part
    // empty, cannot match: NotFound without a query, as Postfix.
    f("a@b@example.org");
    BOOST_TEST(f.runner.executed.back() == (Values{"a@b", "example.org", "a@b@example.org"}));
    const std::size_t before = f.runner.executed.size();
    for (const char* k : {"user", "@example.org", "user@"})
        BOOST_TEST(is(f(k), Outcome::NotFound), k);
    BOOST_TEST(f.runner.executed.size() == before);
}

BOOST_AUTO_TEST_CASE(whole_key_query_binds_keys_without_at)
{
    Fixture f(query_map("SELECT v FROM t WHERE k = %s"));
    f("plainkey");
    f("@example.org");
    BOOST_TEST(asked(f.runner) == (std::vector<std::string>{"plainkey", "@example.org"}));
}

BOOST_AUTO_TEST_CASE(lowercase_folds_ascii_only)
{
    MapConfig m = table_map();
    m.lowercase = true;
    Fixture f(m);
    f("Alice@Example.ORG");
    f("\xc3\x84rger@Example.org"); // non-ASCII bytes stay as they are
    BOOST_TEST(asked(f.runner) == (std::vector<std::string>{"alice@example.org", "\xc3\x84rger@example.org"}));
}

BOOST_AUTO_TEST_CASE(extension_stripped_only_after_not_found)
{
    MapConfig m = table_map();
    m.strip_extension = "+";
    Fixture f(m);
    BOOST_TEST(is(f("user+tag@example.org"), Outcome::NotFound));
    BOOST_TEST(asked(f.runner) == (std::vector<std::string>{"user+tag@example.org", "user@example.org"}));
    f.runner.executed.clear();
    f.runner.table[{"user+tag@example.org"}] = {{"full"}};
    BOOST_TEST(f("user+tag@example.org").text == "full");
    BOOST_TEST(f.runner.executed.size() == 1u);
    f.runner.executed.clear();
    f.runner.table[{"other@example.org"}] = {{"bare"}};
    BOOST_TEST(f("other+x@example.org").text == "bare");
    BOOST_TEST(f.runner.executed.size() == 2u);
}

BOOST_AUTO_TEST_CASE(every_rewrite_and_search_order_is_asked_in_order_on_one_connection)
{
    const std::vector<std::string> keys = {
        "User+Tag@Mail.Example.org", "user@example.org", "192.0.2.1", "2001:db8::1", "host.example.org", "*"};
    for (const auto order : {SearchOrder::Exact, SearchOrder::Access, SearchOrder::Transport, SearchOrder::Virtual}) {
        for (const bool lowercase : {false, true}) {
            for (const std::string& ext : {std::string(), std::string("+")}) {
                MapConfig m = table_map();
                m.search = order;
                m.lowercase = lowercase;
                m.strip_extension = ext;
                for (const auto& key : keys) {
                    BOOST_TEST_CONTEXT("search " << static_cast<int>(order) << " lowercase " << lowercase << " strip \""
                                                 << ext << "\" key " << key)
                    {
                        Fixture f(m);
                        BOOST_TEST(is(f(key), Outcome::NotFound));
                        const KeyCandidates want(m, key);
                        BOOST_TEST(asked(f.runner) == std::vector<std::string>(want.begin(), want.end()),
                                   boost::test_tools::per_element());
                        BOOST_TEST(f.runner.runs == 1); // the whole walk: one piece of work
                    }
                }
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(search_stops_at_the_first_answer)
{
    MapConfig m = table_map("access");
    m.search = SearchOrder::Access;
    m.parent_matches_subdomains = true;
    Fixture f(m);
    f.runner.table[{"example.org"}] = {{"REJECT"}};
    BOOST_TEST(f("user@mail.example.org").text == "REJECT");
    BOOST_TEST(asked(f.runner) ==
               (std::vector<std::string>{"user@mail.example.org", "mail.example.org", "example.org"}));
}

BOOST_AUTO_TEST_CASE(domain_list_leaves_keys_out_without_asking)
{
    MapConfig m = table_map();
    m.domains = {"example.org"};
    Fixture f(m);
    f("a@example.org");
    f("b@EXAMPLE.org"); // listed without regard to case
    BOOST_TEST(f.runner.executed.size() == 2u);
    for (const char* k : {"c@other.org", "example.org", "@example.org", "c@sub.example.org", "c@example.org.evil"})
        BOOST_TEST(is(f(k), Outcome::NotFound), k);
    BOOST_TEST(f.runner.executed.size() == 2u);
    BOOST_TEST(f.runner.runs == 2); // nothing to ask: no connection either
}

BOOST_AUTO_TEST_CASE(domain_list_applies_to_each_step_of_a_search)
{
    MapConfig m = table_map("virtual");
    m.search = SearchOrder::Virtual;
    m.domains = {"example.org"};
    Fixture f(m);
    f("user@example.org");
    // "@example.org" has no local part: the domain list leaves it out.
    BOOST_TEST(asked(f.runner) == (std::vector<std::string>{"user@example.org"}));
}

BOOST_AUTO_TEST_CASE(every_host_failing_is_temp_or_timeout_never_notfound)
{
    struct Case {
        RunOutcome error;
        Outcome outcome;
        std::string text;
    };
    const std::vector<Case> cases = {
        {RunOutcome::Unavailable, Outcome::TempFail, "no database host available"},
        {RunOutcome::LoginRefused, Outcome::TempFail, "database login refused"},
        {RunOutcome::ServerFull, Outcome::TempFail, "database server full (too many connections)"},
        {RunOutcome::TimedOut, Outcome::Timeout, "database query timed out"},
    };
    for (const auto& c : cases) {
        Fixture f(table_map());
        f.runner.table[{"k"}] = {{"v"}};
        f.runner.every_host_fails = c.error;
        const LookupResult r = f("k");
        BOOST_TEST(static_cast<int>(r.outcome) == static_cast<int>(c.outcome), static_cast<int>(c.error));
        BOOST_TEST(r.text == c.text);
    }
}

BOOST_AUTO_TEST_CASE(statement_errors_are_temp_and_end_the_search)
{
    MapConfig m = table_map();
    m.strip_extension = "+";
    Fixture f(m);
    f.runner.statement_error = true;
    const LookupResult r = f("user+tag@example.org");
    BOOST_TEST(is(r, Outcome::TempFail));
    BOOST_TEST(r.text == "lookup failed in map recipient");
    // After a failure the shorter key is not asked: its answer could be wrong.
    BOOST_TEST(f.runner.executed.size() == 1u);
}

BOOST_AUTO_TEST_CASE(statement_mismatch_is_temp)
{
    Fixture f(table_map());
    f.runner.mismatch = true;
    const LookupResult r = f("k");
    BOOST_TEST(is(r, Outcome::TempFail));
    BOOST_TEST(r.text == "map recipient cannot be queried");
}

BOOST_AUTO_TEST_CASE(map_that_cannot_be_built_never_reaches_a_lookup)
{
    MapConfig m = table_map();
    m.table = "no such table"; // the loader refuses it (exit 78, a handler TEMP): a lookup holds compiled maps only
    BOOST_CHECK_THROW(compile_map(m), ConfigError);
}

BOOST_AUTO_TEST_CASE(too_long_results_are_perm)
{
    Fixture f(table_map());
    f.runner.table[{"big"}] = {{std::string(max_value_length + 1, 'x')}};
    f.runner.table[{"fits"}] = {{std::string(max_value_length, 'x')}};
    f.runner.table[{"many"}] = {{std::string(60000, 'a')}, {std::string(60000, 'b')}};
    for (const char* k : {"big", "many"}) {
        const LookupResult r = f(k);
        BOOST_TEST(is(r, Outcome::PermFail), k);
        BOOST_TEST(r.text == "result too long");
    }
    BOOST_TEST(f("fits").text.size() == max_value_length);
}

BOOST_AUTO_TEST_CASE(domain_too_long_to_search_is_perm_without_asking)
{
    MapConfig m = table_map("access");
    m.search = SearchOrder::Access;
    Fixture f(m);
    std::string domain;
    while (domain.size() <= max_search_domain)
        domain += "abcdefgh.";
    const LookupResult r = f("user@" + domain + "example");
    BOOST_TEST(is(r, Outcome::PermFail));
    BOOST_TEST(r.text == "domain too long to search");
    BOOST_TEST(f.runner.runs == 0);
}

BOOST_AUTO_TEST_CASE(a_domain_too_deep_or_with_a_long_label_is_perm_without_asking)
{
    MapConfig m = table_map("access");
    m.search = SearchOrder::Access;
    Fixture f(m);
    std::string deep = "example";
    for (std::size_t i = 0; i < max_search_labels; ++i)
        deep = "a." + deep;
    LookupResult r = f("user@" + deep);
    BOOST_TEST(is(r, Outcome::PermFail));
    BOOST_TEST(r.text == "domain has too many labels to search");
    r = f("user@" + std::string(64, 'l') + ".example");
    BOOST_TEST(r.text == "domain label too long to search");
    BOOST_TEST(f.runner.runs == 0);
    // 255 dots: the review's 256 queries are now three (the key, the
    // name, "user@"), the name being no domain to walk.
    BOOST_TEST(is(f("user@" + std::string(255, '.')), Outcome::NotFound));
    BOOST_TEST(f.runner.executed.size() == 3u);
}

BOOST_AUTO_TEST_CASE(query_budget_refills_with_time_and_at_once_when_the_client_waits)
{
    QueryBudget b(10, 1000);
    const auto t0 = Clock::now();
    BOOST_TEST(b.affords(10, t0));
    BOOST_TEST(!b.affords(11, t0));
    for (int i = 0; i < 12; ++i)
        b.spend();
    BOOST_TEST(b.left() == 0u);
    BOOST_TEST(!b.affords(1, t0));
    BOOST_TEST(b.affords(3, t0 + std::chrono::milliseconds(3)), "1000 a second: one a millisecond");
    BOOST_TEST(!b.affords(4, t0 + std::chrono::milliseconds(3)));
    BOOST_TEST(b.affords(10, t0 + std::chrono::seconds(60)));
    BOOST_TEST(!b.affords(11, t0 + std::chrono::seconds(60)), "never past capacity");
    for (int i = 0; i < 10; ++i)
        b.spend();
    b.fill();
    BOOST_TEST(b.left() == 10u);
}

// The review's pipelined case, on a small budget: requests sent ahead share
// it; past it each is TEMP without a query until the client catches up.
BOOST_AUTO_TEST_CASE(pipelined_walks_share_one_budget_a_waiting_client_never_runs_out)
{
    MapConfig m = table_map("transport");
    m.search = SearchOrder::Transport;
    Fixture f(m, QueryBudget(20, 0));
    f.lookup->session_started();
    // Each walk: the address, a.b.c.example and 3 parents: 5 executions.
    for (int i = 0; i < 4; ++i)
        BOOST_TEST(is(f("u@a.b.c.example"), Outcome::NotFound));
    BOOST_TEST(f.runner.executed.size() == 20u);
    const LookupResult r = f("u@a.b.c.example");
    BOOST_TEST(is(r, Outcome::TempFail));
    BOOST_TEST(r.text == "query budget spent: read the replies before sending more");
    BOOST_TEST(f.runner.executed.size() == 20u, "nothing asked past the budget");
    f.lookup->batch_over();
    BOOST_TEST(is(f("u@a.b.c.example"), Outcome::NotFound), "the client read its replies");
    BOOST_TEST(f.runner.executed.size() == 25u);
    // A client that waits for each reply never runs out.
    for (int i = 0; i < 100; ++i) {
        f.lookup->batch_over();
        BOOST_TEST(is(f("u@a.b.c.example"), Outcome::NotFound));
    }
    // A new session starts with the whole budget.
    for (int i = 0; i < 4; ++i)
        f("u@a.b.c.example");
    BOOST_TEST(is(f("u@a.b.c.example"), Outcome::TempFail));
    f.lookup->session_started();
    BOOST_TEST(is(f("u@a.b.c.example"), Outcome::NotFound));
}

BOOST_AUTO_TEST_CASE(a_walk_run_again_answers_from_the_new_run)
{
    MapConfig m = table_map();
    m.strip_extension = "+";
    Fixture f(m);
    f.runner.break_first_walk = true;
    f.runner.table[{"user@example.org"}] = {{"fresh"}};
    const LookupResult r = f("user+tag@example.org");
    BOOST_TEST(r.text == "fresh");
    BOOST_TEST(asked(f.runner) == (std::vector<std::string>{"user+tag@example.org", "user@example.org"}));
}

BOOST_AUTO_TEST_CASE(wakeups_reach_the_runner)
{
    Fixture f(table_map());
    BOOST_TEST(!f.lookup->next_wakeup().has_value());
    const auto t = Clock::now();
    f.runner.wakeup_at = t;
    BOOST_TEST((f.lookup->next_wakeup() == t));
    f.lookup->wakeup(t);
    BOOST_TEST((f.runner.closed_at == t));
}

BOOST_AUTO_TEST_SUITE_END()

// The answer cache in front of the walk: a clock of the test's own, the
// cache shared as the listener's handlers share it.
namespace
{

CachePolicy policy(unsigned ttl, unsigned negative_ttl, unsigned stale)
{
    CachePolicy p;
    p.ttl = ttl;
    p.negative_ttl = negative_ttl;
    p.stale_if_error = stale;
    return p;
}

struct CachedFixture {
    CachedFixture(MapConfig map, CachePolicy p, AnswerCache& c) : cache(c)
    {
        map.cache = p;
        maps = {compile_map(map)};
        lookup.emplace(maps, runner, QueryBudget(), &cache);
        lookup->set_clock([this] { return now_ms; });
    }
    LookupResult operator()(std::string_view key) { return lookup->lookup(maps[0].service, key); }
    void advance(int seconds) { now_ms += seconds * 1000LL; }

    AnswerCache& cache;
    std::vector<CompiledMap> maps;
    TableRunner runner;
    std::optional<DbLookup> lookup;
    std::int64_t now_ms = 1000000;
};

} // namespace

BOOST_AUTO_TEST_SUITE(dblookup_cache)

BOOST_AUTO_TEST_CASE(a_found_answer_is_reused_for_ttl_a_notfound_for_negative_ttl)
{
    AnswerCache cache;
    CachedFixture f(table_map(), policy(60, 5, 0), cache);
    f.runner.table[{"a@example.org"}] = {{"x@example.org"}};
    BOOST_TEST(f("a@example.org").text == "x@example.org");
    BOOST_TEST(is(f("b@example.org"), Outcome::NotFound));
    BOOST_TEST(f.runner.runs == 2);
    f.advance(4);
    BOOST_TEST(f("a@example.org").text == "x@example.org");
    BOOST_TEST(is(f("b@example.org"), Outcome::NotFound));
    BOOST_TEST(f.runner.runs == 2);
    // A row added is seen once the negative answer is older than negative_ttl.
    f.runner.table[{"b@example.org"}] = {{"y@example.org"}};
    f.advance(1);
    BOOST_TEST(f("b@example.org").text == "y@example.org");
    BOOST_TEST(f.runner.runs == 3);
    // A row changed is seen after ttl.
    f.runner.table[{"a@example.org"}] = {{"z@example.org"}};
    f.advance(54);
    BOOST_TEST(f("a@example.org").text == "x@example.org");
    f.advance(1);
    BOOST_TEST(f("a@example.org").text == "z@example.org");
    BOOST_TEST(f.runner.runs == 4);
}

BOOST_AUTO_TEST_CASE(a_search_walk_is_one_entry_and_a_cached_miss_asks_nothing)
{
    AnswerCache cache;
    MapConfig m = table_map();
    m.search = SearchOrder::Access;
    m.parent_matches_subdomains = true;
    CachedFixture f(m, policy(60, 60, 0), cache);
    f.runner.table[{"example.org"}] = {{"REJECT"}};
    BOOST_TEST(f("user@a.example.org").text == "REJECT");
    BOOST_TEST(is(f("user@example.net"), Outcome::NotFound));
    const std::size_t executed = f.runner.executed.size();
    BOOST_TEST(executed > 4u);
    BOOST_TEST(f("user@a.example.org").text == "REJECT");
    BOOST_TEST(is(f("user@example.net"), Outcome::NotFound));
    BOOST_TEST(f.runner.executed.size() == executed);
    BOOST_TEST(cache.entries() == 2u); // the keys the client sent, not the steps
}

BOOST_AUTO_TEST_CASE(when_no_host_answers_a_stale_answer_stands_in_for_stale_if_error)
{
    stats().open_private(); // the counters (stats.hh) see the hits and the stale answers
    stats().configure({"recipient"}, {});
    const MapCounters& counted = stats().region()->maps[0];
    AnswerCache cache;
    CachedFixture f(table_map(), policy(10, 10, 3600), cache);
    f.runner.table[{"found@example.org"}] = {{"x@example.org"}};
    BOOST_TEST(is(f("found@example.org"), Outcome::Found));
    BOOST_TEST(is(f("missing@example.org"), Outcome::NotFound));
    BOOST_TEST(is(f("found@example.org"), Outcome::Found));
    BOOST_TEST(counted.cache_hits.load() == 1u);
    f.runner.every_host_fails = RunOutcome::Unavailable;
    f.advance(11);
    BOOST_TEST(f("found@example.org").text == "x@example.org");
    BOOST_TEST(is(f("missing@example.org"), Outcome::NotFound));
    BOOST_TEST(f.runner.runs == 4); // the database was asked first
    BOOST_TEST(cache.stale_served() == 2u);
    BOOST_TEST(counted.stale_answers.load() == 2u);
    stats().close();
    // Never seen: TEMP, as without a cache.
    BOOST_TEST(is(f("new@example.org"), Outcome::TempFail));
    // A timeout or a full server too.
    f.runner.every_host_fails = RunOutcome::TimedOut;
    BOOST_TEST(f("found@example.org").text == "x@example.org");
    f.runner.every_host_fails = RunOutcome::ServerFull;
    BOOST_TEST(f("found@example.org").text == "x@example.org");
    // Past stale_if_error: TEMP again.
    f.runner.every_host_fails = RunOutcome::Unavailable;
    f.advance(3600 - 11);
    BOOST_TEST(is(f("found@example.org"), Outcome::Found));
    f.advance(1);
    BOOST_TEST(is(f("found@example.org"), Outcome::TempFail));
    BOOST_TEST(is(f("missing@example.org"), Outcome::TempFail));
    // The database back: answers and the cache again.
    f.runner.every_host_fails.reset();
    BOOST_TEST(is(f("found@example.org"), Outcome::Found));
    f.runner.every_host_fails = RunOutcome::Unavailable;
    BOOST_TEST(is(f("found@example.org"), Outcome::Found));
}

BOOST_AUTO_TEST_CASE(stale_answers_hide_no_fault_of_the_map_or_the_login)
{
    AnswerCache cache;
    CachedFixture f(table_map(), policy(0, 0, 3600), cache);
    f.runner.table[{"k"}] = {{"v"}};
    BOOST_TEST(is(f("k"), Outcome::Found));
    BOOST_TEST(is(f("k"), Outcome::Found));
    BOOST_TEST(f.runner.runs == 2); // ttl 0: always asked, kept for an outage
    f.runner.statement_error = true;
    BOOST_TEST(is(f("k"), Outcome::TempFail));
    f.runner.statement_error = false;
    f.runner.mismatch = true;
    BOOST_TEST(is(f("k"), Outcome::TempFail));
    f.runner.mismatch = false;
    f.runner.every_host_fails = RunOutcome::LoginRefused;
    BOOST_TEST(is(f("k"), Outcome::TempFail));
    f.runner.every_host_fails = RunOutcome::Unavailable;
    BOOST_TEST(is(f("k"), Outcome::Found));
}

BOOST_AUTO_TEST_CASE(failures_are_not_stored)
{
    AnswerCache cache;
    CachedFixture f(table_map(), policy(60, 60, 3600), cache);
    f.runner.table[{"k"}] = {{"v"}};
    f.runner.every_host_fails = RunOutcome::Unavailable;
    BOOST_TEST(is(f("k"), Outcome::TempFail));
    f.runner.every_host_fails.reset();
    BOOST_TEST(is(f("k"), Outcome::Found));
    BOOST_TEST(f.runner.runs == 2);
    f.runner.table[{"long"}] = {{std::string(max_value_length + 1, 'x')}};
    BOOST_TEST(is(f("long"), Outcome::PermFail));
    BOOST_TEST(is(f("long"), Outcome::PermFail));
    BOOST_TEST(f.runner.runs == 4);
}

BOOST_AUTO_TEST_CASE(handlers_with_one_config_share_answers_a_changed_map_does_not)
{
    AnswerCache cache;
    CachedFixture first(table_map(), policy(60, 60, 0), cache);
    CachedFixture second(table_map(), policy(60, 60, 0), cache);
    first.runner.table[{"k"}] = {{"old"}};
    BOOST_TEST(first("k").text == "old");
    BOOST_TEST(second("k").text == "old");
    BOOST_TEST(second.runner.runs == 0);
    MapConfig changed = table_map();
    changed.table = "aliases2";
    CachedFixture reloaded(changed, policy(60, 60, 0), cache);
    reloaded.runner.table[{"k"}] = {{"new"}};
    BOOST_TEST(reloaded("k").text == "new");
    BOOST_TEST(reloaded.runner.runs == 1);
    // Other database hosts (another `database` hash): other answers, whatever the map.
    TableRunner elsewhere;
    elsewhere.table[{"k"}] = {{"elsewhere"}};
    DbLookup moved(first.maps, elsewhere, QueryBudget(), &cache, 42);
    BOOST_TEST(moved.lookup("recipient", "k").text == "elsewhere");
}

BOOST_AUTO_TEST_CASE(maps_without_cache_ask_every_time)
{
    AnswerCache cache;
    CachedFixture f(table_map(), CachePolicy{}, cache);
    f.runner.table[{"k"}] = {{"v"}};
    f("k");
    f("k");
    BOOST_TEST(f.runner.runs == 2);
    BOOST_TEST(cache.entries() == 0u);
    f.runner.every_host_fails = RunOutcome::Unavailable;
    BOOST_TEST(is(f("k"), Outcome::TempFail));
}

BOOST_AUTO_TEST_SUITE_END()
