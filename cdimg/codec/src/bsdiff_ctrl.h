// bsdiff's control section: the patch's (add, copy, seek) triples.
//
// Columns form (written now): a multi-frame section (multi_frame.h) of three
// zstd frames of LEB128 varints: every triple's add, every copy, every seek
// (zigzag). Values of one kind
// side by side compress better than interleaved fixed-width fields, and the
// raw columns are a quarter of that size, so compressing them is cheap
// (biome 1.9.2 -> 1.9.3, 138,633 triples: 739,898 -> 602,118 bytes, 1.35 ->
// 0.11 CPU s at level 19).
//
// Fixed form (all patches before the columns; still written where smaller):
// one zstd frame of 24-byte triples, each three little-endian u64. It starts
// with zstd's magic, never 0x01.
//
// Raw columns (bsdiff's raw pack form only): a section of kRawPartsForm
// (multi_frame.h) whose three parts are the columns themselves.
//
// No triples: an empty section.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "bsdiff_diff.h"
#include "d4c/base/zstd.h"

namespace d4c::codec_internal {

// The three raw columns of the triples, each to be compressed on its own
// into one zstd frame with a window of at most 2^kCtrlWindowLog bytes (the
// reader caps its windows so, whatever a patch claims); JoinFrames makes the
// section of the three frames.
struct CtrlColumns {
  std::string adds, copies, seeks;
};
inline constexpr int kCtrlWindowLog = 20;

CtrlColumns SplitCtrl(const std::vector<BsdiffTriple>& triples);
// The raw fixed form, to be compressed as one frame like the columns. Patches
// of few triples are smaller in it (one frame header instead of three):
// the encoder tries it up to this many triples.
std::string FixedCtrl(const std::vector<BsdiffTriple>& triples);
inline constexpr size_t kFixedCtrlMaxTriples = 4096;

// Bytes of one zstd frame, decompressed a buffer at a time, so that a hostile
// frame cannot make the reader allocate more than the buffer.
class FrameReader {
 public:
  absl::Status Init(std::string_view frame);
  // Reads `bytes` as they are (a raw column, bsdiff's raw pack form).
  void InitRaw(std::string_view bytes);
  // Makes at least n (<= the buffer) bytes available unless the frame ends first.
  absl::Status Fill(size_t n);
  std::string_view Available() const { return {buf_.data() + pos_, have_ - pos_}; }
  void Consume(size_t n) { pos_ += n; }
  bool AtEnd() const { return ended_ && pos_ == have_; }

 private:
  ZstdDCtxPtr dctx_;
  ZSTD_inBuffer in_{nullptr, 0, 0};
  bool raw_ = false;  // in_ holds the bytes themselves
  std::array<char, 24 * 1024> buf_;
  size_t have_ = 0, pos_ = 0;
  bool ended_ = true;
};

// Streams the triples of a control section of any form; the raw columns
// (kRawPartsForm, bsdiff's raw pack form) only if `raw_ok`.
class CtrlReader {
 public:
  absl::Status Init(std::string_view section, bool raw_ok = false);
  // The next triple, or nullopt once the section ended cleanly.
  absl::StatusOr<std::optional<BsdiffTriple>> Next();

 private:
  absl::StatusOr<std::optional<BsdiffTriple>> NextFixed();
  absl::StatusOr<std::optional<BsdiffTriple>> NextColumns();
  absl::StatusOr<uint64_t> NextVarint(FrameReader& column);

  bool columns_ = false;
  FrameReader fixed_;
  std::array<FrameReader, 3> column_;  // adds, copies, seeks
};

}  // namespace d4c::codec_internal
