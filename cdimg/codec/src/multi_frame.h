// A patch section that holds several zstd frames (bsdiff's ctrl columns and
// its zero runs + literals): byte kMultiFrameForm, the varint byte lengths of
// every frame but the last, then the frames. The form byte is never the first
// byte of a zstd frame (its magic starts with 0x28), so readers tell such a
// section from one written as a single frame. A section whose frames are all
// empty is written as nothing at all.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "d4c/base/varint.h"
#include "d4c/base/strcat.h"

namespace d4c::codec_internal {

inline constexpr char kMultiFrameForm = 0x01;
// The same layout with the parts stored as they are, uncompressed: bsdiff's
// raw pack form (bsdiff_codec.h), whose sections the pack's frame compresses
// together with other members'. Not 0x02/0x03 (alt_section.h) nor 0x28.
inline constexpr char kRawPartsForm = 0x04;

inline bool IsMultiFrame(std::string_view section) { return !section.empty() && section[0] == kMultiFrameForm; }

inline bool IsRawParts(std::string_view section) { return !section.empty() && section[0] == kRawPartsForm; }

inline std::string JoinFrames(std::initializer_list<std::string_view> frames, char form = kMultiFrameForm) {
  std::string out;
  bool all_empty = true;
  for (std::string_view f : frames) all_empty = all_empty && f.empty();
  if (all_empty) return out;
  out.push_back(form);
  for (auto f = frames.begin(); f + 1 < frames.end(); ++f) PutVarint(&out, f->size());
  for (std::string_view f : frames) out += f;
  return out;
}

// The n frames of a section for which IsMultiFrame holds (or the n parts of
// one for which IsRawParts holds); `what` names the section in errors.
inline absl::StatusOr<std::vector<std::string_view>> SplitFrames(std::string_view section, size_t n,
                                                                  std::string_view what) {
  size_t pos = 1;
  std::vector<uint64_t> lengths(n - 1);
  for (uint64_t& len : lengths) {
    if (!GetVarint(section, &pos, &len)) return absl::DataLossError(StrCat("bsdiff patch: bad ", what, " lengths"));
  }
  std::vector<std::string_view> frames;
  for (uint64_t len : lengths) {
    if (len > section.size() - pos) return absl::DataLossError(StrCat("bsdiff patch: ", what, " truncated"));
    frames.push_back(section.substr(pos, len));
    pos += len;
  }
  frames.push_back(section.substr(pos));
  return frames;
}

}  // namespace d4c::codec_internal
