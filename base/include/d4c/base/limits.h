// Size limits shared by every component that reads OCI documents.
#pragma once

#include <cstdint>

namespace d4c {

// Largest index.json / manifest / manifest.json / catalog we accept, whether
// from an OCI layout, a docker archive or a registry (they are small; a huge
// one is an attack or a mistake).
inline constexpr uint64_t kMaxManifestBytes = 4ull << 20;

}  // namespace d4c
