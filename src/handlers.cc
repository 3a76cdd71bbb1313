#include "handlers.hh"

#include "log.hh"
#include "stats.hh"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

namespace sockmapd
{

namespace
{

// Milliseconds from now to `t` for poll(); -1 (forever) without one.
int poll_timeout(std::optional<Clock::time_point> t)
{
    if (!t)
        return -1;
    const auto now = Clock::now();
    if (*t <= now)
        return 0;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*t - now).count() + 1;
    return static_cast<int>(std::min<long long>(ms, 24LL * 3600 * 1000));
}

// The next connection from the parent: its descriptor, or -1 at EOF (the
// parent retired this handler or is gone) or on an error.
int receive_connection(int ctl)
{
    char byte = 0;
    iovec iov{&byte, 1};
    alignas(cmsghdr) char space[CMSG_SPACE(sizeof(int))];
    for (;;) {
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space;
        msg.msg_controllen = sizeof space;
        const ssize_t n = recvmsg(ctl, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                int fd = -1;
                std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
                return fd;
            }
        // A message without a descriptor: nothing to serve, wait on.
    }
}

// Waits until the parent sends something, waking the server when it asks.
void wait_for_parent(int ctl, ConnectionServer& server)
{
    for (;;) {
        pollfd p{ctl, POLLIN, 0};
        const int r = poll(&p, 1, poll_timeout(server.next_wakeup()));
        if (r > 0 || (r < 0 && errno != EINTR))
            return;
        if (r == 0)
            server.wakeup(Clock::now());
    }
}

} // namespace

