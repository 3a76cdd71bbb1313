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
    std::string_view host = spec;
    std::string_view port;
    bool has_port = false;
    if (spec[0] == '[') {
        const auto close = spec.find(']');
        if (close == std::string_view::npos)
            return quoted + "missing ']'";
        host = spec.substr(1, close - 1);
        const auto rest = spec.substr(close + 1);
        if (!rest.empty()) {
            if (rest[0] != ':')
                return quoted + "expected ':port' after ']'";
            port = rest.substr(1);
            has_port = true;
        }
        if (host.find(':') == std::string_view::npos)
            return quoted + "brackets are for IPv6 addresses";
    } else if (const auto colon = spec.find(':'); colon != std::string_view::npos) {
        if (spec.find(':', colon + 1) != std::string_view::npos)
            return quoted + "an IPv6 address needs brackets: [" + std::string(spec) + "]:3306";
        host = spec.substr(0, colon);
        port = spec.substr(colon + 1);
        has_port = true;
    }
    if (has_port && port.empty())
        return quoted + "empty port";
    if (host.empty())
        return quoted + "empty host name";
    if (has_port) {
        const auto p = parse_port(port);
        if (!p)
            return quoted + "port must be a number from 1 to 65535";
        ep.port = *p;
    }
    if (ep.port == 0 || ep.port > 65535)
        return quoted + "port must be a number from 1 to 65535";
    ep.host = std::string(host);
    return {};
}

} // namespace

std::string Endpoint::name() const
{
    if (kind == Kind::Unix)
        return "unix:" + path;
    return host_port(host, port);
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
