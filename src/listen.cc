#include "listen.hh"

#include "gate.hh"
#include "log.hh"
#include "privileges.hh"
#include "util.hh"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <map>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>
#include <vector>

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

// ---------------------------------------------------------------- signals

volatile sig_atomic_t stop_signal = 0;
volatile sig_atomic_t reload_signal = 0;

extern "C" void on_stop(int sig)
{
    stop_signal = sig;
}
extern "C" void on_reload(int sig)
{
    reload_signal = sig;
}
extern "C" void on_child(int) {}

const int handled_signals[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGCHLD};

// Blocks the signals we handle and installs the handlers; they are only
// let through inside ppoll() (with `wait_mask`), so no wake-up is lost
// between checks.  Returns the mask to restore in handlers.
sigset_t install_signals(sigset_t& wait_mask)
{
    sigset_t block, old;
    sigemptyset(&block);
    for (const int s : handled_signals)
        sigaddset(&block, s);
    sigprocmask(SIG_BLOCK, &block, &old);
    wait_mask = old;
    for (const int s : handled_signals)
        sigdelset(&wait_mask, s);
    struct sigaction sa {
    };
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    sa.sa_handler = on_reload;
    sigaction(SIGHUP, &sa, nullptr);
    sigaction(SIGUSR1, &sa, nullptr);
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, nullptr);
    return old;
}

// In a forked handler: the signals behave as in a socket-activated one.
void reset_signals(const sigset_t& old)
{
    struct sigaction sa {
    };
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = SIG_DFL;
    for (const int s : handled_signals)
        sigaction(s, &sa, nullptr);
    sigprocmask(SIG_SETMASK, &old, nullptr);
}

// ---------------------------------------------------------------- sockets

struct Listener {
    int fd = -1;
    std::string name; // "127.0.0.1:2224", "[::1]:2224"
};

void close_all(std::vector<Listener>& ls)
{
    for (auto& l : ls)
        if (l.fd >= 0)
            close(l.fd);
    ls.clear();
}

std::string addr_name(const sockaddr* sa)
{
    const std::string name = socket_address_name(sa);
    return name.empty() ? "?" : name;
}

// A non-blocking listening socket, or -1 with `err` set to the errno.
int open_listener(const addrinfo* ai, bool v6only, int& err)
{
    const int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
        err = errno;
        return -1;
    }
    const int one = 1, v6 = v6only ? 1 : 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6, sizeof v6);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
        err = errno;
        close(fd);
        return -1;
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
        const int fd = open_listener(ai, v4 && v6, err);
        if (fd < 0) {
            log_error("--listen: cannot listen on " + name + ": " + std::strerror(err));
            code = (err == EADDRINUSE || err == EADDRNOTAVAIL) ? EX_TEMPFAIL : EX_OSERR;
            break;
        }
        out.push_back({fd, name});
    }
    freeaddrinfo(res);
    if (code != EX_OK || out.empty()) {
        close_all(out);
        return code != EX_OK ? code : EX_CONFIG;
    }
    return EX_OK;
}

// ---------------------------------------------------------------- handlers

struct Child {
    std::string peer;
    std::chrono::steady_clock::time_point started;
    int conn = -1; // kept to end the session gently at stop (shutdown SHUT_RD)
};

using Children = std::map<pid_t, Child>;

struct Counters {
    unsigned long long served = 0;
    std::size_t reported_running = static_cast<std::size_t>(-1);
    unsigned long long reported_served = 0;
};

void notify_status(const Children& kids, Counters& n)
{
    if (kids.size() == n.reported_running && n.served == n.reported_served)
        return;
    n.reported_running = kids.size();
    n.reported_served = n.served;
    sd_notifyf(0, "STATUS=%zu handlers running, %llu connections served", kids.size(), n.served);
}

std::string status_text(int status)
{
    if (WIFEXITED(status))
        return "exit " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status))
        return std::string("killed by ") + strsignal(WTERMSIG(status));
    return "status " + std::to_string(status);
}

