#include "jsonread.hh"

#include "util.hh"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <sstream>

namespace sockmapd
{

namespace
{

// Edit distance with adjacent transpositions ("vaule" is one step from
// "value"), compared without case.
std::size_t edit_distance(std::string_view a, std::string_view b)
{
    const auto low = [](char c) { return ascii_lower(c); };
    std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
    for (std::size_t i = 0; i <= a.size(); ++i)
        d[i][0] = i;
    for (std::size_t j = 0; j <= b.size(); ++j)
        d[0][j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i)
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t cost = low(a[i - 1]) == low(b[j - 1]) ? 0 : 1;
            d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
            if (i > 1 && j > 1 && low(a[i - 1]) == low(b[j - 2]) && low(a[i - 2]) == low(b[j - 1]))
                d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
        }
    return d[a.size()][b.size()];
}

// jsoncpp's report of a syntax error, as "line L, column C: what", once:
// it lists an error with its place, sometimes again with "See Line ..."
// and a second finding about the same spot.
std::string first_json_error(const std::string& errors)
{
    std::istringstream in(errors);
    std::string place;
    std::string what;
    std::getline(in, place);
    std::getline(in, what);
    const auto trim = [](std::string t) {
        t.erase(0, std::min(t.find_first_not_of(" *"), t.size()));
        if (const auto see = t.find(" See Line "); see != std::string::npos)
            t.erase(see);
        while (!t.empty() && (t.back() == ' ' || t.back() == '\n'))
            t.pop_back();
        return t;
    };
    place = trim(place);
    what = trim(what);
    if (place.rfind("Line ", 0) != 0 || what.empty())
        return trim(errors); // not the usual shape: jsoncpp's own words, whatever they are
    place[0] = 'l';
    if (const auto col = place.find(", Column "); col != std::string::npos)
        place[col + 2] = 'c';
    return place + ": " + what;
}

} // namespace

void Problems::merge(const Problems& other, const std::string& suffix)
{
    for (const auto& line : other.lines_)
        add(line + suffix);
}

void Problems::raise_if_any(const std::string& origin) const
{
    if (lines_.empty())
        return;
    std::string text;
    for (const auto& line : lines_)
        text += (text.empty() ? "" : "\n") + origin + ": " + line;
    throw ConfigError(text);
}

std::string nearest_key(std::string_view unknown, const std::vector<std::string>& known)
{
    std::string best;
    std::size_t best_distance = std::numeric_limits<std::size_t>::max();
    for (const auto& k : known) {
        const std::size_t dist = edit_distance(unknown, k);
        if (dist < best_distance) {
            best = k;
            best_distance = dist;
        }
    }
    const std::size_t allowed = std::min<std::size_t>(unknown.size(), best.size()) <= 4 ? 1 : 2;
    return best_distance <= allowed ? best : std::string();
}

Object::Object(const Json::Value& v, std::string path, Problems& problems)
    : v_(v), path_(std::move(path)), problems_(problems)
{
    if (!v_.isObject())
        problems_.add(path_ + ": must be an object");
}

const Json::Value* Object::get(const char* name)
{
    asked_.emplace_back(name);
    if (!v_.isObject())
        return nullptr;
    // The exact spelling first (the usual case, a map lookup); else the
    // first spelling that differs only in case.  finish() reports a second one.
    const Json::Value* found = v_.find(name, name + std::strlen(name));
    if (found) {
        matched_.insert(name);
    } else {
        for (auto it = v_.begin(); it != v_.end(); ++it) {
            const char* end = nullptr;
            const char* begin = it.memberName(&end);
            if (begin && ascii_iequals(std::string_view(begin, static_cast<std::size_t>(end - begin)), name)) {
                matched_.emplace(begin, end);
                found = &*it;
                break;
            }
        }
    }
    return found && !found->isNull() ? found : nullptr;
}

std::string Object::str(const char* name, std::string def)
{
    return field(def, [&] { return str_or_throw(name, def); });
}

unsigned Object::num(const char* name, unsigned def, unsigned min, unsigned max)
{
    return field(def, [&] { return num_or_throw(name, def, min, max); });
}

bool Object::boolean(const char* name, bool def)
{
    return field(def, [&] { return boolean_or_throw(name, def); });
}

std::vector<std::string> Object::list(const char* name)
{
    return field(std::vector<std::string>{}, [&] { return list_or_throw(name); });
}

