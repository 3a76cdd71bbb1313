#include "netstring.hh"
#include "socketmap.hh"

#include <boost/test/unit_test.hpp>

using namespace sockmapd;

BOOST_AUTO_TEST_SUITE(socketmap)

BOOST_AUTO_TEST_CASE(split)
{
    struct Case {
        std::string payload;
        bool ok;
        std::string map, key;
    };
    const std::vector<Case> cases = {
        {"recipient user@example.org", true, "recipient", "user@example.org"},
        {"m key with spaces, and commas", true, "m", "key with spaces, and commas"},
        {"m ", true, "m", ""},
        {"m  two", true, "m", " two"},
        {std::string("m a\0b", 5), true, "m", std::string("a\0b", 3)},
        {"nospace", false, "", ""},
        {"", false, "", ""},
        {" leadingspace", false, "", ""},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT("payload \"" << c.payload << "\"")
        {
            const auto r = split_request(c.payload);
            BOOST_TEST(r.has_value() == c.ok);
            if (r && c.ok) {
                BOOST_TEST(r->map == c.map);
                BOOST_TEST(r->key == c.key);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(ask_checks_the_key_limit)
{
    struct Echo : Lookup {
        LookupResult lookup(std::string_view map, std::string_view key) override
        {
            ++calls;
            return {Outcome::Found, std::string(map) + "/" + std::to_string(key.size())};
        }
        int calls = 0;
    } echo;
    const std::string longest(max_key_length, 'k');
    const std::string name(max_map_name_length, 'n');
    BOOST_TEST(ask(echo, {"m", longest}).text == "m/" + std::to_string(max_key_length));
    BOOST_TEST(ask(echo, {name, longest}).text == name + "/" + std::to_string(max_key_length));
    BOOST_TEST(echo.calls == 2);
    const LookupResult over = ask(echo, {"m", longest + "k"});
    BOOST_TEST(static_cast<int>(over.outcome) == static_cast<int>(Outcome::PermFail));
    BOOST_TEST(reply_for(over).payload == "PERM key too long");
    BOOST_TEST(echo.calls == 2);
    // A frame holds the longest name, a space and the longest key.
    BOOST_TEST(max_request_length == max_map_name_length + 1 + max_key_length);
}

BOOST_AUTO_TEST_CASE(reply_policy)
{
    struct Case {
        Outcome outcome;
        std::string text;
        std::string reply;
    };
    const std::vector<Case> cases = {
        {Outcome::Found, "user@example.org", "OK user@example.org"},
        {Outcome::Found, "REJECT spam source", "OK REJECT spam source"},
        {Outcome::Found, "", "NOTFOUND "},
        {Outcome::NotFound, "ignored", "NOTFOUND "},
        {Outcome::TempFail, "no database host answers", "TEMP no database host answers"},
        {Outcome::TempFail, "", "TEMP temporary failure"},
        {Outcome::TempFail, "line\nbreak", "TEMP line break"},
        {Outcome::Timeout, "query timed out", "TIMEOUT query timed out"},
        {Outcome::PermFail, "result too long", "PERM result too long"},
        {Outcome::NoSuchMap, "", "PERM unknown map"},
    };
    for (const auto& c : cases) {
        const Reply r = reply_for({c.outcome, c.text});
        BOOST_TEST(r.payload == c.reply);
        BOOST_TEST(c.reply.rfind(std::string(r.status) + " ", 0) == 0u, c.reply); // the word it starts with
    }
    BOOST_TEST(reply_for(malformed_request()).payload == "PERM request without map name and key");
}

BOOST_AUTO_TEST_CASE(failures_never_look_like_answers)
{
    for (const auto o : {Outcome::TempFail, Outcome::Timeout, Outcome::PermFail, Outcome::NoSuchMap}) {
        const std::string r = reply_for({o, "OK fake"}).payload;
        BOOST_TEST(r.rfind("OK", 0) != 0u);
        BOOST_TEST(r.rfind("NOTFOUND", 0) != 0u);
    }
}

BOOST_AUTO_TEST_CASE(reply_limit)
{
    const std::string fits(max_value_length, 'v');
    BOOST_TEST(reply_for({Outcome::Found, fits}).payload.size() == max_reply_length);
    BOOST_TEST(reply_for({Outcome::Found, fits + "v"}).payload == "PERM result too long");
    BOOST_TEST(reply_for({Outcome::Found, fits + "v"}).status == "PERM");
    BOOST_TEST(reply_for({Outcome::TempFail, std::string(5000, 'r')}).payload.size() < 300u);
}

BOOST_AUTO_TEST_SUITE_END()
