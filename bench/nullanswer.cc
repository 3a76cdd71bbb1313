// nullanswer — the transport floor for the benchmark: a socket-activated
// netstring answerer that replies "NOTFOUND " to every request and does
// nothing else.  Started exactly like sockmapd (systemd-socket-activate -a:
// the connection is fd 3 with LISTEN_FDS=1, else stdin/stdout), it reads
// until EOF with one blocking read and one write per batch of requests.
// It uses libc only, so its start-up cost is the exec and the dynamic
// loader of libc: the least any handler can pay.
// Given a listening socket instead (systemd-socket-activate without -a),
// it accepts each connection and closes it at once: the floor of a
// refused connection in an accept loop.
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <sys/socket.h>
#include <unistd.h>

namespace {

constexpr std::size_t kBuf = 16384;
constexpr char kReply[] = "9:NOTFOUND ,";

bool write_all(int fd, const char* p, std::size_t n)
{
    while (n > 0) {
        const ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= static_cast<std::size_t>(w);
    }
    return true;
}

} // namespace

int main()
{
    int in = 0, out = 1;
    const char* fds = getenv("LISTEN_FDS");
    if (fds && std::strcmp(fds, "1") == 0)
        in = out = 3;
    int listening = 0;
    socklen_t len = sizeof listening;
    if (in == 3 && getsockopt(3, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening)
        for (;;) {
            const int c = accept(3, nullptr, nullptr);
            if (c >= 0)
                close(c);
            else if (errno != EINTR && errno != ECONNABORTED)
                return 1;
        }

    static char buf[kBuf];
    static char replies[kBuf];
    std::size_t have = 0;
    for (;;) {
        const ssize_t n = read(in, buf + have, kBuf - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        have += static_cast<std::size_t>(n);

        // Answer every complete "<len>:<payload>," in the buffer.
        std::size_t pos = 0, nrep = 0;
        for (;;) {
            std::size_t len = 0, i = pos;
            while (i < have && buf[i] >= '0' && buf[i] <= '9' && i - pos < 6)
                len = len * 10 + static_cast<std::size_t>(buf[i++] - '0');
            if (i >= have)
                break;
            if (buf[i] != ':' || i == pos)
                return 1;
            if (i + 1 + len + 1 > have) {
                if (i + 1 + len + 1 > kBuf)
                    return 1;
                break;
            }
            if (buf[i + 1 + len] != ',')
                return 1;
            pos = i + 1 + len + 1;
            if (nrep + sizeof kReply - 1 > sizeof replies) {
                if (!write_all(out, replies, nrep))
                    return 0;
                nrep = 0;
            }
            std::memcpy(replies + nrep, kReply, sizeof kReply - 1);
            nrep += sizeof kReply - 1;
        }
        if (nrep > 0 && !write_all(out, replies, nrep))
            return 0;
        std::memmove(buf, buf + pos, have - pos);
        have -= pos;
    }
}