bool give_connection(int ctl, int conn)
{
    char byte = 'c';
    iovec iov{&byte, 1};
    alignas(cmsghdr) char space[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space;
    msg.msg_controllen = sizeof space;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &conn, sizeof conn);
    ssize_t n;
    do
        n = sendmsg(ctl, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n == 1;
}

unsigned serve_connections(int ctl, Fd first, ConnectionServer& server, std::atomic<unsigned>* received)
{
    const auto next = [&] {
        wait_for_parent(ctl, server);
        Fd conn(receive_connection(ctl));
        if (conn && received)
            received->fetch_add(1);
        return conn;
    };
    unsigned served = 0;
    // A spare starts without one: it gets ready, says so (the parent gives
    // it nothing before: a client would wait for the warm-up), then waits
    // for its first.
    if (!first) {
        server.warm_up();
        const char ready = 'd';
        (void)send(ctl, &ready, 1, MSG_NOSIGNAL);
    }
    for (Fd conn = first ? std::move(first) : next(); conn; ++served) {
        server.serve(conn.get());
        // The parent holds a copy until it reads our byte: end the
        // connection now, so that the client sees it closed at once.
        shutdown(conn.get(), SHUT_RDWR);
        conn.reset();
        const char done = 'd';
        (void)send(ctl, &done, 1, MSG_NOSIGNAL);
        conn = next();
    }
    return served;
}

// ---------------------------------------------------------------- receipts

Receipts::Receipts(std::size_t slots)
{
    if (slots == 0)
        return;
    void* p =
        mmap(nullptr, slots * sizeof(std::atomic<unsigned>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return;
    counts_ = static_cast<std::atomic<unsigned>*>(p);
    used_.assign(slots, false);
}

Receipts::~Receipts()
{
    if (counts_)
        munmap(counts_, used_.size() * sizeof(std::atomic<unsigned>));
}

int Receipts::take(unsigned count)
{
    const auto it = std::find(used_.begin(), used_.end(), false);
    if (it == used_.end())
        return -1;
    *it = true;
    const auto slot = static_cast<int>(it - used_.begin());
    counts_[slot].store(count);
    return slot;
}

void Receipts::release(int slot)
{
    if (slot >= 0 && static_cast<std::size_t>(slot) < used_.size())
        used_[static_cast<std::size_t>(slot)] = false;
}

std::atomic<unsigned>* Receipts::counter(int slot) const
{
    if (slot < 0 || static_cast<std::size_t>(slot) >= used_.size())
        return nullptr;
    return &counts_[slot];
}

// ---------------------------------------------------------------- the table

std::size_t HandlerTable::idle() const
{
    return static_cast<std::size_t>(
        std::count_if(handlers_.begin(), handlers_.end(), [](const auto& kv) { return is_idle(kv.second); }));
}

std::size_t HandlerTable::idle_or_warming() const
{
    return static_cast<std::size_t>(std::count_if(handlers_.begin(), handlers_.end(), [](const auto& kv) {
        return is_idle(kv.second) || (kv.second.ctl && kv.second.warming);
    }));
}

const HandlerTable::Handler* HandlerTable::find(pid_t pid) const
{
    const auto it = handlers_.find(pid);
    return it == handlers_.end() ? nullptr : &it->second;
}

void HandlerTable::started(pid_t pid, Fd ctl, Fd conn, std::string peer, Clock::time_point now, int slot,
                           std::string key)
{
    Handler& h = handlers_[pid];
    h.slot = slot;
    h.ctl = std::move(ctl);
    h.conn = std::move(conn);
    h.peer = std::move(peer);
    h.key = std::move(key);
    h.given = h.conn ? 1 : 0;
    h.warming = !h.conn;
    h.started = h.idle_since = now;
    if (h.given >= limits_.max_use)
        h.ctl.reset();
}

std::optional<pid_t> HandlerTable::next_idle() const
{
    // A handler that has served (its database connection may be open)
    // before a spare that never has, then the one idle the shortest time.
    std::optional<pid_t> best;
    std::pair<bool, Clock::time_point> rank{};
    for (const auto& [pid, h] : handlers_)
        if (is_idle(h) && (!best || std::pair(h.given > 0, h.idle_since) > rank)) {
            best = pid;
            rank = {h.given > 0, h.idle_since};
        }
    return best;
}

void HandlerTable::given(pid_t pid, Fd conn, std::string peer, std::string key)
{
    const auto it = handlers_.find(pid);
    if (it == handlers_.end())
        return;
    Handler& h = it->second;
    h.conn = std::move(conn);
    h.peer = std::move(peer);
    h.key = std::move(key);
    if (++h.given >= limits_.max_use)
        h.ctl.reset();
}

void HandlerTable::finished(pid_t pid, Clock::time_point now)
{
    const auto it = handlers_.find(pid);
    if (it == handlers_.end())
        return;
    it->second.conn.reset();
    it->second.warming = false;
    it->second.idle_since = now;
}

Fd HandlerTable::untaken(pid_t pid, unsigned received)
{
    const auto it = handlers_.find(pid);
    if (it == handlers_.end() || !it->second.conn || received >= it->second.given)
        return Fd();
    return std::move(it->second.conn);
}

unsigned HandlerTable::serving(const std::string& key) const
{
    unsigned n = 0;
    for (const auto& [pid, h] : handlers_)
        if (h.conn && h.key == key)
            ++n;
    return n;
}

void HandlerTable::retire(pid_t pid)
{
    if (const auto it = handlers_.find(pid); it != handlers_.end())
        it->second.ctl.reset();
}

namespace
{

// Closes every descriptor in `fds`, a run of consecutive numbers with one
// close_range() call.
void close_all(std::vector<int>& fds)
{
    std::sort(fds.begin(), fds.end());
    for (std::size_t i = 0; i < fds.size();) {
        std::size_t j = i;
        while (j + 1 < fds.size() && fds[j + 1] == fds[j] + 1)
            ++j;
        if (close_range(static_cast<unsigned>(fds[i]), static_cast<unsigned>(fds[j]), 0) != 0)
            for (std::size_t k = i; k <= j; ++k)
                close(fds[k]);
        i = j + 1;
    }
}

} // namespace

void HandlerTable::clear()
{
    std::vector<int> fds;
    fds.reserve(2 * handlers_.size());
    for (const auto& [pid, h] : handlers_)
        for (const Fd* fd : {&h.ctl, &h.conn})
            if (*fd)
                fds.push_back(fd->get());
    close_all(fds);
    // The entries are the parent's memory, shared with it until written:
    // destroying them would copy every page they lie on (each copy a TLB
    // flush on the other CPU) and close each number again.  They are left
    // as they are; a handler ends with _exit().
    static_cast<void>(new std::map<pid_t, Handler>(std::move(handlers_)));
    handlers_.clear();
}

void HandlerTable::retire_all()
{
    for (auto& [pid, h] : handlers_)
        h.ctl.reset();
}

std::size_t HandlerTable::retire_expired(Clock::time_point now)
{
    std::size_t n = 0;
    for (auto& [pid, h] : handlers_)
        if (is_idle(h) && now >= h.idle_since + limits_.max_idle) {
            h.ctl.reset();
            ++n;
        }
    return n;
}

std::optional<Clock::time_point> HandlerTable::next_expiry() const
{
    std::optional<Clock::time_point> t;
    for (const auto& [pid, h] : handlers_)
        if (is_idle(h) && (!t || h.idle_since + limits_.max_idle < *t))
            t = h.idle_since + limits_.max_idle;
    return t;
}

// ---------------------------------------------------------------- the pool

namespace
{

void pause_briefly()
{
    const timespec ts{0, 100 * 1000 * 1000};
    nanosleep(&ts, nullptr);
}

std::string status_text(int status)
{
    if (WIFEXITED(status))
        return "exit " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status))
        return std::string("killed by ") + strsignal(WTERMSIG(status));
    return "status " + std::to_string(status);
}

} // namespace

// Receipts for the cap, and for the handlers stopping drains past it.
HandlerPool::HandlerPool(unsigned max_children, ReuseLimits limits, MakeServer make_server,
                         std::function<void()> in_child, unsigned spares)
    : max_children_(max_children), spares_(spares), table_(limits), receipts_(max_children + 64),
      make_server_(std::move(make_server)), in_child_(std::move(in_child))
{
}

void HandlerPool::dispatch(Fd conn, std::string peer, std::string key)
{
    while (const auto pid = table_.next_idle()) {
        if (give_connection(table_.find(*pid)->ctl.get(), conn.get())) {
            if (log_enabled(LogLevel::Debug))
                log_debug("connection from " + peer + " to handler " + std::to_string(*pid));
            table_.given(*pid, std::move(conn), std::move(peer), std::move(key));
            return;
        }
        table_.retire(*pid); // its end is gone: it died or is leaving
    }
    start(std::move(conn), std::move(peer), std::move(key));
}

void HandlerPool::top_up()
{
    while (table_.idle_or_warming() < spares_ && running() < max_children_) {
        const std::size_t before = running();
        start(Fd(), {}, {});
        if (running() == before)
            return; // fork failed: logged, tried again after the next connection
    }
}

void HandlerPool::start(Fd conn, std::string peer, std::string key)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        log_error(std::string("socketpair: ") + std::strerror(errno));
        pause_briefly();
        return;
    }
    Fd ours(sv[0]), theirs(sv[1]);
    const int slot = receipts_.take(conn ? 1 : 0); // the first connection is inherited
    const pid_t pid = fork();
    if (pid == 0) {
        ours.reset();
        run_child(std::move(theirs), std::move(conn), slot);
    }
    theirs.reset();
    if (pid < 0) {
        log_error(std::string("fork: ") + std::strerror(errno));
        receipts_.release(slot);
        pause_briefly();
        return;
    }
    const bool spare = !conn;
    table_.started(pid, std::move(ours), std::move(conn), peer, Clock::now(), slot, std::move(key));
    stats().handler_started();
    log_info("handler " + std::to_string(pid) + (spare ? " started as a spare (" : " for " + peer + " started (") +
             std::to_string(running()) + " running)");
}

