#include "session.hh"

#include "log.hh"
#include "netstring.hh"
#include "socketmap.hh"
#include "stats.hh"

#include <algorithm>
#include <array>
#include <cerrno>
#include <fcntl.h>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

namespace sockmapd
{

const char* describe(EndReason r)
{
    switch (r) {
    case EndReason::Eof:
        return "client closed";
    case EndReason::Idle:
        return "idle timeout";
    case EndReason::MaxSession:
        return "session time limit";
    case EndReason::ProtocolError:
        return "protocol error";
    case EndReason::ClientGone:
        return "connection lost";
    }
    return "unknown";
}

namespace
{

constexpr std::size_t read_chunk = 16384;
constexpr std::size_t flush_threshold = 65536;
// One read may hold hundreds of requests.  While they are answered, the
// replies so far go out at least this often, and the session's limits and
// the peer are checked between two requests.
constexpr auto batch_check_interval = std::chrono::milliseconds(50);

bool is_socket(int fd)
{
    struct stat st {
    };
    return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

// Milliseconds from now to `t`, for poll(); 0 when it has passed.
int ms_until(Clock::time_point now, Clock::time_point t)
{
    if (t <= now)
        return 0;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - now).count() + 1;
    return static_cast<int>(std::min<long long>(ms, 24LL * 3600 * 1000));
}

// Input waits to be read: the client sent more without waiting for the
// replies so far.
bool input_pending(int fd)
{
    pollfd p{fd, POLLIN, 0};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

// The client is gone for good: a pipe's reader closed (POLLERR), a socket
// reset or shut in both directions (POLLHUP).  A client that only shut its
// write side still gets its replies.
bool peer_gone(int fd)
{
    pollfd p{fd, 0, 0};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0;
}

// Output with a deadline: a client that stops reading its replies is
// dropped instead of blocking the handler forever.
class Writer
{
public:
    Writer(int fd) : fd_(fd), socket_(is_socket(fd))
    {
        // Pipes have no MSG_DONTWAIT; make our end non-blocking and put
        // the flags back at the end, the descriptor may be shared.
        if (!socket_) {
            saved_flags_ = fcntl(fd_, F_GETFL);
            struct stat st {
            };
            if (saved_flags_ >= 0 && fstat(fd_, &st) == 0 && S_ISFIFO(st.st_mode))
                fcntl(fd_, F_SETFL, saved_flags_ | O_NONBLOCK);
            else
                saved_flags_ = -1;
        }
    }
    ~Writer()
    {
        if (saved_flags_ >= 0)
            fcntl(fd_, F_SETFL, saved_flags_);
    }
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;

    bool write_all(std::string_view data, Clock::time_point deadline)
    {
        while (!data.empty()) {
            const ssize_t n = socket_ ? send(fd_, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT)
                                      : write(fd_, data.data(), data.size());
            if (n > 0) {
                data.remove_prefix(static_cast<std::size_t>(n));
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                pollfd p{fd_, POLLOUT, 0};
                const int r = poll(&p, 1, ms_until(Clock::now(), deadline));
                if (r == 0)
                    return false;
                if (r < 0 && errno != EINTR)
                    return false;
                continue;
            }
            return false;
        }
        return true;
    }

private:
    int fd_;
    bool socket_;
    int saved_flags_ = -1;
};

// Input without a poll() per request.  On a blocking socket the read()
// itself waits, bounded by SO_RCVTIMEO, so a request costs one read()
// instead of poll() + read(): the receive timeout is set once and changed
// only when the next deadline comes closer than it (or moves much further
// away).  Pipes, ttys and non-blocking descriptors keep poll() + read().
class Reader
{
public:
    explicit Reader(int fd) : fd_(fd)
    {
        const int flags = fcntl(fd_, F_GETFL);
        timed_ = flags >= 0 && (flags & O_NONBLOCK) == 0;
    }

    // read()'s result; -1 with errno EAGAIN when `deadline` came first.
    ssize_t read_until(char* buf, std::size_t size, Clock::time_point now, Clock::time_point deadline)
    {
        if (timed_ && arm(deadline - now))
            return read(fd_, buf, size);
        pollfd p{fd_, POLLIN, 0};
        const int r = poll(&p, 1, ms_until(now, deadline));
        if (r == 0) {
            errno = EAGAIN;
            return -1;
        }
        if (r < 0)
            return -1;
        return read(fd_, buf, size);
    }

private:
    // A read may end up to `slack` after the deadline rather than pay a
    // setsockopt() for every request as the deadlines creep forward.
    static constexpr std::chrono::microseconds slack{5000};
    static constexpr std::chrono::microseconds longest{24LL * 3600 * 1000000};

    bool arm(Clock::duration wait)
    {
        auto us = std::chrono::duration_cast<std::chrono::microseconds>(wait);
        us = std::clamp(us, std::chrono::microseconds(1000), longest);
        if (armed_.count() > 0 && us + slack >= armed_ && us <= 2 * armed_)
            return true;
        const timeval tv{static_cast<time_t>(us.count() / 1000000), static_cast<suseconds_t>(us.count() % 1000000)};
        if (setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) {
            timed_ = false; // not a socket
            return false;
        }
        armed_ = us;
        return true;
    }

    int fd_;
    bool timed_;
    std::chrono::microseconds armed_{0};
};

class Session
{
public:
    Session(int in_fd, int out_fd, Lookup& lookup, const SessionLimits& limits)
        : in_fd_(in_fd), out_fd_(out_fd), reader_(in_fd), writer_(out_fd), lookup_(lookup), limits_(limits)
    {
        const auto now = Clock::now();
        // A client that keeps its connection (Sendmail) does not notice a
        // close before its next lookup, so without an age limit only the
        // client or the idle timeout ends the session.
        end_of_life_ = limits.max_session.count() > 0 ? now + limits.max_session : Clock::time_point::max();
        last_check_ = now;
        idle_deadline_ = now + limits.idle_timeout;
        stall_ = std::min(limits.idle_timeout, limits.stall);
        lookup_.session_started();
    }

    SessionStats run();

private:
    bool handle_input(std::string_view data);     // false: end the session
    bool between_requests(Clock::time_point now); // false: end the session
    // The reply appended to out_; returns when it was ready.
    Clock::time_point answer(std::string_view payload);
    // A PERM reply saying why, then the end of the session.
    void end_on_framing_error(NetstringError e);
    bool flush();
    Clock::time_point next_deadline() const;

    int in_fd_;
    int out_fd_;
    Reader reader_;
    Writer writer_;
    Lookup& lookup_;
    SessionLimits limits_;
    NetstringDecoder decoder_{max_request_length};
    std::string out_;
    SessionStats stats_;
    Clock::time_point end_of_life_;
    Clock::time_point idle_deadline_;
    Clock::time_point frame_deadline_ = Clock::time_point::max(); // a request begun must end by then
    bool warned_unknown_map_ = false;
    std::chrono::seconds stall_;
    Clock::time_point last_check_; // of between_requests(), or the last flush
};

Clock::time_point Session::next_deadline() const
{
    auto t = std::min({end_of_life_, idle_deadline_, frame_deadline_});
    if (const auto w = lookup_.next_wakeup())
        t = std::min(t, *w);
    return t;
}

bool Session::flush()
{
    if (out_.empty())
        return true;
    last_check_ = Clock::now();
    const bool ok = writer_.write_all(out_, last_check_ + stall_);
    out_.clear();
    if (!ok)
        stats_.end = EndReason::ClientGone;
    return ok;
}

Clock::time_point Session::answer(std::string_view payload)
{
    ++stats_.requests;
    const auto req = split_request(payload);
    // The client's doing: said once, the rest counted in the end line.
    if (!req && !stats_.malformed++)
        log_warning("request without map name and key: answered PERM; more in this session are counted in its "
                    "end line");
    const auto asked = Clock::now();
    const LookupResult result = req ? ask(lookup_, *req) : malformed_request();
    // Sendmail takes PERM for "not found": a map missing from the config
    // silently skips its blacklist.  Said once per session, at warning.
    if (result.outcome == Outcome::NoSuchMap && !warned_unknown_map_) {
        warned_unknown_map_ = true;
        log_warning("unknown map \"" + log_escape(req->map) + "\": answered PERM, which Sendmail reads as not found");
    }
    const Reply reply = reply_for(result);
    const auto answered = Clock::now();
    const StatResult status = stat_result(reply.status);
    // A map no config names counts as "other", whatever the client sent.
    stats().lookup(req && result.outcome != Outcome::NoSuchMap ? req->map : std::string_view(), status,
                   answered - asked);
    if (status == StatResult::Ok)
        ++stats_.hits;
    else if (status == StatResult::NotFound)
        ++stats_.misses;
    else
        ++stats_.errors;
    if (req && log_enabled(LogLevel::Debug)) {
        // The map name is the client's too: a name no map has is any bytes.
        const std::string map = log_escape(req->map);
        log_debug("map " + map + " key \"" + log_escape(req->key) + "\": " + log_escape(reply.payload),
                  {{"SOCKMAP_MAP", map}, {"SOCKMAP_STATUS", reply.status}});
    }
    netstring_append(out_, reply.payload);
    return answered;
}

void Session::end_on_framing_error(NetstringError e)
{
    ++stats_.errors;
    log_warning(std::string("closing connection: ") + describe(e));
    netstring_append(out_, reply_for({Outcome::PermFail, describe(e)}).payload);
    flush();
    stats_.end = EndReason::ProtocolError;
}

// A batch of requests read at once is not answered past max_session, nor
// for a client that went away: the replies so far go out every
// batch_check_interval (a TCP peer that closed answers them with a reset)
// and the peer is looked at then.
bool Session::between_requests(Clock::time_point now)
{
    if (now >= end_of_life_) {
        flush();
        stats_.end = EndReason::MaxSession;
        return false;
    }
    if (out_.size() < flush_threshold && now - last_check_ < batch_check_interval)
        return true;
    if (!flush())
        return false;
    last_check_ = now;
    if (peer_gone(out_fd_)) {
        stats_.end = EndReason::ClientGone;
        return false;
    }
    return true;
}

bool Session::handle_input(std::string_view data)
{
    for (;;) {
        switch (decoder_.feed(data)) {
        case NetstringDecoder::Status::NeedMore:
            if (decoder_.mid_frame() && frame_deadline_ == Clock::time_point::max())
                frame_deadline_ = Clock::now() + stall_;
            return true;
        case NetstringDecoder::Status::Frame: {
            const auto answered = answer(decoder_.payload());
            idle_deadline_ = answered + limits_.idle_timeout;
            frame_deadline_ = Clock::time_point::max();
            if (!between_requests(answered))
                return false;
            break;
        }
        case NetstringDecoder::Status::Error:
            end_on_framing_error(decoder_.error());
            return false;
        }
    }
}

SessionStats Session::run()
{
    std::array<char, read_chunk> buf;
    for (;;) {
        auto now = Clock::now();
        if (now >= end_of_life_) {
            stats_.end = EndReason::MaxSession;
            return stats_;
        }
        if (now >= idle_deadline_ || now >= frame_deadline_) {
            stats_.end = EndReason::Idle;
            return stats_;
        }
        if (const auto w = lookup_.next_wakeup(); w && *w <= now)
            lookup_.wakeup(now);
        if (!input_pending(in_fd_))
            lookup_.batch_over();

        const ssize_t n = reader_.read_until(buf.data(), buf.size(), now, next_deadline());
        if (n < 0) {
            // EAGAIN: a deadline came; the checks above decide what it means.
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            stats_.end = EndReason::ClientGone;
            return stats_;
        }
        if (n == 0) {
            if (const auto e = decoder_.at_eof(); e != NetstringError::None) {
                end_on_framing_error(e);
                return stats_;
            }
            stats_.end = EndReason::Eof;
            return stats_;
        }
        if (!handle_input(std::string_view(buf.data(), static_cast<std::size_t>(n))) || !flush())
            return stats_;
    }
}

} // namespace

SessionStats run_session(int in_fd, int out_fd, Lookup& lookup, const SessionLimits& limits)
{
    Session s(in_fd, out_fd, lookup, limits);
    const SessionStats st = s.run();
    static_assert(static_cast<unsigned>(EndReason::ClientGone) + 1 == stats_session_ends);
    stats().session_end(static_cast<unsigned>(st.end));
    return st;
}

} // namespace sockmapd
