// util — small helpers used across modules; none throws for bad input.
//
// all_digits() is the one digit check; parse_decimal() and parse_port()
// read plain ASCII digits (no sign, no spaces, no leading '+') and answer
// nullopt for anything else, including a value past `max`.  ascii_lower()
// and ascii_iequals() fold A-Z only, whatever the locale.  printable_name()
// is the rule for names that go into log lines and state files.  host_port() writes "host:port", bracketing IPv6
// addresses.  read_file() reads a whole (small) file without throwing; lock_within()
// takes a file lock with a bounded wait.  Fd
// owns one file descriptor and closes it.  FunctionRef refers to a callable
// without owning or copying it (no allocation, unlike std::function).
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace sockmapd
{

// Non-empty and ASCII digits only.
bool all_digits(std::string_view s);

// Digits only, at most `max`; nullopt otherwise (empty, a sign, overflow).
std::optional<std::uint64_t> parse_decimal(std::string_view s, std::uint64_t max = UINT64_MAX);

// A-Z to a-z; every other byte unchanged (UTF-8 stays valid, non-ASCII
// letters are not folded).
inline char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}
std::string ascii_lower(std::string_view s);

// Equal when A-Z and a-z are taken as the same.
bool ascii_iequals(std::string_view a, std::string_view b);

// A TCP port, 1 to 65535, as digits.
std::optional<unsigned> parse_port(std::string_view s);

// Non-empty, and no space, control byte or DEL: safe as one word of a log
// line or one field of a line-based file.
bool printable_name(std::string_view s);

// "host:port", or "[host]:port" when host is an IPv6 address (has a ':').
std::string host_port(std::string_view host, unsigned port);

// A socket address for logs: "192.0.2.1:25", "[2001:db8::1]:25", "unix";
// empty for other families.
std::string socket_address_name(const sockaddr* sa);

// Reads the file at `path` into `out`.  Returns 0, or the errno of the
// failure; EFBIG when the file is longer than `limit` (out is then empty).
// `follow_links` false: a symlink is refused (ELOOP).
int read_file(const std::string& path, std::string& out, std::size_t limit, bool follow_links = true);

// An exclusive flock() on `fd`, waiting at most `limit`: a stopped process
// holding the lock must not stall the others.  False when not taken.
bool lock_within(int fd, std::chrono::milliseconds limit);

// One file descriptor, closed when the Fd goes; move-only.
class Fd
{
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd& operator=(Fd&& o) noexcept
    {
        if (this != &o)
            reset(std::exchange(o.fd_, -1));
        return *this;
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }

    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }
    // Gives up ownership without closing.
    int release() { return std::exchange(fd_, -1); }
    // Closes the descriptor held (if any) and takes `fd`.
    void reset(int fd = -1);

private:
    int fd_ = -1;
};

template <class Signature> class FunctionRef;

template <class R, class... Args> class FunctionRef<R(Args...)>
{
public:
    template <class F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, FunctionRef> && std::is_invocable_r_v<R, F&, Args...>)
        FunctionRef(F&& f) // NOLINT: converts like std::function
        : obj_(const_cast<void*>(static_cast<const void*>(&f))), call_([](void* obj, Args... args) -> R {
              return (*static_cast<std::remove_reference_t<F>*>(obj))(std::forward<Args>(args)...);
          })
    {
    }
    R operator()(Args... args) const { return call_(obj_, std::forward<Args>(args)...); }

private:
    void* obj_;
    R (*call_)(void*, Args...);
};

} // namespace sockmapd
