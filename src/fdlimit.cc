#include "fdlimit.hh"

#include <algorithm>

namespace sockmapd
{

rlim_t descriptors_for(unsigned handlers)
{
    return static_cast<rlim_t>(handlers) * descriptors_per_handler + descriptors_reserved;
}

unsigned handlers_within(rlim_t limit)
{
    if (limit == RLIM_INFINITY)
        return ~0u;
    if (limit <= descriptors_reserved)
        return 0;
    const rlim_t n = (limit - descriptors_reserved) / descriptors_per_handler;
    return static_cast<unsigned>(std::min<rlim_t>(n, ~0u));
}

DescriptorLimit raise_descriptor_limit()
{
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return {};
    DescriptorLimit out{rl.rlim_cur, rl.rlim_cur, rl.rlim_max};
    // Linux refuses an unlimited RLIMIT_NOFILE (past fs.nr_open): the soft
    // limit stays as it is then.
    if (rl.rlim_cur < rl.rlim_max && rl.rlim_max != RLIM_INFINITY) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            out.soft = rl.rlim_cur;
    }
    return out;
}

HandlerCap cap_for(unsigned wanted, rlim_t limit)
{
    const unsigned room = handlers_within(limit);
    if (wanted <= room)
        return {wanted, {}};
    const unsigned handlers = std::max(room, 1u);
    const std::string need = std::to_string(descriptors_for(wanted));
    return {handlers,
            "the descriptor limit (RLIMIT_NOFILE) is " + std::to_string(limit) + ", room for " + std::to_string(room) +
                " handlers, not --max-children " + std::to_string(wanted) + ": at most " + std::to_string(handlers) +
                " run at once and further connections wait. " + "Set it to " + need + " or more: LimitNOFILE=" + need +
                " in the service unit, or `ulimit -n " + need + "` (as root) in the shell that starts sockmapd"};
}

} // namespace sockmapd
