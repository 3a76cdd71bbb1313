// netstring — the framing of the socketmap protocol: "<length>:<bytes>,".
//
// Pure code, no I/O.  NetstringDecoder is an incremental parser: feed it
// whatever read() returned and it yields complete frames one at a time,
// holding at most one frame (the length limit the caller gives: the
// protocol's is socketmap.hh's max_request_length) of data; a stream that
// never ends a frame cannot make it grow.  The length parser rejects empty and
// non-digit lengths, leading zeros (other than "0:") and lengths over the
// limit as soon as the offending byte arrives, so it cannot overflow.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace sockmapd
{

enum class NetstringError {
    None,
    EmptyLength,  // ":" with no digits before it
    BadLength,    // a byte other than a digit or ':' in the length
    LeadingZero,  // "01:" and the like
    TooLong,      // length over the limit
    MissingComma, // the byte after the payload is not ','
    Truncated,    // end of input inside a frame
};

// A short text for PERM replies and logs ("netstring length over limit").
const char* describe(NetstringError e);

// Appends "<length>:<payload>," to `out`.
void netstring_append(std::string& out, std::string_view payload);

class NetstringDecoder
{
public:
    enum class Status { NeedMore, Frame, Error };

    // `limit`: the longest payload a frame may carry.
    explicit NetstringDecoder(std::size_t limit) : limit_(limit) {}

    // Consumes bytes from the front of `in`.  Frame: payload() holds the
    // frame until the next call; it may point into `in`'s buffer, so keep
    // that buffer alive until then.  Error: error() says why; the decoder
    // stays in the error state.
    Status feed(std::string_view& in);

    std::string_view payload() const { return payload_; }
    NetstringError error() const { return error_; }
    // Some bytes of a frame have arrived but not the whole frame.
    bool mid_frame() const { return state_ != State::Length || digits_ > 0; }
    // What an end of input means now: None between frames, else Truncated.
    NetstringError at_eof() const { return mid_frame() ? NetstringError::Truncated : NetstringError::None; }

private:
    enum class State { Length, Payload, Comma, Failed };
    Status fail(NetstringError e);
    Status next_frame();

    std::size_t limit_;
    State state_ = State::Length;
    std::size_t length_ = 0;
    std::size_t digits_ = 0;
    std::string buffer_; // payload gathered over several reads
    std::string_view payload_;
    NetstringError error_ = NetstringError::None;
};

} // namespace sockmapd
