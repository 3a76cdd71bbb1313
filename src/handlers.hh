// handlers — the accept loop's handler processes, each serving one
// connection after another, as Postfix's master(8) reuses its daemons.
//
// HandlerPool owns them: every handler process and every descriptor the
// parent keeps for them (as Fd).  It starts one (fork, a control socket of
// its own), dispatches a connection to an idle one or to a new one, keeps
// spares (started without a connection, so that the next one waits for no
// fork), hears when one has finished a connection, reaps those that exit,
// retires them (max_use, max_idle, a reload) and stops them all.  The accept loop
// (listen.hh) only accepts, admits and hands a connection over.
//
// A handler is given connections over its control socket (a SOCK_SEQPACKET
// pair): give_connection() sends one with SCM_RIGHTS, the handler answers
// one byte when it has finished it (a spare, started without one, also
// once it is ready: until then it is given nothing).  The parent keeps a copy of the
// connection meanwhile (to end it gently at stop) and closes it on that
// byte.
//
// HandlerTable is the pool's bookkeeping, without system calls but
// close(): the next connection goes to the handler idle for the shortest
// time (its database connection is the warmest; the others reach max_idle
// and go), a spare that has served nothing only when no other is idle.  Retiring a handler is the parent's decision
// alone: it closes its end of the control socket, after max_use connections given, max_idle seconds idle, a reload
// (every handler then has the old config), or when the handler's end is gone.  A retired handler serves what it was
// given, reads EOF and exits; nothing is ever sent to it again, so no connection is lost to a handler that is leaving.
//
// serve_connections() is the handler's side: serve the first connection,
// then wait for the next, calling the server's wakeup() meanwhile (to close
// an idle database connection); return at EOF on the control socket.
//
// Receipts: how many connections each handler has taken off its control
// socket, in memory shared with the handlers (no system call).  A handler
// that dies between the parent's send and its receive leaves the connection
// untouched: the pool sees the count short and gives it to another, so a
// handler killed costs no later client anything.  A handler forked
// meanwhile closes every descriptor the pool holds but its own connection.
#pragma once

#include "lookup.hh" // Clock
#include "util.hh"

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <poll.h>
#include <string>
#include <sys/types.h>
#include <vector>

namespace sockmapd
{

struct ReuseLimits {
    unsigned max_use = 100;             // connections per handler; 1: one per process
    std::chrono::seconds max_idle{100}; // without a connection, then it exits
};

// What a handler process does with the connections it is given.
class ConnectionServer
{
public:
    virtual ~ConnectionServer() = default;
    // One connection, to its end; the caller closes `fd`.
    virtual void serve(int fd) = 0;
    // Between connections: when wakeup() is wanted, nullopt for never.
    virtual std::optional<Clock::time_point> next_wakeup() const { return std::nullopt; }
    virtual void wakeup(Clock::time_point /*now*/) {}
    // A spare, before its first connection: what makes that one faster.
    virtual void warm_up() {}
};

// Sends `conn` over the parent's end `ctl`; false when the handler's end
// is gone (or its queue is full: a handler misbehaving).  Never blocks.
bool give_connection(int ctl, int conn);

// The handler's side, until the parent closes the control socket: serves
// `first`, then each connection received on `ctl`, counted in `received`
// (may be null) as soon as it is taken.  Returns how many it served.
unsigned serve_connections(int ctl, Fd first, ConnectionServer& server, std::atomic<unsigned>* received = nullptr);

class Receipts
{
public:
    // Room for `slots` handlers; without shared memory, none (take() is -1).
    explicit Receipts(std::size_t slots);
    ~Receipts();
    Receipts(const Receipts&) = delete;
    Receipts& operator=(const Receipts&) = delete;

    // A free slot set to `count`, or -1 when all are taken.
    int take(unsigned count);
    void release(int slot);
    std::atomic<unsigned>* counter(int slot) const;
    unsigned count(int slot) const { return counter(slot) ? counter(slot)->load() : 0; }

private:
    std::atomic<unsigned>* counts_ = nullptr;
    std::vector<bool> used_;
};

class HandlerTable
{
public:
    struct Handler {
        Fd ctl;  // the parent's end of the control socket; closed: retired
        Fd conn; // the parent's copy of the connection served; closed: idle
        std::string peer;
        std::string key; // who the connection is from (peerlimit.hh peer_key())
        unsigned given = 0;
        int slot = -1; // in Receipts; -1: none
        Clock::time_point started;
        Clock::time_point idle_since;
        bool warming = false; // a spare until it says it is ready: not idle, given nothing
    };

    explicit HandlerTable(ReuseLimits limits) : limits_(limits) {}
    void set_limits(ReuseLimits limits) { limits_ = limits; }

    std::size_t running() const { return handlers_.size(); }
    std::size_t idle() const;
    // Idle, or spares still getting ready (what top_up() counts).
    std::size_t idle_or_warming() const;
    const std::map<pid_t, Handler>& handlers() const { return handlers_; }
    const Handler* find(pid_t pid) const;