void reap(Children& kids)
{
    int status = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        const auto it = kids.find(pid);
        if (it == kids.end())
            continue;
        const auto ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - it->second.started)
                .count();
        log_info("handler " + std::to_string(pid) + " for " + it->second.peer + " stopped (" + status_text(status) +
                 ", " + std::to_string(ms) + " ms)");
        close(it->second.conn);
        kids.erase(it);
    }
}

[[noreturn]] void run_child(int conn, std::vector<Listener>& ls, const Children& kids, const sigset_t& old,
                            const std::function<int(int)>& handler)
{
    close_all(ls);
    for (const auto& [pid, kid] : kids)
        close(kid.conn);
    unsetenv("NOTIFY_SOCKET"); // only the main process talks to systemd
    reset_signals(old);
    int code = EX_SOFTWARE;
    try {
        code = handler(conn);
    } catch (const std::exception& e) {
        log_error(std::string("handler: internal error: ") + e.what());
    }
    _exit(code);
}

void pause_briefly()
{
    const timespec ts{0, 100 * 1000 * 1000};
    nanosleep(&ts, nullptr);
}

// Accepts one pending connection on `l` and forks its handler, unless
// `admit` refuses the peer (it is closed then); false when none was pending.
bool accept_one(Listener& l, std::vector<Listener>& ls, Children& kids, Counters& n, const sigset_t& old,
                const std::function<int(int)>& handler, const std::function<bool(const sockaddr*)>& admit)
{
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    const int conn = accept4(l.fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (conn < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
            log_error("accept on " + l.name + ": " + std::strerror(errno));
            pause_briefly(); // EMFILE and friends: do not spin
        }
        return false;
    }
    if (!admit(reinterpret_cast<sockaddr*>(&ss))) {
        close(conn);
        return true;
    }
    const std::string peer = addr_name(reinterpret_cast<sockaddr*>(&ss));
    const pid_t pid = fork();
    if (pid == 0)
        run_child(conn, ls, kids, old, handler);
    if (pid < 0) {
        log_error(std::string("fork: ") + std::strerror(errno));
        close(conn);
        pause_briefly();
        return false;
    }
    ++n.served;
    kids[pid] = {peer, std::chrono::steady_clock::now(), conn};
    log_info("handler " + std::to_string(pid) + " for " + peer + " started (" + std::to_string(kids.size()) +
             " running)");
    return true;
}

// Waits up to `limit` for the handlers to end.
void wait_children(Children& kids, std::chrono::steady_clock::duration limit)
{
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!kids.empty() && std::chrono::steady_clock::now() < deadline) {
        pause_briefly();
        reap(kids);
    }
}

// Each handler answers what it has read, then reads EOF and ends as if
// the client had closed: no client loses a reply.  Those still running
// after the grace period get SIGTERM, then SIGKILL.
void stop_children(Children& kids)
{
    reap(kids);
    if (kids.empty())
        return;
    log_info("stopping: " + std::to_string(kids.size()) + " running handler(s) end after their current request");
    for (const auto& [pid, kid] : kids)
        shutdown(kid.conn, SHUT_RD);
    wait_children(kids, std::chrono::seconds(5));
    for (const auto& [pid, kid] : kids) {
        log_warning("handler " + std::to_string(pid) + " still running, sending SIGTERM");
        kill(pid, SIGTERM);
    }
    wait_children(kids, std::chrono::seconds(2));
    for (const auto& [pid, kid] : kids) {
        log_warning("handler " + std::to_string(pid) + " ignored SIGTERM, killing it");
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
        close(kid.conn);
    }
    kids.clear();
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
        ls.push_back({p.fd, p.name + " " + where});
    }
    return ls;
}

void reload_config(const std::function<bool()>& reload)
{
    log_info(std::string("reloading on ") + strsignal(reload_signal));
    reload_signal = 0;
    sd_notify(0, "RELOADING=1");
    reload();
    sd_notify(0, "READY=1");
}

} // namespace

