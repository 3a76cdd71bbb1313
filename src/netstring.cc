#include "netstring.hh"

#include <algorithm>
#include <charconv>

namespace sockmapd
{

const char* describe(NetstringError e)
{
    switch (e) {
    case NetstringError::None:
        return "no error";
    case NetstringError::EmptyLength:
        return "netstring without length";
    case NetstringError::BadLength:
        return "netstring length is not a number";
    case NetstringError::LeadingZero:
        return "netstring length with leading zero";
    case NetstringError::TooLong:
        return "netstring length over limit";
    case NetstringError::MissingComma:
        return "netstring without terminating comma";
    case NetstringError::Truncated:
        return "end of input inside netstring";
    }
    return "netstring error";
}

void netstring_append(std::string& out, std::string_view payload)
{
    char digits[24];
    const auto res = std::to_chars(digits, digits + sizeof digits, payload.size());
    out.append(digits, res.ptr);
    out.push_back(':');
    out.append(payload);
    out.push_back(',');
}

NetstringDecoder::Status NetstringDecoder::fail(NetstringError e)
{
    state_ = State::Failed;
    error_ = e;
    payload_ = {};
    return Status::Error;
}

NetstringDecoder::Status NetstringDecoder::next_frame()
{
    state_ = State::Length;
    length_ = 0;
    digits_ = 0;
    return Status::Frame;
}

NetstringDecoder::Status NetstringDecoder::feed(std::string_view& in)
{
    payload_ = {};
    while (!in.empty()) {
        switch (state_) {
        case State::Failed:
            return Status::Error;
        case State::Length: {
            const char c = in.front();
            in.remove_prefix(1);
            if (c == ':') {
                if (digits_ == 0)
                    return fail(NetstringError::EmptyLength);
                state_ = State::Payload;
                buffer_.clear();
                break;
            }
            if (c < '0' || c > '9')
                return fail(NetstringError::BadLength);
            if (digits_ == 1 && length_ == 0)
                return fail(NetstringError::LeadingZero);
            length_ = length_ * 10 + static_cast<std::size_t>(c - '0');
            ++digits_;
            // Checked per digit: length_ never exceeds limit_ * 10 + 9.
            if (length_ > limit_)
                return fail(NetstringError::TooLong);
            break;
        }
        case State::Payload: {
            const std::size_t want = length_ - buffer_.size();
            if (buffer_.empty() && in.size() > want) {
                // The payload and the byte after it came in one read: no copy.
                if (in[want] != ',')
                    return fail(NetstringError::MissingComma);
                payload_ = in.substr(0, want);
                in.remove_prefix(want + 1);
                return next_frame();
            }
            const std::size_t take = std::min(want, in.size());
            buffer_.append(in.substr(0, take));
            in.remove_prefix(take);
            if (buffer_.size() == length_)
                state_ = State::Comma;
            break;
        }
        case State::Comma: {
            const char c = in.front();
            in.remove_prefix(1);
            if (c != ',')
                return fail(NetstringError::MissingComma);
            payload_ = buffer_;
            return next_frame();
        }
        }
    }
    return state_ == State::Failed ? Status::Error : Status::NeedMore;
}

} // namespace sockmapd
