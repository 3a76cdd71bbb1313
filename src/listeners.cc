#include "listeners.hh"

#include "endpoint.hh" // split_host_port
#include "log.hh"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sysexits.h>

namespace sockmapd
{

namespace
{

// "[::1]" -> "::1"; anything else as it is.
std::string unbracket(const std::string& addr)
{
    if (addr.size() >= 2 && addr.front() == '[' && addr.back() == ']')
        return addr.substr(1, addr.size() - 2);
    return addr;
}

// A host name or an address without brackets, as getaddrinfo() takes it.
bool listen_address(const std::string& addr)
{
    return printable_name(addr) && addr.find_first_of("[]/") == std::string::npos;
}

// A non-blocking listening socket, or none with `err` set to the errno.
Fd open_listener(const addrinfo* ai, bool v6only, int& err)
{
    Fd fd(socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol));
    if (!fd) {
        err = errno;
        return fd;
    }
    const int one = 1, v6 = v6only ? 1 : 0;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6)
        setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6, sizeof v6);
    if (bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd.get(), SOMAXCONN) != 0) {
        err = errno;
        fd.reset();
    }
    return fd;
}

// Binds every address the name resolves to; throws nothing, returns the
// exit code on failure (78 bad address, 75 address in use, 71 otherwise).
int bind_all(const ListenOptions& opt, std::vector<Listener>& out)
{
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_ADDRCONFIG;
    addrinfo* res = nullptr;
    if (const int rc = getaddrinfo(opt.address.c_str(), opt.port.c_str(), &hints, &res); rc != 0) {
        log_error("--listen: cannot resolve " + opt.address + ": " + gai_strerror(rc));
        return EX_CONFIG;
    }
    bool v4 = false, v6 = false;
    for (const addrinfo* ai = res; ai; ai = ai->ai_next)
        (ai->ai_family == AF_INET6 ? v6 : v4) = true;
    int code = EX_OK;
    for (const addrinfo* ai = res; ai; ai = ai->ai_next) {
        const std::string name = addr_name(ai->ai_addr);
        if (std::any_of(out.begin(), out.end(), [&](const Listener& l) { return l.name == name; }))
            continue;
        int err = 0;
        // "::" alone also takes IPv4; next to an IPv4 address it must not.
        Fd fd = open_listener(ai, v4 && v6, err);
        if (!fd) {
            log_error("--listen: cannot listen on " + name + ": " + std::strerror(err));
            code = (err == EADDRINUSE || err == EADDRNOTAVAIL) ? EX_TEMPFAIL : EX_OSERR;
            break;
        }
        out.push_back({std::move(fd), name});
    }
    freeaddrinfo(res);
    if (code != EX_OK || out.empty()) {
        out.clear();
        return code != EX_OK ? code : EX_CONFIG;
    }
    return EX_OK;
}

// The sockets systemd passed, non-blocking for the accept loop.
std::vector<Listener> adopt(const std::vector<PassedListener>& passed)
{
    std::vector<Listener> ls;
    for (const auto& p : passed) {
        fcntl(p.fd, F_SETFL, fcntl(p.fd, F_GETFL) | O_NONBLOCK);
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        std::string where = "?";
        if (getsockname(p.fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
            where = addr_name(reinterpret_cast<sockaddr*>(&ss));
        ls.push_back({Fd(p.fd), p.name + " " + where});
    }
    return ls;
}

} // namespace

std::string addr_name(const sockaddr* sa)
{
    const std::string name = socket_address_name(sa);
    return name.empty() ? "?" : name;
}

int open_listeners(const ListenOptions& opt, std::vector<Listener>& out)
{
    out = adopt(opt.passed);
    return out.empty() ? bind_all(opt, out) : EX_OK;
}

ListenOptions listen_options(const SysConfig& sys, const std::string& arg)
{
    ListenOptions o;
    o.address = unbracket(sys.listen);
    o.port = sys.port;
    if (!arg.empty()) {
        const std::string usage = "--listen " + arg + ": ";
        // The split database.host uses (endpoint.hh), and PORT alone.
        HostPort hp;
        switch (split_host_port(arg, hp)) {
        case HostPortError::None:
            break;
        case HostPortError::NoClosingBracket:
            throw UsageError(usage + "bracketed address without ']'");
        case HostPortError::AfterBracket:
            throw UsageError(usage + "expected ':' after ']'");
        case HostPortError::Unbracketed:
            throw UsageError(usage + "an IPv6 address needs brackets: [ADDR]:PORT");
        }
        if (hp.bracketed && hp.host.empty())
            throw UsageError(usage + "empty brackets");
        std::string addr(hp.host), port(hp.port.value_or(""));
        if (!hp.bracketed && !hp.port) {
            if (!all_digits(arg))
                throw UsageError(usage + "give PORT, ADDR:PORT or [IPv6]:PORT");
            addr.clear();
            port = arg;
        }
        // What the argument says is a usage error; what is left of the
        // config, a config error.
        if (!port.empty()) {
            if (!parse_port(port))
                throw UsageError("--listen " + arg + ": \"" + port + "\" is not a port number 1-65535");
            o.port = port;
        }
        if (!addr.empty()) {
            if (!listen_address(addr))
                throw UsageError("--listen " + arg + ": \"" + addr + "\" is not an address or host name");
            o.address = addr;
        }
    }
    if (!parse_port(o.port))
        fail_at("sysconfig.port", "\"" + o.port + "\" is not a port number 1-65535");
    if (!listen_address(o.address))
        fail_at("sysconfig.listen", "\"" + o.address + "\" is not an address or host name");
    return o;
}

} // namespace sockmapd
