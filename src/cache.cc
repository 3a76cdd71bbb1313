#include "cache.hh"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <new>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

namespace sockmapd
{

void (*AnswerCache::write_hook)() = nullptr;

namespace
{

constexpr std::uint8_t found_tag = 1;
constexpr std::uint8_t notfound_tag = 2;
// How long a lookup waits for a set's lock before it does without the cache.
constexpr long lock_wait_ns = 20 * 1000 * 1000;

std::uint64_t mix(std::uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

std::size_t round_up(std::size_t n, std::size_t to)
{
    return (n + to - 1) / to * to;
}

std::uint64_t random_seed()
{
    std::uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof seed)) {
        timespec ts{};
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = mix(static_cast<std::uint64_t>(ts.tv_nsec) ^ (static_cast<std::uint64_t>(getpid()) << 32));
    }
    return seed;
}

} // namespace

std::uint64_t hash_bytes(std::uint64_t h, std::string_view bytes)
{
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    const std::size_t n = bytes.size();
    h = mix(h ^ (n * 0x9e3779b97f4a7c15ULL));
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        std::uint64_t w;
        std::memcpy(&w, p + i, 8);
        h = mix(h ^ w);
    }
    std::uint64_t w = 0;
    std::memcpy(&w, p + i, n - i);
    return mix(h ^ w ^ (static_cast<std::uint64_t>(n - i) << 56));
}

struct AnswerCache::Header {
    std::uint64_t seed;
    std::atomic<std::int64_t> stale_log_at; // -1: never logged
    std::atomic<std::uint64_t> stale_suppressed;
    std::atomic<std::uint64_t> stale_served;
};

// One entry; map name, key and value follow it in the slot.
struct AnswerCache::Slot {
    std::uint64_t hash; // 0: empty
    std::uint64_t fingerprint;
    std::int64_t stored_ms;
    std::int64_t used_ms; // for the LRU choice; outside the checksum (reads set it)
    std::uint64_t sum;    // over the fields above but used_ms, and the bytes
    std::uint32_t value_len;
    std::uint16_t map_len;
    std::uint16_t key_len;
    std::uint8_t outcome;
    std::uint8_t writing; // set while a store is under way: a writer that died left it

    unsigned char* data() { return reinterpret_cast<unsigned char*>(this + 1); }
    std::size_t payload() const { return std::size_t{map_len} + key_len + value_len; }

    std::uint64_t checksum()
    {
        const std::uint64_t fields[] = {hash,    fingerprint, static_cast<std::uint64_t>(stored_ms), value_len, map_len,
                                        key_len, outcome};
        const std::uint64_t h =
            hash_bytes(0x736f636b6d617064ULL, {reinterpret_cast<const char*>(fields), sizeof fields});
        return hash_bytes(h, {reinterpret_cast<const char*>(data()), payload()});
    }
    void clear()
    {
        hash = 0;
        writing = 0;
    }
    bool holds(std::uint64_t h, std::uint64_t fp, std::string_view map, std::string_view key)
    {
        return hash == h && fingerprint == fp && map_len == map.size() && key_len == key.size() && !writing &&
               std::memcmp(data(), map.data(), map.size()) == 0 &&
               std::memcmp(data() + map.size(), key.data(), key.size()) == 0;
    }
};

AnswerCache::AnswerCache(Geometry g)
{
    slots_ = round_up(std::max(g.slots, ways), ways);
    slot_bytes_ = round_up(std::max(g.slot_bytes, sizeof(Slot) + 64), alignof(Slot));
    sets_ = slots_ / ways;
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    locks_offset_ = round_up(sizeof(Header), alignof(pthread_mutex_t));
    slots_offset_ = round_up(locks_offset_ + sets_ * sizeof(pthread_mutex_t), page);
    size_ = slots_offset_ + slots_ * slot_bytes_;
    void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        size_ = 0;
        return;
    }
    (void)madvise(p, size_, MADV_DONTDUMP); // answers stay out of core files
    base_ = static_cast<unsigned char*>(p);
    Header* h = new (base_) Header;
    h->seed = random_seed();
    h->stale_log_at.store(-1);
    h->stale_suppressed.store(0);
    h->stale_served.store(0);
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    for (std::size_t i = 0; i < sets_; ++i)
        pthread_mutex_init(mutex(i), &attr);
    pthread_mutexattr_destroy(&attr);
    // The slots are zero (empty) as mapped; their pages are touched only when used.
}

AnswerCache::~AnswerCache()
{
    // The mutexes are not destroyed: a handler may still hold one.
    if (base_)
        munmap(base_, size_);
}

AnswerCache::Header* AnswerCache::header() const
{
    return reinterpret_cast<Header*>(base_);
}

AnswerCache::Slot* AnswerCache::slot(std::size_t i) const
{
    return reinterpret_cast<Slot*>(base_ + slots_offset_ + i * slot_bytes_);
}

pthread_mutex_t* AnswerCache::mutex(std::size_t set) const
{
    return reinterpret_cast<pthread_mutex_t*>(base_ + locks_offset_) + set;
}

std::size_t AnswerCache::max_payload() const
{
    return slot_bytes_ - sizeof(Slot);
}

