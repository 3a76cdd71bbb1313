// peerlimit — at most N handlers per client, for the accept loop.
//
// peer_key() names who is on the other end of an accepted connection: the
// IP address (without the port) for TCP, the user id (SO_PEERCRED) for a
// unix socket, "" when it cannot tell.  PeerLimit::admit() says whether a
// client that has `running` handlers may start one more, and whether a
// refusal is the first since it was last admitted (to log once, not once
// per connection of a flood).  A limit of 0 admits everything; an empty
// key is always admitted.  Nothing here throws.
#pragma once

#include <set>
#include <string>
#include <sys/socket.h>

namespace sockmapd
{

std::string peer_key(const sockaddr* sa, int fd);

class PeerLimit
{
public:
    explicit PeerLimit(unsigned max_per_peer) : max_(max_per_peer) {}

    enum class Admission { Yes, No, NoAgain };
    Admission admit(const std::string& key, unsigned running);

private:
    unsigned max_;
    std::set<std::string> refused_; // refused since last admitted
};

} // namespace sockmapd
