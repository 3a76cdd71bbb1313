#include "mariadb.hh"

#include <boost/test/unit_test.hpp>

#include <errmsg.h>
#include <mysqld_error.h>

#include <string>
#include <vector>

using namespace sockmapd;

BOOST_AUTO_TEST_SUITE(mariadb)

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

BOOST_AUTO_TEST_CASE(login_errors)
{
    BOOST_TEST(is_login_error(ER_ACCESS_DENIED_ERROR));
    BOOST_TEST(is_login_error(ER_DBACCESS_DENIED_ERROR));
    BOOST_TEST(is_login_error(ER_BAD_DB_ERROR));
    BOOST_TEST(!is_login_error(CR_CONN_HOST_ERROR));
    BOOST_TEST(!is_login_error(ER_BAD_FIELD_ERROR));
}

BOOST_AUTO_TEST_SUITE_END()
