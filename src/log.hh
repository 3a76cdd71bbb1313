// log — where sockmapd's messages go: the configured log file; else the
// journal (sd_journal_sendv(), with fields such as SOCKMAP_MAP) when
// stderr is the journal's stream or systemd started the process as a
// service; else a private stderr (a shell, a supervisor's log pipe); else
// syslog (facility mail).
//
// Never stdout, and never stderr when stderr is a socket other than the
// journal's stream: under xinetd stderr is the client's connection.  A
// line the journal refuses (its socket missing, say) goes to syslog.
// Messages below the level set with log_setup() are dropped; callers on
// the request path check log_enabled() before building a message.  Keys
// from requests belong only in Debug messages; passwords never.  Every
// byte a client sent goes through log_escape(); as a second guard, every
// sink writes control characters of messages and fields as \xNN, so no
// message can make a line (or a journal field) of its own.
//
// The log file is opened without following a symbolic link, and used only
// when it is a regular file with one link, owned by root, by this
// process's user or by the LogFileOwner given (the account --listen drops
// to, which a file created before the drop is given to).
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <utility>

namespace sockmapd
{

enum class LogLevel { Error = 0, Warning = 1, Info = 2, Debug = 3 };

struct LogField {
    const char* name; // journal field name, e.g. "SOCKMAP_MAP"
    std::string_view value;
    // false: a journal field only, for a value the message text already
    // says (the file, stderr and syslog lines would repeat it).
    bool in_text = true;
};

enum class LogSink { Stderr, File, Journal, Syslog };

// What the sink choice depends on, gathered by log_facts().
struct LogFacts {
    bool stderr_is_journal = false; // JOURNAL_STREAM names fd 2's device:inode
    bool systemd_service = false;   // INVOCATION_ID set, and systemd is the parent or passed sockets
    bool stderr_private = false;    // fd 2 is open and not a socket
};

LogFacts log_facts();
// Without a log file: the journal, a private stderr, or syslog.
LogSink default_sink(const LogFacts& f);
// `journal_stream` ("DEV:INODE", as systemd sets JOURNAL_STREAM) names `fd`.
bool is_journal_stream(const char* journal_stream, int fd);

// log_init() once at start-up, before the LISTEN_* variables are taken:
// the facts are kept, and a forked handler logs where its parent did.
// Without it the default sink is syslog.
void log_init(const LogFacts& f);
// The account that may own the log file besides root and this process's
// user (sysconfig.run_as_user); a file created while root is given to it.
struct LogFileOwner {
    bool set = false;
    uid_t uid = 0;
    gid_t gid = 0;
};

// At start-up and whenever the config is (re)loaded.  An unusable log
// file is reported and the default sink used; on a reload that cannot
// reopen the same path (after the privilege drop, say), the descriptor
// opened before is kept.
void log_setup(LogLevel level, const std::string& logfile, const LogFileOwner& owner = {});
// Command-line modes (--check-config, --query) talk to a person: stderr.
void log_setup_terminal(LogLevel level);
// While on, errors and warnings also go to a private stderr when the sink
// is another one: start-up problems of --listen reach the terminal even
// when a log file is set.
void log_tee_stderr(bool on);
LogSink log_sink();

// The level set with log_setup(); read inline, as the request path asks
// before every message it might build.
extern LogLevel log_threshold;
inline bool log_enabled(LogLevel level)
{
    return static_cast<int>(level) <= static_cast<int>(log_threshold);
}
void log_msg(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields = {});

inline void log_error(std::string_view m, std::initializer_list<LogField> f = {})
{
    log_msg(LogLevel::Error, m, f);
}
inline void log_warning(std::string_view m, std::initializer_list<LogField> f = {})
{
    log_msg(LogLevel::Warning, m, f);
}
inline void log_info(std::string_view m, std::initializer_list<LogField> f = {})
{
    log_msg(LogLevel::Info, m, f);
}
inline void log_debug(std::string_view m, std::initializer_list<LogField> f = {})
{
    if (log_enabled(LogLevel::Debug))
        log_msg(LogLevel::Debug, m, f);
}

// Makes bytes from a client safe to print in a log line: every byte
// outside printable ASCII, '\\' and '"' as \xNN; at most `max` bytes
// of `s`, then "...".
std::string log_escape(std::string_view s, std::size_t max = 200);

} // namespace sockmapd
