// errors — the exceptions that cross module boundaries, one meaning each.
//
// ConfigError: the configuration file (or a value taken from it) cannot be
// used; the message names the key path, a problem per line.  The process
// exits 78 (EX_CONFIG); a handler answers TEMP instead.
// UsageError: the command line is wrong however it is spelled (a bad
// --listen argument, -p abc); exit 64 (EX_USAGE).
// StatementMismatch: the database server reads a map's statement otherwise
// than its plan (it counts other parameters or columns): a database error
// of that map, found when the statement is prepared, mid-lookup or by
// --check-config; a lookup answers TEMP, --check-config exits 78.
// fail_at() is the one way to throw ConfigError("path: what").
#pragma once

#include <stdexcept>
#include <string>

namespace sockmapd
{

class ConfigError : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

class UsageError : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

class StatementMismatch : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

// Throws ConfigError("path: what").
[[noreturn]] inline void fail_at(const std::string& path, const std::string& what)
{
    throw ConfigError(path + ": " + what);
}

} // namespace sockmapd
