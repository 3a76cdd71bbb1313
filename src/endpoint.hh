// endpoint — one database server address from `database.host`.
//
// parse_endpoint() turns one entry ("db1", "db1:3307", "[2001:db8::1]:3307",
// "unix:/run/mysqld/mysqld.sock") into an Endpoint, or answers nullopt and
// says why (the message quotes the entry; the config loader adds its key
// path).  Endpoint::name() is the stable printable form used in logs and as
// the key of the down-mark state file; host_label() is the one way a log
// line names a host and the schema used on it.  Nothing here throws for
// bad input.
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

// The split both address forms share (database.host here, --listen in
// listen.cc): "[v6]:port", "[v6]", "host:port", "host", at the port's ':',
// the brackets taken off.  Either part may be empty; the callers judge the
// parts and word the errors.
struct HostPort {
    std::string_view host;
    std::optional<std::string_view> port; // nullopt: no ':' at all
    bool bracketed = false;
};
enum class HostPortError {
    None,
    NoClosingBracket, // "[::1"
    AfterBracket,     // "[::1]x": something other than ":port" after ']'
    Unbracketed,      // "::1:25": a second ':' outside brackets (IPv6 needs them)
};
HostPortError split_host_port(std::string_view spec, HostPort& out);

// " (database mail)", or "" for no schema: what log lines add to name one.
std::string database_suffix(std::string_view database);

// "db1:3306 (database mail)": a host and the schema used on it, for logs.
std::string host_label(const Endpoint& host, std::string_view database);

} // namespace sockmapd
