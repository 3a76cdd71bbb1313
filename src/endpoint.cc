#include "endpoint.hh"

#include "util.hh"

namespace sockmapd
{

namespace
{

// The parse without the bookkeeping: returns the reason for a bad entry,
// empty when `ep` is filled in.
std::string parse(std::string_view spec, unsigned default_port, Endpoint& ep)
{
    if (spec.empty())
        return "empty entry";
    const std::string quoted = "\"" + std::string(spec) + "\": ";
    if (!printable_name(spec))
        return quoted + "contains spaces or control characters";
    if (spec.substr(0, 5) == "unix:") {
        ep.kind = Endpoint::Kind::Unix;
        ep.path = std::string(spec.substr(5));
        if (ep.path.empty() || ep.path[0] != '/')
            return quoted + "a unix socket needs an absolute path (unix:/path)";
        return {};
    }
    ep.port = default_port;
    HostPort hp;
    switch (split_host_port(spec, hp)) {
    case HostPortError::None:
        break;
    case HostPortError::NoClosingBracket:
        return quoted + "missing ']'";
    case HostPortError::AfterBracket:
        return quoted + "expected ':port' after ']'";
    case HostPortError::Unbracketed:
        return quoted + "an IPv6 address needs brackets: [" + std::string(spec) + "]:3306";
    }
    if (hp.bracketed && hp.host.find(':') == std::string_view::npos)
        return quoted + "brackets are for IPv6 addresses";
    if (hp.port && hp.port->empty())
        return quoted + "empty port";
    if (hp.host.empty())
        return quoted + "empty host name";
    if (hp.port) {
        const auto p = parse_port(*hp.port);
        if (!p)
            return quoted + "port must be a number from 1 to 65535";
        ep.port = *p;
    }
    if (ep.port == 0 || ep.port > 65535)
        return quoted + "port must be a number from 1 to 65535";
    ep.host = std::string(hp.host);
    return {};
}

} // namespace

std::string Endpoint::name() const
{
    if (kind == Kind::Unix)
        return "unix:" + path;
    return host_port(host, port);
}

HostPortError split_host_port(std::string_view spec, HostPort& out)
{
    out = {};
    if (!spec.empty() && spec.front() == '[') {
        const auto close = spec.find(']');
        if (close == std::string_view::npos)
            return HostPortError::NoClosingBracket;
        out.host = spec.substr(1, close - 1);
        out.bracketed = true;
        const auto rest = spec.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':')
                return HostPortError::AfterBracket;
            out.port = rest.substr(1);
        }
        return HostPortError::None;
    }
    const auto colon = spec.find(':');
    if (colon == std::string_view::npos) {
        out.host = spec;
        return HostPortError::None;
    }
    if (spec.find(':', colon + 1) != std::string_view::npos)
        return HostPortError::Unbracketed;
    out.host = spec.substr(0, colon);
    out.port = spec.substr(colon + 1);
    return HostPortError::None;
}

std::string database_suffix(std::string_view database)
{
    return database.empty() ? std::string() : " (database " + std::string(database) + ")";
}

std::string host_label(const Endpoint& host, std::string_view database)
{
    return host.name() + database_suffix(database);
}

std::optional<Endpoint> parse_endpoint(std::string_view spec, unsigned default_port, std::string* why)
{
    Endpoint ep;
    std::string error = parse(spec, default_port, ep);
    if (error.empty())
        return ep;
    if (why)
        *why = std::move(error);
    return std::nullopt;
}

} // namespace sockmapd
