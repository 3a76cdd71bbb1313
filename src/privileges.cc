#include "privileges.hh"

#include "log.hh"
#include "util.hh"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <unistd.h>

namespace sockmapd
{

namespace
{

bool fail_priv(const std::string& what)
{
    log_error("cannot drop privileges: " + what + ": " + std::strerror(errno));
    return false;
}

} // namespace

namespace
{

// By name, else digits as the id itself (config.cc keeps them in range).
const passwd* find_user(const std::string& name)
{
    const passwd* pw = getpwnam(name.c_str());
    if (const auto id = parse_decimal(name, UINT32_MAX - 1); !pw && id)
        pw = getpwuid(static_cast<uid_t>(*id));
    return pw;
}

const group* find_group(const std::string& name)
{
    const group* gr = getgrnam(name.c_str());
    if (const auto id = parse_decimal(name, UINT32_MAX - 1); !gr && id)
        gr = getgrgid(static_cast<gid_t>(*id));
    return gr;
}

void set_dumpable(bool on)
{
    if (prctl(PR_SET_DUMPABLE, on ? 1 : 0, 0, 0, 0) != 0)
        log_warning(std::string("prctl(PR_SET_DUMPABLE): ") + std::strerror(errno));
}

std::string no_user(const std::string& name)
{
    return "sysconfig.run_as_user: no user \"" + name + "\" on this system";
}
std::string no_group(const std::string& name)
{
    return "sysconfig.run_as_group: no group \"" + name + "\" on this system";
}

} // namespace

Identity resolve_identity(const SysConfig& sys)
{
    Identity id;
    id.wanted = !sys.run_as_user.empty() || !sys.run_as_group.empty();
    id.core_dumps = sys.core_dumps;
    id.uid = getuid();
    id.gid = getgid();
    if (!sys.run_as_user.empty()) {
        const passwd* pw = find_user(sys.run_as_user);
        if (!pw)
            throw ConfigError(no_user(sys.run_as_user));
        id.user = pw->pw_name;
        id.uid = pw->pw_uid;
        id.gid = pw->pw_gid;
    }
    if (!sys.run_as_group.empty()) {
        const group* gr = find_group(sys.run_as_group);
        if (!gr)
            throw ConfigError(no_group(sys.run_as_group));
        id.gid = gr->gr_gid;
    }
    return id;
}

std::vector<std::string> account_problems(const SysConfig& sys)
{
    std::vector<std::string> out;
    if (!sys.run_as_user.empty() && !find_user(sys.run_as_user))
        out.push_back(no_user(sys.run_as_user));
    if (!sys.run_as_group.empty() && !find_group(sys.run_as_group))
        out.push_back(no_group(sys.run_as_group));
    return out;
}

// Groups first, then the gid, then the uid: after setuid() the others
// could no longer be changed.  Then make sure the way back is closed.
bool drop_privileges(const Identity& id)
{
    if (!id.wanted)
        return true;
    if (geteuid() != 0) {
        if (geteuid() != id.uid || getegid() != id.gid)
            log_warning("not started as root: run_as_user/run_as_group ignored, running as uid " +
                        std::to_string(geteuid()));
        return true;
    }
    if (!id.user.empty()) {
        if (initgroups(id.user.c_str(), id.gid) != 0)
            return fail_priv("initgroups(" + id.user + ")");
    } else if (setgroups(1, &id.gid) != 0) {
        return fail_priv("setgroups");
    }
    if (setgid(id.gid) != 0)
        return fail_priv("setgid(" + std::to_string(id.gid) + ")");
    if (setuid(id.uid) != 0)
        return fail_priv("setuid(" + std::to_string(id.uid) + ")");
    if (getuid() != id.uid || geteuid() != id.uid || getgid() != id.gid || getegid() != id.gid) {
        log_error("cannot drop privileges: ids did not change as asked");
        return false;
    }
    if (id.uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
        log_error("cannot drop privileges: root could be regained after setuid");
        return false;
    }
    if (id.gid != 0 && id.uid != 0 && (setgid(0) == 0 || setegid(0) == 0)) {
        log_error("cannot drop privileges: gid 0 could be regained after setgid");
        return false;
    }
    // The kernel set the dumpable flag to fs.suid_dumpable with the ids.
    set_dumpable(id.core_dumps);
    if (id.uid == 0)
        log_warning("run_as_user not set: handlers keep running as root");
    log_info("running as uid " + std::to_string(id.uid) + ", gid " + std::to_string(id.gid));
    return true;
}

void protect_memory(const SysConfig& sys)
{
    set_dumpable(sys.core_dumps);
}

} // namespace sockmapd