void HandlerPool::run_child(Fd ctl, Fd conn, int slot)
{
    // Every descriptor the parent holds for other handlers and clients.
    table_.clear();
    untaken_.clear();
    in_child_();
    int code = EX_OK;
    try {
        const std::unique_ptr<ConnectionServer> server = make_server_();
        serve_connections(ctl.get(), std::move(conn), *server, receipts_.counter(slot));
    } catch (const std::exception& e) {
        log_error(std::string("handler: internal error: ") + e.what());
        code = EX_SOFTWARE;
    }
    _exit(code);
}

void HandlerPool::watch(std::vector<pollfd>& fds)
{
    watch_from_ = fds.size();
    owners_.clear();
    for (const auto& [pid, h] : table_.handlers())
        if (h.ctl) {
            fds.push_back({h.ctl.get(), POLLIN, 0});
            owners_.push_back(pid);
        }
}

// A byte from a handler: it finished its connection.  EOF or an error:
// it is gone or going.
void HandlerPool::heard(const std::vector<pollfd>& fds)
{
    for (std::size_t i = 0; i < owners_.size() && watch_from_ + i < fds.size(); ++i) {
        const pollfd& p = fds[watch_from_ + i];
        if (p.revents == 0)
            continue;
        char buf[16];
        const ssize_t n = recv(p.fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0)
            table_.finished(owners_[i], Clock::now());
        else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            table_.retire(owners_[i]);
    }
    owners_.clear();
}

