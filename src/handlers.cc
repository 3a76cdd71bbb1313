#include "handlers.hh"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
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
    unsigned served = 0;
    for (Fd conn = std::move(first); conn; ++served) {
        server.serve(conn.get());
        // The parent holds a copy until it reads our byte: end the
        // connection now, so that the client sees it closed at once.
        shutdown(conn.get(), SHUT_RDWR);
        conn.reset();
        const char done = 'd';
        (void)send(ctl, &done, 1, MSG_NOSIGNAL);
        wait_for_parent(ctl, server);
        conn.reset(receive_connection(ctl));
        if (conn && received)
            received->fetch_add(1);
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

const HandlerTable::Handler* HandlerTable::find(pid_t pid) const
{
    const auto it = handlers_.find(pid);
    return it == handlers_.end() ? nullptr : &it->second;
}

void HandlerTable::started(pid_t pid, Fd ctl, Fd conn, std::string peer, Clock::time_point now, int slot)
{
    Handler& h = handlers_[pid];
    h.slot = slot;
    h.ctl = std::move(ctl);
    h.conn = std::move(conn);
    h.peer = std::move(peer);
    h.given = 1;
    h.started = h.idle_since = now;
    if (h.given >= limits_.max_use)
        h.ctl.reset();
}

std::optional<pid_t> HandlerTable::next_idle() const
{
    std::optional<pid_t> best;
    Clock::time_point since{};
    for (const auto& [pid, h] : handlers_)
        if (is_idle(h) && (!best || h.idle_since > since)) {
            best = pid;
            since = h.idle_since;
        }
    return best;
}

void HandlerTable::given(pid_t pid, Fd conn, std::string peer)
{
    const auto it = handlers_.find(pid);
    if (it == handlers_.end())
        return;
    Handler& h = it->second;
    h.conn = std::move(conn);
    h.peer = std::move(peer);
    if (++h.given >= limits_.max_use)
        h.ctl.reset();
}

void HandlerTable::finished(pid_t pid, Clock::time_point now)
{
    const auto it = handlers_.find(pid);
    if (it == handlers_.end())
        return;
    it->second.conn.reset();
    it->second.idle_since = now;
}

Fd HandlerTable::untaken(pid_t pid, unsigned received)
{
    const auto it = handlers_.find(pid);
    if (it == handlers_.end() || !it->second.conn || received >= it->second.given)
        return Fd();
    return std::move(it->second.conn);
}

void HandlerTable::retire(pid_t pid)
{
    if (const auto it = handlers_.find(pid); it != handlers_.end())
        it->second.ctl.reset();
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

} // namespace sockmapd
