#include "netstring.hh"

#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

using namespace sockmapd;

namespace
{

struct Decoded {
    std::vector<std::string> frames;
    NetstringError error = NetstringError::None;
};

// The decoder knows no protocol: the tests give it a limit of their own.
constexpr std::size_t test_limit = 10000;

std::string encode(std::string_view payload)
{
    std::string out;
    netstring_append(out, payload);
    return out;
}

// Feeds `input` in pieces of `step` bytes, as reads from a socket would.
Decoded decode(const std::string& input, std::size_t step, std::size_t limit = test_limit)
{
    NetstringDecoder d(limit);
    Decoded out;
    for (std::size_t pos = 0; pos < input.size() && out.error == NetstringError::None; pos += step) {
        // A copy per piece: frames must not depend on earlier buffers.
        const std::string piece = input.substr(pos, step);
        std::string_view in = piece;
        for (;;) {
            const auto st = d.feed(in);
            if (st == NetstringDecoder::Status::Frame) {
                out.frames.emplace_back(d.payload());
                continue;
            }
            if (st == NetstringDecoder::Status::Error)
                out.error = d.error();
            break;
        }
    }
    if (out.error == NetstringError::None)
        out.error = d.at_eof();
    return out;
}

} // namespace

BOOST_AUTO_TEST_SUITE(netstring)

BOOST_AUTO_TEST_CASE(append)
{
    BOOST_TEST(encode("") == "0:,");
    BOOST_TEST(encode("OK x") == "4:OK x,");
    BOOST_TEST(encode(std::string(12345, 'a')).substr(0, 6) == "12345:");
    std::string out = "1:a,";
    netstring_append(out, std::string("b\0c", 3));
    BOOST_TEST(out == std::string("1:a,3:b\0c,", 10));
}

BOOST_AUTO_TEST_CASE(well_formed_at_every_split)
{
    const std::string stream =
        "14:nosuch somekey,0:,3:a,b," + encode(std::string("k\0ey", 4)) + encode(std::string(10000, 'x'));
    const std::vector<std::string> want = {"nosuch somekey", "", "a,b", std::string("k\0ey", 4),
                                           std::string(10000, 'x')};
    for (const std::size_t step : {1, 2, 3, 5, 7, 13, 4096, 100000}) {
        const Decoded d = decode(stream, step);
        BOOST_TEST_CONTEXT("step " << step)
        {
            BOOST_TEST(static_cast<int>(d.error) == 0);
            BOOST_TEST(d.frames == want, boost::test_tools::per_element());
        }
    }
}

BOOST_AUTO_TEST_CASE(malformed)
{
    struct Case {
        std::string input;
        NetstringError error;
        std::size_t frames_before;
    };
    const std::vector<Case> cases = {
        {":abc,", NetstringError::EmptyLength, 0},
        {"x:abc,", NetstringError::BadLength, 0},
        {"1x:a,", NetstringError::BadLength, 0},
        {"-1:a,", NetstringError::BadLength, 0},
        {" 1:a,", NetstringError::BadLength, 0},
        {"01:a,", NetstringError::LeadingZero, 0},
        {"00:,", NetstringError::LeadingZero, 0},
        {"10001:", NetstringError::TooLong, 0},
        {"99999999999999999999999:", NetstringError::TooLong, 0},
        {"18446744073709551617:", NetstringError::TooLong, 0},
        {"3:abc;", NetstringError::MissingComma, 0},
        {"3:abcd,", NetstringError::MissingComma, 0},
        {"1:a,3:abc", NetstringError::Truncated, 1},
        {"1:a,3:ab", NetstringError::Truncated, 1},
        {"1:a,3:", NetstringError::Truncated, 1},
        {"1:a,12", NetstringError::Truncated, 1},
        {"1:a,0:", NetstringError::Truncated, 1},
        {"1:a,x", NetstringError::BadLength, 1},
    };
    for (const auto& c : cases) {
        for (const std::size_t step : {1, 2, 64}) {
            const Decoded d = decode(c.input, step);
            BOOST_TEST_CONTEXT("input \"" << c.input << "\" step " << step)
            {
                BOOST_TEST(static_cast<int>(d.error) == static_cast<int>(c.error));
                BOOST_TEST(d.frames.size() == c.frames_before);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(limit_is_inclusive)
{
    BOOST_TEST(decode(encode(std::string(10000, 'a')), 100).frames.size() == 1u);
    BOOST_TEST(static_cast<int>(decode("11:hello world,", 3, 10).error) == static_cast<int>(NetstringError::TooLong));
}

BOOST_AUTO_TEST_CASE(several_requests_in_one_read)
{
    std::string stream;
    for (int i = 0; i < 1000; ++i)
        netstring_append(stream, "map key" + std::to_string(i));
    const Decoded d = decode(stream, stream.size());
    BOOST_TEST(d.frames.size() == 1000u);
    BOOST_TEST(d.frames.back() == "map key999");
}

BOOST_AUTO_TEST_CASE(errors_are_sticky)
{
    NetstringDecoder d(test_limit);
    std::string_view in = "x:";
    BOOST_TEST(static_cast<int>(d.feed(in)) == static_cast<int>(NetstringDecoder::Status::Error));
    std::string_view more = "1:a,";
    BOOST_TEST(static_cast<int>(d.feed(more)) == static_cast<int>(NetstringDecoder::Status::Error));
}

BOOST_AUTO_TEST_CASE(descriptions)
{
    for (const auto e : {NetstringError::EmptyLength, NetstringError::BadLength, NetstringError::LeadingZero,
                         NetstringError::TooLong, NetstringError::MissingComma, NetstringError::Truncated})
        BOOST_TEST(std::string(describe(e)).find("netstring") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