ListenOptions listen_options(const SysConfig& sys, const std::string& arg)
{
    ListenOptions o;
    o.address = unbracket(sys.listen);
    o.port = sys.port;
    if (!arg.empty()) {
        std::string addr, port;
        if (arg.front() == '[') {
            const auto close = arg.find(']');
            if (close == std::string::npos)
                throw UsageError("--listen " + arg + ": bracketed address without ']'");
            if (close == 1)
                throw UsageError("--listen " + arg + ": empty brackets");
            addr = arg.substr(1, close - 1);
            if (close + 1 < arg.size()) {
                if (arg[close + 1] != ':')
                    throw UsageError("--listen " + arg + ": expected ':' after ']'");
                port = arg.substr(close + 2);
            }
        } else if (const auto colon = arg.rfind(':'); colon == std::string::npos) {
            if (!parse_decimal(arg))
                throw UsageError("--listen " + arg + ": give PORT, ADDR:PORT or [IPv6]:PORT");
            port = arg;
        } else {
            addr = arg.substr(0, colon);
            port = arg.substr(colon + 1);
            if (addr.find(':') != std::string::npos)
                throw UsageError("--listen " + arg + ": an IPv6 address needs brackets: [ADDR]:PORT");
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

int listen_loop(const Config& cfg, const ListenOptions& opt, const std::function<bool()>& reload,
                const std::function<int(int fd)>& handler)
{
    Identity id;
    try {
        id = resolve_identity(cfg.sys);
    } catch (const ConfigError& e) {
        log_error(e.what());
        return EX_CONFIG;
    }
    std::vector<Listener> ls = adopt(opt.passed);
    if (ls.empty())
        if (const int rc = bind_all(opt, ls); rc != EX_OK)
            return rc;
    if (!drop_privileges(id)) {
        close_all(ls);
        return EX_OSERR;
    }
    for (const auto& l : ls)
        warn_if_open(cfg.sys.allow, l.fd);
    Gate gate; // cfg is the reloaded config: its allow-list applies to the next connection
    const auto admit = [&](const sockaddr* peer) { return gate.admit(cfg.sys.allow, peer); };
    sigset_t wait_mask;
    const sigset_t old = install_signals(wait_mask);
    std::string names;
    for (const auto& l : ls)
        names += (names.empty() ? "" : ", ") + l.name;
    log_info(std::string(opt.passed.empty() ? "listening on " : "listening on sockets from systemd: ") + names +
             ", at most " + std::to_string(opt.max_children) + " handlers");
    log_tee_stderr(false);
    sd_notify(0, "READY=1\nSTATUS=0 handlers running, 0 connections served");

    Children kids;
    Counters counters;
    counters.reported_running = 0;
    bool full_logged = false;
    std::vector<pollfd> fds(ls.size());
    while (stop_signal == 0) {
        if (reload_signal != 0)
            reload_config(reload);
        reap(kids);
        notify_status(kids, counters);
        const bool full = kids.size() >= opt.max_children;
        if (full && !full_logged)
            log_warning("all " + std::to_string(opt.max_children) + " handlers busy: new connections wait");
        full_logged = full;
        for (std::size_t i = 0; i < ls.size(); ++i)
            fds[i] = {full ? -1 : ls[i].fd, POLLIN, 0}; // a negative fd is ignored by poll
        // Signals are blocked everywhere else and delivered only here.
        if (ppoll(fds.data(), fds.size(), nullptr, &wait_mask) < 0) {
            if (errno != EINTR) {
                log_error(std::string("poll: ") + std::strerror(errno));
                pause_briefly();
            }
            continue;
        }
        for (std::size_t i = 0; i < ls.size() && stop_signal == 0; ++i)
            if (fds[i].revents & POLLIN)
                accept_one(ls[i], ls, kids, counters, old, handler, admit);
    }
    sd_notify(0, "STOPPING=1");
    log_info(std::string("stopping on ") + strsignal(stop_signal));
    // Closing a listening socket resets the connections in its backlog.
    // systemd holds its own copy of passed sockets; ours are drained into
    // handlers that answer what was sent, then end with the others.
    if (opt.passed.empty())
        for (auto& l : ls)
            while (accept_one(l, ls, kids, counters, old, handler, admit)) {
            }
    close_all(ls);
    stop_children(kids);
    sigprocmask(SIG_SETMASK, &old, nullptr);
    return EX_OK;
}

} // namespace sockmapd
