// privileges — the --listen mode's change of user and group after binding.
//
// resolve_identity() looks sysconfig.run_as_user/run_as_group up (names or
// numbers) and throws ConfigError naming the key for unknown ones;
// account_problems() lists every unknown one (for --check-config).
// drop_privileges() sets the supplementary groups, the gid and the uid, in
// that order, checks each step and that neither root nor gid 0 can be
// regained; false (logged) when anything failed.  Not root: a warning, and
// nothing changes.
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
};

Identity resolve_identity(const SysConfig& sys);
std::vector<std::string> account_problems(const SysConfig& sys);
bool drop_privileges(const Identity& id);

} // namespace sockmapd
