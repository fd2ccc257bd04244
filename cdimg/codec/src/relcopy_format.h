// The instruction stream of the relcopy codec (docs/format.md, "relcopy").
//
// Copy/add instructions whose copy sources are stored relative to where recent
// copies ended, never as absolute offsets, and with no entropy coding of their
// own: two files that received the same edit (the same source change bundled
// into several JavaScript files, say) get byte-identical instruction runs, so
// the zstd frame of a cdimg pack stores that edit once. VCDIFF, bsdiff's
// control stream and zstd patches all hide such repeats (absolute addresses,
// per-patch entropy coding).
//
// Raw stream, repeated until the output has target_size bytes:
//   varint op       copy_len << 1 | has_literals
//   [varint n, n literal bytes]               if has_literals (n >= 1)
//   [varint addr]                             if copy_len > 0:
//       addr = zigzag(src - slot[s]) << 2 | s; copy base[src, src + copy_len)
//       then the slots shift down (slot[3] is dropped) and slot[0] = src + copy_len
// The four slots start at 0. An op with neither literals nor a copy is invalid.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "d4c/base/varint.h"

namespace d4c::codec_internal::relcopy {

inline constexpr int kSlots = 4;
inline constexpr int kSlotBits = 2;

using codec_internal::PutVarint;
using codec_internal::VarintLen;
inline uint64_t ZigZag(int64_t d) { return (static_cast<uint64_t>(d) << 1) ^ static_cast<uint64_t>(d >> 63); }

// The slot cache shared by writer and reader.
class Slots {
 public:
  uint64_t at(int s) const { return slot_[s]; }
  void Push(uint64_t end) {
    for (int s = kSlots - 1; s > 0; --s) slot_[s] = slot_[s - 1];
    slot_[0] = end;
  }
  // The slot giving the shortest address for `src`, and that address.
  uint64_t Address(uint64_t src, int* slot) const;

 private:
  std::array<uint64_t, kSlots> slot_{};
};

// Appends instructions to a raw stream.
class Writer {
 public:
  explicit Writer(std::string* out) : out_(*out) {}
  // Literals (may be empty) then a copy of `len` bytes at `src` (len may be 0
  // only if literals is not empty).
  void Op(std::string_view literals, uint64_t src, uint64_t len);
  const Slots& slots() const { return slots_; }

 private:
  std::string& out_;
  Slots slots_;
};

// Bytes of the raw stream that encodes `literals` alone.
inline uint64_t LiteralOnlySize(uint64_t n) { return n == 0 ? 0 : VarintLen(1) + VarintLen(n) + n; }

// Runs a raw stream against `base`, writing `target` bytes to `out`, or with
// `out` null only checks it (so that a decoder allocates nothing before the
// stream has proven that it makes exactly `target` bytes). Every length and
// address is checked; the stream must end exactly when the output is full.
absl::Status Apply(std::string_view base, std::string_view raw, uint64_t target, char* out);

}  // namespace d4c::codec_internal::relcopy
