#include "fdlimit.hh"
#include "listen.hh" // default_max_children

#include "child_check.hh"

#include <boost/test/unit_test.hpp>

#include <string>
#include <sys/resource.h>

using namespace sockmapd;

BOOST_AUTO_TEST_SUITE(fdlimit)

BOOST_AUTO_TEST_CASE(two_descriptors_a_handler_and_a_reserve)
{
    BOOST_TEST(descriptors_for(512) == 1088u);
    BOOST_TEST(descriptors_for(1) == 66u);
    BOOST_TEST(handlers_within(1088) == 512u);
    BOOST_TEST(handlers_within(1089) == 512u);
    BOOST_TEST(handlers_within(1087) == 511u);
    BOOST_TEST(handlers_within(1024) == 480u); // a shell's and systemd's soft limit
    BOOST_TEST(handlers_within(2048) == 992u); // sockmapd-listener.service's LimitNOFILE
    BOOST_TEST(handlers_within(64) == 0u);
    BOOST_TEST(handlers_within(0) == 0u);
    BOOST_TEST(handlers_within(RLIM_INFINITY) == ~0u);
}

// Postfix at its default limits: 100 processes each of smtpd, cleanup and
// trivial-rewrite hold a connection, and one more must not wait.
BOOST_AUTO_TEST_CASE(the_default_cap_holds_postfix_and_fits_the_unit)
{
    BOOST_TEST(default_max_children >= 301u);
    BOOST_TEST(descriptors_for(default_max_children) <= 2048u);
    BOOST_TEST(ListenOptions{}.max_children == default_max_children);
}

BOOST_AUTO_TEST_CASE(a_cap_that_fits_is_kept_quietly)
{
    for (const rlim_t limit : {rlim_t{1088}, rlim_t{2048}, rlim_t{1048576}, RLIM_INFINITY}) {
        const HandlerCap c = cap_for(512, limit);
        BOOST_TEST(c.handlers == 512u);
        BOOST_TEST(c.warning.empty());
    }
    BOOST_TEST(cap_for(10000, 20064).handlers == 10000u);
}

BOOST_AUTO_TEST_CASE(a_cap_past_the_limit_shrinks_and_names_the_figure)
{
    const HandlerCap c = cap_for(512, 1024);
    BOOST_TEST(c.handlers == 480u);
    for (const char* word : {"RLIMIT_NOFILE) is 1024", "room for 480 handlers", "not --max-children 512",
                             "at most 480 run at once", "LimitNOFILE=1088", "ulimit -n 1088"})
        BOOST_TEST(c.warning.find(word) != std::string::npos, word << " in: " << c.warning);
    // Below the reserve one handler still runs.
    const HandlerCap tiny = cap_for(8, 20);
    BOOST_TEST(tiny.handlers == 1u);
    BOOST_TEST(tiny.warning.find("room for 0 handlers") != std::string::npos, tiny.warning);
}

BOOST_AUTO_TEST_CASE(the_soft_limit_is_raised_to_the_hard_one)
{
    const std::string out = in_child([] {
        rlimit rl{256, 4096};
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            return std::string("cannot set 256:4096");
        const DescriptorLimit d = raise_descriptor_limit();
        if (d.was != 256 || d.soft != 4096 || d.hard != 4096)
            return "was " + std::to_string(d.was) + " soft " + std::to_string(d.soft) + " hard " +
                   std::to_string(d.hard);
        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur != 4096 || rl.rlim_max != 4096)
            return "getrlimit: " + std::to_string(rl.rlim_cur) + ":" + std::to_string(rl.rlim_max);
        // Already at the hard limit: nothing changes.
        const DescriptorLimit again = raise_descriptor_limit();
        if (again.was != 4096 || again.soft != 4096)
            return std::string("changed at the hard limit");
        return std::string();
    });
    BOOST_TEST(out == "");
}

BOOST_AUTO_TEST_SUITE_END()
