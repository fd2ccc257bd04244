// sha256_bench: our sha256 (d4c::Sha256Hasher, nettle's code since
// 2026-12-06) against OpenSSL's on the same bytes in the same run, so the
// choice in base/src/sha256.cc stays measured.
//
//   sha256_bench [FILE] [--reps N]
//
// Without FILE: 64 MiB of pseudo-random bytes. Prints, per implementation,
// the best of N (default 5) rounds over the whole buffer in MB/s and the ns
// per 64-byte input (100,000 inputs, best round); exits non-zero if the two
// digests differ.
#include <openssl/evp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "d4c/base/digest.h"
#include "d4c/base/sha256.h"

namespace {

using Clock = std::chrono::steady_clock;

d4c::Digest Ours(const char* p, size_t n) {
  d4c::Sha256Hasher h;
  h.Update(std::string_view(p, n));
  return h.Finish();
}

d4c::Digest OpenSsl(const char* p, size_t n) {
  d4c::Digest d;
  unsigned int len = 0;
  EVP_Digest(p, n, d.data(), &len, EVP_sha256(), nullptr);
  return d;
}

// Best of `reps` rounds of `f` in seconds.
double Best(int reps, const std::function<void()>& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::string file;
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
    } else if (argv[i][0] == '-') {
      std::fprintf(stderr, "usage: sha256_bench [FILE] [--reps N]\n");
      return 2;
    } else {
      file = argv[i];
    }
  }
  if (reps < 1) reps = 1;
  std::string buf;
  if (file.empty()) {
    buf.resize(64 << 20);
    uint64_t x = 88172645463325252ull;
    for (char& c : buf) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      c = static_cast<char>(x);
    }
  } else {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "sha256_bench: cannot read %s\n", file.c_str());
      return 2;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    buf = ss.str();
  }
  if (buf.size() < 64 + 100000) buf.resize(64 + 100000, 'x');
  d4c::Digest ours = Ours(buf.data(), buf.size()), theirs = OpenSsl(buf.data(), buf.size());
  if (ours != theirs) {
    std::fprintf(stderr, "sha256_bench: digests differ: %s vs %s\n", d4c::DigestString(ours).c_str(),
                 d4c::DigestString(theirs).c_str());
    return 1;
  }
  struct Impl {
    const char* name;
    d4c::Digest (*f)(const char*, size_t);
  };
  std::printf("%zu bytes, best of %d rounds\n", buf.size(), reps);
  std::printf("| sha256 | whole buffer MB/s | ns per 64-byte input |\n|---|---:|---:|\n");
  for (Impl impl : {Impl{"ours (nettle)", Ours}, Impl{"OpenSSL EVP", OpenSsl}}) {
    volatile unsigned char sink = 0;
    double big = Best(reps, [&] { sink = sink + impl.f(buf.data(), buf.size())[0]; });
    double small = Best(reps, [&] {
      for (size_t i = 0; i < 100000; ++i) sink = sink + impl.f(buf.data() + i, 64)[0];
    });
    std::printf("| %s | %.0f | %.1f |\n", impl.name, buf.size() / big / 1e6, small / 100000 * 1e9);
  }
  return 0;
}
