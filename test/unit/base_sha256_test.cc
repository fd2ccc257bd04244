// d4c/base/sha256.h against the FIPS 180-2 test vectors.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <string>

#include "d4c/base/sha256.h"

namespace {
const char kEmpty[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const char kAbc[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
const char k448[] = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";
const char kMillionA[] = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
const std::string k448Input = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
}  // namespace

TEST_CASE("Sha256 of known vectors", "[base][sha256]") {
  CHECK(d4c::DigestHex(d4c::Sha256("")) == kEmpty);
  CHECK(d4c::DigestHex(d4c::EmptyDigest()) == kEmpty);
  CHECK(d4c::DigestHex(d4c::Sha256("abc")) == kAbc);
  CHECK(d4c::DigestHex(d4c::Sha256(k448Input)) == k448);
}

TEST_CASE("Sha256Hasher equals one-shot hashing however the input is split", "[base][sha256]") {
  d4c::Sha256Hasher h;
  std::string chunk(1000, 'a');
  for (int i = 0; i < 1000; ++i) h.Update(chunk);
  CHECK(d4c::DigestHex(h.Finish()) == kMillionA);

  d4c::Sha256Hasher split;
  split.Update(k448Input.data(), 5);
  split.Update(std::string_view(k448Input).substr(5));
  CHECK(d4c::DigestHex(split.Finish()) == k448);
}

TEST_CASE("Sha256OfFile hashes the file and names a missing one", "[base][sha256]") {
  char tmpl[] = "/tmp/d4c-base-sha-XXXXXX";
  int fd = mkstemp(tmpl);
  REQUIRE(fd >= 0);
  close(fd);
  std::string path = tmpl;
  {
    std::ofstream out(path, std::ios::binary);
    out << std::string(3 << 20, 'a');  // more than one 1 MiB read
  }
  auto d = d4c::Sha256OfFile(path);
  REQUIRE(d.ok());
  CHECK(*d == d4c::Sha256(std::string(3 << 20, 'a')));
  unlink(path.c_str());

  auto missing = d4c::Sha256OfFile(path);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == absl::StatusCode::kNotFound);
  CHECK(std::string(missing.status().message()).find(path) != std::string::npos);
}
