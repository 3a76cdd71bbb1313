#include "rundir.hh"

#include "log.hh"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace sockmapd
{

namespace
{

// A directory we may keep state in: a real directory, ours, not writable by others.
bool safe_dir(const std::string& dir)
{
    struct stat st {
    };
    if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        return false;
    return st.st_uid == ::geteuid() && (st.st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

// Root does not write into a directory another user owns (its files would
// be unreadable to that user); others may use what they can write.
bool root_may_use(const std::string& dir)
{
    if (::geteuid() != 0)
        return true;
    struct stat st {
    };
    // A directory that is not there holds nothing: reading and writing
    // the state fail later, and say so.
    return ::stat(dir.c_str(), &st) != 0 || st.st_uid == 0;
}

// Once per process: the lookups and the gate both ask.
void warn_no_runtime_dir(const std::string& why)
{
    static bool warned = false;
    if (!warned)
        log_warning("failover state: " + why + "; failed database hosts are remembered in this process only");
    warned = true;
}

bool write_all(int fd, std::string_view data)
{
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

// `text` in place of the file at `path`: readers see the old file or the
// new one, never a torn one.  0, or the errno.
int replace_file(const std::string& path, std::string_view text)
{
    std::string tmp = path + ".XXXXXX";
    const int fd = ::mkstemp(tmp.data());
    if (fd < 0)
        return errno;
    bool ok = write_all(fd, text);
    int err = errno;
    if (::close(fd) != 0 && ok) {
        ok = false;
        err = errno;
    }
    if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) {
        ok = false;
        err = errno;
    }
    if (ok)
        return 0;
    ::unlink(tmp.c_str());
    return err;
}

} // namespace

std::string runtime_dir()
{
    if (const char* env = std::getenv("RUNTIME_DIRECTORY"); env && *env) {
        // systemd lists several directories separated by ':'; the first is ours.
        std::string dir(env);
        dir = dir.substr(0, dir.find(':'));
        if (!dir.empty()) {
            if (root_may_use(dir))
                return dir;
            warn_no_runtime_dir("RUNTIME_DIRECTORY " + dir + " belongs to another user");
            return {};
        }
    }
    if (::access("/run/sockmapd", W_OK | X_OK) == 0 && root_may_use("/run/sockmapd"))
        return "/run/sockmapd";
    std::string dir = "/tmp/sockmapd-" + std::to_string(::geteuid());
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
        warn_no_runtime_dir("cannot create " + dir + ": " + std::strerror(errno));
        return {};
    }
    if (safe_dir(dir))
        return dir;
    warn_no_runtime_dir(dir + " is not a directory of uid " + std::to_string(::geteuid()) +
                        " that only it may write (another user may have created it; give sockmapd a runtime "
                        "directory: /run/sockmapd, or RUNTIME_DIRECTORY)");
    return {};
}

std::string runtime_dir_for_command()
{
    return ::geteuid() == 0 ? std::string() : runtime_dir();
}

SharedFile::SharedFile(const std::string& dir, std::string_view stem, std::size_t limit) : limit_(limit)
{
    if (dir.empty())
        return;
    const std::string base = dir + "/" + std::string(stem);
    path_ = base + ".state";
    lock_ = base + ".lock";
}

int SharedFile::read(std::string& text) const
{
    text.clear();
    if (path_.empty())
        return ENOENT;
    const int err = read_file(path_, text, limit_, false);
    if (err == EFBIG)
        text.clear();
    return err;
}

SharedFile::Update SharedFile::update(std::chrono::milliseconds wait, WhenBusy busy, Change change, int& err)
{
    err = 0;
    if (path_.empty())
        return Update::Done;
    // Without the lock (WhenBusy::Proceed) we only risk losing a concurrent change.
    const Fd lock(::open(lock_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    const bool locked = lock && lock_within(lock.get(), wait);
    if (!locked && busy == WhenBusy::Skip)
        return Update::Busy;
    std::string text;
    err = read(text);
    if (err != 0 && err != ENOENT && err != EFBIG)
        return Update::Unreadable;
    err = 0;
    const std::optional<std::string> next = change(text);
    if (!next)
        return Update::Done;
    err = replace_file(path_, *next);
    return err == 0 ? Update::Done : Update::Unwritable;
}

} // namespace sockmapd
