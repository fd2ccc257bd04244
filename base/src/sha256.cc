// sha256 from nettle, not OpenSSL: libcrypto is the biggest shared object a
// process of ours would load (98 pages of relocated data, each a page fault
// at every start; with libssl ~145 faults, ~4 ms of a ctr-cli command on the
// reference VM, docs/architecture.md "Start-up"), and after this and gRPC
// without TLS (grpc++_unsecure) nothing else of ours needs it. nettle runs
// SHA-NI too: 1.54 GB/s against OpenSSL's 1.74 GB/s on 64 MiB, ~79 ns for
// 64 bytes (test/bench/sha256_bench; docs/benchmarks.md, "2026-12-06"). TLS stays with
// libcurl, loaded when a registry is first contacted, and its OpenSSL.
#include "d4c/base/sha256.h"

#include <fcntl.h>
#include <nettle/sha2.h>
#include <unistd.h>

#include <cerrno>

#include "d4c/base/io.h"

namespace d4c {

namespace {
sha256_ctx* Ctx(unsigned char* p) { return reinterpret_cast<sha256_ctx*>(p); }
}  // namespace

Sha256Hasher::Sha256Hasher() {
  static_assert(sizeof(sha256_ctx) <= sizeof(ctx_) && alignof(sha256_ctx) <= 8, "sha256_ctx does not fit Sha256Hasher");
  sha256_init(Ctx(ctx_));
}

Sha256Hasher::~Sha256Hasher() = default;

void Sha256Hasher::Update(std::string_view bytes) {
  sha256_update(Ctx(ctx_), bytes.size(), reinterpret_cast<const uint8_t*>(bytes.data()));
}

Digest Sha256Hasher::Finish() {
  Digest d;
  sha256_digest(Ctx(ctx_), SHA256_DIGEST_SIZE, d.data());
  return d;
}

Digest Sha256(std::string_view bytes) {
  Sha256Hasher h;
  h.Update(bytes);
  return h.Finish();
}

absl::StatusOr<Digest> Sha256OfFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open", path);
  Sha256Hasher hasher;
  std::string buf(1 << 20, '\0');
  for (;;) {
    ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status st = ErrnoStatus(errno, "read", path);
      close(fd);
      return st;
    }
    if (n == 0) break;
    hasher.Update(std::string_view(buf.data(), static_cast<size_t>(n)));
  }
  close(fd);
  return hasher.Finish();
}

const Digest& EmptyDigest() {
  static const Digest d = Sha256("");
  return d;
}

}  // namespace d4c
