// The relcopy encoder's matcher: a greedy parse (one step of lazy matching)
// over hash chains of the base. At each position it weighs continuing one of
// the recent copy alignments against matches anywhere, by the bytes each
// instruction would cost, so the output is small before any compression.
// Among equally long matches it takes the one with the cheapest address
// (nearest a recent copy): files carrying the same edit then choose the same
// relative sources, which is what lets a pack store the edit once.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace d4c::codec_internal::relcopy {

// The raw instruction stream (relcopy_format.h) that turns `base` into
// `target`; never longer than the literal-only stream. Deterministic. Fails
// only for inputs of 2 GiB or more or when memory runs out. Work is bounded
// like bsdiff's scan: past a budget of byte comparisons the rest of the
// target only continues recent alignments or becomes literals.
absl::StatusOr<std::string> Match(std::string_view base, std::string_view target);

}  // namespace d4c::codec_internal::relcopy
