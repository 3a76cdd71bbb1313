#include "cache.hh"

#include <boost/test/unit_test.hpp>

#include <chrono>
#include <csignal>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace sockmapd;

namespace
{

const LookupResult found(std::string v)
{
    return {Outcome::Found, std::move(v)};
}
const LookupResult notfound{Outcome::NotFound, {}};

// One set of eight slots: every key competes for the same ones.
AnswerCache::Geometry one_set()
{
    return {AnswerCache::ways, 256};
}

// Forks a child that runs `body` and then exits 0; returns its wait status.
template <class Body> int in_child(Body&& body)
{
    const pid_t pid = fork();
    BOOST_REQUIRE(pid >= 0);
    if (pid == 0) {
        body();
        _exit(0);
    }
    int status = 0;
    BOOST_REQUIRE(waitpid(pid, &status, 0) == pid);
    return status;
}

// The value found, or "<none>".
std::string text_of(const std::optional<AnswerCache::Entry>& e)
{
    return e ? e->text : "<none>";
}

bool killed_by(int status, int sig)
{
    return WIFSIGNALED(status) && WTERMSIG(status) == sig;
}

} // namespace

BOOST_AUTO_TEST_SUITE(cache)

BOOST_AUTO_TEST_CASE(found_and_notfound_come_back_with_their_age)
{
    AnswerCache c;
    BOOST_REQUIRE(c.usable());
    BOOST_TEST(c.put(1, "senders", "a@example.org", found("REJECT spam"), 1000));
    BOOST_TEST(c.put(1, "senders", "b@example.org", notfound, 2000));
    const auto a = c.get(1, "senders", "a@example.org", 61000);
    BOOST_REQUIRE(a);
    BOOST_TEST((a->outcome == Outcome::Found));
    BOOST_TEST(a->text == "REJECT spam");
    BOOST_TEST(a->age_ms == 60000);
    const auto b = c.get(1, "senders", "b@example.org", 2500);
    BOOST_REQUIRE(b);
    BOOST_TEST((b->outcome == Outcome::NotFound));
    BOOST_TEST(b->text.empty());
    BOOST_TEST(b->age_ms == 500);
    // A clock that went back is age 0, never negative.
    BOOST_TEST(c.get(1, "senders", "b@example.org", 0)->age_ms == 0);
    BOOST_TEST(c.entries() == 2u);
}

BOOST_AUTO_TEST_CASE(failures_are_never_stored)
{
    AnswerCache c;
    for (const Outcome o : {Outcome::TempFail, Outcome::Timeout, Outcome::PermFail, Outcome::NoSuchMap})
        BOOST_TEST(!c.put(1, "m", "k", {o, "why"}, 1));
    BOOST_TEST(!c.get(1, "m", "k", 1).has_value());
    BOOST_TEST(c.entries() == 0u);
}

BOOST_AUTO_TEST_CASE(map_key_and_fingerprint_each_tell_entries_apart)
{
    AnswerCache c;
    c.put(1, "a", "k", found("1"), 1);
    c.put(1, "b", "k", found("2"), 1);
    c.put(2, "a", "k", found("3"), 1);
    c.put(1, "a", "K", found("4"), 1);
    c.put(1, "a b", "", found("5"), 1); // not "a" + " b"
    BOOST_TEST(text_of(c.get(1, "a", "k", 1)) == "1");
    BOOST_TEST(text_of(c.get(1, "b", "k", 1)) == "2");
    BOOST_TEST(text_of(c.get(2, "a", "k", 1)) == "3");
    BOOST_TEST(text_of(c.get(1, "a", "K", 1)) == "4");
    BOOST_TEST(text_of(c.get(1, "a b", "", 1)) == "5");
    BOOST_TEST(!c.get(1, "a", " bk", 1).has_value());
    BOOST_TEST(!c.get(3, "a", "k", 1).has_value()); // a reload that changed the map meets nothing old
    // Keys hold any byte.
    const std::string odd("a\0b,c d", 7);
    c.put(1, "a", odd, found(std::string("x\0y", 3)), 1);
    BOOST_TEST(text_of(c.get(1, "a", odd, 1)) == std::string("x\0y", 3));
    BOOST_TEST(!c.get(1, "a", std::string("a\0b,c e", 7), 1).has_value());
}

