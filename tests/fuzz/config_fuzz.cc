// libFuzzer target: config parsing never crashes; it either returns a
// config whose maps are usable or throws ConfigError.
#include "config.hh"
#include "statement.hh" // valid_identifier()

#include <cstdint>
#include <cstdlib>
#include <string>

using namespace sockmapd;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::string text(reinterpret_cast<const char*>(data), size);
    try {
        const Config c = parse_config(text, "fuzz");
        if (c.maps.empty() || c.db.hosts.empty())
            std::abort();
        for (const auto& m : c.maps) {
            if (!valid_identifier(m.database))
                std::abort();
            if (m.query.empty() && (!valid_identifier(m.table) || !valid_identifier(m.key)))
                std::abort();
        }
    } catch (const ConfigError&) {
    }
    return 0;
}
