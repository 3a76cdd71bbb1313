// privileges — the --listen mode's change of user and group after binding.
//
// resolve_identity() looks sysconfig.run_as_user/run_as_group up (names or
// numbers) and throws ConfigError naming the key for unknown ones;
// account_problems() lists every unknown one (for --check-config).
// drop_privileges() sets the supplementary groups, the gid and the uid, in
// that order, checks each step and that neither root nor gid 0 can be
// regained; false (logged) when anything failed.  Not root: a warning, and
// nothing changes.
// protect_memory() makes the process non-dumpable (PR_SET_DUMPABLE 0: no
// core file, no ptrace or /proc/PID/mem by the same user) unless
// sysconfig.core_dumps asks for dumps; call it once the config (and the
// password) is read.  The kernel resets the flag when the ids change:
// drop_privileges() sets it again, as Identity::core_dumps says.
#pragma once

#include "config.hh"

#include <string>
#include <sys/types.h>
#include <vector>

namespace sockmapd
{

struct Identity {
    bool wanted = false;
    std::string user; // empty: keep the uid
    uid_t uid = 0;
    gid_t gid = 0;
    bool core_dumps = false; // sysconfig.core_dumps, set again after the drop
};

Identity resolve_identity(const SysConfig& sys);
std::vector<std::string> account_problems(const SysConfig& sys);
bool drop_privileges(const Identity& id);
void protect_memory(const SysConfig& sys);

} // namespace sockmapd
