#include "mapkey.hh"

#include <algorithm>

namespace sockmapd
{

namespace
{

bool identifier_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '$';
}

bool iequals(std::string_view a, std::string_view b)
{
    return a.size() == b.size() && ascii_lower(a) == ascii_lower(b);
}

// Walks a query template once, copying SQL and turning each escape into a
// '?'.  It knows just enough SQL lexing (strings, back-quoted identifiers,
// comments) to tell where an escape stands.
class QueryCompiler
{
public:
    QueryCompiler(std::string_view tmpl, const std::string& service) : t_(tmpl), service_(service) {}

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
    [[noreturn]] void refuse(const std::string& what) const
    {
        throw ConfigError("postmaps \"" + service_ + "\": query " + what);
    }

    // At a '%': consumes the escape; nullopt for "%%".
    std::optional<KeyPart> escape()
    {
        if (i_ + 1 >= t_.size())
            refuse("ends with a lone '%' (write %% for a percent sign)");
        const char c = t_[i_ + 1];
        i_ += 2;
        switch (c) {
        case '%':
            return std::nullopt;
        case 's':
            return KeyPart::Whole;
        case 'u':
            return KeyPart::Local;
        case 'd':
            return KeyPart::Domain;
        default:
            refuse(std::string("has an unknown escape %") + c + " (use %s, %u, %d or %%)");
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
    const std::string& service_;
    std::size_t i_ = 0;
    CompiledQuery out_;
};

} // namespace

std::optional<Address> split_address(std::string_view key)
{
    const auto at = key.rfind('@');
    if (at == std::string_view::npos)
        return std::nullopt;
    return Address{key.substr(0, at), key.substr(at + 1)};
}

CompiledQuery compile_query(std::string_view tmpl, const std::string& service)
{
    return QueryCompiler(tmpl, service).run();
}

std::string ascii_lower(std::string_view s)
{
    std::string out(s);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z')
            c = static_cast<char>(c - 'A' + 'a');
    return out;
}

std::string fold_key(const MapConfig& map, std::string_view key)
{
    return map.lowercase ? ascii_lower(key) : std::string(key);
}

std::optional<std::string> strip_extension(std::string_view key, std::string_view delimiters)
{
    if (delimiters.empty())
        return std::nullopt;
    const auto at = key.rfind('@');
    const std::string_view local = key.substr(0, at);
    const std::string_view rest = at == std::string_view::npos ? std::string_view() : key.substr(at);
    // Postfix's split_addr() leaves these alone, whatever the delimiter.
    if (iequals(local, "postmaster") || iequals(local, "mailer-daemon"))
        return std::nullopt;
    if (delimiters.find('-') != std::string_view::npos) {
        constexpr std::string_view owner = "owner-", request = "-request";
        if (local.size() >= owner.size() && iequals(local.substr(0, owner.size()), owner))
            return std::nullopt;
        if (local.size() > request.size() && iequals(local.substr(local.size() - request.size()), request))
            return std::nullopt;
    }
    const auto cut = local.find_first_of(delimiters);
    if (cut == std::string_view::npos || cut == 0)
        return std::nullopt;
    return std::string(local.substr(0, cut)) + std::string(rest);
}

std::vector<std::string> key_candidates(const MapConfig& map, std::string_view key)
{
    std::vector<std::string> out{fold_key(map, key)};
    if (auto reduced = strip_extension(out.front(), map.strip_extension))
        out.push_back(std::move(*reduced));
    return out;
}

bool domain_allowed(const MapConfig& map, std::string_view key)
{
    if (map.domains.empty())
        return true;
    const auto addr = split_address(key);
    if (!addr || addr->local.empty() || addr->domain.empty())
        return false;
    return std::find(map.domains.begin(), map.domains.end(), ascii_lower(addr->domain)) != map.domains.end();
}

std::string format_result(std::string_view format, std::string_view value)
{
    if (format.empty())
        return std::string(value);
    std::string out;
    out.reserve(format.size() + value.size());
    for (std::size_t i = 0; i < format.size(); ++i) {
        if (format[i] == '%' && i + 1 < format.size()) {
            if (format[i + 1] == 's') {
                out += value;
                ++i;
                continue;
            }
            if (format[i + 1] == '%') {
                out += '%';
                ++i;
                continue;
            }
        }
        out += format[i];
    }
    return out;
}

} // namespace sockmapd
