#include "dblookup.hh"

#include "log.hh"
#include "mapkey.hh"
#include "stats.hh"

#include <algorithm>

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

DbLookup::DbLookup(std::vector<CompiledMap> maps, StatementRunner& runner, QueryBudget budget)
    : maps_(std::move(maps)), runner_(runner), budget_(budget)
{
}

void DbLookup::session_started()
{
    budget_.fill();
    warned_budget_ = false;
}

LookupResult DbLookup::lookup(std::string_view map, std::string_view key)
{
    const CompiledMap* mc = find_map(maps_, map);
    if (!mc)
        return {Outcome::NoSuchMap, {}};
    // log_debug() takes a finished string: build it only when it is wanted.
    if (log_enabled(LogLevel::Debug))
        log_debug("lookup in " + mc->service + ": " + log_escape(key), {{"SOCKMAP_MAP", map}});

    const KeyCandidates keys(*mc, key);
    if (!keys.searchable()) {
        if (log_enabled(LogLevel::Debug))
            log_debug("map " + mc->service + ": " + keys.refusal() + ", not searched", {{"SOCKMAP_MAP", map}});
        return {Outcome::PermFail, keys.refusal()};
    }
    // The steps that can match: the domain list and the key parts the
    // statement binds leave some out without asking, as Postfix does.
    std::vector<Step> steps;
    steps.reserve(keys.size());
    for (const std::string_view candidate : keys) {
        if (!domain_allowed(*mc, candidate)) {
            if (log_enabled(LogLevel::Debug))
                log_debug("map " + mc->service + ": " + log_escape(candidate) +
                              " outside the domain list, not looked up",
                          {{"SOCKMAP_MAP", map}});
            continue;
        }
        auto values = bind_values(mc->plan, candidate);
        if (!values) {
            if (log_enabled(LogLevel::Debug))
                log_debug("map " + mc->service + ": " + log_escape(candidate) +
                              " lacks the part %u/%d need, not looked up",
                          {{"SOCKMAP_MAP", map}});
            continue;
        }
        steps.push_back({candidate, std::move(*values)});
    }
    if (steps.empty())
        return {Outcome::NotFound, {}};
    // All the walk may cost, or nothing: a TEMP after half a walk would
    // have cost the same queries for no answer.
    if (!budget_.affords(steps.size(), Clock::now())) {
        if (!warned_budget_) {
            warned_budget_ = true;
            log_warning("map " + mc->service + ": the client's pipelined requests spent the session's query budget (" +
                            std::to_string(budget_.capacity()) + " executions, " +
                            std::to_string(budget_.per_second()) +
                            " more a second): answered TEMP until it reads its replies; said once per session",
                        {{"SOCKMAP_MAP", map}});
        }
        return {Outcome::TempFail, "query budget spent: read the replies before sending more"};
    }
    return search(*mc, key, steps);
}

LookupResult DbLookup::search(const CompiledMap& mc, std::string_view key, const std::vector<Step>& steps)
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
        for (const Step& step : steps) {
            if (step.key != key && log_enabled(LogLevel::Debug))
                log_debug("lookup in " + name + " as: " + log_escape(step.key), {{"SOCKMAP_MAP", map}});
            ResultJoiner joiner(plan);
            budget_.spend();
            stats().executed(map);
            const bool done = execute(step.values, max_value_length, [&](const Row& cols) {
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
    switch (ran) {
    case RunOutcome::Ran:
        break;
    case RunOutcome::Unavailable:
        return {Outcome::TempFail, "no database host available"};
    case RunOutcome::LoginRefused:
        return {Outcome::TempFail, "database login refused"};
    case RunOutcome::ServerFull:
        return {Outcome::TempFail, "database server full (too many connections)"};
    case RunOutcome::TimedOut:
        return {Outcome::Timeout, "database query timed out"};
    case RunOutcome::StatementFailed:
        return {Outcome::TempFail, "lookup failed in map " + name};
    case RunOutcome::Mismatch:
        return {Outcome::TempFail, "map " + name + " cannot be queried"};
    }
    if (answer.outcome == Outcome::PermFail)
        log_error("map " + name + ": result longer than " + std::to_string(max_value_length) + " bytes, answered PERM",
                  {{"SOCKMAP_MAP", map}});
    return answer;
}

} // namespace sockmapd
