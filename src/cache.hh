// cache — the answers of the maps that set "cache", one store for every
// handler of the accept loop.
//
// AnswerCache is a fixed region of memory, mapped MAP_SHARED|MAP_ANONYMOUS
// by the listener before it forks: every handler it starts shares it, and
// it outlives any one handler (they retire after max_use connections or
// max_idle seconds; an outage lasts longer).  The region never grows: a
// table of `slots` slots of `slot_bytes` bytes each (header, map name, key
// and value together), grouped in sets of `ways`.  A key's hash picks its
// set; a store replaces the slot of the same key, else an empty one, else
// the one of its set used least recently (LRU within the set).  An answer
// that does not fit a slot is not stored.  So memory is bounded in entries
// (`slots`) and bytes (region_bytes()) whatever the keys.
//
// Each set has a process-shared robust mutex.  A handler killed while it
// holds one (SIGKILL in the middle of a write) leaves the slot it was
// writing flagged: the next process to take the lock is told the owner
// died (EOWNERDEAD), clears the flagged slots and any whose checksum does
// not match, and marks the lock consistent.  A lock not had within a few
// milliseconds (a holder stopped) is a miss, never a wait.  Every entry
// found is checked against its checksum before it is used.
//
// The cache knows nothing of configs: a key is (fingerprint, map, key),
// the fingerprint standing for what the map's answers depend on, so that a
// reload that changes a map never meets the old answers.  Only Found and
// NotFound are stored; get() gives the entry with its age and the caller
// decides whether it is fresh, stale or too old.  Never throws but
// std::bad_alloc.
#pragma once

#include "lookup.hh" // Outcome, LookupResult

#include <cstddef>
#include <cstdint>
#include <optional>
#include <pthread.h>
#include <string>
#include <string_view>

namespace sockmapd
{

class AnswerCache
{
public:
    struct Geometry {
        std::size_t slots = 32768;    // entries at most (rounded up to a multiple of `ways`)
        std::size_t slot_bytes = 512; // one entry: header, map, key and value
    };
    static constexpr std::size_t ways = 8;

    struct Entry {
        Outcome outcome = Outcome::NotFound; // Found or NotFound
        std::string text;                    // Found: the value
        std::int64_t age_ms = 0;             // since the database gave it
    };

    // Maps and initialises the region; when that fails, usable() is false
    // and the cache stores nothing.
    explicit AnswerCache(Geometry g);
    AnswerCache() : AnswerCache(Geometry{}) {}
    ~AnswerCache();
    AnswerCache(const AnswerCache&) = delete;
    AnswerCache& operator=(const AnswerCache&) = delete;

    bool usable() const { return base_ != nullptr; }

    // The entry of `key` in `map` under `fingerprint`; nullopt when there is
    // none (or its set's lock could not be had).  `now_ms`: a clock every
    // process shares (steady_clock, CLOCK_MONOTONIC).
    std::optional<Entry> get(std::uint64_t fingerprint, std::string_view map, std::string_view key,
                             std::int64_t now_ms);
    // Stores a Found or NotFound answer given at `now_ms`; false when it
    // was not stored (another outcome, too large for a slot, lock busy).
    bool put(std::uint64_t fingerprint, std::string_view map, std::string_view key, const LookupResult& answer,
             std::int64_t now_ms);

    std::size_t capacity() const { return slots_; }
    std::size_t slot_bytes() const { return slot_bytes_; }
    // The largest map name + key + value a slot holds.
    std::size_t max_payload() const;
    // Bytes mapped, all of it; fixed at construction.
    std::size_t region_bytes() const { return size_; }
    // Entries held now (a walk of the table: for tests and reports).
    std::size_t entries() const;

    // The service-wide throttle of "stale answer" log lines: true for the
    // first call and then at most once per `every_ms`; `suppressed` is set
    // to the calls answered false since the last true.  Counts every call
    // in stale_served().
    bool stale_log_due(std::int64_t now_ms, std::int64_t every_ms, std::uint64_t& suppressed);
    std::uint64_t stale_served() const;

    // Tests only: called in the middle of a store, with the set's lock
    // held and the slot half written (a test's child kills itself there).
    static void (*write_hook)();

private:
    struct Header;
    struct Slot;
    Header* header() const;
    Slot* slot(std::size_t i) const;
    pthread_mutex_t* mutex(std::size_t set) const;
    bool lock(std::size_t set) const;
    void unlock(std::size_t set) const;
    void repair(std::size_t set) const;

    unsigned char* base_ = nullptr;
    std::size_t size_ = 0;
    std::size_t slots_ = 0;
    std::size_t slot_bytes_ = 0;
    std::size_t sets_ = 0;
    std::size_t locks_offset_ = 0;
    std::size_t slots_offset_ = 0;
};

// A 64-bit hash of `bytes` after `h` (a running hash): fingerprints are
// built with it, field after field.
std::uint64_t hash_bytes(std::uint64_t h, std::string_view bytes);

} // namespace sockmapd