BOOST_AUTO_TEST_CASE(a_new_answer_replaces_the_old_in_its_slot)
{
    AnswerCache c(one_set());
    c.put(1, "m", "k", found("old"), 1);
    c.put(1, "m", "k", notfound, 5);
    const auto e = c.get(1, "m", "k", 10);
    BOOST_REQUIRE(e);
    BOOST_TEST((e->outcome == Outcome::NotFound));
    BOOST_TEST(e->age_ms == 5);
    BOOST_TEST(c.entries() == 1u);
}

BOOST_AUTO_TEST_CASE(an_answer_larger_than_a_slot_is_not_stored)
{
    AnswerCache c(one_set());
    const std::size_t room = c.max_payload();
    BOOST_TEST(c.put(1, "m", "k", found(std::string(room - 2, 'v')), 1));
    BOOST_TEST(!c.put(1, "m", "k2", found(std::string(room - 2, 'v')), 1));
    BOOST_TEST(!c.get(1, "m", "k2", 1).has_value());
    BOOST_TEST(!c.put(1, "m", std::string(20000, 'k'), notfound, 1));
    BOOST_TEST(text_of(c.get(1, "m", "k", 1)).size() == room - 2);
}

BOOST_AUTO_TEST_CASE(a_full_set_gives_up_the_entry_used_least_recently)
{
    AnswerCache c(one_set());
    for (int i = 0; i < 8; ++i)
        BOOST_TEST(c.put(1, "m", "k" + std::to_string(i), found("v"), 10 + i));
    // k0 is read last: k1 is now the least recently used.
    BOOST_TEST(c.get(1, "m", "k0", 100).has_value());
    BOOST_TEST(c.put(1, "m", "k8", found("v"), 101));
    BOOST_TEST(c.entries() == 8u);
    BOOST_TEST(c.get(1, "m", "k0", 102).has_value());
    BOOST_TEST(!c.get(1, "m", "k1", 102).has_value());
    for (int i = 2; i <= 8; ++i)
        BOOST_TEST(c.get(1, "m", "k" + std::to_string(i), 103).has_value());
}

BOOST_AUTO_TEST_CASE(a_million_distinct_keys_stay_within_the_bound)
{
    AnswerCache c; // the service's geometry
    const std::size_t bytes = c.region_bytes();
    BOOST_TEST(bytes <= 20u * 1024 * 1024);
    constexpr int n = 1000000;
    for (int i = 0; i < n; ++i)
        c.put(7, "recipients", "user" + std::to_string(i) + "@example.org", found("OK"), i);
    BOOST_TEST(c.region_bytes() == bytes);
    BOOST_TEST(c.entries() <= c.capacity());
    BOOST_TEST(c.entries() > c.capacity() * 9 / 10);
    // The newest keys are kept (LRU within each set).
    int kept = 0;
    for (int i = n - 1000; i < n; ++i)
        kept += c.get(7, "recipients", "user" + std::to_string(i) + "@example.org", n).has_value();
    BOOST_TEST(kept >= 990);
    BOOST_TEST(!c.get(7, "recipients", "user0@example.org", n).has_value());
}

BOOST_AUTO_TEST_CASE(shared_with_forked_processes)
{
    AnswerCache c;
    c.put(1, "m", "parent", found("p"), 1);
    const int status = in_child([&] {
        if (!c.get(1, "m", "parent", 2))
            _exit(1);
        c.put(1, "m", "child", found("c"), 2);
    });
    BOOST_TEST((WIFEXITED(status) && WEXITSTATUS(status) == 0));
    BOOST_TEST(text_of(c.get(1, "m", "child", 3)) == "c");
}

BOOST_AUTO_TEST_CASE(a_writer_killed_in_the_middle_leaves_a_usable_cache)
{
    AnswerCache c(one_set());
    for (int i = 0; i < 7; ++i)
        c.put(1, "m", "k" + std::to_string(i), found("v" + std::to_string(i)), 1);
    // The child dies holding the set's lock, its slot half written.
    const int status = in_child([&] {
        AnswerCache::write_hook = [] { raise(SIGKILL); };
        c.put(1, "m", "torn", found("half"), 2);
    });
    BOOST_REQUIRE(killed_by(status, SIGKILL));
    // The next process takes the lock at once, the torn slot gone, the rest intact.
    const auto t0 = std::chrono::steady_clock::now();
    BOOST_TEST(!c.get(1, "m", "torn", 3).has_value());
    BOOST_TEST((std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1)));
    for (int i = 0; i < 7; ++i)
        BOOST_TEST(text_of(c.get(1, "m", "k" + std::to_string(i), 3)) == "v" + std::to_string(i));
    BOOST_TEST(c.put(1, "m", "torn", found("whole"), 4));
    BOOST_TEST(text_of(c.get(1, "m", "torn", 5)) == "whole");
    // And again, for a slot that held an entry before (overwritten half-way).
    const int again = in_child([&] {
        AnswerCache::write_hook = [] { raise(SIGKILL); };
        c.put(1, "m", "k3", found("changed"), 6);
    });
    BOOST_REQUIRE(killed_by(again, SIGKILL));
    BOOST_TEST(!c.get(1, "m", "k3", 7).has_value());
    BOOST_TEST(text_of(c.get(1, "m", "k4", 7)) == "v4");
}

