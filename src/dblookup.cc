#include "dblookup.hh"

#include "log.hh"
#include "mapkey.hh"
#include "stats.hh"

#include <algorithm>
#include <chrono>

namespace sockmapd
{

bool QueryBudget::affords(std::size_t n, Clock::time_point now)
{
    if (refilled_ == Clock::time_point{})
        refilled_ = now;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - refilled_).count();
    if (ms > 0) {
        const auto back = static_cast<unsigned long long>(ms) * per_second_ / 1000;
        if (back > 0) {
            left_ = static_cast<unsigned>(std::min<unsigned long long>(capacity_, left_ + back));
            refilled_ = now;
        }
    } else if (ms < 0) {
        refilled_ = now;
    }
    return n <= left_;
}

void QueryBudget::spend()
{
    if (left_ > 0)
        --left_;
}

namespace
{

std::int64_t steady_ms()
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
}

// What a map's answers depend on, hashed: a reload that changes any of it
// gives the map a new fingerprint, and the cache's old entries are never
// met again (the cache policy itself is not in it: ages are judged by the
// policy of the day).
std::uint64_t map_fingerprint(const MapConfig& m, std::uint64_t database)
{
    std::uint64_t h = database;
    for (const std::string* f : {&m.service, &m.database, &m.table, &m.key, &m.value, &m.reason, &m.query,
                                 &m.result_format, &m.strip_extension})
        h = hash_bytes(h, *f);
    for (const auto& d : m.domains)
        h = hash_bytes(h, d);
    const std::string flags = {static_cast<char>(m.lowercase), static_cast<char>(m.search),
                               static_cast<char>(m.parent_matches_subdomains)};
    return hash_bytes(h, flags);
}

bool is_answer(Outcome o)
{
    return o == Outcome::Found || o == Outcome::NotFound;
}

} // namespace

DbLookup::DbLookup(std::vector<CompiledMap> maps, StatementRunner& runner, QueryBudget budget, AnswerCache* cache,
                   std::uint64_t database)
    : maps_(std::move(maps)), runner_(runner), budget_(budget), cache_(cache && cache->usable() ? cache : nullptr),
      now_ms_(steady_ms)
{
    for (const auto& m : maps_)
        fingerprints_.emplace(m.service, map_fingerprint(m, database));
}

void DbLookup::warm_up()
{
    if (!maps_.empty())
        static_cast<void>(runner_.run(maps_.front(), [](StatementRunner::Execute) {}));
}

void DbLookup::session_started()
{
    budget_.fill();
    warned_budget_ = false;
    warned_too_long_ = false;
}

LookupResult DbLookup::lookup(std::string_view map, std::string_view key)
{
    const CompiledMap* mc = find_map(maps_, map);
    if (!mc)
        return {Outcome::NoSuchMap, {}};
    // log_debug() takes a finished string: build it only when it is wanted.
    if (log_enabled(LogLevel::Debug))
        log_debug("lookup in " + mc->service + ": " + log_escape(key), {{"SOCKMAP_MAP", map}});
    if (cache_ && mc->cache.enabled())
        return cached(*mc, key);
    return answer(*mc, key).result;
}

LookupResult DbLookup::cached(const CompiledMap& mc, std::string_view key)
{
    const std::string_view map = mc.service;
    const std::uint64_t fp = fingerprints_.find(map)->second;
    const CachePolicy& policy = mc.cache;
    const std::int64_t asked_at = now_ms_();
    std::optional<AnswerCache::Entry> hit = cache_->get(fp, map, key, asked_at);
    if (hit) {
        const unsigned fresh = hit->outcome == Outcome::Found ? policy.ttl : policy.negative_ttl;
        if (hit->age_ms < std::int64_t{fresh} * 1000) {
            if (log_enabled(LogLevel::Debug))
                log_debug("map " + mc.service + ": answered from the cache (" + std::to_string(hit->age_ms / 1000) +
                              " s old)",
                          {{"SOCKMAP_MAP", map}});
            stats().cache_hit(map);
            return {hit->outcome, std::move(hit->text)};
        }
    }
    Answer a = answer(mc, key);
    const std::int64_t now = now_ms_();
    if (a.from_database && is_answer(a.result.outcome)) {
        const unsigned keep =
            std::max(a.result.outcome == Outcome::Found ? policy.ttl : policy.negative_ttl, policy.stale_if_error);
        if (keep != 0)
            cache_->put(fp, map, key, a.result, now);
        return std::move(a.result);
    }
    if (!a.unavailable || !hit)
        return std::move(a.result);
    // No database host answered: the last answer the database gave, if it
    // is young enough, rather than TEMP.
    const std::int64_t age = hit->age_ms + std::max<std::int64_t>(0, now - asked_at);
    if (age > std::int64_t{policy.stale_if_error} * 1000)
        return std::move(a.result);
    stats().stale_answer(map);
    std::uint64_t suppressed = 0;
    if (cache_->stale_log_due(now, 60 * 1000, suppressed))
        log_warning("map " + mc.service + ": " + a.result.text + ", answering from the cache an answer " +
                        std::to_string(age / 1000) + " s old (stale_if_error " + std::to_string(policy.stale_if_error) +
                        " s)" +
                        (suppressed ? "; " + std::to_string(suppressed) + " more stale answers since the last line"
                                    : std::string()),
                    {{"SOCKMAP_MAP", map}, {"SOCKMAP_STALE_AGE", std::to_string(age / 1000), false}});
    else if (log_enabled(LogLevel::Debug))
        log_debug("map " + mc.service + ": stale answer for " + log_escape(key) + ", " + std::to_string(age / 1000) +
                      " s old",
                  {{"SOCKMAP_MAP", map}});
    return {hit->outcome, std::move(hit->text)};
}

