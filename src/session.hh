// session — one client connection: read netstring requests, answer each.
//
// run_session() reads from `in_fd` and writes replies to `out_fd` until
// the client closes (EndReason::Eof), sends no complete request for the
// idle timeout, leaves a request unfinished or a reply unread for the stall
// limit, the session passes its maximum age (if it has one: a max_session
// of 0 is none), or the framing breaks (a PERM reply, then the end).  The
// age and a peer that hung up are also checked between the requests of
// one read (a pipelined batch), whose replies go out at least every 50 ms.
// Memory is bounded by one read buffer, one request and the pending
// replies.  It throws nothing for client behaviour; the Lookup decides
// every answer through reply_for().  A request that is not "<map> <key>"
// is answered PERM, warned about once per session and counted
// (SessionStats::malformed).  The Lookup hears when a session starts and
// when the client has caught up with its replies (lookup.hh).
#pragma once

#include "lookup.hh"

#include <chrono>
#include <cstdint>

namespace sockmapd
{

struct SessionLimits {
    std::chrono::seconds idle_timeout{7200};
    std::chrono::seconds max_session{0}; // 0: no age limit
    // How long a request may stay unfinished or a reply unread (at most
    // idle_timeout): a live client sends and reads at once.
    std::chrono::seconds stall{60};
};

enum class EndReason { Eof, Idle, MaxSession, ProtocolError, ClientGone };

const char* describe(EndReason r);

struct SessionStats {
    std::uint64_t requests = 0;
    std::uint64_t hits = 0;
    std::uint64_t misses = 0;
    std::uint64_t errors = 0;    // TEMP, TIMEOUT and PERM replies
    std::uint64_t malformed = 0; // of the errors: requests without a map name and key
    EndReason end = EndReason::Eof;
};

SessionStats run_session(int in_fd, int out_fd, Lookup& lookup, const SessionLimits& limits);

} // namespace sockmapd
