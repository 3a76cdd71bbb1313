// mariadb — RAII over MariaDB Connector/C (libmariadb): one connection, its
// prepared statements, and errors that carry the database's own words.
//
// DbConnection's constructor connects (connect/read/write timeouts always set,
// automatic reconnect off, utf8mb4, TLS when configured, TCP or unix socket
// exactly as the Endpoint says, the init commands run before it counts as
// connected) or throws DbError.  DbStatement prepares on
// construction and run() executes with every parameter bound as a string
// of explicit length (NUL bytes survive), then hands each row to a
// callback; result buffers grow on truncation up to a cap, longer columns
// arrive flagged too_long instead of being read.  Every failure throws
// DbError with errno, SQLSTATE and message; timed_out is set when a read
// or write on an established connection ran past its timeout.
// A DbStatement must be destroyed before its DbConnection.
#pragma once

#include "config.hh"
#include "endpoint.hh"
#include "row.hh"  // Column, the rows run() hands out
#include "util.hh" // FunctionRef

#include <mysql.h>

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace sockmapd
{

// Whether a failure was a read or write timeout on an open connection.
enum class TimedOut { No, Yes };

class DbError : public std::runtime_error
{
public:
    DbError(unsigned code, std::string sqlstate, std::string message, TimedOut timeout = TimedOut::No);
    unsigned code;        // mysql_errno: server ER_* or client CR_*
    std::string sqlstate; // e.g. "42S22"
    bool timed_out;       // a read/write timeout on an open connection
};

// True for errors that say the connection or the server is unusable (lost,
// refused, shutting down, not ready, too many connections, a causal read
// that timed out, ...): worth
// dropping the connection and trying another host.  False for errors about
// the statement itself (unknown column, missing table, syntax).
bool is_connection_error(unsigned code, std::string_view sqlstate);

// True for a login the server refused (user, password, or the schema it
// names): a configuration problem rather than an outage.
bool is_login_error(unsigned code);

// True when the server turned the connection away because it is full
// (max_connections, max_user_connections): it is up, only this connection
// did not fit, and a slot may be free for the next one.
bool is_server_full(unsigned code);

// The connector's one-time set-up (OpenSSL, character sets, the "mysql"
// service lookup through NSS), done once in a process that forks handlers
// so that none of them pays it per connection.
void prepare_connector(bool tls);

struct MysqlCloser {
    void operator()(MYSQL* m) const noexcept { mysql_close(m); }
};
struct StmtCloser {
    void operator()(MYSQL_STMT* s) const noexcept { mysql_stmt_close(s); }
};

class DbConnection
{
public:
    // Connects to `where` with the options of `db`, selecting `database`
    // (empty: none); throws DbError.
    DbConnection(const Endpoint& where, const DatabaseConfig& db, const std::string& database);
    MYSQL* handle() const { return db_.get(); }
    unsigned read_timeout() const { return read_timeout_; }
    std::string server_version() const;

private:
    std::unique_ptr<MYSQL, MysqlCloser> db_;
    unsigned read_timeout_;
};

class DbStatement
{
public:
    using RowFn = FunctionRef<bool(const std::vector<Column>&)>; // false: stop

    DbStatement(DbConnection& conn, std::string_view sql); // prepares; throws DbError
    unsigned param_count() const;
    unsigned column_count() const { return static_cast<unsigned>(bufs_.size()); }

    // Executes with `params` (as many as param_count()) and feeds every row to
    // `row` until it returns false; the rest of the result is discarded so the
    // connection stays in step.  Throws DbError.
    void run(const std::vector<std::string_view>& params, std::size_t column_cap, RowFn row);

private:
    DbError error() const;
    void bind_results();

    std::unique_ptr<MYSQL_STMT, StmtCloser> stmt_;
    unsigned read_timeout_;
    std::vector<std::string> bufs_;
    std::vector<unsigned long> lengths_;
    std::vector<my_bool> nulls_;
    std::vector<my_bool> errors_;
    std::vector<MYSQL_BIND> binds_;
    // Per-execution scratch, kept to spare three allocations per lookup.
    std::vector<MYSQL_BIND> param_binds_;
    std::vector<unsigned long> param_lengths_;
    std::vector<Column> cols_;
};

} // namespace sockmapd
