#include "stats.hh"

#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace sockmapd;
using namespace std::chrono_literals;

namespace
{

struct TempDir {
    std::string path;
    TempDir()
    {
        char tmpl[] = "/tmp/stats_tests.XXXXXX";
        BOOST_REQUIRE(mkdtemp(tmpl));
        path = tmpl;
    }
    ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

std::uint64_t result_of(const Stats& s, std::string_view map, StatResult r)
{
    std::uint64_t n = 0;
    for (const MapCounters& m : s.region()->maps)
        if (m.state.load() == 2 && std::string_view(m.name) == map)
            n += m.results[static_cast<unsigned>(r)].load();
    return n;
}

} // namespace

BOOST_AUTO_TEST_SUITE(stats_tests)

BOOST_AUTO_TEST_CASE(counts_by_map_and_result_and_other)
{
    Stats s;
    s.lookup("a", StatResult::Ok, 1ms); // before open: nothing, no crash
    s.open_private();
    s.configure({"a", "b"}, {"db1:3306"});
    s.lookup("a", StatResult::Ok, 300us);
    s.lookup("a", StatResult::Ok, 2ms);
    s.lookup("b", StatResult::Temp, 20s);
    s.lookup("client's own name", StatResult::Perm, 1us);
    s.executed("a");
    s.cache_hit("a");
    s.cache_hit("a");
    s.stale_answer("b");
    s.cache_hit("client's own name"); // not a configured map: not counted
    BOOST_TEST(result_of(s, "a", StatResult::Ok) == 2U);
    BOOST_TEST(result_of(s, "b", StatResult::Temp) == 1U);
    BOOST_TEST(s.region()->other_results[static_cast<unsigned>(StatResult::Perm)].load() == 1U);
    const std::string text = format_prometheus(*s.region(), 0, "1.2.3");
    BOOST_TEST(text.find("sockmapd_lookups_total{map=\"a\",result=\"OK\"} 2\n") != std::string::npos);
    BOOST_TEST(text.find("sockmapd_lookup_duration_seconds_bucket{map=\"a\",le=\"0.00025\"} 0\n") != std::string::npos);
    BOOST_TEST(text.find("sockmapd_lookup_duration_seconds_bucket{map=\"a\",le=\"0.0005\"} 1\n") != std::string::npos);
    BOOST_TEST(text.find("sockmapd_lookup_duration_seconds_bucket{map=\"b\",le=\"10\"} 0\n") != std::string::npos);
    BOOST_TEST(text.find("sockmapd_lookup_duration_seconds_bucket{map=\"b\",le=\"+Inf\"} 1\n") != std::string::npos);
    BOOST_TEST(text.find("sockmapd_lookup_duration_seconds_sum{map=\"a\"} 0.002300\n") != std::string::npos);
    BOOST_TEST(text.find("sockmapd_statement_executions_total{map=\"a\"} 1\n") != std::string::npos);
    BOOST_TEST(text.find("sockmapd_cache_hits_total{map=\"a\"} 2\n") != std::string::npos);
    BOOST_TEST(text.find("sockmapd_stale_answers_total{map=\"a\"} 0\n") != std::string::npos);
    BOOST_TEST(text.find("sockmapd_stale_answers_total{map=\"b\"} 1\n") != std::string::npos);
    BOOST_TEST(text.find("sockmapd_other_requests_total{result=\"PERM\"} 1\n") != std::string::npos);
    BOOST_TEST(text.find("sockmapd_db_host_down{host=\"db1:3306\"} 0\n") != std::string::npos);
    BOOST_TEST(text.find("sockmapd_build_info{version=\"1.2.3\"} 1\n") != std::string::npos);
    BOOST_TEST(s.summary().lookups == 3U);
    BOOST_TEST(s.summary().temp == 1U);
}

BOOST_AUTO_TEST_CASE(a_reload_that_changes_maps_keeps_every_sum)
{
    Stats s;
    s.open_private();
    s.configure({"a", "b"}, {});
    s.lookup("b", StatResult::NotFound, 1ms);
    s.lookup("a", StatResult::NotFound, 1ms); // the last map found is "a"
    s.configure({"c", "b"}, {});              // "a" dropped, "c" new, "b" in another place
    s.lookup("b", StatResult::NotFound, 1ms);
    s.lookup("c", StatResult::Ok, 1ms);
    s.lookup("a", StatResult::Ok, 1ms); // no longer configured: other
    BOOST_TEST(result_of(s, "b", StatResult::NotFound) == 2U);
    BOOST_TEST(result_of(s, "c", StatResult::Ok) == 1U);
    BOOST_TEST(result_of(s, "a", StatResult::Ok) == 0U);
    BOOST_TEST(s.region()->other_results[static_cast<unsigned>(StatResult::Ok)].load() == 1U);
    // The dropped map's slot is kept: its counters never go back.
    const std::string text = format_prometheus(*s.region(), 0, "v");
    BOOST_TEST(text.find("sockmapd_lookups_total{map=\"a\",result=\"OK\"} 0\n") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(more_maps_than_slots_count_as_other)
{
    Stats s;
    s.open_private();
    std::vector<std::string> names;
    for (std::size_t i = 0; i < stats_max_maps + 3; ++i)
        names.push_back("m" + std::to_string(i));
    s.configure(names, {});
    s.lookup("m0", StatResult::Ok, 1ms);
    s.lookup("m" + std::to_string(stats_max_maps + 1), StatResult::Ok, 1ms);
    BOOST_TEST(result_of(s, "m0", StatResult::Ok) == 1U);
    BOOST_TEST(s.region()->other_results[0].load() == 1U);
}

BOOST_AUTO_TEST_CASE(processes_started_afresh_share_the_file_and_sum_by_name)
{
    TempDir dir;
    {
        Stats parent;
        parent.open(dir.path);
        parent.configure({"m"}, {"h"});
        parent.lookup("m", StatResult::Ok, 1ms);
        for (int i = 0; i < 3; ++i) {
            const pid_t pid = fork();
            BOOST_REQUIRE(pid >= 0);
            if (pid == 0) {
                // As a handler exec'd by systemd: its own open() of the file.
                Stats child;
                child.open(dir.path);
                child.configure({"m", "new"}, {});
                child.lookup("m", StatResult::Temp, 1ms);
                child.lookup("new", StatResult::Ok, 1ms);
                child.host("h", Stats::HostEvent::Connected);
                child.host_marked("h", 200);
                child.host_marked("gone", 50);
                _exit(0);
            }
            int status = 0;
            waitpid(pid, &status, 0);
        }
        BOOST_TEST(result_of(parent, "m", StatResult::Temp) == 3U);
        BOOST_TEST(result_of(parent, "new", StatResult::Ok) == 3U);
    }
    struct stat st {
    };
    BOOST_REQUIRE(stat((dir.path + "/stats").c_str(), &st) == 0);
    BOOST_TEST((st.st_mode & 0777) == 0640U);
    const SharedRegion view = peek_stats(dir.path + "/stats");
    BOOST_REQUIRE(view);
    const auto& r = *static_cast<const StatsRegion*>(view.data());
    const std::string text = format_prometheus(r, 100, "v");
    BOOST_TEST(text.find("sockmapd_lookups_total{map=\"m\",result=\"OK\"} 1\n") != std::string::npos);
    BOOST_TEST(text.find("sockmapd_lookups_total{map=\"m\",result=\"TEMP\"} 3\n") != std::string::npos);
    BOOST_TEST(text.find("sockmapd_db_connects_total{host=\"h\"} 3\n") != std::string::npos);
    BOOST_TEST(text.find("sockmapd_db_host_down{host=\"h\"} 1\n") != std::string::npos);
    BOOST_TEST(text.find("sockmapd_db_host_down{host=\"gone\"} 0\n") != std::string::npos); // expired
    BOOST_TEST(text.find("sockmapd_db_marked_down_total{host=\"gone\"} 3\n") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_file_of_another_layout_is_replaced_not_used)
{
    TempDir dir;
    const std::string path = dir.path + "/stats";
    BOOST_REQUIRE(std::system(("head -c 100 /dev/zero > '" + path + "'").c_str()) == 0);
    BOOST_TEST(!peek_stats(path));
    Stats s;
    s.open(dir.path);
    s.configure({"m"}, {});
    s.lookup("m", StatResult::Ok, 1ms);
    const SharedRegion view = peek_stats(path);
    BOOST_REQUIRE(view);
    BOOST_TEST(static_cast<const StatsRegion*>(view.data())->maps[0].results[0].load() == 1U);
}

BOOST_AUTO_TEST_CASE(label_values_are_escaped)
{
    Stats s;
    s.open_private();
    s.configure({"a\"b\\c"}, {"unix:/run/my\nsql"});
    s.lookup("a\"b\\c", StatResult::Ok, 1ms);
    const std::string text = format_prometheus(*s.region(), 0, "v");
    BOOST_TEST(text.find("map=\"a\\\"b\\\\c\"") != std::string::npos);
    BOOST_TEST(text.find("host=\"unix:/run/my\\nsql\"") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
