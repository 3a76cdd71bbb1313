#include "statement.hh"

#include "mapkey.hh"

namespace sockmapd
{

namespace
{

// Walks a query template once, copying SQL and turning each escape into a
// '?'.  It knows just enough SQL lexing (strings, back-quoted identifiers,
// comments) to tell where an escape stands.
class QueryCompiler
{
public:
    explicit QueryCompiler(std::string_view tmpl) : t_(tmpl) {}

    CompiledQuery run()
    {
        while (i_ < t_.size()) {
            const char c = t_[i_];
            const char next = i_ + 1 < t_.size() ? t_[i_ + 1] : '\0';
            if (c == '%') {
                add_escape(out_.sql);
            } else if (c == '\'' || c == '"') {
                quoted_string();
            } else if (c == '`') {
                quoted_identifier();
            } else if (c == '#') {
                comment("\n", false);
            } else if (c == '-' && next == '-' &&
                       (i_ + 2 == t_.size() || static_cast<unsigned char>(t_[i_ + 2]) <= 0x20)) {
                comment("\n", false);
            } else if (c == '/' && next == '*') {
                comment("*/", true);
            } else if (c == '?') {
                refuse("has a '?' of its own: write %s, %u or %d where the key goes");
            } else {
                out_.sql += c;
                ++i_;
            }
        }
        if (out_.params.empty())
            refuse("uses none of %s, %u, %d outside comments: it would not depend on the key");
        return std::move(out_);
    }

private:
    [[noreturn]] static void refuse(const std::string& what) { throw ConfigError(what); }

    // At a '%': consumes the escape; nullopt for "%%".
    std::optional<KeyPart> escape()
    {
        switch (read_escape(t_, i_, "sud")) {
        case 's':
            return KeyPart::Whole;
        case 'u':
            return KeyPart::Local;
        case 'd':
            return KeyPart::Domain;
        default:
            return std::nullopt;
        }
    }

    void add_escape(std::string& sql)
    {
        if (const auto part = escape()) {
            sql += '?';
            out_.params.push_back(*part);
        } else {
            sql += '%';
        }
    }

    // Only "%%" may appear where a parameter cannot stand.
    void literal_percent(const char* where, std::string& to)
    {
        if (i_ + 1 < t_.size() && t_[i_ + 1] != '%')
            refuse(std::string("has %") + t_[i_ + 1] + " inside " + where + ", where it cannot be a parameter");
        (void)escape(); // "%%", or a lone '%' at the end (refused there)
        to += '%';
    }

    void comment(std::string_view end, bool must_end)
    {
        while (i_ < t_.size()) {
            if (t_.substr(i_, end.size()) == end) {
                out_.sql += end;
                i_ += end.size();
                return;
            }
            if (t_[i_] == '%') {
                literal_percent("a comment", out_.sql);
                continue;
            }
            out_.sql += t_[i_++];
        }
        if (must_end)
            refuse("has an unterminated /* comment");
    }

    void quoted_identifier()
    {
        out_.sql += t_[i_++];
        while (i_ < t_.size()) {
            const char c = t_[i_];
            if (c == '%') {
                literal_percent("a back-quoted identifier", out_.sql);
                continue;
            }
            out_.sql += c;
            ++i_;
            if (c == '`') {
                if (i_ < t_.size() && t_[i_] == '`') {
                    out_.sql += t_[i_++];
                    continue;
                }
                return;
            }
        }
        refuse("has an unterminated back-quoted identifier");
    }

