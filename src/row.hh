// row — one row of a statement's result, as the lookup reads it.
//
// The type of the seam between a map's logic (statement, dblookup) and
// whatever runs its statement: the driver (mariadb) fills it, the lookup
// reads it, and neither needs the other's headers for it.
#pragma once

#include <string_view>
#include <vector>

namespace sockmapd
{

struct Column {
    bool null = true;
    bool too_long = false; // longer than the cap the statement ran with; data empty
    std::string_view data; // valid only while the row is being read
};

using Row = std::vector<Column>;

} // namespace sockmapd
