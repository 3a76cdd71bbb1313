// sockmapd — answers socketmap lookups (Postfix, Sendmail) from MariaDB.
// The thin main: command line, config, connection, session, exit code.
#include "activation.hh"
#include "config.hh"
#include "dblookup.hh"
#include "listen.hh"
#include "log.hh"
#include "privileges.hh"
#include "session.hh"
#include "socketmap.hh"

#include <CLI/CLI.hpp>

#include <csignal>
#include <iostream>
#include <sstream>
#include <sysexits.h>

#ifndef SOCKMAPD_VERSION
#define SOCKMAPD_VERSION "0.1.0"
#endif

using namespace sockmapd;

namespace {

struct Options {
    std::string config = "/etc/sockmapd/config.json";
    bool check_config = false;
    bool offline = false;
    bool inetd = false;
    std::vector<std::string> query;
    bool listen = false;
    std::string listen_arg;
    unsigned max_children = 64;
};

// Answers every request TEMP: a handler whose config is broken must make
// the MTA defer, not bounce, and not see a dead connection.
class BrokenConfigLookup : public Lookup {
public:
    LookupResult lookup(std::string_view, std::string_view) override
    {
        return {Outcome::TempFail, "sockmapd configuration error"};
    }
};

SessionLimits limits_of(const SysConfig& s)
{
    return {std::chrono::seconds(s.idle_timeout), std::chrono::seconds(s.max_session)};
}

void log_summary(const SessionStats& st, const ClientConnection& conn, Clock::duration took)
{
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(took).count();
    const std::string msg = "session end (" + std::string(describe(st.end)) + "): " + std::to_string(st.requests) +
                            " requests, " + std::to_string(st.hits) + " found, " + std::to_string(st.misses) +
                            " not found, " + std::to_string(st.errors) + " errors, " + std::to_string(ms) + " ms";
    log_info(msg, {{"REMOTE_ADDR", conn.peer}});
}

// A ConfigError holds a problem per line; each is reported on its own.
template <class Report> void each_problem(const std::string& problems, Report&& report)
{
    std::istringstream lines(problems);
    for (std::string line; std::getline(lines, line);)
        report(line);
}

void print_problems(const std::string& problems)
{
    each_problem(problems, [](const std::string& line) { std::cerr << "sockmapd: " << line << '\n'; });
}

// One client connection with a loaded config: the same path for fd 3,
// stdin/stdout and a --listen child.
int serve_connection(const Config& cfg, const ClientConnection& conn)
{
    const auto started = Clock::now();
    log_debug("connection from " + (conn.peer.empty() ? std::string("pipe") : conn.peer));
    DbLookup lookup(cfg);
    const SessionStats st = run_session(conn.in_fd, conn.out_fd, lookup, limits_of(cfg.sys));
    log_summary(st, conn, Clock::now() - started);
    return EX_OK;
}

int serve(const Options& opt, bool stderr_private)
{
    ClientConnection conn;
    try {
        conn = find_connection(opt.inetd);
    } catch (const ActivationError& e) {
        log_error(e.what());
        return EX_CONFIG;
    }
    Config cfg;
    try {
        cfg = load_config(opt.config);
    } catch (const ConfigError& e) {
        const auto started = Clock::now();
        each_problem(e.what(), [](const std::string& line) { log_error(line); });
        BrokenConfigLookup broken;
        const SessionStats st = run_session(conn.in_fd, conn.out_fd, broken, limits_of(SysConfig{}));
        log_summary(st, conn, Clock::now() - started);
        return EX_CONFIG;
    }
    log_setup(cfg.sys.loglevel, cfg.sys.logfile, stderr_private);
    for (const auto& w : cfg.warnings)
        log_warning(w);
    return serve_connection(cfg, conn);
}

int listen_mode(const Options& opt, bool stderr_private)
{
    Config cfg;
    ListenOptions lo;
    try {
        cfg = load_config(opt.config);
        lo = listen_options(cfg.sys, opt.listen_arg);
    } catch (const ConfigError& e) {
        if (stderr_private)
            std::cerr << "sockmapd: " << e.what() << '\n';
        log_error(e.what());
        return EX_CONFIG;
    }
    lo.max_children = opt.max_children;
    log_setup(cfg.sys.loglevel, cfg.sys.logfile, stderr_private);
    for (const auto& w : cfg.warnings)
        log_warning(w);
    return listen_loop(cfg, lo, [&cfg](int fd) {
        ClientConnection conn;
        conn.in_fd = conn.out_fd = fd;
        conn.socket = true;
        conn.peer = peer_name(fd);
        return serve_connection(cfg, conn);
    });
}

int query(const Config& cfg, const std::string& map, const std::string& key)
{
    DbLookup lookup(cfg);
    const LookupResult r = lookup.lookup(map, key);
    std::cout << reply_for(r) << '\n';
    switch (r.outcome) {
    case Outcome::Found: return EX_OK;
    case Outcome::NotFound: return 1;
    case Outcome::TempFail:
    case Outcome::Timeout: return EX_TEMPFAIL;
    case Outcome::NoSuchMap:
        std::cerr << "sockmapd: no map \"" << map << "\" in the config\n";
        return EX_USAGE;
    case Outcome::PermFail: return EX_DATAERR;
    }
    return EX_SOFTWARE;
}

int run(const Options& opt, bool stderr_private)
{
    if (opt.listen)
        return listen_mode(opt, stderr_private);
    if (!opt.check_config && opt.query.empty())
        return serve(opt, stderr_private);

    Config cfg;
    try {
        cfg = load_config(opt.config);
    } catch (const ConfigError& e) {
        print_problems(e.what());
        return EX_CONFIG;
    }
    if (opt.check_config) {
        // The accounts --listen would switch to must exist here.
        std::string missing;
        for (const auto& p : account_problems(cfg.sys))
            missing += opt.config + ": " + p + "\n";
        if (!missing.empty()) {
            print_problems(missing);
            return EX_CONFIG;
        }
    }
    // Command-line modes talk to a person: messages go to stderr.
    log_setup(std::min(cfg.sys.loglevel, LogLevel::Warning), "", true);
    for (const auto& w : cfg.warnings)
        std::cerr << "sockmapd: warning: " << w << '\n';
    if (!opt.query.empty())
        return query(cfg, opt.query[0], opt.query[1]);
    if (opt.offline) {
        std::cout << opt.config << ": ok, " << cfg.maps.size() << " map" << (cfg.maps.size() == 1 ? "" : "s")
                  << " (not checked against the database)\n";
        return EX_OK;
    }
    return check_maps_online(cfg, std::cout);
}

} // namespace

