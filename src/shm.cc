#include "shm.hh"

#include <cerrno>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace sockmapd
{

namespace
{

void* map_fd(int fd, std::size_t size, int prot)
{
    void* p = mmap(nullptr, size, prot, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? nullptr : p;
}

// A regular file of ours of exactly `size` bytes: a file another user
// planted, or one of another length (truncated under us: SIGBUS), is not
// mapped.
bool usable(int fd, std::size_t size, bool ours)
{
    struct stat st {
    };
    return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && static_cast<std::size_t>(st.st_size) == size &&
           (!ours || st.st_uid == geteuid());
}

} // namespace

void SharedRegion::reset()
{
    if (data_)
        munmap(data_, size_);
    data_ = nullptr;
    size_ = 0;
}

SharedRegion SharedRegion::anonymous(std::size_t size)
{
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? SharedRegion() : SharedRegion(p, size);
}

SharedRegion SharedRegion::attach(const std::string& path, std::size_t size, FunctionRef<bool(const void*)> valid,
                                  FunctionRef<void(void*)> init)
{
    bool replace = false;
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (Fd fd(open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC)); fd) {
            if (usable(fd.get(), size, true))
                if (void* p = map_fd(fd.get(), size, PROT_READ | PROT_WRITE)) {
                    if (valid(p))
                        return SharedRegion(p, size);
                    munmap(p, size);
                }
            replace = true; // another layout (an upgrade), or not ours to use
        } else if (errno != ENOENT) {
            return {};
        }
        const std::string tmp = path + "." + std::to_string(getpid()) + ".new";
        Fd fd(open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640));
        if (!fd)
            return {};
        // The group may read it (--stats from a unit of that group); the
        // umask of a sandboxed service would leave it to us alone.
        fchmod(fd.get(), 0640);
        void* p = ftruncate(fd.get(), static_cast<off_t>(size)) == 0 ? map_fd(fd.get(), size, PROT_READ | PROT_WRITE)
                                                                     : nullptr;
        if (!p) {
            unlink(tmp.c_str());
            return {};
        }
        init(p);
        // link() fails when another process was first: use its file.
        const bool placed = replace ? rename(tmp.c_str(), path.c_str()) == 0 : link(tmp.c_str(), path.c_str()) == 0;
        if (!replace)
            unlink(tmp.c_str());
        if (placed)
            return SharedRegion(p, size);
        munmap(p, size);
        if (replace) {
            unlink(tmp.c_str());
            return {};
        }
    }
    return {};
}

SharedRegion SharedRegion::peek(const std::string& path, std::size_t size)
{
    Fd fd(open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd || !usable(fd.get(), size, false))
        return {};
    void* p = map_fd(fd.get(), size, PROT_READ);
    return p ? SharedRegion(p, size) : SharedRegion();
}

} // namespace sockmapd
