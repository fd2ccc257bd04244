// liblzma's allocations through AllocateMaybeHuge (d4c/base/memory.h): the
// encoder's match-finder tables (~6 bytes per byte of dictionary, fresh for
// every patch) and a decoder's dictionary then fault in per 2 MiB huge page
// instead of per 4 KiB page. On prettier 3.5.3 -> 3.6.0 they were half of a
// diff's page faults (perf record -e page-faults), and a fault costs ~25 us
// on the reference VM.
#pragma once

#include <lzma.h>

namespace d4c::codec_internal {

// Static; thread-safe (it keeps no state).
const lzma_allocator* LzmaAllocator();

}  // namespace d4c::codec_internal
