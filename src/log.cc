#include "log.hh"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <cstdint>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

namespace sockmapd {

namespace {

enum class Sink { Stderr, File, Journal, Syslog };

struct LogState {
    LogLevel level = LogLevel::Info;
    Sink sink = Sink::Syslog;
    int file_fd = -1;
    bool syslog_open = false;
};

LogState& state()
{
    static LogState s;
    return s;
}

const char* level_name(LogLevel l)
{
    switch (l) {
    case LogLevel::Error: return "error";
    case LogLevel::Warning: return "warning";
    case LogLevel::Info: return "info";
    case LogLevel::Debug: return "debug";
    }
    return "info";
}

int syslog_priority(LogLevel l)
{
    switch (l) {
    case LogLevel::Error: return LOG_ERR;
    case LogLevel::Warning: return LOG_WARNING;
    case LogLevel::Info: return LOG_INFO;
    case LogLevel::Debug: return LOG_DEBUG;
    }
    return LOG_INFO;
}

bool under_systemd()
{
    return getenv("INVOCATION_ID") != nullptr || getenv("JOURNAL_STREAM") != nullptr;
}

// Without a log file: the journal under systemd, a private stderr (a shell,
// a supervisor's log pipe), else syslog.
Sink default_sink(bool stderr_allowed)
{
    if (under_systemd())
        return Sink::Journal;
    return stderr_allowed ? Sink::Stderr : Sink::Syslog;
}

// The message with its fields as NAME=value words, for the sinks that
// have no fields of their own (file, stderr, syslog).
std::string text_of(std::string_view msg, std::initializer_list<LogField> fields)
{
    std::string text(msg);
    for (const auto& f : fields) {
        if (f.value.empty())
            continue;
        text += ' ';
        text += f.name;
        text += '=';
        text.append(f.value);
    }
    return text;
}

std::string line_for(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields, bool stamp)
{
    std::string line;
    if (stamp) {
        char ts[40];
        const std::time_t t = std::time(nullptr);
        std::tm tm{};
        localtime_r(&t, &tm);
        line.append(ts, std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S%z ", &tm));
    }
    line += "sockmapd[" + std::to_string(getpid()) + "]: " + level_name(level) + ": ";
    line += text_of(msg, fields);
    line += '\n';
    return line;
}

void write_fd(int fd, const std::string& line)
{
    // One write() per line so concurrent handlers do not interleave.
    const ssize_t n = write(fd, line.data(), line.size());
    (void)n;
}

// The journal's native protocol, as sd_journal_sendv() speaks it, without
// linking libsystemd (and the six libraries it pulls in) into every
// handler: one datagram to journald's socket, a "NAME=value\n" line per
// field, or "NAME\n", the value's length as 64-bit little endian, the
// value and "\n" when the value holds a newline.
constexpr char journal_socket[] = "/run/systemd/journal/socket";

void journal_field(std::string& out, std::string_view name, std::string_view value)
{
    out.append(name);
    if (value.find('\n') == std::string_view::npos) {
        out += '=';
    } else {
        out += '\n';
        const std::uint64_t n = value.size();
        for (int i = 0; i < 8; ++i)
            out += static_cast<char>((n >> (8 * i)) & 0xff);
    }
    out.append(value);
    out += '\n';
}

void send_journal(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields)
{
    static const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    std::string d;
    journal_field(d, "MESSAGE", msg);
    const char priority = static_cast<char>('0' + syslog_priority(level));
    journal_field(d, "PRIORITY", std::string_view(&priority, 1));
    journal_field(d, "SYSLOG_IDENTIFIER", "sockmapd");
    for (const auto& f : fields)
        if (!f.value.empty())
            journal_field(d, f.name, f.value);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path, journal_socket, sizeof journal_socket);
    // Like sd_journal_sendv(): a lost log line is not worth failing a lookup.
    (void)sendto(fd, d.data(), d.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&sa), sizeof sa);
}

} // namespace

void log_setup(LogLevel level, const std::string& logfile, bool stderr_allowed)
{
    LogState& s = state();
    s.level = level;
    if (s.file_fd >= 0) {
        close(s.file_fd);
        s.file_fd = -1;
    }
    if (!logfile.empty()) {
        s.file_fd = open(logfile.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (s.file_fd >= 0) {
            s.sink = Sink::File;
            return;
        }
        const int err = errno;
        s.sink = default_sink(stderr_allowed);
        log_warning("cannot open log file " + logfile + ": " + std::strerror(err));
        return;
    }
    s.sink = default_sink(stderr_allowed);
}

bool log_enabled(LogLevel level)
{
    return static_cast<int>(level) <= static_cast<int>(state().level);
}

void log_msg(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields)
{
    LogState& s = state();
    if (!log_enabled(level))
        return;
    switch (s.sink) {
    case Sink::Stderr:
        write_fd(2, line_for(level, msg, fields, false));
        return;
    case Sink::File:
        write_fd(s.file_fd, line_for(level, msg, fields, true));
        return;
    case Sink::Journal:
        send_journal(level, msg, fields);
        return;
    case Sink::Syslog:
        if (!s.syslog_open) {
            openlog("sockmapd", LOG_PID | LOG_NDELAY, LOG_MAIL);
            s.syslog_open = true;
        }
        syslog(syslog_priority(level), "%s", text_of(msg, fields).c_str());
        return;
    }
}

std::string log_escape(std::string_view s, std::size_t max)
{
    static const char hex[] = "0123456789abcdef";
    std::string out;
    for (const char c : s.substr(0, max)) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f || c == '\\' || c == '"') {
            out += '\\';
            out += 'x';
            out += hex[u >> 4];
            out += hex[u & 15];
        } else {
            out += c;
        }
    }
    if (s.size() > max)
        out += "...";
    return out;
}

} // namespace sockmapd
