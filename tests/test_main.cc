// The one Boost.Test runner: every tests/<module>_tests.cc links into it.
#define BOOST_TEST_MODULE sockmapd
#include <boost/test/unit_test.hpp>
