#include "listen.hh"

#include "gate.hh"
#include "log.hh"
#include "peerlimit.hh"
#include "privileges.hh"
#include "stats.hh"
#include "util.hh"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <poll.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <systemd/sd-daemon.h>
#include <vector>

namespace sockmapd
{

namespace
{

// ---------------------------------------------------------------- signals

volatile sig_atomic_t stop_signal = 0;
volatile sig_atomic_t reload_signal = 0;
// A handler exited: wait4() over every child only then (with a thousand
// handlers, each call walks them all).
volatile sig_atomic_t child_signal = 0;

extern "C" void on_stop(int sig)
{
    stop_signal = sig;
}
extern "C" void on_reload(int sig)
{
    reload_signal = sig;
}
extern "C" void on_child(int)
{
    child_signal = 1;
}

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

// ---------------------------------------------------------------- the loop

void pause_briefly()
{
    const timespec ts{0, 100 * 1000 * 1000};
    nanosleep(&ts, nullptr);
}

struct Loop {
    std::vector<Listener> ls;
    HandlerPool pool;
    std::function<bool(const sockaddr*)> admit = [](const sockaddr*) { return true; };
    PeerLimit peers{0}; // --max-per-peer
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
    const std::size_t running = lp.pool.running();
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
               lp.pool.idle(), lp.served, static_cast<unsigned long long>(sum.lookups),
               static_cast<unsigned long long>(sum.temp));
    return std::nullopt;
}

// The per-peer limit: false (logged once per episode) when the handlers
// already serve as many connections of `key` as allowed.
bool admitted(Loop& lp, const std::string& key, const std::string& peer)
{
    const unsigned serving = lp.pool.serving(key);
    const PeerLimit::Admission a = lp.peers.admit(key, serving);
    if (a != PeerLimit::Admission::Yes)
        stats().refused(StatRefusal::PerPeer);
    if (a == PeerLimit::Admission::No)
        log_warning("closing new connections from " + key + " (" + peer + "): it has " + std::to_string(serving) +
                    " handlers, the most --max-per-peer allows");
    return a == PeerLimit::Admission::Yes;
}

// Accepts one pending connection on `l` and hands it on, unless `admit`
// refuses the peer or it has its share of handlers (it is closed then);
// false when none was pending.
bool accept_one(Loop& lp, Listener& l)
{
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    Fd conn(accept4(l.fd.get(), reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC));
    if (!conn) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
            log_error("accept on " + l.name + ": " + std::strerror(errno));
            pause_briefly(); // EMFILE and friends: do not spin
        }
        lp.waiting = false; // the backlog is empty
        return false;
    }
    const auto* peer_addr = reinterpret_cast<const sockaddr*>(&ss);
    if (!lp.admit(peer_addr)) {
        stats().refused(StatRefusal::Allow);
        return true;
    }
    std::string peer = addr_name(peer_addr);
    std::string key = peer_key(peer_addr, conn.get());
    if (!admitted(lp, key, peer))
        return true;
    ++lp.served;
    stats().accepted();
    if (lp.waiting)
        stats().waited_at_cap();
    lp.pool.dispatch(std::move(conn), std::move(peer), std::move(key));
    return true;
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
        lp.pool.retire_all();
        lp.pool.set_limits(reuse_limits(cfg.sys));
    }
    sd_notify(0, "READY=1");
}

// When ppoll() must return without an event: the earliest of `expiry`
// (the next idle handler's max_idle), `status` (a STATUS= held back) and
// `spare` (spares to start).
std::optional<timespec> wake_at(std::optional<Clock::time_point> t, std::optional<Clock::time_point> status,
                                std::optional<Clock::time_point> spare)
{
    for (const auto& other : {status, spare})
        if (other && (!t || *other < *t))
            t = other;
    if (!t)
        return std::nullopt;
    const auto ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::max(*t - Clock::now(), Clock::duration{})).count() +
        1000000;
    return timespec{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
}

} // namespace

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
    sigset_t old{}; // the signal mask to restore in handlers
    Loop lp{{},
            HandlerPool(
                opt.max_children, reuse_limits(cfg.sys), make_server,
                [&lp, &old] {
                    // A handler: none of the listening sockets, signals as in a
                    // socket-activated one, only the main process talks to systemd.
                    lp.ls.clear();
                    unsetenv("NOTIFY_SOCKET");
                    reset_signals(old);
                },
                opt.spare_handlers)};
    if (const int rc = open_listeners(opt, lp.ls); rc != EX_OK)
        return rc;
    if (!drop_privileges(id))
        return EX_OSERR;
    for (const auto& l : lp.ls)
        warn_if_open(cfg.sys.allow, l.fd.get());
    Gate gate; // cfg is the reloaded config: its allow-list applies to the next connection
    lp.admit = [&](const sockaddr* peer) { return gate.admit(cfg.sys.allow, peer); };
    lp.peers = PeerLimit(opt.max_per_peer);
    sigset_t wait_mask;
    old = install_signals(wait_mask);
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
    // Spares are started once connections have stopped coming for a moment:
    // not in the way of the lookup the last one came for (a fork, and the
    // spare's database login beside that lookup's own), nor of a burst,
    // whose connections start handlers of their own.
    constexpr auto spare_delay = std::chrono::milliseconds(50);
    std::optional<Clock::time_point> spare_due;
    while (stop_signal == 0) {
        if (reload_signal != 0)
            reload_config(lp, cfg, reload);
        if (child_signal != 0) {
            child_signal = 0;
            lp.pool.reap();
        }
        if (spare_due && Clock::now() >= *spare_due) {
            spare_due.reset();
            lp.pool.top_up();
        }
        const auto expiry = lp.pool.retire_expired(Clock::now());
        const auto status_due = notify_status(lp);
        const bool full = !lp.pool.can_take();
        if (full && !full_logged) {
            log_warning("all " + std::to_string(opt.max_children) + " handlers busy: new connections wait");
            stats().cap_reached();
        }
        full_logged = full;
        if (full)
            lp.waiting = true;
        stats().handlers(lp.pool.running(), lp.pool.idle(), opt.max_children);
        fds.clear();
        for (const auto& l : lp.ls)
            fds.push_back({full ? -1 : l.fd.get(), POLLIN, 0}); // a negative fd is ignored by poll
        lp.pool.watch(fds);
        const auto wake = wake_at(expiry, status_due, spare_due);
        // Signals are blocked everywhere else and delivered only here.
        if (ppoll(fds.data(), fds.size(), wake ? &*wake : nullptr, &wait_mask) < 0) {
            if (errno != EINTR) {
                log_error(std::string("poll: ") + std::strerror(errno));
                pause_briefly();
            }
            continue;
        }
        // Handlers first: one that has just finished takes the next connection.
        lp.pool.heard(fds);
        const unsigned long long served = lp.served;
        for (std::size_t i = 0; i < lp.ls.size() && stop_signal == 0; ++i)
            if (fds[i].revents & POLLIN)
                while (stop_signal == 0 && lp.pool.can_take() && accept_one(lp, lp.ls[i])) {
                }
        // Only after connections came: a pool without traffic shrinks
        // (max_idle) to nothing, spares too.
        if (lp.served != served)
            spare_due = Clock::now() + spare_delay;
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
            while (lp.pool.can_take() && accept_one(lp, l)) {
            }
    lp.ls.clear();
    lp.pool.stop();
    sigprocmask(SIG_SETMASK, &old, nullptr);
    return EX_OK;
}

} // namespace sockmapd
