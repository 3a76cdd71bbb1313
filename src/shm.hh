// shm — memory shared by every process of one service.
//
// SharedRegion is one MAP_SHARED mapping of a fixed size, zero-filled when
// new.  anonymous(): this process and the children it forks afterwards
// (the accept loop and its handlers; it outlives any handler).  attach():
// a file in the runtime directory, so that processes started afresh
// (Accept=yes, xinetd) and a person's command share it too: an existing
// file is used when it is a regular file of this user, of exactly `size`
// bytes, that `valid` accepts; otherwise a new one is filled by `init`
// before it appears (a temporary file linked into place, so no process
// ever maps a half-made one; a stale one of another layout is replaced).
// peek(): an existing file, read-only, for reports.  The memory is plain
// bytes: what is put there must be lock-free atomics or written once
// before it is shared.  Nothing here throws; a region that could not be
// had is empty (operator bool false).
#pragma once

#include "util.hh"

#include <cstddef>
#include <string>
#include <utility>

namespace sockmapd
{

class SharedRegion
{
public:
    SharedRegion() = default;
    ~SharedRegion() { reset(); }
    SharedRegion(SharedRegion&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0))
    {
    }
    SharedRegion& operator=(SharedRegion&& o) noexcept
    {
        if (this != &o) {
            reset();
            data_ = std::exchange(o.data_, nullptr);
            size_ = std::exchange(o.size_, 0);
        }
        return *this;
    }
    SharedRegion(const SharedRegion&) = delete;
    SharedRegion& operator=(const SharedRegion&) = delete;

    static SharedRegion anonymous(std::size_t size);
    static SharedRegion attach(const std::string& path, std::size_t size, FunctionRef<bool(const void*)> valid,
                               FunctionRef<void(void*)> init);
    static SharedRegion peek(const std::string& path, std::size_t size);

    explicit operator bool() const { return data_ != nullptr; }
    void* data() const { return data_; }
    std::size_t size() const { return size_; }
    void reset();

private:
    SharedRegion(void* data, std::size_t size) : data_(data), size_(size) {}
    void* data_ = nullptr;
    std::size_t size_ = 0;
};

} // namespace sockmapd
