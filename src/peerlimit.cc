#include "peerlimit.hh"

#include <arpa/inet.h>
#include <netinet/in.h>

namespace sockmapd
{

std::string peer_key(const sockaddr* sa, int fd)
{
    char host[INET6_ADDRSTRLEN] = "";
    switch (sa->sa_family) {
    case AF_INET:
        inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, host, sizeof host);
        return host;
    case AF_INET6:
        inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, host, sizeof host);
        return host;
    case AF_UNIX: {
        ucred cred{};
        socklen_t len = sizeof cred;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
            return "uid " + std::to_string(cred.uid);
        return {};
    }
    }
    return {};
}

PeerLimit::Admission PeerLimit::admit(const std::string& key, unsigned running)
{
    if (max_ == 0 || key.empty())
        return Admission::Yes;
    const auto it = refused_.find(key);
    if (running < max_) {
        if (it != refused_.end()) {
            order_.erase(it->second);
            refused_.erase(it);
        }
        return Admission::Yes;
    }
    if (it != refused_.end()) {
        order_.splice(order_.begin(), order_, it->second); // still refused: kept
        return Admission::NoAgain;
    }
    if (order_.size() >= capacity_) {
        refused_.erase(order_.back());
        order_.pop_back();
    }
    order_.push_front(key);
    refused_.emplace(key, order_.begin());
    return Admission::No;
}

} // namespace sockmapd
