#include "listen.hh"

#include "endpoint.hh" // split_host_port
#include "gate.hh"
#include "handlers.hh"
#include "log.hh"
#include "peerlimit.hh"
#include "privileges.hh"
#include "stats.hh"
#include "util.hh"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <ctime>
#include <deque>
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
    Fd fd;            // closed with the Listener
    std::string name; // "127.0.0.1:2224", "[::1]:2224"
};

void close_all(std::vector<Listener>& ls)
{
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
        out.push_back({Fd(fd), name});
    }
    freeaddrinfo(res);
    if (code != EX_OK || out.empty()) {
        close_all(out);
        return code != EX_OK ? code : EX_CONFIG;
    }
    return EX_OK;
}

// ---------------------------------------------------------------- handlers

struct Untaken {
    Fd conn;
    std::string peer;
};

struct Loop {
    std::vector<Listener> ls;
    HandlerTable table;
    Receipts receipts;
    unsigned max_children;
    sigset_t old; // the signal mask to restore in handlers
    const std::function<std::unique_ptr<ConnectionServer>()>& make_server;
    std::function<bool(const sockaddr*)> admit = [](const sockaddr*) { return true; };
    PeerLimit peers{0};                     // --max-per-peer
    std::map<int, std::string> conn_keys{}; // accepted descriptor -> peer_key()
    // Connections dead handlers never took, waiting for another: held
    // here, not on a caller's stack, so that a handler forked meanwhile
    // closes them (run_child) instead of keeping another client's socket.
    std::deque<Untaken> redispatch{};
    unsigned long long served = 0;
    bool waiting = false; // connections may wait in the backlog: every handler was busy
    std::size_t reported_running = 0;
    unsigned long long reported_served = 0;
    std::uint64_t reported_lookups = 0;
    Clock::time_point reported_at{};
};

// STATUS= at most once a second: a busy service would send one per
// connection, and the loop waits while the receiver's queue is full.
// Returns when to try again when a change is held back.
std::optional<Clock::time_point> notify_status(Loop& lp)
{
    const std::size_t running = lp.table.running();
    // A handler's lookups are counted before it says it has finished its
    // connection, which wakes this loop.
    const StatsSummary sum = stats().summary();
    if (running == lp.reported_running && lp.served == lp.reported_served && sum.lookups == lp.reported_lookups)
        return std::nullopt;
    const auto now = Clock::now();
    if (now < lp.reported_at + std::chrono::seconds(1))
        return lp.reported_at + std::chrono::seconds(1);
    lp.reported_running = running;
    lp.reported_served = lp.served;
    lp.reported_lookups = sum.lookups;
    lp.reported_at = now;
    sd_notifyf(0, "STATUS=%zu handlers running (%zu idle), %llu connections served, %llu lookups, %llu TEMP", running,
               lp.table.idle(), lp.served, static_cast<unsigned long long>(sum.lookups),
               static_cast<unsigned long long>(sum.temp));
    return std::nullopt;
}

std::string status_text(int status)
{
    if (WIFEXITED(status))
        return "exit " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status))
        return std::string("killed by ") + strsignal(WTERMSIG(status));
    return "status " + std::to_string(status);
}

// Collects the handlers that have exited; the connections given to one
// that died before taking them (untouched: another handler may serve them)
// go to lp.redispatch.
void reap(Loop& lp)
{
    int status = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        const HandlerTable::Handler* h = lp.table.find(pid);
        if (!h)
            continue;
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - h->started).count();
        std::string what = "handler " + std::to_string(pid) + " stopped (" + status_text(status) + ", " +
                           std::to_string(h->given) + (h->given == 1 ? " connection, " : " connections, ") +
                           std::to_string(ms) + " ms)";
        const int slot = h->slot;
        std::string peer = h->peer;
        stats().handler_exited(WIFSIGNALED(status));
        if (Fd conn = slot >= 0 ? lp.table.untaken(pid, lp.receipts.count(slot)) : Fd()) {
            what += ": the connection from " + peer + " it had not taken goes to another";
            lp.redispatch.push_back({std::move(conn), std::move(peer)});
        } else if (h->conn) {
            what += ": its connection from " + peer + " is closed";
        }
        log_info(what);
        lp.receipts.release(slot);
        lp.table.erase(pid);
    }
}

