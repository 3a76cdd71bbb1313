// peerlimit — at most N handlers per client, for the accept loop.
//
// peer_key() names who is on the other end of an accepted connection: the
// IP address (without the port) for TCP, the user id (SO_PEERCRED) for a
// unix socket, "" when it cannot tell.  PeerLimit::admit() says whether a
// client that has `running` handlers may start one more, and whether a
// refusal is the first since it was last admitted (to log once, not once
// per connection of a flood).  The clients refused and not admitted since
// are remembered up to a bound (max_refused): past it the one refused
// longest ago is forgotten, and its next refusal is logged as a first, so
// the set stays bounded however many addresses come and go.  A limit of 0
// admits everything; an empty key is always admitted.  Nothing here throws
// but std::bad_alloc.
#pragma once

#include <cstddef>
#include <list>
#include <string>
#include <sys/socket.h>
#include <unordered_map>

namespace sockmapd
{

std::string peer_key(const sockaddr* sa, int fd);

class PeerLimit
{
public:
    // A client refused now holds max_per_peer handlers, so at most
    // --max-children / max_per_peer are refused at once; the rest of the
    // set are clients that went away.  1024 of them cost about 100 kB.
    static constexpr std::size_t max_refused = 1024;

    explicit PeerLimit(unsigned max_per_peer, std::size_t capacity = max_refused)
        : max_(max_per_peer), capacity_(capacity ? capacity : 1)
    {
    }

    enum class Admission { Yes, No, NoAgain };
    Admission admit(const std::string& key, unsigned running);
    // Clients remembered as refused.
    std::size_t refused() const { return order_.size(); }

private:
    unsigned max_;
    std::size_t capacity_;
    // Refused since last admitted, the most recently refused first.
    std::list<std::string> order_;
    std::unordered_map<std::string, std::list<std::string>::iterator> refused_;
};

} // namespace sockmapd
