// log — where sockmapd's messages go: the configured log file, else the
// journal when started by systemd (its native datagram protocol, fields
// such as SOCKMAP_MAP), else syslog (facility mail).
//
// Without a log file and outside systemd, a stderr that is not a socket is
// used (a shell, a supervisor's log pipe).  Never stdout, and never stderr
// when stderr is a socket or the connection
// (under xinetd stderr is the client's socket).  Messages below the level
// set with log_setup() are dropped; callers on the request path check
// log_enabled() before building a message.  Keys from requests belong only
// in Debug messages; passwords never.
#pragma once

#include "config.hh"

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace sockmapd {

struct LogField {
    const char* name;   // journal field name, e.g. "SOCKMAP_MAP"
    std::string_view value;
};

// Called once at start-up and again when the config is loaded.
// `stderr_allowed`: stderr is a terminal or file, not the connection.
void log_setup(LogLevel level, const std::string& logfile, bool stderr_allowed);

bool log_enabled(LogLevel level);
void log_msg(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields = {});

inline void log_error(std::string_view m, std::initializer_list<LogField> f = {}) { log_msg(LogLevel::Error, m, f); }
inline void log_warning(std::string_view m, std::initializer_list<LogField> f = {}) { log_msg(LogLevel::Warning, m, f); }
inline void log_info(std::string_view m, std::initializer_list<LogField> f = {}) { log_msg(LogLevel::Info, m, f); }
inline void log_debug(std::string_view m, std::initializer_list<LogField> f = {})
{
    if (log_enabled(LogLevel::Debug))
        log_msg(LogLevel::Debug, m, f);
}

// Makes bytes from a request safe to print in a log line (debug only).
std::string log_escape(std::string_view s, std::size_t max = 200);

} // namespace sockmapd