void Object::finish() const
{
    if (!v_.isObject())
        return;
    for (const auto& name : v_.getMemberNames()) {
        if (matched_.count(name))
            continue;
        const auto same = std::find_if(matched_.begin(), matched_.end(),
                                       [&](const std::string& m) { return ascii_iequals(m, name); });
        if (same != matched_.end()) {
            problems_.add(member_path(name) + ": the same key as \"" + *same +
                          "\" (keys match without regard to case): give it once");
            continue;
        }
        std::string line = member_path(name) + ": unknown key";
        if (const std::string near = nearest_key(name, asked_); !near.empty())
            line += " (did you mean \"" + near + "\"?)";
        problems_.add(line);
    }
}

std::string Object::str_or_throw(const char* name, const std::string& def)
{
    const Json::Value* m = get(name);
    if (!m)
        return def;
    if (m->isString())
        return m->asString();
    if (m->isIntegral())
        return m->isUInt64() ? std::to_string(m->asUInt64()) : std::to_string(m->asInt64());
    fail_at(member_path(name), m->isNumeric() ? "must be a string or a whole number" : "must be a string");
}

unsigned Object::num_or_throw(const char* name, unsigned def, unsigned min, unsigned max)
{
    const Json::Value* m = get(name);
    if (!m)
        return def;
    const std::string range = "must be between " + std::to_string(min) + " and " + std::to_string(max);
    unsigned long long n = 0;
    if (m->isUInt64()) {
        n = m->asUInt64();
    } else if (m->isString()) {
        const std::string s = m->asString();
        if (!all_digits(s))
            fail_at(member_path(name), "must be a whole number, not \"" + s + "\"");
        const auto v = parse_decimal(s);
        if (!v)
            fail_at(member_path(name), range + ", not " + s);
        n = *v;
    } else if (m->isDouble() && m->asDouble() >= 0 && std::floor(m->asDouble()) == m->asDouble()) {
        fail_at(member_path(name), range); // a whole number past 64 bits
    } else {
        fail_at(member_path(name), "must be a whole number");
    }
    if (n < min || n > max)
        fail_at(member_path(name), range);
    return static_cast<unsigned>(n);
}

bool Object::boolean_or_throw(const char* name, bool def)
{
    const Json::Value* m = get(name);
    if (!m)
        return def;
    if (m->isBool())
        return m->asBool();
    if (m->isString()) {
        const std::string s = m->asString();
        if (s == "true" || s == "yes" || s == "1" || s == "on")
            return true;
        if (s == "false" || s == "no" || s == "0" || s == "off" || s.empty())
            return false;
    }
    if (m->isIntegral() && (m->asInt64() == 0 || m->asInt64() == 1))
        return m->asInt64() == 1;
    fail_at(member_path(name), "must be true or false");
}

std::vector<std::string> Object::list_or_throw(const char* name)
{
    const Json::Value* m = get(name);
    std::vector<std::string> out;
    if (!m)
        return out;
    if (m->isString()) {
        out.push_back(m->asString());
        return out;
    }
    if (!m->isArray())
        fail_at(member_path(name), "must be a string or a list of strings");
    for (Json::ArrayIndex i = 0; i < m->size(); ++i) {
        if (!(*m)[i].isString())
            fail_at(member_path(name) + "[" + std::to_string(i) + "]", "must be a string");
        out.push_back((*m)[i].asString());
    }
    return out;
}

Json::Value parse_json_object(std::string_view text, const std::string& origin)
{
    if (text.find_first_not_of(" \t\r\n") == std::string_view::npos)
        throw ConfigError(origin + ": the file is empty (a JSON object with \"database\" and \"postmaps\" is needed)");
    Json::CharReaderBuilder builder;
    Json::CharReaderBuilder::strictMode(&builder.settings_);
    builder["collectComments"] = false;
    const std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
    Json::Value root;
    std::string errors;
    bool parsed = false;
    try {
        parsed = reader->parse(text.data(), text.data() + text.size(), &root, &errors);
    } catch (const std::exception& e) {
        // jsoncpp throws for some inputs instead of reporting them (nesting
        // past its depth limit); a bad file must still be exit 78, not abort.
        errors = e.what();
    }
    if (!parsed)
        throw ConfigError(origin + ": not valid JSON: " + first_json_error(errors));
    if (!root.isObject())
        throw ConfigError(origin +
                          ": the top level must be a JSON object, {\"database\": {...}, \"postmaps\": [...]}, not " +
                          (root.isArray() ? "an array" : "a single value"));
    return root;
}

} // namespace sockmapd