DbLookup::Answer DbLookup::answer(const CompiledMap& m, std::string_view key)
{
    const CompiledMap* mc = &m;
    const std::string_view map = mc->service;
    keys_.assign(*mc, key);
    if (!keys_.searchable()) {
        if (log_enabled(LogLevel::Debug))
            log_debug("map " + mc->service + ": " + keys_.refusal() + ", not searched", {{"SOCKMAP_MAP", map}});
        return {{Outcome::PermFail, keys_.refusal()}};
    }
    // The steps that can match: the domain list and the key parts the
    // statement binds leave some out without asking, as Postfix does.
    steps_.clear();
    bound_ = no_step;
    for (const Candidate& candidate : keys_) {
        if (!domain_allowed(*mc, candidate)) {
            if (log_enabled(LogLevel::Debug))
                log_debug("map " + mc->service + ": " + log_escape(candidate) +
                              " outside the domain list, not looked up",
                          {{"SOCKMAP_MAP", map}});
            continue;
        }
        if (!bind_values(mc->plan, candidate, values_)) {
            bound_ = no_step; // values_ may hold part of it
            if (log_enabled(LogLevel::Debug))
                log_debug("map " + mc->service + ": " + log_escape(candidate) +
                              " lacks the part %u/%d need, not looked up",
                          {{"SOCKMAP_MAP", map}});
            continue;
        }
        bound_ = steps_.size();
        steps_.push_back(candidate);
    }
    if (steps_.empty())
        return {{Outcome::NotFound, {}}};
    // All the walk may cost, or nothing: a TEMP after half a walk would
    // have cost the same queries for no answer.
    if (!budget_.affords(steps_.size(), Clock::now())) {
        if (!warned_budget_) {
            warned_budget_ = true;
            log_warning("map " + mc->service + ": the client's pipelined requests spent the session's query budget (" +
                            std::to_string(budget_.capacity()) + " executions, " +
                            std::to_string(budget_.per_second()) +
                            " more a second): answered TEMP until it reads its replies; said once per session",
                        {{"SOCKMAP_MAP", map}});
        }
        return {{Outcome::TempFail, "query budget spent: read the replies before sending more"}};
    }
    return search(*mc, key);
}

DbLookup::Answer DbLookup::search(const CompiledMap& mc, std::string_view key)
{
    const StatementPlan& plan = mc.plan;
    const std::string& name = mc.service;
    const std::string_view map = name;
    LookupResult answer;
    // The whole walk is one piece of work on one connection: when it breaks
    // half-way it runs again from the start on the next host, and any other
    // failure ends it.  Only NotFound moves on to a shorter key: after a
    // failure the longer key's answer is unknown, and a shorter one might be
    // wrong.
    const RunOutcome ran = runner_.run(mc, [&](StatementRunner::Execute execute) {
        for (std::size_t i = 0; i < steps_.size(); ++i) {
            const Candidate& step = steps_[i];
            if (log_enabled(LogLevel::Debug) && step.key != key)
                log_debug("lookup in " + name + " as: " + log_escape(step.key), {{"SOCKMAP_MAP", map}});
            // The check above left the last step's values bound: a one-key
            // lookup binds once (a walk run again after a failover rebinds).
            if (i != bound_) {
                bind_values(plan, step, values_);
                bound_ = i;
            }
            ResultJoiner joiner(plan);
            budget_.spend();
            stats().executed(map);
            const bool done = execute(values_, max_value_length, [&](const Row& cols) {
                if (cols.empty())
                    return false;
                return joiner.add(cols[0], plan.has_reason && cols.size() > 1 ? &cols[1] : nullptr);
            });
            if (!done)
                return;
            answer = joiner.finish();
            if (answer.outcome != Outcome::NotFound)
                return;
        }
    });
    // unavailable: the outage a cached answer may stand in for.  A refused
    // login is the configuration's fault, and a broken map the map's, which
    // a stale answer would hide.
    constexpr bool unavailable = true;
    switch (ran) {
    case RunOutcome::Ran:
        break;
    case RunOutcome::Unavailable:
        return {{Outcome::TempFail, "no database host available"}, false, unavailable};
    case RunOutcome::LoginRefused:
        return {{Outcome::TempFail, "database login refused"}};
    case RunOutcome::ServerFull:
        return {{Outcome::TempFail, "database server full (too many connections)"}, false, unavailable};
    case RunOutcome::TimedOut:
        return {{Outcome::Timeout, "database query timed out"}, false, unavailable};
    case RunOutcome::StatementFailed:
        return {{Outcome::TempFail, "lookup failed in map " + name}};
    case RunOutcome::Mismatch:
        return {{Outcome::TempFail, "map " + name + " cannot be queried"}};
    }
    if (answer.outcome == Outcome::PermFail && !warned_too_long_) {
        warned_too_long_ = true; // the client may ask again and again
        log_error("map " + name + ": result longer than " + std::to_string(max_value_length) +
                      " bytes, answered PERM; said once per session",
                  {{"SOCKMAP_MAP", map}});
    }
    return {std::move(answer), true};
}

} // namespace sockmapd
