// fdlimit — the descriptors the accept loop needs for its handler cap.
//
// The accept loop holds two descriptors per running handler (the parent's
// end of its control socket and its copy of the connection served), beside
// a few of its own: stdio, the log, the listening sockets, a connection
// being handed over.  A shell and systemd both start a process with a soft
// RLIMIT_NOFILE of 1024, room for fewer handlers than the default cap.
//
// raise_descriptor_limit() raises the soft limit to the hard one, as Go's
// runtime does at start (select() is not used, so nothing minds
// descriptors past 1024); the forked handlers inherit it.
// cap_for() fits a cap into a limit: the cap itself when it fits, else the
// handlers the limit has room for, with a warning naming the limit to set.
// Past the cap connections wait in the listen backlog; past the descriptor
// limit accept() and socketpair() would fail, and the client would be
// closed without a reply.
#pragma once

#include <string>
#include <sys/resource.h>

namespace sockmapd
{

// Descriptors per running handler, and those the accept loop keeps for
// itself (listening sockets included).
inline constexpr unsigned descriptors_per_handler = 2;
inline constexpr unsigned descriptors_reserved = 64;

// The RLIMIT_NOFILE that `handlers` at once need.
rlim_t descriptors_for(unsigned handlers);

// How many handlers a limit of `limit` descriptors has room for (0 when
// it is below the reserve).
unsigned handlers_within(rlim_t limit);

struct DescriptorLimit {
    rlim_t was = 0;  // the soft limit found
    rlim_t soft = 0; // the soft limit now
    rlim_t hard = 0;
};

// Raises the soft RLIMIT_NOFILE to the hard one; what it was and is.
DescriptorLimit raise_descriptor_limit();

struct HandlerCap {
    unsigned handlers = 0; // at most this many at once (1 or more)
    std::string warning;   // empty when `wanted` fits
};

// The cap that `limit` descriptors allow for `wanted` handlers.
HandlerCap cap_for(unsigned wanted, rlim_t limit);

} // namespace sockmapd
