#include "log.hh"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <string>
#include <sys/uio.h>
#include <syslog.h>
#include <systemd/sd-journal.h>
#include <unistd.h>
#include <vector>

namespace sockmapd {

namespace {

enum class Sink { Stderr, File, Journal, Syslog };

struct LogState {
    LogLevel level = LogLevel::Info;
    Sink sink = Sink::Syslog;
    int file_fd = -1;
    bool stderr_allowed = false;
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
    line.append(msg);
    for (const auto& f : fields) {
        if (f.value.empty())
            continue;
        line += ' ';
        line += f.name;
        line += '=';
        line.append(f.value);
    }
    line += '\n';
    return line;
}

void write_fd(int fd, const std::string& line)
{
    // One write() per line so concurrent handlers do not interleave.
    const ssize_t n = write(fd, line.data(), line.size());
    (void)n;
}

void send_journal(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields)
{
    std::vector<std::string> strings;
    strings.reserve(fields.size() + 3);
    strings.push_back("MESSAGE=" + std::string(msg));
    strings.push_back("PRIORITY=" + std::to_string(syslog_priority(level)));
    strings.push_back("SYSLOG_IDENTIFIER=sockmapd");
    for (const auto& f : fields)
        if (!f.value.empty())
            strings.push_back(std::string(f.name) + "=" + std::string(f.value));
    std::vector<iovec> iov;
    iov.reserve(strings.size());
    for (auto& s : strings)
        iov.push_back({s.data(), s.size()});
    sd_journal_sendv(iov.data(), static_cast<int>(iov.size()));
}

} // namespace

void log_setup(LogLevel level, const std::string& logfile, bool stderr_allowed)
{
    LogState& s = state();
    s.level = level;
    s.stderr_allowed = stderr_allowed;
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
        syslog(syslog_priority(level), "%.*s", static_cast<int>(msg.size()), msg.data());
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
