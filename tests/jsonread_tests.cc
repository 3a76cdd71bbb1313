#include "jsonread.hh"

#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

using namespace sockmapd;

namespace
{

std::string problems_of(const Problems& p)
{
    try {
        p.raise_if_any("f");
    } catch (const ConfigError& e) {
        return e.what();
    }
    return "";
}

} // namespace

BOOST_AUTO_TEST_SUITE(jsonread)

BOOST_AUTO_TEST_CASE(nearest_key_only_for_likely_typos)
{
    const std::vector<std::string> known = {"service",   "database",        "table", "key",
                                            "value",     "reason",          "query", "result_format",
                                            "lowercase", "strip_extension", "domain"};
    struct Case {
        const char* unknown;
        const char* nearest; // "" for no suggestion
    };
    const std::vector<Case> cases = {
        {"vaule", "value"},
        {"tabel", "table"},
        {"kye", "key"},
        {"Key", "key"},
        {"domains", "domain"},
        {"sevice", "service"},
        {"resultformat", "result_format"},
        {"strip_extention", "strip_extension"},
        {"colour", ""},
        {"k", ""},
        {"x", ""},
        {"", ""},
        {"databases_list", ""},
        {"lower", ""},
    };
    for (const auto& c : cases)
        BOOST_TEST(nearest_key(c.unknown, known) == c.nearest, "\"" << c.unknown << "\"");
    BOOST_TEST(nearest_key("anything", {}) == "");
}

BOOST_AUTO_TEST_CASE(members_match_without_case_and_typos_are_named)
{
    Json::Value v;
    BOOST_REQUIRE(Json::Reader().parse(R"({"Host": "h", "PORT": "12", "vaule": 1, "Flag": "yes"})", v));
    Problems p;
    Object o(v, "sec", p);
    BOOST_TEST(o.list("host") == std::vector<std::string>{"h"});
    BOOST_TEST(o.num("port", 1, 1, 100) == 12u);
    BOOST_TEST(o.boolean("flag", false));
    BOOST_TEST(o.str("value", "dflt") == "dflt");
    o.finish();
    BOOST_TEST(problems_of(p) == "f: sec.vaule: unknown key (did you mean \"value\"?)");
}

BOOST_AUTO_TEST_CASE(a_problem_reads_as_the_default_and_checking_goes_on)
{
    Json::Value v;
    BOOST_REQUIRE(Json::Reader().parse(R"({"n": "many", "m": 99999999999999999999, "s": [1], "b": "perhaps",
                                           "l": [1], "host": "a", "HOST": "b"})",
                                       v));
    Problems p;
    Object o(v, "", p);
    BOOST_TEST(o.num("n", 7, 0, 10) == 7u);
    BOOST_TEST(o.num("m", 8, 0, 10) == 8u);
    BOOST_TEST(o.str("s", "d") == "d");
    BOOST_TEST(o.boolean("b", true));
    BOOST_TEST(o.list("l").empty());
    o.get("host");
    o.finish();
    BOOST_TEST(problems_of(p) == "f: n: must be a whole number, not \"many\"\n"
                                 "f: m: must be between 0 and 10\n"
                                 "f: s: must be a string\n"
                                 "f: b: must be true or false\n"
                                 "f: l[0]: must be a string\n"
                                 "f: HOST: the same key as \"host\" (keys match without regard to case): give it once");
}

BOOST_AUTO_TEST_CASE(not_an_object)
{
    Problems p;
    Object o(Json::Value(3), "x", p);
    BOOST_TEST(o.get("a") == nullptr);
    o.finish();
    BOOST_TEST(problems_of(p) == "f: x: must be an object");
    Problems none;
    BOOST_CHECK_NO_THROW(none.raise_if_any("f"));
}

BOOST_AUTO_TEST_SUITE_END()
