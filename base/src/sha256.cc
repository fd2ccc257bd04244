#include "d4c/base/sha256.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>

#include "d4c/base/io.h"

namespace d4c {

namespace {
EVP_MD_CTX* Ctx(void* p) { return static_cast<EVP_MD_CTX*>(p); }
}  // namespace

Sha256Hasher::Sha256Hasher() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(Ctx(ctx_), EVP_sha256(), nullptr); }

Sha256Hasher::~Sha256Hasher() { EVP_MD_CTX_free(Ctx(ctx_)); }

void Sha256Hasher::Update(std::string_view bytes) { EVP_DigestUpdate(Ctx(ctx_), bytes.data(), bytes.size()); }

Digest Sha256Hasher::Finish() {
  Digest d;
  unsigned int n = 0;
  EVP_DigestFinal_ex(Ctx(ctx_), d.data(), &n);
  return d;
}

Digest Sha256(std::string_view bytes) {
  Digest d;
  unsigned int n = 0;
  EVP_Digest(bytes.data(), bytes.size(), d.data(), &n, EVP_sha256(), nullptr);
  return d;
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
