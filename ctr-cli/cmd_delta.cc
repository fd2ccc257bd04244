#include "commands.h"

namespace d4c::cli {

// diff / patch / merge are added with the delta engine.
void RegisterDelta(CLI::App&) {}

}  // namespace d4c::cli
