#include "mariadb.hh"

#include <errmsg.h>
#include <mysqld_error.h>
#include <openssl/crypto.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

namespace sockmapd
{

namespace
{

using SteadyClock = std::chrono::steady_clock;

constexpr std::size_t initial_column_buffer = 1024;

std::string one_line(const char* s)
{
    std::string out = s ? s : "";
    std::replace_if(
        out.begin(), out.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
    return out;
}

std::string describe(unsigned code, const std::string& sqlstate, const std::string& message)
{
    return std::to_string(code) + " (" + sqlstate + "): " + message;
}

// Connector/C reports a read timeout as CR_SERVER_LOST ("Lost connection to
// server during query") with errno ETIMEDOUT left by its poll(); the same
// code also means "closed by the server", so errno and the elapsed time
// tell the two apart.
TimedOut looks_timed_out(unsigned code, int saved_errno, SteadyClock::duration elapsed, unsigned timeout)
{
    if (code != CR_SERVER_LOST && code != CR_SERVER_GONE_ERROR && code != CR_ERR_NET_READ && code != CR_ERR_NET_WRITE)
        return TimedOut::No;
    const bool late = timeout > 0 && elapsed >= std::chrono::milliseconds(timeout * 1000 - 50);
    return saved_errno == ETIMEDOUT || late ? TimedOut::Yes : TimedOut::No;
}

void set_option(MYSQL* m, mysql_option opt, const void* value, const char* what)
{
    if (mysql_optionsv(m, opt, value) != 0)
        throw DbError(CR_UNKNOWN_ERROR, "HY000", std::string("cannot set client option ") + what);
}

} // namespace

DbError::DbError(unsigned c, std::string state, std::string msg, TimedOut timeout)
    : std::runtime_error(describe(c, state, msg)), code(c), sqlstate(std::move(state)),
      timed_out(timeout == TimedOut::Yes)
{
}

bool is_connection_error(unsigned code, std::string_view sqlstate)
{
    // Client-side errors (CR_*, 2000-2999, and Connector/C's own 5000-5999)
    // leave the connection in an unknown state.
    if ((code >= 2000 && code < 3000) || (code >= 5000 && code < 6000))
        return true;
    if (sqlstate.substr(0, 2) == "08") // SQLSTATE class: connection exception
        return true;
    switch (code) {
    case ER_CON_COUNT_ERROR:
    case ER_OUT_OF_RESOURCES:
    case ER_DBACCESS_DENIED_ERROR:
    case ER_ACCESS_DENIED_ERROR:
    case ER_UNKNOWN_COM_ERROR: // Galera: node not ready for queries
    case ER_SERVER_SHUTDOWN:
    case ER_NORMAL_SHUTDOWN:
    case ER_SHUTDOWN_COMPLETE:
    case ER_HOST_IS_BLOCKED:
    case ER_HOST_NOT_PRIVILEGED:
    case ER_ABORTING_CONNECTION:
    case ER_NET_PACKET_TOO_LARGE:
    case ER_NET_READ_ERROR_FROM_PIPE:
    case ER_NET_FCNTL_ERROR:
    case ER_NET_PACKETS_OUT_OF_ORDER:
    case ER_NET_UNCOMPRESS_ERROR:
    case ER_NET_READ_ERROR:
    case ER_NET_READ_INTERRUPTED:
    case ER_NET_ERROR_ON_WRITE:
    case ER_NET_WRITE_INTERRUPTED:
    case ER_NEW_ABORTING_CONNECTION:
    case ER_TOO_MANY_USER_CONNECTIONS:
    case ER_UNKNOWN_STMT_HANDLER: // the server forgot our statements
    case ER_CONNECTION_KILLED:
    // A plain SELECT waits for no row lock: on Galera this is a causal read
    // (wsrep_sync_wait) the node could not complete - it lags or has just
    // lost the cluster without noticing yet.  Another node can answer.
    case ER_LOCK_WAIT_TIMEOUT:
        return true;
    default:
        return false;
    }
}

bool is_login_error(unsigned code)
{
    return code == ER_ACCESS_DENIED_ERROR || code == ER_DBACCESS_DENIED_ERROR || code == ER_BAD_DB_ERROR;
}

bool is_server_full(unsigned code)
{
    return code == ER_CON_COUNT_ERROR || code == ER_TOO_MANY_USER_CONNECTIONS;
}

// Connector/C initialises OpenSSL on the first mysql_init(), config file
// included (openssl.cnf: ~2.7M instructions and ~1 MiB of peak RSS per
// handler).  Without TLS nothing uses it; OpenSSL runs its config step
// once, so asking first for none skips it.  With TLS the system policy in
// openssl.cnf applies as before.
MYSQL* init_handle(bool tls)
{
    if (!tls)
        OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, nullptr);
    return mysql_init(nullptr);
}

void prepare_connector(bool tls)
{
    if (MYSQL* m = init_handle(tls))
        mysql_close(m);
}

DbConnection::DbConnection(const Endpoint& where, const DatabaseConfig& opts, const std::string& database)
    : db_(init_handle(opts.tls.enabled())), read_timeout_(opts.read_timeout)
{
    MYSQL* m = db_.get();
    if (!m)
        throw DbError(CR_OUT_OF_MEMORY, "HY000", "mysql_init failed");

    const unsigned connect_timeout = opts.connect_timeout;
    set_option(m, MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout, "connect_timeout");
    set_option(m, MYSQL_OPT_READ_TIMEOUT, &read_timeout_, "read_timeout");
    const unsigned write_timeout = opts.write_timeout;
    set_option(m, MYSQL_OPT_WRITE_TIMEOUT, &write_timeout, "write_timeout");
    // A silent reconnect would lose prepared statements and hide failures
    // from the failover logic.
    const my_bool off = 0, on = 1;
    set_option(m, MYSQL_OPT_RECONNECT, &off, "reconnect");
    set_option(m, MYSQL_REPORT_DATA_TRUNCATION, &on, "report_data_truncation");
    const unsigned no_infile = 0;
    set_option(m, MYSQL_OPT_LOCAL_INFILE, &no_infile, "local_infile");
    set_option(m, MYSQL_SET_CHARSET_NAME, "utf8mb4", "charset");
    // "localhost" would silently mean the default unix socket: say exactly
    // which transport the endpoint names.
    const unsigned proto = where.kind == Endpoint::Kind::Unix ? MYSQL_PROTOCOL_SOCKET : MYSQL_PROTOCOL_TCP;
    set_option(m, MYSQL_OPT_PROTOCOL, &proto, "protocol");
    // Each call adds one statement; Connector/C runs them in order right
    // after the handshake, and the first that fails fails the connect with
    // the server's error (a host that cannot give e.g. causal reads is not
    // used).
    for (const std::string& sql : opts.init_command)
        set_option(m, MYSQL_INIT_COMMAND, sql.c_str(), "init_command");
    if (opts.tls.enabled()) {
        if (!opts.tls.ca.empty())
            set_option(m, MYSQL_OPT_SSL_CA, opts.tls.ca.c_str(), "tls.ca");
        if (!opts.tls.cert.empty())
            set_option(m, MYSQL_OPT_SSL_CERT, opts.tls.cert.c_str(), "tls.cert");
        if (!opts.tls.key.empty())
            set_option(m, MYSQL_OPT_SSL_KEY, opts.tls.key.c_str(), "tls.key");
        const my_bool verify = opts.tls.verify_server ? 1 : 0;
        set_option(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify, "tls.verify_server");
    }

    const bool unix_socket = where.kind == Endpoint::Kind::Unix;
    if (!mysql_real_connect(m, unix_socket ? "localhost" : where.host.c_str(), opts.username.c_str(),
                            opts.password.c_str(), database.empty() ? nullptr : database.c_str(),
                            unix_socket ? 0 : where.port, unix_socket ? where.path.c_str() : nullptr, 0))
        throw DbError(mysql_errno(m), mysql_sqlstate(m), one_line(mysql_error(m)));
}

std::string DbConnection::server_version() const
{
    const char* v = mysql_get_server_info(db_.get());
    return v ? v : "";
}

DbStatement::DbStatement(DbConnection& conn, std::string_view sql)
    : stmt_(mysql_stmt_init(conn.handle())), read_timeout_(conn.read_timeout())
{
    MYSQL* m = conn.handle();
    if (!stmt_)
        throw DbError(mysql_errno(m), mysql_sqlstate(m), one_line(mysql_error(m)));
    const auto start = SteadyClock::now();
    if (mysql_stmt_prepare(stmt_.get(), sql.data(), sql.size()) != 0) {
        const int saved = errno;
        const unsigned code = mysql_stmt_errno(stmt_.get());
        throw DbError(code, mysql_stmt_sqlstate(stmt_.get()), one_line(mysql_stmt_error(stmt_.get())),
                      looks_timed_out(code, saved, SteadyClock::now() - start, read_timeout_));
    }
    const unsigned n = mysql_stmt_field_count(stmt_.get());
    bufs_.assign(n, std::string(initial_column_buffer, '\0'));
    lengths_.assign(n, 0);
    nulls_.assign(n, 0);
    errors_.assign(n, 0);
    binds_.assign(n, MYSQL_BIND{});
    bind_results();
}

unsigned DbStatement::param_count() const
{
    return static_cast<unsigned>(mysql_stmt_param_count(stmt_.get()));
}

void DbStatement::bind_results()
{
    for (std::size_t i = 0; i < bufs_.size(); ++i) {
        MYSQL_BIND& b = binds_[i];
        b = MYSQL_BIND{};
        b.buffer_type = MYSQL_TYPE_STRING; // the server converts numbers and dates to text
        b.buffer = bufs_[i].data();
        b.buffer_length = bufs_[i].size();
        b.length = &lengths_[i];
        b.is_null = &nulls_[i];
        b.error = &errors_[i];
    }
    if (!binds_.empty() && mysql_stmt_bind_result(stmt_.get(), binds_.data()))
        throw error();
}

DbError DbStatement::error() const
{
    const unsigned code = mysql_stmt_errno(stmt_.get());
    return DbError(code, mysql_stmt_sqlstate(stmt_.get()), one_line(mysql_stmt_error(stmt_.get())));
}

void DbStatement::run(const std::vector<std::string_view>& params, std::size_t column_cap, RowFn row)
{
    MYSQL_STMT* s = stmt_.get();
    if (params.size() != param_count())
        throw DbError(CR_PARAMS_NOT_BOUND, "HY000",
                      "statement expects " + std::to_string(param_count()) + " parameters, got " +
                          std::to_string(params.size()));

    std::vector<MYSQL_BIND>& pb = param_binds_;
    std::vector<unsigned long>& plen = param_lengths_;
    pb.assign(params.size(), MYSQL_BIND{});
    plen.assign(params.size(), 0);
    for (std::size_t i = 0; i < params.size(); ++i) {
        plen[i] = params[i].size();
        pb[i].buffer_type = MYSQL_TYPE_STRING; // text in the connection's charset, compared by
                                               // the column's collation
        pb[i].buffer = const_cast<char*>(params[i].data());
        pb[i].buffer_length = params[i].size();
        pb[i].length = &plen[i];
    }
    if (!pb.empty() && mysql_stmt_bind_param(s, pb.data()))
        throw error();

    auto start = SteadyClock::now();
    auto fail = [&]() -> DbError {
        const int saved = errno;
        const unsigned code = mysql_stmt_errno(s);
        return DbError(code, mysql_stmt_sqlstate(s), one_line(mysql_stmt_error(s)),
                       looks_timed_out(code, saved, SteadyClock::now() - start, read_timeout_));
    };
    if (mysql_stmt_execute(s) != 0)
        throw fail();

    std::vector<Column>& cols = cols_;
    cols.assign(bufs_.size(), Column{});
    bool rebind = false;
    for (;;) {
        start = SteadyClock::now();
        const int rc = mysql_stmt_fetch(s);
        if (rc == MYSQL_NO_DATA)
            break;
        if (rc == 1)
            throw fail();
        for (std::size_t i = 0; i < bufs_.size(); ++i) {
            Column& c = cols[i];
            c = Column{};
            c.null = nulls_[i] != 0;
            if (c.null)
                continue;
            const std::size_t len = lengths_[i];
            if (len > bufs_[i].size()) {
                if (len > column_cap) {
                    c.too_long = true;
                    continue;
                }
                // Truncated: grow the buffer and read the column again.
                bufs_[i].resize(len);
                rebind = true;
                MYSQL_BIND b{};
                unsigned long got = 0;
                b.buffer_type = MYSQL_TYPE_STRING;
                b.buffer = bufs_[i].data();
                b.buffer_length = bufs_[i].size();
                b.length = &got;
                if (mysql_stmt_fetch_column(s, &b, static_cast<unsigned>(i), 0) != 0)
                    throw fail();
            }
            c.data = std::string_view(bufs_[i].data(), std::min<std::size_t>(len, bufs_[i].size()));
        }
        if (rebind) {
            // Bigger buffers stay bound for the next rows.
            bind_results();
            rebind = false;
        }
        if (!row(cols))
            break;
    }
    // Discard what we did not read, so the next command is in step.
    mysql_stmt_free_result(s);
}

} // namespace sockmapd