int main(int argc, char** argv)
{
    std::signal(SIGPIPE, SIG_IGN);
    const bool stderr_private = stderr_is_private();
    log_setup(LogLevel::Info, "", stderr_private);

    Options opt;
    CLI::App app{"sockmapd answers socketmap lookups from Postfix and Sendmail out of MariaDB tables.\n"
                 "Without options it serves one connection: fd 3 from systemd (Accept=yes), else stdin/stdout.",
                 "sockmapd"};
    app.set_version_flag("-V,--version", "sockmapd " SOCKMAPD_VERSION);
    app.add_option("-c,--config", opt.config, "configuration file")->capture_default_str();
    auto* check = app.add_flag("--check-config", opt.check_config,
                               "check the file, then connect and prepare every map; exit 0, 75 or 78");
    app.add_flag("--offline", opt.offline, "with --check-config: check the file only, no database")->needs(check);
    app.add_flag("--inetd", opt.inetd, "serve stdin/stdout even when systemd passed a socket");
    app.add_option("--query", opt.query, "look KEY up in MAP, print the reply; exit 0 found, 1 not found, 75 temporary")
        ->expected(2)
        ->type_name("MAP KEY")
        ->excludes(check);
    auto* listen = app.add_option("--listen", opt.listen_arg,
                                  "accept connections on [[ADDR:]PORT] (default: sysconfig.listen and .port), "
                                  "a forked handler for each")
                       ->expected(0, 1)
                       ->type_name("[[ADDR:]PORT]")
                       ->excludes(check);
    app.add_option("--max-children", opt.max_children, "with --listen: most handlers at once")
        ->capture_default_str()
        ->check(CLI::Range(1, 10000))
        ->needs(listen);
    app.footer("Exit status: 0 ok, 64 usage, 75 temporary failure, 78 configuration error.\n"
               "See sockmapd(8) and sockmapd.json(5).");
    try {
        app.parse(argc, argv);
    } catch (const CLI::Success& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        // Under xinetd stderr is the client's socket: only a log then.
        if (stderr_private)
            app.exit(e);
        else
            log_error(std::string("command line: ") + e.what());
        return EX_USAGE;
    }
    opt.listen = listen->count() > 0;
    if (opt.listen && !opt.query.empty()) {
        std::cerr << "sockmapd: --listen and --query exclude each other\n";
        return EX_USAGE;
    }
    if (opt.offline && !opt.check_config) {
        std::cerr << "sockmapd: --offline needs --check-config\n";
        return EX_USAGE;
    }
    try {
        return run(opt, stderr_private);
    } catch (const std::exception& e) {
        log_error(std::string("internal error: ") + e.what());
        return EX_SOFTWARE;
    }
}