    // A string literal holding escapes becomes CONCAT of its text pieces
    // (re-quoted with the same quote, copied byte for byte) and parameters:
    // the same string the server would have seen, with the key bound.
    void quoted_string()
    {
        const char q = t_[i_++];
        const bool prefixed = !out_.sql.empty() && identifier_char(out_.sql.back());
        std::vector<std::string> pieces; // "?" or a quoted text piece
        const std::size_t params_before = out_.params.size();
        std::string text;
        auto flush = [&] {
            if (!text.empty())
                pieces.push_back(q + text + q);
            text.clear();
        };
        for (;;) {
            if (i_ >= t_.size())
                refuse("has an unterminated quoted string");
            const char c = t_[i_];
            if (c == '\\') {
                if (i_ + 1 >= t_.size())
                    refuse("has an unterminated quoted string");
                if (t_[i_ + 1] == '%') {
                    // "\%%" is the LIKE escape for a literal '%'; "\%s" would
                    // leave a backslash before a parameter.
                    if (i_ + 2 >= t_.size() || t_[i_ + 2] != '%')
                        refuse("has a backslash right before a % escape inside a quoted string");
                    text += "\\%";
                    i_ += 3;
                    continue;
                }
                text += t_.substr(i_, 2);
                i_ += 2;
            } else if (c == q) {
                if (i_ + 1 < t_.size() && t_[i_ + 1] == q) {
                    text += t_.substr(i_, 2);
                    i_ += 2;
                    continue;
                }
                ++i_;
                break;
            } else if (c == '%') {
                if (const auto part = escape()) {
                    flush();
                    pieces.push_back("?");
                    out_.params.push_back(*part);
                } else {
                    text += '%';
                }
            } else {
                text += c;
                ++i_;
            }
        }
        if (out_.params.size() == params_before) {
            out_.sql += q + text + q;
            return;
        }
        if (prefixed)
            refuse("has % escapes inside a prefixed string such as _utf8mb4'...' or X'...'");
        flush();
        if (pieces.size() == 1) {
            out_.sql += pieces.front();
            return;
        }
        out_.sql += "CONCAT(";
        for (std::size_t k = 0; k < pieces.size(); ++k)
            out_.sql += (k ? ", " : "") + pieces[k];
        out_.sql += ')';
    }

    std::string_view t_;
    std::size_t i_ = 0;
    CompiledQuery out_;
};

} // namespace

char read_escape(std::string_view t, std::size_t& i, std::string_view allowed)
{
    if (i + 1 >= t.size())
        throw ConfigError("ends with a lone '%' (write %% for a percent sign)");
    const char c = t[i + 1];
    if (c != '%' && allowed.find(c) == std::string_view::npos) {
        std::string known;
        for (const char a : allowed)
            known += std::string("%") + a + ", ";
        throw ConfigError(std::string("unknown escape %") + c + " (use " + known + "or %%)");
    }
    i += 2;
    return c;
}

CompiledQuery compile_query(std::string_view tmpl)
{
    return QueryCompiler(tmpl).run();
}

ResultFormat::ResultFormat(std::string_view format)
{
    if (format.empty())
        return;
    std::string piece;
    for (std::size_t i = 0; i < format.size();) {
        if (format[i] != '%') {
            piece += format[i++];
            continue;
        }
        if (read_escape(format, i, "s") == '%') {
            piece += '%';
            continue;
        }
        pieces_.push_back(std::move(piece));
        piece.clear();
    }
    pieces_.push_back(std::move(piece));
}

void ResultFormat::append(std::string& out, std::string_view value) const
{
    if (pieces_.empty()) {
        out += value;
        return;
    }
    out += pieces_.front();
    for (std::size_t k = 1; k < pieces_.size(); ++k) {
        out += value;
        out += pieces_[k];
    }
}

bool identifier_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '$';
}

bool valid_identifier(std::string_view s)
{
    if (s.empty() || s.size() > 64)
        return false;
    for (const char c : s)
        if (!identifier_char(c))
            return false;
    return true;
}

std::string quote_identifier(std::string_view name)
{
    std::string out = "`";
    for (const char c : name) {
        if (c == '`')
            out += '`';
        out += c;
    }
    out += '`';
    return out;
}

std::optional<StatementPlan> plan_map(const MapConfig& map, MapProblem problem)
{
    bool ok = true;
    const auto refuse = [&](std::string_view field, const std::string& what) {
        problem(field, what);
        ok = false;
    };
    const auto identifier = [&](std::string_view field, const std::string& value, bool required) {
        if (value.empty()) {
            if (required)
                refuse(field, "missing (required)");
        } else if (!valid_identifier(value)) {
            refuse(field, "\"" + value + "\" is not a valid identifier (" + std::string(identifier_rule) + ")");
        }
    };
    StatementPlan plan;
    identifier("database", map.database, false);
    if (!map.query.empty()) {
        if (!map.table.empty() || !map.key.empty() || !map.value.empty() || !map.reason.empty())
            refuse("query", "give either query or table/key/value/reason, not both");
        try {
            CompiledQuery q = compile_query(map.query);
            plan.sql = std::move(q.sql);
            plan.params = std::move(q.params);
        } catch (const ConfigError& e) {
            refuse("query", e.what());
        }
        plan.has_reason = true;
        plan.query = true;
    } else {
        identifier("table", map.table, true);
        identifier("key", map.key, true);
        identifier("value", map.value, false);
        identifier("reason", map.reason, false);
    }
    try {
        plan.format = ResultFormat(map.result_format);
    } catch (const ConfigError& e) {
        refuse("result_format", e.what());
    }
    if (!ok)
        return std::nullopt;
    if (plan.query)
        return plan;
    plan.existence = map.value.empty();
    plan.has_reason = !map.reason.empty();
    plan.sql = "SELECT " + quote_identifier(plan.existence ? map.key : map.value);
    if (plan.has_reason)
        plan.sql += ", " + quote_identifier(map.reason);
    plan.sql += " FROM ";
    if (!map.database.empty())
        plan.sql += quote_identifier(map.database) + ".";
    plan.sql += quote_identifier(map.table) + " WHERE " + quote_identifier(map.key) + " = ?";
    plan.params = {KeyPart::Whole};
    return plan;
}

