// sha256 over bytes, streams and files (OpenSSL EVP underneath; the older
// SHA256_* calls are deprecated).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "d4c/base/digest.h"

namespace d4c {

// Incremental sha256. Not thread-safe: one hasher per stream.
//
//   Sha256Hasher h;
//   h.Update(part1);
//   h.Update(part2);
//   Digest d = h.Finish();
class Sha256Hasher {
 public:
  Sha256Hasher();
  ~Sha256Hasher();
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;

  void Update(std::string_view bytes);
  void Update(const void* data, size_t n) { Update(std::string_view(static_cast<const char*>(data), n)); }
  // The digest of everything passed to Update. Call once; the hasher is
  // then spent.
  Digest Finish();

 private:
  // nettle's sha256_ctx (112 bytes), kept opaque so callers need no nettle
  // headers; sha256.cc checks that it fits.
  alignas(8) unsigned char ctx_[128];
};

// sha256 of `bytes` in one call.
Digest Sha256(std::string_view bytes);

// sha256 of the file at `path`, read in 1 MiB pieces. Errors name the path;
// codes follow ErrnoStatus (d4c/base/io.h).
absl::StatusOr<Digest> Sha256OfFile(const std::string& path);

// sha256 of the empty string; the digest of every empty regular file.
const Digest& EmptyDigest();

}  // namespace d4c
