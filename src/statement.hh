// statement — what a map sends to the database and how rows become an
// answer; pure code, no I/O.
//
// plan_map() turns a map into a StatementPlan: the SQL (a SELECT built
// from validated, back-quoted identifiers, or the map's `query` template
// compiled by compile_query()), the key parts to bind for its '?'s, and the
// compiled result_format.  It is the one check of a map's identifiers,
// template and format: the loader calls it once per map and keeps the plan
// with the map (CompiledMap); nothing compiles a map again.  bind_values()
// picks the key parts out of one key.  ResultJoiner turns rows into the answer.  read_escape() is
// the only reader of '%' escapes: query templates, result_format and the
// config check all go through it.  Template problems throw ConfigError;
// the messages of compile_query() and ResultFormat are the bare reason,
// callers add the map or key path.
#pragma once

#include "errors.hh" // ConfigError
#include "lookup.hh"
#include "mapconfig.hh"
#include "mapkey.hh" // Candidate
#include "row.hh"
#include "socketmap.hh"
#include "util.hh" // FunctionRef

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sockmapd
{

// A part of the key bound as one statement parameter.
enum class KeyPart {
    Whole,  // %s, and the key column of table maps
    Local,  // %u: before the last '@'
    Domain, // %d: after the last '@'
};

// At t[i] == '%': moves `i` past the escape and returns its letter ('%'
// for "%%").  Throws ConfigError for a lone '%' at the end or a letter not
// in `allowed`.
char read_escape(std::string_view t, std::size_t& i, std::string_view allowed);

struct CompiledQuery {
    std::string sql;             // the template with each escape replaced by '?'
    std::vector<KeyPart> params; // in the order of the '?'s
};

// %s %u %d become '?'; %% becomes '%'.  Inside a quoted string the escapes
// are kept as parameters too ('%s' becomes ?, 'x%uy' becomes
// CONCAT('x', ?, 'y')) so Postfix-style templates work unchanged.  Refused
// (ConfigError): unknown or lone '%', an escape inside a comment, a
// back-quoted identifier, a prefixed string (_utf8mb4'%s', X'%s') or right
// after a backslash, an unterminated string or comment, a '?' of its own,
// no escape at all.
CompiledQuery compile_query(std::string_view tmpl);

// result_format compiled: %s is the value, %% a percent sign.
class ResultFormat
{
public:
    ResultFormat() = default; // the value as is
    // Throws ConfigError for a lone '%' or an escape other than %s and %%.
    ResultFormat(std::string_view format);
    void append(std::string& out, std::string_view value) const;

private:
    std::vector<std::string> pieces_; // the text around each %s; empty: the value alone
};

// What a map's lookup sends to the database.
struct StatementPlan {
    std::string sql;
    std::vector<KeyPart> params; // one per '?', in order
    bool has_reason = false;     // the second column, if any, is the reason
    bool existence = false;      // no value column: answer the stored key
    bool query = false;          // from a `query` template: one or two columns
    ResultFormat format;
};

// The one rule for SQL identifiers taken from the config (database, table
// and column names): ASCII letters, digits, '_' and '$', 1 to 64 bytes;
// identifier_rule says it in messages.
bool identifier_char(char c);
bool valid_identifier(std::string_view s);
inline constexpr std::string_view identifier_rule = "letters, digits, _ and $, at most 64";

// `name` back-quoted for SQL (backticks doubled).
std::string quote_identifier(std::string_view name);

// One problem of a map's definition: the field ("table", "query",
// "result_format") and what is wrong with it.
using MapProblem = FunctionRef<void(std::string_view field, const std::string& what)>;

// SELECT `value`[, `reason`] FROM `db`.`table` WHERE `key` = ?
// (the key column instead of value for existence maps), or the map's
// `query` compiled.  Every problem (a missing or invalid identifier, query
// beside table/key/value/reason, a bad template or result_format) goes to
// `problem`; nullopt when there was one.
std::optional<StatementPlan> plan_map(const MapConfig& map, MapProblem problem);

// plan_map() for one map alone: throws ConfigError("postmaps \"NAME\":
// FIELD: WHAT") for its first problem.
StatementPlan build_statement(const MapConfig& map);

// A map as the lookups use it: the configured map and its plan, compiled
// once, when the configuration is loaded.
struct CompiledMap : MapConfig {
    StatementPlan plan;
};

// `map` with build_statement(map); throws ConfigError.
CompiledMap compile_map(const MapConfig& map);

// The map named `service`; nullptr when none is.
const CompiledMap* find_map(const std::vector<CompiledMap>& maps, std::string_view service);

// --check-config's question for an exact table map: does the table hold a
// key without a local part (a domain, "@domain", "user@")?  Postfix asks a
// socketmap for the full address only and never finds such rows unless the
// map has a search order.  A statement without parameters that returns a
// row when it does; its scan is cut off by max_statement_time.  nullopt
// where it cannot tell: query maps (which column is the key?) and maps
// with a search order.
std::optional<std::string> domain_rows_probe(const MapConfig& map);

// The parameter values for one lookup (views into `key`) in `out`; false:
// the key cannot match without asking, because the statement needs %u or
// %d and the key has no '@', or the part it needs is empty ("@domain" for
// %u, "user@" for %d), as Postfix suppresses such queries.
bool bind_values(const StatementPlan& plan, const Candidate& key, std::vector<std::string_view>& out);
// The same, into a vector of its own; nullopt: false above.
std::optional<std::vector<std::string_view>> bind_values(const StatementPlan& plan, std::string_view key);

// Which values an answer takes: every row's, or only the first (an
// existence map answers the key as stored, once).
enum class Join { All, FirstOnly };

// Collects rows into an answer: non-NULL, non-empty values, each through
// `format`, joined with ',' (only the first with Join::FirstOnly), then
// " <reason>" from the first row with a non-empty reason.  add() returns
// false once the answer cannot fit in `limit` (finish() is then PermFail).
class ResultJoiner
{
public:
    // `format` (nullptr: values as they are) must outlive the joiner.
    explicit ResultJoiner(Join join = Join::All, std::size_t limit = max_value_length,
                          const ResultFormat* format = nullptr);
    // As `plan` says (existence maps take the first value; its format);
    // `plan` must outlive the joiner.
    explicit ResultJoiner(const StatementPlan& plan, std::size_t limit = max_value_length);
    bool add(const Column& value, const Column* reason);
    LookupResult finish() const;

private:
    Join join_;
    std::size_t limit_;
    const ResultFormat* format_;
    std::string joined_;
    std::string reason_;
    bool have_reason_ = false;
    bool too_long_ = false;
};

} // namespace sockmapd