StatementPlan build_statement(const MapConfig& map)
{
    std::optional<std::string> first;
    auto plan = plan_map(map, [&](std::string_view field, const std::string& what) {
        if (!first)
            first = "postmaps \"" + map.service + "\": " + std::string(field) + ": " + what;
    });
    if (!plan)
        throw ConfigError(*first);
    return std::move(*plan);
}

CompiledMap compile_map(const MapConfig& map)
{
    CompiledMap m{map, {}};
    m.plan = build_statement(map);
    return m;
}

const CompiledMap* find_map(const std::vector<CompiledMap>& maps, std::string_view service)
{
    for (const auto& m : maps)
        if (m.service == service)
            return &m;
    return nullptr;
}

std::optional<std::string> domain_rows_probe(const MapConfig& map)
{
    if (map.search != SearchOrder::Exact || !map.query.empty() || !valid_identifier(map.table) ||
        !valid_identifier(map.key) || (!map.database.empty() && !valid_identifier(map.database)))
        return std::nullopt;
    // An address has a character, an '@' and a character; LIMIT 1 ends the
    // scan at the first key that has not.
    std::string sql = "SET STATEMENT max_statement_time = 2 FOR SELECT 1 FROM ";
    if (!map.database.empty())
        sql += quote_identifier(map.database) + ".";
    sql += quote_identifier(map.table) + " WHERE " + quote_identifier(map.key) + " NOT LIKE '_%@_%' LIMIT 1";
    return sql;
}

bool bind_values(const StatementPlan& plan, const Candidate& key, std::vector<std::string_view>& out)
{
    out.clear();
    for (const KeyPart part : plan.params) {
        switch (part) {
        case KeyPart::Whole:
            out.push_back(key.key);
            break;
        case KeyPart::Local:
            if (!key.has_at() || key.at == 0)
                return false;
            out.push_back(key.local());
            break;
        case KeyPart::Domain:
            if (!key.has_at() || key.at + 1 == key.key.size())
                return false;
            out.push_back(key.domain());
            break;
        }
    }
    return true;
}

std::optional<std::vector<std::string_view>> bind_values(const StatementPlan& plan, std::string_view key)
{
    std::vector<std::string_view> out;
    if (!bind_values(plan, Candidate(key), out))
        return std::nullopt;
    return out;
}

ResultJoiner::ResultJoiner(Join join, std::size_t limit, const ResultFormat* format)
    : join_(join), limit_(limit), format_(format)
{
}

ResultJoiner::ResultJoiner(const StatementPlan& plan, std::size_t limit)
    : ResultJoiner(plan.existence ? Join::FirstOnly : Join::All, limit, &plan.format)
{
}

bool ResultJoiner::add(const Column& value, const Column* reason)
{
    if (too_long_)
        return false;
    if (value.too_long) {
        too_long_ = true;
        return false;
    }
    // A row without a value contributes nothing, its reason included.
    if (value.null || value.data.empty() || (join_ == Join::FirstOnly && !joined_.empty()))
        return true;
    if (!joined_.empty())
        joined_ += ',';
    if (format_)
        format_->append(joined_, value.data);
    else
        joined_ += value.data;
    if (!have_reason_ && reason && !reason->null && (reason->too_long || !reason->data.empty())) {
        if (reason->too_long) {
            too_long_ = true;
            return false;
        }
        reason_ = reason->data;
        have_reason_ = true;
    }
    if (joined_.size() + (have_reason_ ? 1 + reason_.size() : 0) > limit_) {
        too_long_ = true;
        joined_.clear();
        return false;
    }
    return true;
}

LookupResult ResultJoiner::finish() const
{
    if (too_long_)
        return result_too_long();
    if (joined_.empty())
        return {Outcome::NotFound, {}};
    return {Outcome::Found, have_reason_ ? joined_ + " " + reason_ : joined_};
}

} // namespace sockmapd
