#include "log.hh"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <systemd/sd-journal.h>
#include <unistd.h>
#include <vector>

namespace sockmapd
{

LogLevel log_threshold = LogLevel::Info;

namespace
{

struct LogState {
    LogSink sink = LogSink::Syslog;
    LogFacts facts;
    int file_fd = -1;
    std::string file_path; // what file_fd was opened as
    bool syslog_open = false;
    bool tee = false;
};

LogState& state()
{
    static LogState s;
    return s;
}

const char* level_name(LogLevel l)
{
    switch (l) {
    case LogLevel::Error:
        return "error";
    case LogLevel::Warning:
        return "warning";
    case LogLevel::Info:
        return "info";
    case LogLevel::Debug:
        return "debug";
    }
    return "info";
}

int syslog_priority(LogLevel l)
{
    switch (l) {
    case LogLevel::Error:
        return LOG_ERR;
    case LogLevel::Warning:
        return LOG_WARNING;
    case LogLevel::Info:
        return LOG_INFO;
    case LogLevel::Debug:
        return LOG_DEBUG;
    }
    return LOG_INFO;
}

constexpr char hex_digits[] = "0123456789abcdef";

void append_hex(std::string& out, unsigned char u)
{
    out += '\\';
    out += 'x';
    out += hex_digits[u >> 4];
    out += hex_digits[u & 15];
}

bool is_control(unsigned char u)
{
    return u < 0x20 || u == 0x7f;
}

// The sinks' guard: control characters as \xNN, whatever a caller passed.
void append_one_line(std::string& out, std::string_view s)
{
    for (const char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (is_control(u))
            append_hex(out, u);
        else
            out += c;
    }
}

std::string one_line(std::string_view s)
{
    std::string out;
    out.reserve(s.size());
    append_one_line(out, s);
    return out;
}

// The message with its fields as NAME=value words, for the sinks that
// have no fields of their own (file, stderr, syslog).
std::string text_of(std::string_view msg, std::initializer_list<LogField> fields)
{
    std::string text;
    text.reserve(msg.size());
    append_one_line(text, msg);
    for (const auto& f : fields) {
        if (f.value.empty() || !f.in_text)
            continue;
        text += ' ';
        text += f.name;
        text += '=';
        append_one_line(text, f.value);
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

void send_syslog(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields)
{
    LogState& s = state();
    if (!s.syslog_open) {
        openlog("sockmapd", LOG_PID | LOG_NDELAY, LOG_MAIL);
        s.syslog_open = true;
    }
    syslog(syslog_priority(level), "%s", text_of(msg, fields).c_str());
}

// libsystemd's journal socket.  sd_journal_sendv() reports success when it
// is missing ("fail silently if the journal is not available"), so it is
// looked for first.
constexpr char journal_socket[] = "/run/systemd/journal/socket";

// false when the journal did not take the line.
bool send_journal(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields)
{
    struct stat st {
    };
    if (stat(journal_socket, &st) != 0 || !S_ISSOCK(st.st_mode))
        return false;
    std::vector<std::string> items;
    items.reserve(3 + fields.size());
    items.push_back("MESSAGE=" + one_line(msg));
    items.push_back("PRIORITY=" + std::to_string(syslog_priority(level)));
    items.emplace_back("SYSLOG_IDENTIFIER=sockmapd");
    for (const auto& f : fields)
        if (!f.value.empty())
            items.push_back(std::string(f.name) + "=" + one_line(f.value));
    std::vector<iovec> iov;
    iov.reserve(items.size());
    for (auto& i : items)
        iov.push_back({i.data(), i.size()});
    return sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) >= 0;
}

// The log file: O_NOFOLLOW (a link planted at the path is refused, not
// followed), O_NONBLOCK (a FIFO without reader fails instead of blocking),
// then the descriptor itself is checked.  -1 with `why` set when refused.
int open_log_file(const std::string& path, const LogFileOwner& owner, std::string& why)
{
    const int flags = O_WRONLY | O_APPEND | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC;
    int fd = open(path.c_str(), flags);
    bool created = false;
    if (fd < 0 && errno == ENOENT) {
        fd = open(path.c_str(), flags | O_CREAT | O_EXCL, 0640);
        created = fd >= 0;
        if (fd < 0 && errno == EEXIST) // another handler created it just now
            fd = open(path.c_str(), flags);
    }
    if (fd < 0) {
        why = errno == ELOOP ? std::string("it is a symbolic link") : std::strerror(errno);
        return -1;
    }
    // Created before the privilege drop: the account dropped to must be
    // able to reopen it on a reload.
    if (created && owner.set && geteuid() == 0 && fchown(fd, owner.uid, owner.gid) != 0) {
        why = std::string("cannot give it to uid ") + std::to_string(owner.uid) + ": " + std::strerror(errno);
        close(fd);
        return -1;
    }
    struct stat st {
    };
    if (fstat(fd, &st) != 0)
        why = std::strerror(errno);
    else if (!S_ISREG(st.st_mode))
        why = "not a regular file";
    else if (st.st_nlink != 1)
        why = "it has other hard links";
    else if (st.st_uid != 0 && st.st_uid != geteuid() && !(owner.set && st.st_uid == owner.uid))
        why = "owned by uid " + std::to_string(st.st_uid) + ", not by root or the user sockmapd runs as";
    if (!why.empty()) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, O_APPEND);
    return fd;
}

void close_log_file(LogState& s)
{
    if (s.file_fd >= 0)
        close(s.file_fd);
    s.file_fd = -1;
    s.file_path.clear();
}

} // namespace

bool is_journal_stream(const char* journal_stream, int fd)
{
    if (journal_stream == nullptr)
        return false;
    unsigned long long dev = 0, ino = 0;
    char tail = 0;
    if (std::sscanf(journal_stream, "%llu:%llu%c", &dev, &ino, &tail) != 2)
        return false;
    struct stat st {
    };
    return fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

LogFacts log_facts()
{
    LogFacts f;
    f.stderr_is_journal = is_journal_stream(std::getenv("JOURNAL_STREAM"), 2);
    // INVOCATION_ID alone is inherited by whatever a service starts
    // (xinetd's handlers): it counts only when systemd is our parent or
    // passed us sockets itself (LISTEN_PID is our pid).
    if (std::getenv("INVOCATION_ID") != nullptr) {
        const char* listen_pid = std::getenv("LISTEN_PID");
        f.systemd_service = getppid() == 1 || (listen_pid && std::atol(listen_pid) == getpid());
    }
    struct stat st {
    };
    f.stderr_private = fstat(2, &st) == 0 && !S_ISSOCK(st.st_mode);
    return f;
}

LogSink default_sink(const LogFacts& f)
{
    if (f.stderr_is_journal || f.systemd_service)
        return LogSink::Journal;
    return f.stderr_private ? LogSink::Stderr : LogSink::Syslog;
}

void log_init(const LogFacts& f)
{
    state().facts = f;
}

void log_setup(LogLevel level, const std::string& logfile, const LogFileOwner& owner)
{
    LogState& s = state();
    log_threshold = level;
    if (logfile.empty()) {
        close_log_file(s);
        s.sink = default_sink(s.facts);
        return;
    }
    std::string why;
    if (const int fd = open_log_file(logfile, owner, why); fd >= 0) {
        close_log_file(s);
        s.file_fd = fd;
        s.file_path = logfile;
        s.sink = LogSink::File;
        return;
    }
    if (s.file_fd >= 0 && s.file_path == logfile) {
        log_warning("cannot reopen log file " + logfile + ": " + why + "; still writing to the one opened before");
        return;
    }
    close_log_file(s);
    s.sink = default_sink(s.facts);
    log_warning("cannot open log file " + logfile + ": " + why);
}

void log_setup_terminal(LogLevel level)
{
    log_setup(level, "");
    state().sink = LogSink::Stderr;
}

void log_tee_stderr(bool on)
{
    state().tee = on;
}

LogSink log_sink()
{
    return state().sink;
}

void log_msg(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields)
{
    LogState& s = state();
    if (!log_enabled(level))
        return;
    if (s.tee && s.sink != LogSink::Stderr && level <= LogLevel::Warning && s.facts.stderr_private)
        write_fd(2, line_for(level, msg, fields, false));
    switch (s.sink) {
    case LogSink::Stderr:
        write_fd(2, line_for(level, msg, fields, false));
        return;
    case LogSink::File:
        write_fd(s.file_fd, line_for(level, msg, fields, true));
        return;
    case LogSink::Journal:
        // A lost line is not worth failing a lookup, but it is not lost
        // silently either: syslog takes what the journal refused.
        if (!send_journal(level, msg, fields))
            send_syslog(level, msg, fields);
        return;
    case LogSink::Syslog:
        send_syslog(level, msg, fields);
        return;
    }
}

std::string log_escape(std::string_view s, std::size_t max)
{
    std::string out;
    for (const char c : s.substr(0, max)) {
        const auto u = static_cast<unsigned char>(c);
        // Bytes past ASCII too: a client's bytes need not be UTF-8, and
        // some are control characters to a terminal (C1, U+2028).
        if (is_control(u) || u >= 0x80 || c == '\\' || c == '"')
            append_hex(out, u);
        else
            out += c;
    }
    if (s.size() > max)
        out += "...";
    return out;
}

} // namespace sockmapd
