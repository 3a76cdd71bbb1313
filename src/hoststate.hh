// hoststate — the down-marks of database hosts, shared between handlers.
//
// HostState remembers when a host failed and answers the order in which to
// try the hosts: hosts not marked down first, in configured order, then the
// marked ones (also in order) as a last resort, so that when every host is
// marked down they are still tried rather than answered TEMP untried.  A
// mark lasts retry_interval seconds and is shared between handler processes
// through a small state file in the runtime directory (rundir.hh:
// failover.state, replaced atomically under an advisory lock).  The file is only
// a hint: unreadable, corrupt or unwritable files are ignored (the memory
// then lives in this process only); nothing here throws after construction.
// Which host to try when is decided by the Pool (pool.hh), not here.
#pragma once

#include "endpoint.hh"
#include "rundir.hh"

#include <ctime>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace sockmapd
{

// The state file's text: one line per down host, "<until-epoch> <name>".
// parse_state() skips malformed lines, drops expired marks and clamps marks
// that reach further than `retry_interval` from `now` (corruption, clock
// steps), so a bad file can never keep a host out for longer.
using DownMap = std::map<std::string, std::time_t>; // name -> down until
DownMap parse_state(std::string_view text, std::time_t now, unsigned retry_interval);
std::string format_state(const DownMap& down);

// Indices into `hosts`: the usable ones first, then those marked down.
std::vector<std::size_t> try_order(const std::vector<Endpoint>& hosts, const DownMap& down, std::time_t now);

class HostState
{
public:
    // The state file in `dir` (runtime_dir()); empty: keep the memory in
    // this process only.
    HostState(const std::string& dir, unsigned retry_interval);

    // Re-reads the shared file and returns the order to try `hosts` in.
    std::vector<std::size_t> order(const std::vector<Endpoint>& hosts);
    void mark_down(const Endpoint& host);
    unsigned retry_interval() const { return retry_interval_; }
    // Clears a mark this process saw at its last read (order()); touches
    // the file only then.
    void mark_up(const Endpoint& host);

private:
    void load(std::time_t now);
    void update(const std::string& name, std::time_t until); // until 0: clear
    // Sets (until) or clears (0) a mark in memory; false: nothing to clear.
    bool apply(const std::string& name, std::time_t until);
    // The file cannot be read: warned once, memory only from now on.
    void unreadable(int err);

    SharedFile file_; // none: memory only
    unsigned retry_interval_;
    DownMap down_;
    bool warned_ = false;
};

} // namespace sockmapd
