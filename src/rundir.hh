// rundir — the runtime directory, and the small state files the processes
// of one service share in it.
//
// runtime_dir() picks the directory once per call: $RUNTIME_DIRECTORY (its
// first entry), else /run/sockmapd if writable, else /tmp/sockmapd-<uid>
// (created 0700, used only if it is ours and not writable by others).  As
// root, never a directory another user owns: files root creates there
// would lock that user's handlers out.  Empty: none usable, and a warning
// says so, once per process (another user may have created
// /tmp/sockmapd-<uid> first).
//
// SharedFile is one such file: read without a lock, since it is only ever
// replaced whole (a temporary file renamed over it), never torn; updated
// under an advisory lock on "<stem>.lock" beside it, with a bounded wait,
// so that a stopped process holding it cannot stall the others.  The files
// are hints (down-marks, log throttles): what to do when one cannot be
// read or written is the caller's choice.  hoststate and gate use it.
#pragma once

#include "util.hh" // FunctionRef

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace sockmapd
{

std::string runtime_dir();

// For a command a person runs (--check-config, --query): runtime_dir(),
// but none as root, whose files would be the service user's no longer.
std::string runtime_dir_for_command();

class SharedFile
{
public:
    // What update() did.
    enum class Update {
        Done,       // written, or left as it was (change() said nullopt)
        Busy,       // the lock was not taken in time and the caller said Skip: nothing done
        Unreadable, // the file is there but cannot be read (errno in `err`): nothing done
        Unwritable, // the new text could not be put in place (errno in `err`)
    };
    // What to do when the lock is not taken in time.
    enum class WhenBusy { Proceed, Skip };
    // The new text for the current one (empty when the file is missing or
    // larger than the limit, which is garbage); nullopt: leave it.
    using Change = FunctionRef<std::optional<std::string>(std::string_view current)>;

    SharedFile() = default; // none: nothing is read or written
    // "<stem>.state" in `dir`, locked with "<stem>.lock"; `dir` empty:
    // none.  A file over `limit` bytes reads as empty.
    SharedFile(const std::string& dir, std::string_view stem, std::size_t limit);

    bool usable() const { return !path_.empty(); }
    const std::string& path() const { return path_; }
    // Forgets the file: from now on nothing is read or written.
    void drop() { path_.clear(); }

    // The file's text, without the lock: 0, or the errno of reading it
    // (ENOENT: not there yet; EFBIG: over the limit, `text` empty).
    int read(std::string& text) const;
    // Under the lock (waited for at most `wait`): the current text through
    // `change`, and its answer put in place atomically.
    Update update(std::chrono::milliseconds wait, WhenBusy busy, Change change, int& err);

private:
    std::string path_;
    std::string lock_;
    std::size_t limit_ = 0;
};

} // namespace sockmapd
