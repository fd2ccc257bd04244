#include "bsdiff_ctrl.h"

#include <algorithm>
#include <cstring>

#include "multi_frame.h"
#include "d4c/base/varint.h"

namespace d4c::codec_internal {

namespace {

constexpr size_t kFixedTripleSize = 24;
constexpr size_t kMaxVarintLen = 10;

absl::Status Bad(const char* what) { return absl::DataLossError(std::string("bsdiff patch: ctrl ") + what); }

uint64_t Zigzag(int64_t v) { return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63); }
int64_t Unzigzag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }


}  // namespace

CtrlColumns SplitCtrl(const std::vector<BsdiffTriple>& triples) {
  CtrlColumns c;
  for (const BsdiffTriple& t : triples) {
    PutVarint(&c.adds, t.add);
    PutVarint(&c.copies, t.copy);
    PutVarint(&c.seeks, Zigzag(t.seek));
  }
  return c;
}

std::string FixedCtrl(const std::vector<BsdiffTriple>& triples) {
  std::string out;
  out.reserve(triples.size() * kFixedTripleSize);
  for (const BsdiffTriple& t : triples) {
    for (uint64_t v : {t.add, t.copy, static_cast<uint64_t>(t.seek)}) PutLE(&out, v, 8);
  }
  return out;
}

absl::Status FrameReader::Init(std::string_view frame) {
  if (frame.empty()) return absl::OkStatus();
  dctx_ = NewZstdDCtx();
  if (!dctx_) return absl::ResourceExhaustedError("ZSTD_createDCtx failed");
  size_t rc = ZSTD_DCtx_setParameter(dctx_.get(), ZSTD_d_windowLogMax, kCtrlWindowLog);
  if (ZSTD_isError(rc)) return ZstdError("bsdiff ctrl windowLogMax", rc);
  in_ = {frame.data(), frame.size(), 0};
  ended_ = false;
  return absl::OkStatus();
}

void FrameReader::InitRaw(std::string_view bytes) {
  raw_ = true;
  in_ = {bytes.data(), bytes.size(), 0};
  ended_ = false;
}

absl::Status FrameReader::Fill(size_t n) {
  if (have_ - pos_ >= n) return absl::OkStatus();
  std::memmove(buf_.data(), buf_.data() + pos_, have_ - pos_);
  have_ -= pos_;
  pos_ = 0;
  if (raw_) {
    size_t k = std::min(buf_.size() - have_, in_.size - in_.pos);
    std::memcpy(buf_.data() + have_, static_cast<const char*>(in_.src) + in_.pos, k);
    in_.pos += k;
    have_ += k;
    ended_ = in_.pos == in_.size;
    return absl::OkStatus();
  }
  while (have_ < buf_.size() && !ended_) {
    ZSTD_outBuffer out{buf_.data(), buf_.size(), have_};
    size_t before_in = in_.pos;
    size_t rc = ZSTD_decompressStream(dctx_.get(), &out, &in_);
    if (ZSTD_isError(rc)) return ZstdError("bsdiff patch: ctrl stream", rc);
    bool progress = out.pos != have_ || in_.pos != before_in;
    have_ = out.pos;
    if (rc == 0) {
      ended_ = true;
      if (in_.pos != in_.size) return Bad("frame followed by other bytes");
    } else if (!progress) {
      return Bad("frame truncated");
    }
  }
  return absl::OkStatus();
}

absl::Status CtrlReader::Init(std::string_view section, bool raw_ok) {
  const bool raw = IsRawParts(section);
  if (raw && !raw_ok) return Bad("section in the raw pack form outside a pack");
  if (!raw && !IsMultiFrame(section)) return fixed_.Init(section);
  columns_ = true;
  auto frames = SplitFrames(section, 3, "ctrl columns");
  if (!frames.ok()) return frames.status();
  for (int i = 0; i < 3; ++i) {
    if ((*frames)[i].empty()) return Bad("empty column");
    if (raw) column_[i].InitRaw((*frames)[i]);
    else if (auto s = column_[i].Init((*frames)[i]); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<BsdiffTriple>> CtrlReader::Next() { return columns_ ? NextColumns() : NextFixed(); }

absl::StatusOr<std::optional<BsdiffTriple>> CtrlReader::NextFixed() {
  if (auto s = fixed_.Fill(kFixedTripleSize); !s.ok()) return s;
  std::string_view b = fixed_.Available();
  if (b.empty()) return std::nullopt;  // Fill only stops short at the frame end
  if (b.size() < kFixedTripleSize) return Bad("partial triple");
  fixed_.Consume(kFixedTripleSize);
  return BsdiffTriple{GetLE(b.data(), 8), GetLE(b.data() + 8, 8), static_cast<int64_t>(GetLE(b.data() + 16, 8))};
}

absl::StatusOr<uint64_t> CtrlReader::NextVarint(FrameReader& column) {
  if (auto s = column.Fill(kMaxVarintLen); !s.ok()) return s;
  std::string_view b = column.Available();
  size_t pos = 0;
  uint64_t v = 0;
  if (!GetVarint(b, &pos, &v)) return Bad("truncated or overlong varint");
  column.Consume(pos);
  return v;
}

absl::StatusOr<std::optional<BsdiffTriple>> CtrlReader::NextColumns() {
  for (FrameReader& c : column_) {
    if (auto s = c.Fill(1); !s.ok()) return s;
  }
  int ended = column_[0].AtEnd() + column_[1].AtEnd() + column_[2].AtEnd();
  if (ended == 3) return std::nullopt;
  if (ended != 0) return Bad("columns of different lengths");
  BsdiffTriple t;
  auto add = NextVarint(column_[0]);
  if (!add.ok()) return add.status();
  auto copy = NextVarint(column_[1]);
  if (!copy.ok()) return copy.status();
  auto seek = NextVarint(column_[2]);
  if (!seek.ok()) return seek.status();
  t.add = *add, t.copy = *copy, t.seek = Unzigzag(*seek);
  return t;
}

}  // namespace d4c::codec_internal
