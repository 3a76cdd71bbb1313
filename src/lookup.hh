// lookup — the interface between the session loop and whatever answers keys.
//
// The session calls lookup() once per well-formed request and turns the
// returned LookupResult into a reply with socketmap::reply_for().  The
// MariaDB implementation lives in dblookup.hh; tests use doubles.
// Implementations never throw for expected outcomes: a database problem is
// a TempFail or Timeout result, never NotFound or Found.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace sockmapd
{

using Clock = std::chrono::steady_clock;

enum class Outcome {
    Found,     // text: the value to send after "OK "
    NotFound,  // text unused
    TempFail,  // text: reason (database unreachable, query failed, ...)
    Timeout,   // text: reason (query ran past read_timeout)
    PermFail,  // text: reason (result too long, unknown map, ...)
    NoSuchMap, // text unused: the map name is not configured
};

struct LookupResult {
    Outcome outcome = Outcome::NotFound;
    std::string text;
};

class Lookup
{
public:
    virtual ~Lookup() = default;
    virtual LookupResult lookup(std::string_view map, std::string_view key) = 0;
    // When the implementation wants wakeup() called even without requests
    // (e.g. to close an idle database connection); nullopt: never.
    virtual std::optional<Clock::time_point> next_wakeup() const { return std::nullopt; }
    virtual void wakeup(Clock::time_point /*now*/) {}
    // A client's session begins (a handler may serve many, one after
    // another): what a session is allowed, and warned about once, starts
    // afresh.
    virtual void session_started() {}
    // The client has every reply so far and has sent nothing more: the
    // requests it pipelined are answered.  A client that waits for each
    // reply (Postfix, Sendmail) is here before each request.
    virtual void batch_over() {}
};

} // namespace sockmapd
