// bsdiff's diff stream split into zero runs and the bytes between them.
//
// The diff stream (target minus base over each approximate match) is mostly
// zeros: 91% of biome's 27 MB. zstd at level 19 spends most of a big diff
// there and still codes the runs less tightly than their lengths: split into
// a run-length stream and a literal stream, biome 1.9.2->1.9.3's diff section
// shrinks from 2,051,311 to 1,917,619 bytes, and the whole diff of that pair
// from 9.6 to 6.1 s (two ~2 MB frames instead of 27 MB at level 19).
//
// runs: repeated (varint zeros, varint literals); no pair is (0, 0). The
// stream they describe is `zeros` zero bytes, then `literals` bytes taken in
// order from the literal stream.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace d4c::codec_internal {

struct ZeroRuns {
  std::string runs;
  std::string literals;
};

ZeroRuns SplitZeroRuns(std::string_view diff);

// The stream back, which must be at most `max_size` bytes and use up every
// literal; fails on malformed runs.
absl::StatusOr<std::string> JoinZeroRuns(std::string_view runs, std::string_view literals, uint64_t max_size);

// The length of the stream that runs and literals describe, checked as
// JoinZeroRuns checks them, without building it.
absl::StatusOr<uint64_t> ZeroRunsLength(std::string_view runs, std::string_view literals, uint64_t max_size);

// Reads a stream accepted by ZeroRunsLength in order, a piece at a time,
// without building it: the bsdiff decoder copies the base where the diff is
// zero and adds only the literals (biome's 27 MB diff is 91% zeros).
// Not thread-safe; the views must outlive it.
class ZeroRunsReader {
 public:
  ZeroRunsReader(std::string_view runs, std::string_view literals) : runs_(runs), literals_(literals) {}
  // The next piece of at most `max` (> 0) bytes: `data` null for zeros, else
  // the literal bytes. A piece of length 0 means the stream has ended (or,
  // for streams not accepted by ZeroRunsLength, is malformed).
  struct Piece {
    const char* data;
    uint64_t length;
  };
  Piece Next(uint64_t max);

 private:
  std::string_view runs_, literals_;
  size_t pos_ = 0, lit_ = 0;
  uint64_t zeros_ = 0, lits_ = 0;  // left of the current pair
};

// An upper bound on the runs stream of a diff stream of `size` bytes, for
// bounding its decompression.
uint64_t MaxRunsSize(uint64_t size);

}  // namespace d4c::codec_internal
