// OpenSSL's SHA256_Init/Update/Final, deprecated since OpenSSL 3.0 in favour
// of EVP, on purpose: the first EVP digest of a process loads openssl.cnf and
// activates the default provider, ~1 ms of every short ctr-cli command
// (docs/architecture.md "Start-up"), and each EVP call costs ~370 ns against
// ~90 ns here for a 64-byte input. Both run the same SHA-NI/AVX2 code on large
// inputs (1.5 GB/s on the bench machine). TLS, the only other OpenSSL user,
// still goes through EVP and the configuration (libcurl, gRPC).
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include "d4c/base/sha256.h"

#include <fcntl.h>
#include <openssl/sha.h>
#include <unistd.h>

#include <cerrno>

#include "d4c/base/io.h"

namespace d4c {

namespace {
SHA256_CTX* Ctx(unsigned char* p) { return reinterpret_cast<SHA256_CTX*>(p); }
}  // namespace

Sha256Hasher::Sha256Hasher() {
  static_assert(sizeof(SHA256_CTX) <= sizeof(ctx_) && alignof(SHA256_CTX) <= 8, "SHA256_CTX does not fit Sha256Hasher");
  SHA256_Init(Ctx(ctx_));
}

Sha256Hasher::~Sha256Hasher() = default;

void Sha256Hasher::Update(std::string_view bytes) { SHA256_Update(Ctx(ctx_), bytes.data(), bytes.size()); }

Digest Sha256Hasher::Finish() {
  Digest d;
  SHA256_Final(d.data(), Ctx(ctx_));
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
