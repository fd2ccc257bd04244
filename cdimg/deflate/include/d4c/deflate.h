// Deflate streams rebuilt bit for bit: the compressors whose output a
// compressed-content-aware delta may record as a recipe (docs/format.md).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace d4c::deflate {

// The raw deflate stream (RFC 1951: what lies between a gzip member's header
// and its trailer) that GNU gzip writes for `raw` at compression `level`
// (1..9), e.g. `gzip -9n` as Debian's packaging runs it. Our own
// implementation of gzip's algorithm (lazy matching, its block-splitting
// heuristic and buffer sizes), not zlib's: zlib drops that heuristic and
// reproduces only part of the files gzip made. Deterministic, bounded memory
// (a fixed ~300 KiB state plus the output), any input.
absl::StatusOr<std::string> GnuGzip(std::string_view raw, int level);

}  // namespace d4c::deflate

namespace d4c::deflate {

// Inflated sizes the library handles at most (a compressed-content-aware
// delta refuses larger files): bounds the memory a hostile patch can claim.
inline constexpr uint64_t kMaxRaw = uint64_t{1} << 30;
// Deflate expands at most ~1032:1: an inflated size above this for `n`
// compressed bytes cannot be real.
inline constexpr uint64_t MaxInflated(uint64_t n) { return n * 1032 + 1024; }

// A gzip file of exactly one member (RFC 1952) with the deflate method,
// split into its parts. `header` runs from the magic to the end of the
// optional fields (FEXTRA, FNAME, FCOMMENT, FHCRC); `stream` is the raw
// deflate stream; the 8-byte trailer (CRC-32, ISIZE) ends the file.
struct GzipFile {
  std::string_view header;
  std::string_view stream;
  std::string raw;  // the inflated content
};

// Whether `data` starts like a gzip member with the deflate method
// (1f 8b 08): a cheap test before SplitGzip.
bool LooksGzip(std::string_view data);
// The header's length, or InvalidArgument when `data` is not a gzip member
// (magic, method 8, reserved flag bits 0, optional fields inside `data`).
absl::StatusOr<size_t> GzipHeaderLength(std::string_view data);
// Splits and inflates a single-member gzip file whose inflated content is at
// most `max_raw` bytes. InvalidArgument if it is not one (bad header, bad
// stream, a CRC-32 or ISIZE that does not match, bytes after the trailer),
// ResourceExhausted when it inflates to more than `max_raw`.
absl::StatusOr<GzipFile> SplitGzip(std::string_view data, uint64_t max_raw);

// Inflates the raw deflate stream `stream`, which must end exactly at its
// end and produce exactly `raw_size` bytes (nothing more is allocated).
absl::StatusOr<std::string> InflateExact(std::string_view stream, uint64_t raw_size);

// zlib's deflate parameters: a recipe that rebuilds a stream zlib made.
// windowBits is always 15 (raw stream), strategy Z_DEFAULT_STRATEGY.
struct ZlibParams {
  int level = 6;      // 1..9
  int mem_level = 8;  // 1..9
};
// The raw deflate stream zlib makes of `raw`; ResourceExhausted as soon as it
// would exceed `max_out` bytes.
absl::StatusOr<std::string> Zlib(std::string_view raw, ZlibParams p, uint64_t max_out);
// Whether Zlib(raw, p) is exactly `stream`. Compares as it compresses and
// stops at the first differing output chunk, so a wrong guess costs little.
bool ZlibReproduces(std::string_view raw, ZlibParams p, std::string_view stream);

// The CRC-32 of RFC 1952 (zlib's crc32).
uint32_t Crc32(std::string_view data);

// A deflated member of a zip archive (jar, whl, apk, ...): where its deflate
// stream lies in the file and the inflated size its central directory entry
// records (APPNOTE.TXT 4.3.12).
struct ZipMember {
  uint64_t offset = 0;  // of the deflate stream
  uint64_t stored = 0;  // its length
  uint64_t raw = 0;     // the inflated size
};
// Whether `data` starts like a zip archive (a local file header, "PK\3\4").
bool LooksZip(std::string_view data);
// The deflated members (method 8) of a zip archive, in file order, found
// through its central directory: the end record whose comment reaches the
// end of the file, every entry's local header checked. Members that are
// encrypted, zip64 or stored, and one overlapping the member before it, are
// not listed. InvalidArgument when `data` is not a zip archive of that shape
// (zip64 archives, a self-extracting stub before the first header).
absl::StatusOr<std::vector<ZipMember>> DeflatedZipMembers(std::string_view data);
// A member ExpandZip inflated, and where its content starts in the result.
struct ExpandedZipMember {
  ZipMember member;
  uint64_t at = 0;
};
// The archive with every listed member's deflate stream replaced by its
// inflated content (a member that does not inflate to exactly its recorded
// size stays as it is): what a compressed-content-aware delta diffs. A pure
// function of `data`; ResourceExhausted above `max_size` bytes. With
// `expanded`: the members inflated, in file order.
absl::StatusOr<std::string> ExpandZip(std::string_view data, uint64_t max_size,
                                      std::vector<ExpandedZipMember>* expanded = nullptr);

}  // namespace d4c::deflate
