// config — the JSON configuration file, read with jsoncpp into checked structs.
//
// load_config() reads and validates a file in the schema of doc/DESIGN.md
// ("Configuration"; sockmapd.json(5) lists every key); it accepts the older
// Go sockmapd's files, whose scalar values are all JSON strings ("port":
// "3306"), as well as real numbers and booleans.  Any
// problem throws ConfigError whose message names the key path
// ("postmaps[1].tabel: unknown key").  Each map is compiled here, once
// (statement.hh plan_map(): its identifiers, query template and
// result_format checked by the code that builds its statement), and
// loaded with its plan.  Nothing here touches the database.
#pragma once

#include "allow.hh"
#include "endpoint.hh"
#include "errors.hh"    // ConfigError
#include "log.hh"       // LogLevel
#include "statement.hh" // CompiledMap

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sockmapd
{

struct SysConfig {
    std::string port = "2224";      // --listen mode port
    std::string listen = "0.0.0.0"; // every IPv4 address, as the Go sockmapd
    std::string logfile;            // empty: journal under systemd, else syslog
    LogLevel loglevel = LogLevel::Info;
    std::string run_as_user;
    std::string run_as_group;
    // Sendmail keeps its connection for a whole SMTP session or queue run and
    // does not retry a lookup cut by a close, so the defaults must outlast it:
    // idle_timeout above its longest wait between lookups (Timeout.command,
    // .rcpt, .datafinal: 1 h each), and no age limit.
    unsigned idle_timeout = 7200; // seconds without a complete request
    unsigned max_session = 0;     // seconds a connection may last; 0: no limit
    AllowList allow;              // who may connect; empty: everyone (no list)
    // The accept loop's handlers, as Postfix's master.cf: connections one
    // handler serves, and seconds it waits for the next before it exits.
    unsigned max_use = 100;
    unsigned max_idle = 100;
    bool core_dumps = false; // false: non-dumpable once the password is read (no core, no ptrace)
};

struct TlsConfig {
    std::string ca;
    std::string cert;
    std::string key;
    bool verify_server = true;
    bool enabled() const { return !ca.empty() || !cert.empty() || !key.empty(); }
};

struct DatabaseConfig {
    std::vector<Endpoint> hosts; // parsed from "host", "host:port", "[v6]:port", "unix:/path"
    unsigned port = 3306;
    std::string username;
    std::string password;      // resolved: password, or password_file's content
    std::string password_file; // as written in the file (for messages)
    unsigned connect_timeout = 2;
    unsigned read_timeout = 5;
    unsigned write_timeout = 5;
    unsigned db_idle_timeout = 10;
    unsigned retry_interval = 30;
    // SQL statements run in order on every new connection (Connector/C's
    // MYSQL_INIT_COMMAND), e.g. "SET SESSION wsrep_sync_wait = 1" for causal
    // reads on Galera; one that fails makes the connection fail.
    std::vector<std::string> init_command;
    TlsConfig tls;
};

struct Config {
    SysConfig sys;
    DatabaseConfig db;
    std::vector<CompiledMap> maps;     // each with its statement, compiled by the loader
    std::vector<std::string> warnings; // non-fatal findings (e.g. file readable by others)

    const CompiledMap* find_map(std::string_view service) const { return sockmapd::find_map(maps, service); }
};

// Reads and checks the file at `path`; throws ConfigError.
Config load_config(const std::string& path);

// Checks JSON text; `origin` names the file in messages.  Throws ConfigError.
// Does not read password_file (load_config does).
Config parse_config(std::string_view text, const std::string& origin = "config");

} // namespace sockmapd