[[noreturn]] void run_child(int ctl, int conn, int slot, Loop& lp)
{
    // Every client socket the parent holds but this handler's own.
    close_all(lp.ls);
    for (const auto& [pid, h] : lp.table.handlers()) {
        close(h.ctl.get());
        close(h.conn.get());
    }
    lp.redispatch.clear();
    unsetenv("NOTIFY_SOCKET"); // only the main process talks to systemd
    reset_signals(lp.old);
    int code = EX_OK;
    try {
        const std::unique_ptr<ConnectionServer> server = lp.make_server();
        serve_connections(ctl, Fd(conn), *server, lp.receipts.counter(slot));
    } catch (const std::exception& e) {
        log_error(std::string("handler: internal error: ") + e.what());
        code = EX_SOFTWARE;
    }
    _exit(code);
}

void pause_briefly()
{
    const timespec ts{0, 100 * 1000 * 1000};
    nanosleep(&ts, nullptr);
}

// A new handler whose first connection is `conn`.
void start_handler(Loop& lp, int conn, std::string peer)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        log_error(std::string("socketpair: ") + std::strerror(errno));
        close(conn);
        pause_briefly();
        return;
    }
    const int slot = lp.receipts.take(1); // the first connection is inherited
    const pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        run_child(sv[1], conn, slot, lp);
    }
    close(sv[1]);
    if (pid < 0) {
        log_error(std::string("fork: ") + std::strerror(errno));
        lp.receipts.release(slot);
        close(sv[0]);
        close(conn);
        pause_briefly();
        return;
    }
    lp.table.started(pid, Fd(sv[0]), Fd(conn), peer, Clock::now(), slot);
    stats().handler_started();
    log_info("handler " + std::to_string(pid) + " for " + peer + " started (" + std::to_string(lp.table.running()) +
             " running)");
}

// The idle handler idle the shortest time takes `conn`; without one, a
// new handler does.
void dispatch(Loop& lp, int conn, std::string peer)
{
    while (const auto pid = lp.table.next_idle()) {
        if (give_connection(lp.table.find(*pid)->ctl.get(), conn)) {
            if (log_enabled(LogLevel::Debug))
                log_debug("connection from " + peer + " to handler " + std::to_string(*pid));
            lp.table.given(*pid, Fd(conn), std::move(peer));
            return;
        }
        lp.table.retire(*pid); // its end is gone: it died or is leaving
    }
    start_handler(lp, conn, std::move(peer));
}

// A connection can be served now: a handler is idle or may be started.
bool can_take(const Loop& lp)
{
    return lp.table.running() < lp.max_children || lp.table.next_idle();
}

// The per-peer limit: false (logged once per episode) when the handlers
// already serve as many connections of `key` as allowed.
bool admitted(Loop& lp, int conn, const std::string& key, const std::string& peer)
{
    unsigned serving = 0;
    for (const auto& [pid, h] : lp.table.handlers())
        if (h.conn)
            if (const auto it = lp.conn_keys.find(h.conn.get()); it != lp.conn_keys.end() && it->second == key)
                ++serving;
    const PeerLimit::Admission a = lp.peers.admit(key, serving);
    if (a != PeerLimit::Admission::Yes)
        stats().refused(StatRefusal::PerPeer);
    if (a == PeerLimit::Admission::No)
        log_warning("closing new connections from " + key + " (" + peer + "): it has " + std::to_string(serving) +
                    " handlers, the most --max-per-peer allows");
    if (a != PeerLimit::Admission::Yes)
        return false;
    lp.conn_keys[conn] = key;
    return true;
}

// Accepts one pending connection on `l` and hands it on, unless `admit`
// refuses the peer or it has its share of handlers (it is closed then);
// false when none was pending.
bool accept_one(Loop& lp, Listener& l)
{
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    const int conn = accept4(l.fd.get(), reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (conn < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
            log_error("accept on " + l.name + ": " + std::strerror(errno));
            pause_briefly(); // EMFILE and friends: do not spin
        }
        lp.waiting = false; // the backlog is empty
        return false;
    }
    if (!lp.admit(reinterpret_cast<sockaddr*>(&ss))) {
        stats().refused(StatRefusal::Allow);
        close(conn);
        return true;
    }
    std::string peer = addr_name(reinterpret_cast<sockaddr*>(&ss));
    if (!admitted(lp, conn, peer_key(reinterpret_cast<sockaddr*>(&ss), conn), peer)) {
        close(conn);
        return true;
    }
    ++lp.served;
    stats().accepted();
    if (lp.waiting)
        stats().waited_at_cap();
    dispatch(lp, conn, std::move(peer));
    return true;
}

