// endpoint — one database server address from `database.host`.
//
// parse_endpoint() turns one entry ("db1", "db1:3307", "[2001:db8::1]:3307",
// "unix:/run/mysqld/mysqld.sock") into an Endpoint, or answers nullopt and
// says why (the message quotes the entry; the config loader adds its key
// path).  Endpoint::name() is the stable printable form used in logs and as
// the key of the failover state file.  Nothing here throws for bad input.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sockmapd
{

struct Endpoint {
    enum class Kind { Tcp, Unix };
    Kind kind = Kind::Tcp;
    std::string host;  // Tcp: name or address (IPv6 without brackets)
    unsigned port = 0; // Tcp
    std::string path;  // Unix: socket path

    // "db1:3306", "[::1]:3306", "unix:/path".
    std::string name() const;
    bool operator==(const Endpoint&) const = default;
};

std::optional<Endpoint> parse_endpoint(std::string_view spec, unsigned default_port, std::string* why = nullptr);

} // namespace sockmapd
