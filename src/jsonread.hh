// jsonread — checked reading of a JSON config file, every problem at once.
//
// parse_json_object() parses text (strict JSON) and throws ConfigError with
// one message for a syntax error ("line L, column C: what"), an empty text
// or a top level that is not an object.  Problems collects every finding of
// a file as a line "key.path: what"; raise_if_any() throws them together as
// one ConfigError, a line each.  Object reads an object's members by name
// without regard to case (as Go's encoding/json does); a member with a
// problem reads as its default and the problem is recorded, so checking
// goes on.  finish() records every member nobody asked for as an unknown
// key, naming the nearest known key when it looks like a typo.
#pragma once

#include "errors.hh"

#include <json/json.h>

#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace sockmapd
{

class Problems
{
public:
    void add(std::string line) { lines_.push_back(std::move(line)); }

    // Runs a check that throws ConfigError at its first finding; that
    // finding becomes one problem and checking goes on.
    template <class Check> bool guard(Check&& check)
    {
        try {
            check();
            return true;
        } catch (const ConfigError& e) {
            add(e.what());
            return false;
        }
    }

    // Takes over `other`'s problems, `suffix` appended to each.
    void merge(const Problems& other, const std::string& suffix);
    bool empty() const { return lines_.empty(); }
    // ConfigError with every problem, a line each, prefixed with "origin: ".
    void raise_if_any(const std::string& origin) const;

private:
    std::vector<std::string> lines_;
};

class Object
{
public:
    // `v` not an object: recorded as "path: must be an object"; every member then reads as absent.
    Object(const Json::Value& v, std::string path, Problems& problems);

    std::string member_path(const std::string& name) const { return path_.empty() ? name : path_ + "." + name; }

    // The member `name` in any case, or nullptr if absent or null.
    const Json::Value* get(const char* name);
    // Strings; whole numbers are taken as their decimal text ("port": 2224).
    std::string str(const char* name, std::string def = {});
    // Whole numbers in [min, max], as numbers or as strings of digits (Go format).
    unsigned num(const char* name, unsigned def, unsigned min, unsigned max);
    // Booleans, also as "true"/"false"/"yes"/"no"/"on"/"off"/"1"/"0".
    bool boolean(const char* name, bool def);
    // A list of strings; a single string is a list of one.
    std::vector<std::string> list(const char* name);
    // Records the members no get() asked for.
    void finish() const;

private:
    template <class T, class Read> T field(T def, Read&& read)
    {
        T out = def;
        problems_.guard([&] { out = read(); });
        return out;
    }
    std::string str_or_throw(const char* name, const std::string& def);
    unsigned num_or_throw(const char* name, unsigned def, unsigned min, unsigned max);
    bool boolean_or_throw(const char* name, bool def);
    std::vector<std::string> list_or_throw(const char* name);

    const Json::Value& v_;
    std::string path_;
    Problems& problems_;
    std::vector<std::string> asked_;
    std::set<std::string> matched_;
};

// The key of `known` closest to `unknown` (edit distance, case ignored),
// or "" when none is close enough to be a typo of it.
std::string nearest_key(std::string_view unknown, const std::vector<std::string>& known);

// Parses strict JSON whose top level is an object; `origin` names the file.
Json::Value parse_json_object(std::string_view text, const std::string& origin);

} // namespace sockmapd