    // A new handler, busy with its first connection; without one (`conn`
    // closed), a spare that has served nothing, idle once finished() (its
    // byte after its warm-up).
    void started(pid_t pid, Fd ctl, Fd conn, std::string peer, Clock::time_point now, int slot = -1,
                 std::string key = {});
    // The handler that takes the next connection: the one idle the
    // shortest time, not retired, a spare only when no other is idle;
    // nullopt when none is idle.
    std::optional<pid_t> next_idle() const;
    // `conn` was given to the idle handler `pid`; retires it when that was
    // its max_use-th.
    void given(pid_t pid, Fd conn, std::string peer, std::string key = {});
    // The handler finished its connection: the copy is closed, it is idle.
    void finished(pid_t pid, Clock::time_point now);
    // How many connections from `key` the handlers serve now.
    unsigned serving(const std::string& key) const;
    // Closes the handler's control socket: it gets nothing more.
    void retire(pid_t pid);
    void retire_all();
    // Retires the idle handlers past max_idle; returns how many.
    std::size_t retire_expired(Clock::time_point now);
    // When the next idle handler reaches max_idle; nullopt: none idle.
    std::optional<Clock::time_point> next_expiry() const;
    // The process is gone: its descriptors are closed.
    void erase(pid_t pid) { handlers_.erase(pid); }
    // Only in a handler just forked: the parent's descriptors closed (a run
    // of numbers at a time), the table empty, its entries not written to.
    void clear();
    // A connection given to `pid` that it never took (`received` of its
    // Receipts slot is short): the parent's copy, taken out of the table,
    // to give to another handler.  Closed Fd otherwise.
    Fd untaken(pid_t pid, unsigned received);

private:
    static bool is_idle(const Handler& h) { return h.ctl && !h.conn && !h.warming; }

    ReuseLimits limits_;
    std::map<pid_t, Handler> handlers_;
};

// The handler processes of one accept loop.  Nothing here throws but
// std::bad_alloc; failures to start a handler are logged, and the
// connection is closed (its client retries).
class HandlerPool
{
public:
    using MakeServer = std::function<std::unique_ptr<ConnectionServer>()>;

    // At most `max_children` handlers (stopping may start a few more, up
    // to 64, for the backlog it drains).  `in_child` runs first in each
    // handler forked (the caller's own descriptors and signals), then
    // `make_server` once.
    HandlerPool(unsigned max_children, ReuseLimits limits, MakeServer make_server, std::function<void()> in_child,
                unsigned spares = 0);

    std::size_t running() const { return table_.running(); }
    std::size_t idle() const { return table_.idle(); }
    void set_limits(ReuseLimits limits) { table_.set_limits(limits); }
    // A connection can be served now: a handler is idle or may be started.
    bool can_take() const { return running() < max_children_ || table_.next_idle(); }
    unsigned serving(const std::string& key) const { return table_.serving(key); }

    // `conn` (from `peer`, who is `key`) to the handler idle the shortest
    // time; without one, to a new handler.
    void dispatch(Fd conn, std::string peer, std::string key);

    // After connections were dispatched: handlers started, without a
    // connection, until `spares` are idle (within the cap), so that the
    // next connection waits for no fork.
    void top_up();

    // The control sockets to wait on, appended to `fds`; after poll(),
    // heard() with the same vector takes in what the handlers said.
    void watch(std::vector<pollfd>& fds);
    void heard(const std::vector<pollfd>& fds);
    // Collects the handlers that have exited; a connection one was given
    // and never took goes to another.
    void reap();
    // Retires the idle handlers past max_idle; when the next one will be.
    std::optional<Clock::time_point> retire_expired(Clock::time_point now);
    // A reload: every handler finishes what it serves and exits.
    void retire_all() { table_.retire_all(); }
    // Each handler answers what it has read, then reads EOF and ends as if
    // the client had closed; idle handlers end at once.  Those still
    // running after 5 s get SIGTERM, then SIGKILL 2 s later.
    void stop();

private:
    void start(Fd conn, std::string peer, std::string key);
    [[noreturn]] void run_child(Fd ctl, Fd conn, int slot);
    void collect(bool redispatch);
    void wait_for_exit(std::chrono::steady_clock::duration limit);

    struct Untaken {
        Fd conn;
        std::string peer;
        std::string key;
    };

    unsigned max_children_;
    unsigned spares_;
    HandlerTable table_;
    Receipts receipts_;
    MakeServer make_server_;
    std::function<void()> in_child_;
    // Connections dead handlers never took, waiting for another: held
    // here, so that a handler forked meanwhile closes them.
    std::deque<Untaken> untaken_;
    std::size_t watch_from_ = 0; // where watch() began in the caller's vector
    std::vector<pid_t> owners_;  // the handler of each control socket watched
};

} // namespace sockmapd