bool AnswerCache::lock(std::size_t set) const
{
    pthread_mutex_t* m = mutex(set);
    int rc = pthread_mutex_trylock(m);
    if (rc == EBUSY) {
        timespec until{};
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += lock_wait_ns;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_nsec -= 1000000000L;
            ++until.tv_sec;
        }
        rc = pthread_mutex_timedlock(m, &until);
    }
    if (rc == EOWNERDEAD) {
        // Its holder died in the middle of its work: undo what it left.
        repair(set);
        pthread_mutex_consistent(m);
        return true;
    }
    return rc == 0;
}

void AnswerCache::unlock(std::size_t set) const
{
    pthread_mutex_unlock(mutex(set));
}

void AnswerCache::repair(std::size_t set) const
{
    for (std::size_t w = 0; w < ways; ++w) {
        Slot* s = slot(set * ways + w);
        if (s->writing || (s->hash != 0 && (s->payload() > max_payload() || s->checksum() != s->sum)))
            s->clear();
    }
}

std::optional<AnswerCache::Entry> AnswerCache::get(std::uint64_t fingerprint, std::string_view map,
                                                   std::string_view key, std::int64_t now_ms)
{
    if (!base_)
        return std::nullopt;
    std::uint64_t h = hash_bytes(hash_bytes(header()->seed ^ fingerprint, map), key);
    h += h == 0;
    const std::size_t set = h % sets_;
    if (!lock(set))
        return std::nullopt;
    std::optional<Entry> found;
    try {
        for (std::size_t w = 0; w < ways && !found; ++w) {
            Slot* s = slot(set * ways + w);
            if (!s->holds(h, fingerprint, map, key))
                continue;
            if (s->payload() > max_payload() || s->checksum() != s->sum ||
                (s->outcome != found_tag && s->outcome != notfound_tag)) {
                s->clear();
                continue;
            }
            Entry e;
            e.outcome = s->outcome == found_tag ? Outcome::Found : Outcome::NotFound;
            e.text.assign(reinterpret_cast<const char*>(s->data()) + s->map_len + s->key_len, s->value_len);
            e.age_ms = std::max<std::int64_t>(0, now_ms - s->stored_ms);
            s->used_ms = now_ms;
            found = std::move(e);
        }
    } catch (...) {
        unlock(set);
        throw;
    }
    unlock(set);
    return found;
}

bool AnswerCache::put(std::uint64_t fingerprint, std::string_view map, std::string_view key, const LookupResult& answer,
                      std::int64_t now_ms)
{
    if (!base_ || (answer.outcome != Outcome::Found && answer.outcome != Outcome::NotFound))
        return false;
    const std::string_view value = answer.outcome == Outcome::Found ? std::string_view(answer.text) : "";
    if (map.size() > 0xffff || key.size() > 0xffff || map.size() + key.size() + value.size() > max_payload())
        return false;
    std::uint64_t h = hash_bytes(hash_bytes(header()->seed ^ fingerprint, map), key);
    h += h == 0;
    const std::size_t set = h % sets_;
    if (!lock(set))
        return false;
    // The slot of the same key, else an empty one, else the one used least recently.
    Slot* target = nullptr;
    Slot* empty = nullptr;
    Slot* oldest = nullptr;
    for (std::size_t w = 0; w < ways; ++w) {
        Slot* s = slot(set * ways + w);
        if (s->holds(h, fingerprint, map, key)) {
            target = s;
            break;
        }
        if (s->hash == 0) {
            if (!empty)
                empty = s;
        } else if (!oldest || s->used_ms < oldest->used_ms) {
            oldest = s;
        }
    }
    Slot* s = target ? target : empty ? empty : oldest;
    s->writing = 1;
    std::atomic_thread_fence(std::memory_order_seq_cst);
    s->hash = h;
    s->fingerprint = fingerprint;
    s->stored_ms = s->used_ms = now_ms;
    s->outcome = answer.outcome == Outcome::Found ? found_tag : notfound_tag;
    s->map_len = static_cast<std::uint16_t>(map.size());
    s->key_len = static_cast<std::uint16_t>(key.size());
    s->value_len = static_cast<std::uint32_t>(value.size());
    std::memcpy(s->data(), map.data(), map.size());
    if (write_hook)
        write_hook();
    std::memcpy(s->data() + map.size(), key.data(), key.size());
    std::memcpy(s->data() + map.size() + key.size(), value.data(), value.size());
    s->sum = s->checksum();
    std::atomic_thread_fence(std::memory_order_seq_cst);
    s->writing = 0;
    unlock(set);
    return true;
}

std::size_t AnswerCache::entries() const
{
    std::size_t n = 0;
    for (std::size_t i = 0; base_ && i < slots_; ++i)
        n += slot(i)->hash != 0;
    return n;
}

bool AnswerCache::stale_log_due(std::int64_t now_ms, std::int64_t every_ms, std::uint64_t& suppressed)
{
    suppressed = 0;
    if (!base_)
        return true;
    Header* h = header();
    h->stale_served.fetch_add(1);
    std::int64_t at = h->stale_log_at.load();
    if ((at < 0 || now_ms - at >= every_ms) && h->stale_log_at.compare_exchange_strong(at, now_ms)) {
        suppressed = h->stale_suppressed.exchange(0);
        return true;
    }
    h->stale_suppressed.fetch_add(1);
    return false;
}

std::uint64_t AnswerCache::stale_served() const
{
    return base_ ? header()->stale_served.load() : 0;
}

} // namespace sockmapd
