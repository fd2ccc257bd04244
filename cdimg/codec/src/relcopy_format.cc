#include "relcopy_format.h"

#include <cstring>

#include "d4c/base/strcat.h"

namespace d4c::codec_internal::relcopy {


uint64_t Slots::Address(uint64_t src, int* slot) const {
  uint64_t best = 0;
  int best_len = 0;
  for (int s = 0; s < kSlots; ++s) {
    uint64_t a = ZigZag(static_cast<int64_t>(src - slot_[s])) << kSlotBits | static_cast<uint64_t>(s);
    int len = VarintLen(a);
    if (s == 0 || len < best_len) best = a, best_len = len, *slot = s;
  }
  return best;
}

void Writer::Op(std::string_view literals, uint64_t src, uint64_t len) {
  PutVarint(&out_, len << 1 | (literals.empty() ? 0 : 1));
  if (!literals.empty()) {
    PutVarint(&out_, literals.size());
    out_.append(literals);
  }
  if (len == 0) return;
  int slot = 0;
  PutVarint(&out_, slots_.Address(src, &slot));
  slots_.Push(src + len);
}

using codec_internal::GetVarint;

namespace {

absl::Status Bad(std::string_view what) { return absl::DataLossError(StrCat("relcopy patch: ", what)); }


}  // namespace

absl::Status Apply(std::string_view base, std::string_view raw, uint64_t target, char* out) {
  Slots slots;
  uint64_t pos = 0;
  size_t in = 0;
  while (pos < target) {
    uint64_t op;
    if (!GetVarint(raw, &in, &op)) return Bad("truncated instruction");
    uint64_t len = op >> 1;
    if (op & 1) {
      uint64_t n;
      if (!GetVarint(raw, &in, &n)) return Bad("truncated literal length");
      if (n == 0 || n > target - pos) return Bad("literal run out of bounds");
      if (n > raw.size() - in) return Bad("truncated literals");
      if (out) std::memcpy(out + pos, raw.data() + in, n);
      in += n;
      pos += n;
    } else if (len == 0) {
      return Bad("empty instruction");
    }
    if (len == 0) continue;
    if (len > target - pos) return Bad("copy past the target size");
    uint64_t addr;
    if (!GetVarint(raw, &in, &addr)) return Bad("truncated copy address");
    uint64_t z = addr >> kSlotBits;
    int64_t delta = static_cast<int64_t>(z >> 1) ^ -static_cast<int64_t>(z & 1);
    // Unsigned wrap-around: any source outside [0, base size] ends up above it.
    uint64_t src = slots.at(static_cast<int>(addr & (kSlots - 1))) + static_cast<uint64_t>(delta);
    if (src > base.size() || len > base.size() - src) return Bad("copy source outside the base");
    if (out) std::memcpy(out + pos, base.data() + src, len);
    pos += len;
    slots.Push(src + len);
  }
  if (in != raw.size()) return Bad("bytes after the last instruction");
  return absl::OkStatus();
}

}  // namespace d4c::codec_internal::relcopy