BOOST_AUTO_TEST_CASE(a_lock_held_by_a_stopped_process_is_a_miss_not_a_wait)
{
    AnswerCache c(one_set());
    c.put(1, "m", "k", found("v"), 1);
    const pid_t pid = fork();
    BOOST_REQUIRE(pid >= 0);
    if (pid == 0) {
        AnswerCache::write_hook = [] { raise(SIGSTOP); };
        c.put(1, "m", "other", found("x"), 2);
        _exit(0);
    }
    int status = 0;
    BOOST_REQUIRE(waitpid(pid, &status, WUNTRACED) == pid);
    BOOST_REQUIRE(WIFSTOPPED(status));
    const auto t0 = std::chrono::steady_clock::now();
    BOOST_TEST(!c.get(1, "m", "k", 3).has_value());
    BOOST_TEST(!c.put(1, "m", "k", found("w"), 3));
    BOOST_TEST((std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(500)));
    kill(pid, SIGKILL);
    BOOST_REQUIRE(waitpid(pid, &status, 0) == pid);
    BOOST_TEST(text_of(c.get(1, "m", "k", 4)) == "v");
}

BOOST_AUTO_TEST_CASE(writers_killed_at_random_never_leave_a_wrong_answer)
{
    AnswerCache c({64, 256});
    // Children store "v<key>" for their keys as fast as they can and are
    // killed at random moments; whatever is found afterwards must be right.
    for (int round = 0; round < 20; ++round) {
        const pid_t pid = fork();
        BOOST_REQUIRE(pid >= 0);
        if (pid == 0) {
            for (unsigned i = 0;; ++i) {
                const std::string k = std::to_string((i * 7919u + static_cast<unsigned>(round)) % 500u);
                c.put(1, "m", k, found("v" + k + std::string(i % 100, '.')), i);
                (void)c.get(1, "m", std::to_string(i % 500u), i);
            }
        }
        usleep(static_cast<useconds_t>(1000 + round * 397 % 5000));
        kill(pid, SIGKILL);
        int status = 0;
        BOOST_REQUIRE(waitpid(pid, &status, 0) == pid);
    }
    int hits = 0;
    for (int k = 0; k < 500; ++k) {
        const std::string key = std::to_string(k);
        if (const auto e = c.get(1, "m", key, 1 << 30)) {
            ++hits;
            BOOST_TEST(e->text.rfind("v" + key, 0) == 0u, key << " -> " << e->text);
            BOOST_TEST(e->text.find_first_not_of('.', key.size() + 1) == std::string::npos);
        }
    }
    BOOST_TEST(hits > 0);
    BOOST_TEST(c.put(1, "m", "after", found("ok"), 1));
    BOOST_TEST(text_of(c.get(1, "m", "after", 1)) == "ok");
}

BOOST_AUTO_TEST_CASE(stale_lines_are_throttled_for_the_whole_service)
{
    AnswerCache c;
    std::uint64_t suppressed = 99;
    BOOST_TEST(c.stale_log_due(1000, 60000, suppressed));
    BOOST_TEST(suppressed == 0u);
    BOOST_TEST(!c.stale_log_due(2000, 60000, suppressed));
    const int status = in_child([&] {
        std::uint64_t s;
        if (c.stale_log_due(3000, 60000, s))
            _exit(1);
    });
    BOOST_TEST((WIFEXITED(status) && WEXITSTATUS(status) == 0));
    BOOST_TEST(c.stale_log_due(61000, 60000, suppressed));
    BOOST_TEST(suppressed == 2u);
    BOOST_TEST(c.stale_served() == 4u);
}

BOOST_AUTO_TEST_SUITE_END()
