// sockmapd — answers socketmap lookups (Postfix, Sendmail) from MariaDB.
// The thin main: command line, config, connection, session, exit code.
#include "activation.hh"
#include "cache.hh"
#include "config.hh"
#include "dblookup.hh"
#include "dbrunner.hh"
#include "fdlimit.hh"
#include "gate.hh"
#include "hoststate.hh"
#include "listen.hh"
#include "log.hh"
#include "mariadb.hh"
#include "privileges.hh"
#include "rundir.hh"
#include "session.hh"
#include "socketmap.hh"
#include "stats.hh"
#include "util.hh"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <iostream>
#include <optional>
#include <sstream>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#ifndef SOCKMAPD_VERSION
#define SOCKMAPD_VERSION "0.1.0"
#endif

using namespace sockmapd;

namespace
{

struct Options {
    std::string config = "/etc/sockmapd/config.json";
    bool check_config = false;
    bool offline = false;
    bool inetd = false;
    std::vector<std::string> query;
    bool listen = false;
    std::string listen_arg;
    std::string go_port; // the Go sockmapd's -p PORT
    unsigned max_children = default_max_children;
    unsigned max_per_peer = 0;
    unsigned spare_handlers = default_spare_handlers;
    bool stats = false;
    std::string stats_file; // --stats FILE: written atomically; empty: stdout
};

// Answers every request TEMP: a handler whose config is broken must make
// the MTA defer, not bounce, and not see a dead connection.
class BrokenConfigLookup : public Lookup
{
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
    // Malformed requests, warned about once, are counted here (when there
    // were any: the usual line stays as it was).
    const std::string malformed = std::to_string(st.malformed);
    const std::string msg = "session end (" + std::string(describe(st.end)) + "): " + std::to_string(st.requests) +
                            " requests, " + std::to_string(st.hits) + " found, " + std::to_string(st.misses) +
                            " not found, " + std::to_string(st.errors) + " errors, " +
                            (st.malformed ? malformed + " malformed, " : "") + std::to_string(ms) + " ms";
    const std::string requests = std::to_string(st.requests), hits = std::to_string(st.hits),
                      misses = std::to_string(st.misses), errors = std::to_string(st.errors),
                      duration = std::to_string(ms);
    log_info(msg, {{"REMOTE_ADDR", conn.peer},
                   {"SOCKMAP_END", describe(st.end), false},
                   {"SOCKMAP_REQUESTS", requests, false},
                   {"SOCKMAP_FOUND", hits, false},
                   {"SOCKMAP_NOTFOUND", misses, false},
                   {"SOCKMAP_ERRORS", errors, false},
                   {"SOCKMAP_MALFORMED", malformed, false},
                   {"SOCKMAP_DURATION_MS", duration, false}});
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

// As root, the account --listen drops to may own the log file (and gets
// it when it is created now); listen_loop() reports an unknown one.
LogFileOwner log_file_owner(const SysConfig& sys)
{
    if (::geteuid() != 0)
        return {};
    try {
        const Identity id = resolve_identity(sys);
        if (id.wanted)
            return {true, id.uid, id.gid};
    } catch (const ConfigError&) {
    }
    return {};
}

// Who reads the messages: a daemon logs them (the config's log), a person
// running a command reads stderr.
enum class Audience { Daemon, Person };

// Loads the config and sets up logging for `who`; nullopt when the file
// cannot be used, its problems reported one a line.
std::optional<Config> load_for(const std::string& path, Audience who)
{
    const bool person = who == Audience::Person;
    Config cfg;
    try {
        cfg = load_config(path);
    } catch (const ConfigError& e) {
        protect_memory(SysConfig{}); // it may have read a password
        if (person)
            print_problems(e.what());
        else
            each_problem(e.what(), [](const std::string& line) { log_error(line); });
        return std::nullopt;
    }
    protect_memory(cfg.sys);
    if (person)
        log_setup_terminal(std::min(cfg.sys.loglevel, LogLevel::Warning));
    else
        log_setup(cfg.sys.loglevel, cfg.sys.logfile, log_file_owner(cfg.sys));
    for (const auto& w : cfg.warnings) {
        if (person)
            std::cerr << "sockmapd: warning: " << w << '\n';
        else
            log_warning(w);
    }
    return cfg;
}

// One client connection with a loaded config: the same path for fd 3,
// stdin/stdout and a --listen handler (whose `lookup` lives on from one
// connection to the next, with its database connection).
void serve_connection(const Config& cfg, const ClientConnection& conn, Lookup& lookup)
{
    const auto started = Clock::now();
    log_debug("connection from " + (conn.peer.empty() ? std::string("pipe") : conn.peer));
    const SessionStats st = run_session(conn.in_fd, conn.out_fd, lookup, limits_of(cfg.sys));
    log_summary(st, conn, Clock::now() - started);
}

// What a map's answers depend on besides the map: the database hosts, the
// user and init_command (for the answer cache's keys: a reload that points
// the maps elsewhere never meets the old answers).
std::uint64_t database_fingerprint(const DatabaseConfig& db)
{
    std::uint64_t h = hash_bytes(0x6462, db.username);
    for (const auto& e : db.hosts)
        h = hash_bytes(h, e.name());
    for (const auto& c : db.init_command)
        h = hash_bytes(h, c);
    return h;
}

// A handler of the accept loop: one DbLookup for all its connections, each
// a session of its own (its counters, peer and limits).
class ListenHandler : public ConnectionServer
{
public:
    ListenHandler(const Config& cfg, AnswerCache& cache)
        : cfg_(cfg), db_(cfg.db), lookup_(cfg.maps, db_, QueryBudget(), &cache, database_fingerprint(cfg.db))
    {
    }

