#include "bsdiff_zero_runs.h"

#include <algorithm>

#include "absl/status/status.h"
#include "d4c/base/varint.h"

namespace d4c::codec_internal {

namespace {

absl::Status Bad(const char* what) { return absl::DataLossError(std::string("bsdiff patch: zero runs: ") + what); }

}  // namespace

ZeroRuns SplitZeroRuns(std::string_view diff) {
  ZeroRuns out;
  size_t i = 0;
  while (i < diff.size()) {
    size_t z = i;
    while (z < diff.size() && diff[z] == 0) ++z;
    size_t l = z;
    while (l < diff.size() && diff[l] != 0) ++l;
    PutVarint(&out.runs, z - i);
    PutVarint(&out.runs, l - z);
    out.literals.append(diff.substr(z, l - z));
    i = l;
  }
  return out;
}

uint64_t MaxRunsSize(uint64_t size) {
  // Every pair but the last covers a zero and a literal byte; a pair is two
  // varints of at most VarintLen(size) bytes.
  return (size / 2 + 2) * 2 * VarintLen(size);
}

absl::StatusOr<uint64_t> ZeroRunsLength(std::string_view runs, std::string_view literals, uint64_t max_size) {
  uint64_t total = 0, lit = 0;
  size_t pos = 0;
  while (pos < runs.size()) {
    uint64_t zeros, n;
    if (!GetVarint(runs, &pos, &zeros) || !GetVarint(runs, &pos, &n)) return Bad("truncated or overlong varint");
    if (zeros == 0 && n == 0) return Bad("empty pair");
    if (zeros > max_size - total) return Bad("longer than the target");
    total += zeros;
    if (n > max_size - total || n > literals.size() - lit) return Bad("more literals than there are");
    total += n;
    lit += n;
  }
  if (lit != literals.size()) return Bad("unused literals");
  return total;
}

ZeroRunsReader::Piece ZeroRunsReader::Next(uint64_t max) {
  while (zeros_ == 0 && lits_ == 0) {
    if (pos_ >= runs_.size() || !GetVarint(runs_, &pos_, &zeros_) || !GetVarint(runs_, &pos_, &lits_) ||
        lits_ > literals_.size() - lit_) {
      zeros_ = lits_ = 0;
      return {nullptr, 0};
    }
  }
  if (zeros_ > 0) {
    uint64_t n = std::min(max, zeros_);
    zeros_ -= n;
    return {nullptr, n};
  }
  uint64_t n = std::min(max, lits_);
  Piece p{literals_.data() + lit_, n};
  lits_ -= n;
  lit_ += n;
  return p;
}

absl::StatusOr<std::string> JoinZeroRuns(std::string_view runs, std::string_view literals, uint64_t max_size) {
  std::string out;
  size_t pos = 0, lit = 0;
  while (pos < runs.size()) {
    uint64_t zeros, n;
    if (!GetVarint(runs, &pos, &zeros) || !GetVarint(runs, &pos, &n)) return Bad("truncated or overlong varint");
    if (zeros == 0 && n == 0) return Bad("empty pair");
    if (zeros > max_size - out.size()) return Bad("longer than the target");
    out.append(zeros, '\0');
    if (n > max_size - out.size() || n > literals.size() - lit) return Bad("more literals than there are");
    out.append(literals.substr(lit, n));
    lit += n;
  }
  if (lit != literals.size()) return Bad("unused literals");
  return out;
}

}  // namespace d4c::codec_internal