// A byte from a handler: it finished its connection.  EOF or an error:
// it is gone or going.
void hear_from(Loop& lp, pid_t pid, int ctl)
{
    char buf[16];
    const ssize_t n = recv(ctl, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0)
        lp.table.finished(pid, Clock::now());
    else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        lp.table.retire(pid);
}

// Waits up to `limit` for the handlers to end.  Stopping, a connection a
// dead handler had not taken is closed (read nothing: the client retries).
void wait_children(Loop& lp, std::chrono::steady_clock::duration limit)
{
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (lp.table.running() > 0 && std::chrono::steady_clock::now() < deadline) {
        pause_briefly();
        reap(lp);
        lp.redispatch.clear();
    }
}

// Each handler answers what it has read, then reads EOF and ends as if
// the client had closed: no client loses a reply; idle handlers end at
// once.  Those still running after the grace period get SIGTERM, then
// SIGKILL.
void stop_children(Loop& lp)
{
    HandlerTable& table = lp.table;
    reap(lp);
    lp.redispatch.clear();
    if (table.running() == 0)
        return;
    log_info("stopping: " + std::to_string(table.running()) + " running handler(s) end after their current request");
    for (const auto& [pid, h] : table.handlers())
        if (h.conn)
            shutdown(h.conn.get(), SHUT_RD);
    table.retire_all();
    wait_children(lp, std::chrono::seconds(5));
    for (const auto& [pid, h] : table.handlers()) {
        log_warning("handler " + std::to_string(pid) + " still running, sending SIGTERM");
        kill(pid, SIGTERM);
    }
    wait_children(lp, std::chrono::seconds(2));
    std::vector<pid_t> left;
    for (const auto& [pid, h] : table.handlers())
        left.push_back(pid);
    for (const pid_t pid : left) {
        log_warning("handler " + std::to_string(pid) + " ignored SIGTERM, killing it");
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
        lp.receipts.release(table.find(pid)->slot);
        table.erase(pid);
    }
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

// A good new config retires every handler: they finish the connection
// they serve and exit; the next connections go to new ones.
void reload_config(Loop& lp, const Config& cfg, const std::function<bool()>& reload)
{
    log_info(std::string("reloading on ") + strsignal(reload_signal));
    reload_signal = 0;
    sd_notify(0, "RELOADING=1");
    const bool ok = reload();
    stats().reloaded(ok);
    if (ok) {
        lp.table.retire_all();
        lp.table.set_limits(reuse_limits(cfg.sys));
    }
    sd_notify(0, "READY=1");
}

// When ppoll() must return without an event: the next idle handler's
// max_idle, or `status` (a STATUS= held back).
std::optional<timespec> wake_at(const HandlerTable& table, std::optional<Clock::time_point> status)
{
    auto t = table.next_expiry();
    if (status && (!t || *status < *t))
        t = status;
    if (!t)
        return std::nullopt;
    const auto ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::max(*t - Clock::now(), Clock::duration{})).count() +
        1000000;
    return timespec{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
}

} // namespace

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

ReuseLimits reuse_limits(const SysConfig& sys)
{
    return {sys.max_use, std::chrono::seconds(sys.max_idle)};
}