    void serve(int fd) override
    {
        ClientConnection conn;
        conn.in_fd = conn.out_fd = fd;
        conn.peer = peer_name(fd);
        serve_connection(cfg_, conn, lookup_);
    }
    std::optional<Clock::time_point> next_wakeup() const override { return lookup_.next_wakeup(); }
    void wakeup(Clock::time_point now) override { lookup_.wakeup(now); }
    void warm_up() override { lookup_.warm_up(); }

private:
    const Config& cfg_;
    MariaDbRunner db_;
    DbLookup lookup_;
};

// The names the counters keep apart (stats.hh): the maps and hosts of `cfg`.
void configure_stats(const Config& cfg)
{
    std::vector<std::string> maps, hosts;
    for (const auto& m : cfg.maps)
        maps.push_back(m.service);
    for (const auto& h : cfg.db.hosts)
        hosts.push_back(h.name());
    stats().configure(maps, hosts);
}

int serve(const Options& opt, const ClientConnection& conn)
{
    // A handler started afresh (Accept=yes, xinetd) counts in the file the
    // other handlers and --stats share.
    stats().open(runtime_dir());
    const std::optional<Config> cfg = load_for(opt.config, Audience::Daemon);
    if (!cfg) {
        const auto started = Clock::now();
        BrokenConfigLookup broken;
        const SessionStats st = run_session(conn.in_fd, conn.out_fd, broken, limits_of(SysConfig{}));
        log_summary(st, conn, Clock::now() - started);
        return EX_CONFIG;
    }
    configure_stats(*cfg);
    if (!admit_connection(cfg->sys.allow, conn.in_fd)) {
        stats().refused(StatRefusal::Allow);
        return EX_OK; // refused and logged: no reply, no database
    }
    stats().accepted();
    // No answer cache: this process serves one connection (Accept=yes,
    // xinetd) and nothing outlives it to keep one (sockmapd.json(5), "cache").
    MariaDbRunner db(cfg->db);
    DbLookup lookup(cfg->maps, db);
    serve_connection(*cfg, conn, lookup);
    return EX_OK;
}

// What a reload cannot change: the sockets are bound and the privileges
// dropped once, at start.  Sockets passed by systemd never follow the
// config's port and address.
void warn_unapplied(const SysConfig& was, const SysConfig& now, bool bound_here)
{
    std::string keys;
    if (bound_here && was.port != now.port)
        keys += " sysconfig.port";
    if (bound_here && was.listen != now.listen)
        keys += " sysconfig.listen";
    if (was.run_as_user != now.run_as_user)
        keys += " sysconfig.run_as_user";
    if (was.run_as_group != now.run_as_group)
        keys += " sysconfig.run_as_group";
    if (!keys.empty())
        log_warning("reload: changed" + keys +
                    " take effect only when sockmapd is restarted; until then the "
                    "sockets and the user stay as they were");
}

// --listen, or the listening sockets of an Accept=no socket unit.
int listen_mode(const Options& opt, const std::vector<PassedListener>& passed)
{
    log_tee_stderr(true); // start-up errors reach the terminal, log file or not
    std::optional<Config> loaded = load_for(opt.config, Audience::Daemon);
    if (!loaded)
        return EX_CONFIG;
    Config cfg = std::move(*loaded);
    ListenOptions lo;
    lo.passed = passed;
    if (passed.empty()) {
        try {
            lo = listen_options(cfg.sys, opt.listen_arg);
        } catch (const UsageError& e) {
            log_error(e.what());
            return EX_USAGE;
        } catch (const ConfigError& e) {
            log_error(e.what());
            return EX_CONFIG;
        }
    }
    // Descriptors for every handler the cap allows, else a smaller cap, said once.
    const HandlerCap cap = cap_for(opt.max_children, raise_descriptor_limit().soft);
    if (!cap.warning.empty())
        log_warning(cap.warning);
    lo.max_children = cap.handlers;
    lo.max_per_peer = opt.max_per_peer;
    lo.spare_handlers = opt.spare_handlers;
    prepare_connector(cfg.db.tls.enabled());
    // Before the first fork: every handler inherits the region, and it
    // outlives each of them.
    stats().open(runtime_dir());
    configure_stats(cfg);
    // A new config serves new connections; running handlers finish theirs
    // with the old one, then exit.
    const bool bound_here = passed.empty();
    const auto reload = [&opt, &cfg, bound_here] {
        std::optional<Config> fresh = load_for(opt.config, Audience::Daemon);
        if (!fresh) {
            log_error("reload: keeping the previous configuration");
            return false;
        }
        warn_unapplied(cfg.sys, fresh->sys, bound_here);
        cfg = std::move(*fresh);
        configure_stats(cfg);
        log_info("reload: configuration read from " + opt.config + ", " + std::to_string(cfg.maps.size()) +
                 " maps; new connections use it");
        return true;
    };
    // One answer cache for every handler this loop forks, for as long as it
    // runs (a handler lives a few minutes, an outage longer).
    AnswerCache cache;
    if (!cache.usable())
        log_warning(std::string("answer cache: cannot map its memory (") + std::strerror(errno) +
                    "): maps with \"cache\" ask the database every time");
    else if (std::any_of(cfg.maps.begin(), cfg.maps.end(), [](const MapConfig& m) { return m.cache.enabled(); }))
        log_info("answer cache: " + std::to_string(cache.capacity()) + " entries of at most " +
                 std::to_string(cache.max_payload()) + " bytes (map name, key and answer), " +
                 std::to_string(cache.region_bytes() >> 20) + " MiB shared by the handlers");
    return listen_loop(cfg, lo, reload, [&cfg, &cache] { return std::make_unique<ListenHandler>(cfg, cache); });
}

int query(const Config& cfg, const std::string& map, const std::string& key)
{
    MariaDbRunner db(cfg.db, HostState(runtime_dir_for_command(), cfg.db.retry_interval));
    DbLookup lookup(cfg.maps, db);
    const LookupResult r = ask(lookup, {map, key});
    std::cout << reply_for(r).payload << '\n';
    switch (r.outcome) {
    case Outcome::Found:
        return EX_OK;
    case Outcome::NotFound:
        return 1;
    case Outcome::TempFail:
    case Outcome::Timeout:
        return EX_TEMPFAIL;
    case Outcome::NoSuchMap:
        std::cerr << "sockmapd: no map \"" << map << "\" in the config\n";
        return EX_USAGE;
    case Outcome::PermFail:
        return EX_DATAERR;
    }
    return EX_SOFTWARE;
}

// --check-config without --offline: connect and prepare every map's
// statement, a line per map on stdout, warnings on stderr.  78 when a map
// is wrong, else 75 when no host answered for one, else 0.
int check_maps_online(const Config& cfg)
{
    // Run as root (an administrator's check), down marks stay in this
    // process: a state file root created would be unreadable to the
    // service user's handlers afterwards.
    MariaDbRunner db(cfg.db, HostState(runtime_dir_for_command(), cfg.db.retry_interval));
    int rc = EX_OK;
    for (const auto& map : cfg.maps) {
        const MapCheck c = db.check_map(map);
        std::cout << map.service << ": " << c.message << "\n";
        if (!c.warning.empty())
            std::cerr << "sockmapd: warning: " << c.warning << "\n";
        if (c.verdict == MapCheck::Verdict::Wrong)
            rc = EX_CONFIG;
        else if (c.verdict == MapCheck::Verdict::Unreachable && rc == EX_OK)
            rc = EX_TEMPFAIL;
    }
    return rc;
}

// --stats [FILE]: every figure in the Prometheus text format, on stdout or
// into FILE (a temporary file renamed over it, so that node_exporter's
// textfile collector never reads half of one).  Without the counters'
// file (nothing has served since boot, or another runtime directory) the
// figures are zero and stderr says why.
int report_stats(const std::string& file)
{
    const std::string path = stats_file_to_read();
    const SharedRegion shm = peek_stats(path);
    const std::time_t now = std::time(nullptr);
    std::string text;
    if (shm) {
        text = format_prometheus(*static_cast<const StatsRegion*>(shm.data()), now, SOCKMAPD_VERSION);
    } else {
        std::cerr << "sockmapd: no counters in " << path << " (nothing served since it was made, or " << path
                  << " is of another version): the figures are zero\n";
        Stats empty;
        empty.open_private();
        text = format_prometheus(*empty.region(), now, SOCKMAPD_VERSION);
    }
    if (file.empty()) {
        std::cout << text << std::flush;
        return std::cout ? EX_OK : EX_IOERR;
    }
    const std::string tmp = file + ".tmp";
    unlink(tmp.c_str());
    Fd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
    bool ok = fd && fchmod(fd.get(), 0644) == 0;
    for (std::string_view rest = text; ok && !rest.empty();) {
        const ssize_t n = write(fd.get(), rest.data(), rest.size());
        if (n < 0 && errno == EINTR)
            continue;
        ok = n > 0;
        if (ok)
            rest.remove_prefix(static_cast<std::size_t>(n));
    }
    ok = ok && close(fd.release()) == 0 && rename(tmp.c_str(), file.c_str()) == 0;
    if (!ok) {
        std::cerr << "sockmapd: --stats " << file << ": " << std::strerror(errno) << "\n";
        unlink(tmp.c_str());
        return EX_CANTCREAT;
    }
    return EX_OK;
}

const char no_connection[] =
    "no connection to serve: stdin is /dev/null and systemd passed no socket. "
    "To accept connections itself, run sockmapd --listen [[ADDR:]PORT] (or the Go sockmapd's -p PORT); "
    "under systemd, enable sockmapd.socket (a handler per connection) or sockmapd-listener.socket "
    "(one service that forks a handler per connection)";

int run(const Options& opt)
{
    if (opt.stats)
        return report_stats(opt.stats_file);
    if (!opt.check_config && opt.query.empty()) {
        Activation act;
        try {
            act = find_activation(opt.inetd);
        } catch (const ActivationError& e) {
            log_error(e.what());
            return EX_CONFIG;
        }
        if (opt.listen || !act.listeners.empty())
            return listen_mode(opt, act.listeners);
        if (!act.from_systemd && is_dev_null(act.conn.in_fd)) {
            log_error(no_connection);
            return EX_USAGE;
        }
        return serve(opt, act.conn);
    }

    const std::optional<Config> loaded = load_for(opt.config, Audience::Person);
    if (!loaded)
        return EX_CONFIG;
    const Config& cfg = *loaded;
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
    if (!opt.query.empty())
        return query(cfg, opt.query[0], opt.query[1]);
    if (opt.offline) {
        std::cout << opt.config << ": ok, " << cfg.maps.size() << " map" << (cfg.maps.size() == 1 ? "" : "s")
                  << " (not checked against the database)\n";
        return EX_OK;
    }
    return check_maps_online(cfg);
}

// --help shows each option's argument and what it does; the rules
// (excludes, needs, ranges) are enforced, not listed.
class PlainFormatter : public CLI::Formatter
{
public:
    std::string make_option_opts(const CLI::Option* opt) const override
    {
        return opt->get_type_name().empty() ? std::string() : " " + opt->get_type_name();
    }
};

} // namespace

int main(int argc, char** argv)
{
    std::signal(SIGPIPE, SIG_IGN);
    const LogFacts facts = log_facts();
    const bool stderr_private = facts.stderr_private;
    log_init(facts);
    log_setup(LogLevel::Info, "");

    Options opt;
    CLI::App app{"sockmapd answers socketmap lookups from Postfix and Sendmail out of MariaDB tables.\n"
                 "Without options it serves one connection: fd 3 from systemd (Accept=yes), else stdin/stdout.",
                 "sockmapd"};
    app.formatter(std::make_shared<PlainFormatter>());
    app.set_version_flag("-V,--version", "sockmapd " SOCKMAPD_VERSION);
    app.add_option("-c,--config", opt.config, "configuration file (default: " + opt.config + ")")->type_name("FILE");
    auto* check = app.add_flag("--check-config", opt.check_config,
                               "check the file, then connect and prepare every map; exit 0, 75 or 78");
    app.add_flag("--offline", opt.offline, "with --check-config: check the file only, no database")->needs(check);
    app.add_flag("--inetd", opt.inetd, "serve stdin/stdout even when systemd passed a socket");
    auto* query_opt = app.add_option("--query", opt.query, "look KEY up in MAP, print the reply (exit statuses below)")
                          ->expected(2)
                          ->type_name("MAP KEY")
                          ->excludes(check);
    auto* listen = app.add_option("--listen", opt.listen_arg,
                                  "accept connections on [[ADDR:]PORT] (default: sysconfig.listen and .port), "
                                  "a forked handler for each")
                       ->expected(0, 1)
                       ->type_name("[[ADDR:]PORT]")
                       ->excludes(check)
                       ->excludes(query_opt);
    auto* go_port = app.add_option("-p", opt.go_port, "the Go sockmapd's -p PORT: the same as --listen PORT")
                        ->type_name("PORT")
                        ->excludes(listen)
                        ->excludes(check)
                        ->excludes(query_opt);
    auto* stats_opt = app.add_option("--stats", opt.stats_file,
                                     "print the counters of the running service (Prometheus text format), "
                                     "or write them to FILE atomically")
                          ->expected(0, 1)
                          ->type_name("[FILE]")
                          ->excludes(check)
                          ->excludes(query_opt)
                          ->excludes(listen)
                          ->excludes(go_port);
    app.add_option("--max-children", opt.max_children,
                   "with --listen or the sockets of an Accept=no unit: most handlers at once (default: " +
                       std::to_string(default_max_children) + ")")
        ->type_name("N")
        ->check(CLI::Range(1, 10000).description(""));
    app.add_option("--spare-handlers", opt.spare_handlers,
                   "with --listen or the sockets of an Accept=no unit: idle handlers kept ready once connections "
                   "come, within --max-children, so that a new connection waits for no fork; 0 forks only on "
                   "demand (default: " +
                       std::to_string(default_spare_handlers) + ")")
        ->type_name("N")
        ->check(CLI::Range(0, 100).description(""));
    app.add_option("--max-per-peer", opt.max_per_peer,
                   "with --listen or the sockets of an Accept=no unit: most handlers for one client address "
                   "(TCP) or user (unix socket); more connections from it are closed (default: 0, no limit)")
        ->type_name("N")
        ->check(CLI::Range(0, 10000).description(""));
    app.footer("Exit status: 0 ok, 64 usage, 70 internal error, 75 temporary failure, 78 configuration error.\n"
               "--query: 0 found (OK), 1 not found (NOTFOUND), 64 no such map, 65 PERM (such as a result too long),\n"
               "75 TEMP or TIMEOUT (the database), 78 configuration error.\n"
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
    opt.listen = listen->count() > 0 || go_port->count() > 0;
    opt.stats = stats_opt->count() > 0;
    if (go_port->count() > 0) {
        if (!parse_port(opt.go_port)) {
            std::cerr << "sockmapd: -p " << opt.go_port << ": give a port number 1-65535\n";
            return EX_USAGE;
        }
        opt.listen_arg = opt.go_port;
    }
    try {
        return run(opt);
    } catch (const std::exception& e) {
        log_error(std::string("internal error: ") + e.what());
        return EX_SOFTWARE;
    }
}