void HandlerPool::reap()
{
    collect(true);
}

// The handlers that have exited; the connections given to one that died
// before taking them (untouched: another handler may serve them) go to
// another when `redispatch`, else are closed (read nothing: the client
// retries).
void HandlerPool::collect(bool redispatch)
{
    int status = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        const HandlerTable::Handler* h = table_.find(pid);
        if (!h)
            continue;
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - h->started).count();
        std::string what = "handler " + std::to_string(pid) + " stopped (" + status_text(status) + ", " +
                           std::to_string(h->given) + (h->given == 1 ? " connection, " : " connections, ") +
                           std::to_string(ms) + " ms)";
        const int slot = h->slot;
        std::string peer = h->peer, key = h->key;
        stats().handler_exited(WIFSIGNALED(status));
        if (Fd conn = slot >= 0 ? table_.untaken(pid, receipts_.count(slot)) : Fd()) {
            what += ": the connection from " + peer + " it had not taken goes to another";
            untaken_.push_back({std::move(conn), std::move(peer), std::move(key)});
        } else if (h->conn) {
            what += ": its connection from " + peer + " is closed";
        }
        log_info(what);
        receipts_.release(slot);
        table_.erase(pid);
    }
    while (redispatch && !untaken_.empty()) {
        Untaken u = std::move(untaken_.front());
        untaken_.pop_front();
        dispatch(std::move(u.conn), std::move(u.peer), std::move(u.key));
    }
    untaken_.clear();
}

std::optional<Clock::time_point> HandlerPool::retire_expired(Clock::time_point now)
{
    table_.retire_expired(now);
    return table_.next_expiry();
}

void HandlerPool::wait_for_exit(std::chrono::steady_clock::duration limit)
{
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (running() > 0 && std::chrono::steady_clock::now() < deadline) {
        pause_briefly();
        collect(false);
    }
}

void HandlerPool::stop()
{
    collect(false);
    if (running() == 0)
        return;
    log_info("stopping: " + std::to_string(running()) + " running handler(s) end after their current request");
    for (const auto& [pid, h] : table_.handlers())
        if (h.conn)
            shutdown(h.conn.get(), SHUT_RD);
    table_.retire_all();
    wait_for_exit(std::chrono::seconds(5));
    for (const auto& [pid, h] : table_.handlers()) {
        log_warning("handler " + std::to_string(pid) + " still running, sending SIGTERM");
        kill(pid, SIGTERM);
    }
    wait_for_exit(std::chrono::seconds(2));
    std::vector<pid_t> left;
    for (const auto& [pid, h] : table_.handlers())
        left.push_back(pid);
    for (const pid_t pid : left) {
        log_warning("handler " + std::to_string(pid) + " ignored SIGTERM, killing it");
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
        receipts_.release(table_.find(pid)->slot);
        table_.erase(pid);
    }
}

} // namespace sockmapd