int listen_loop(const Config& cfg, const ListenOptions& opt, const std::function<bool()>& reload,
                const std::function<std::unique_ptr<ConnectionServer>()>& make_server)
{
    Identity id;
    try {
        id = resolve_identity(cfg.sys);
    } catch (const ConfigError& e) {
        log_error(e.what());
        return EX_CONFIG;
    }
    // Receipts for the cap, and for the handlers stopping drains past it.
    Loop lp{
        adopt(opt.passed), HandlerTable(reuse_limits(cfg.sys)), Receipts(opt.max_children + 64), opt.max_children, {},
        make_server};
    if (lp.ls.empty())
        if (const int rc = bind_all(opt, lp.ls); rc != EX_OK)
            return rc;
    if (!drop_privileges(id)) {
        close_all(lp.ls);
        return EX_OSERR;
    }
    for (const auto& l : lp.ls)
        warn_if_open(cfg.sys.allow, l.fd.get());
    Gate gate; // cfg is the reloaded config: its allow-list applies to the next connection
    lp.admit = [&](const sockaddr* peer) { return gate.admit(cfg.sys.allow, peer); };
    lp.peers = PeerLimit(opt.max_per_peer);
    sigset_t wait_mask;
    lp.old = install_signals(wait_mask);
    std::string names;
    for (const auto& l : lp.ls)
        names += (names.empty() ? "" : ", ") + l.name;
    log_info(std::string(opt.passed.empty() ? "listening on " : "listening on sockets from systemd: ") + names +
             ", at most " + std::to_string(opt.max_children) + " handlers, each for up to " +
             std::to_string(cfg.sys.max_use) + " connections");
    log_tee_stderr(false);
    sd_notify(0, "READY=1\nSTATUS=0 handlers running, 0 connections served");
    lp.reported_at = Clock::now();

    bool full_logged = false;
    std::vector<pollfd> fds;
    std::vector<pid_t> owners; // the handler of each control socket in `fds`
    while (stop_signal == 0) {
        if (reload_signal != 0)
            reload_config(lp, cfg, reload);
        reap(lp);
        while (!lp.redispatch.empty()) {
            Untaken u = std::move(lp.redispatch.front());
            lp.redispatch.pop_front();
            dispatch(lp, u.conn.release(), std::move(u.peer));
        }
        lp.table.retire_expired(Clock::now());
        const auto status_due = notify_status(lp);
        const bool full = !can_take(lp);
        if (full && !full_logged) {
            log_warning("all " + std::to_string(opt.max_children) + " handlers busy: new connections wait");
            stats().cap_reached();
        }
        full_logged = full;
        if (full)
            lp.waiting = true;
        stats().handlers(lp.table.running(), lp.table.idle(), opt.max_children);
        fds.clear();
        owners.clear();
        for (const auto& l : lp.ls)
            fds.push_back({full ? -1 : l.fd.get(), POLLIN, 0}); // a negative fd is ignored by poll
        for (const auto& [pid, h] : lp.table.handlers())
            if (h.ctl) {
                fds.push_back({h.ctl.get(), POLLIN, 0});
                owners.push_back(pid);
            }
        const auto wake = wake_at(lp.table, status_due);
        // Signals are blocked everywhere else and delivered only here.
        if (ppoll(fds.data(), fds.size(), wake ? &*wake : nullptr, &wait_mask) < 0) {
            if (errno != EINTR) {
                log_error(std::string("poll: ") + std::strerror(errno));
                pause_briefly();
            }
            continue;
        }
        // Handlers first: one that has just finished takes the next connection.
        for (std::size_t i = 0; i < owners.size(); ++i)
            if (fds[lp.ls.size() + i].revents != 0)
                hear_from(lp, owners[i], fds[lp.ls.size() + i].fd);
        for (std::size_t i = 0; i < lp.ls.size() && stop_signal == 0; ++i)
            if (fds[i].revents & POLLIN)
                while (stop_signal == 0 && can_take(lp) && accept_one(lp, lp.ls[i])) {
                }
    }
    sd_notify(0, "STOPPING=1");
    log_info(std::string("stopping on ") + strsignal(stop_signal));
    // Closing a listening socket resets the connections in its backlog.
    // systemd holds its own copy of passed sockets; ours are drained into
    // handlers that answer what was sent, then end with the others - no
    // further than --max-children, as while running: a full backlog must
    // not become a fork and database login per connection.  The rest are
    // reset; their clients retry.
    if (opt.passed.empty())
        for (auto& l : lp.ls)
            while (can_take(lp) && accept_one(lp, l)) {
            }
    close_all(lp.ls);
    stop_children(lp);
    sigprocmask(SIG_SETMASK, &lp.old, nullptr);
    return EX_OK;
}

} // namespace sockmapd
