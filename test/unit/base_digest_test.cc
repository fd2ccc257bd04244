// d4c/base/digest.h: the one Digest type and its text forms.
#include <catch2/catch.hpp>
#include <string>
#include <unordered_set>

#include "d4c/base/digest.h"
#include "d4c/base/strcat.h"

using d4c::Digest;

namespace {
const std::string kHex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
}

TEST_CASE("ParseDigest and DigestString round trip", "[base][digest]") {
  auto d = d4c::ParseDigest("sha256:" + kHex, "test");
  REQUIRE(d.ok());
  CHECK((*d)[0] == 0xe3);
  CHECK((*d)[31] == 0x55);
  CHECK(d4c::DigestHex(*d) == kHex);
  CHECK(d4c::DigestString(*d) == "sha256:" + kHex);
  CHECK(d4c::IsDigestString("sha256:" + kHex));

  // Every byte value survives text and back.
  Digest all;
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint8_t>(i * 8 + 7);
  auto back = d4c::ParseDigest(d4c::DigestString(all), "test");
  REQUIRE(back.ok());
  CHECK(*back == all);
}

TEST_CASE("ParseDigest refuses everything but sha256:<64 lowercase hex>", "[base][digest]") {
  const std::string bad[] = {
      kHex,                                     // no algorithm
      "sha512:" + kHex,                         // other algorithm
      "SHA256:" + kHex,                         // case of the prefix
      "sha256:" + kHex.substr(0, 63),           // short
      "sha256:" + kHex + "0",                   // long
      "sha256:E3B0" + kHex.substr(4),           // uppercase hex
      "sha256:../../../../etc/passwd",          // path characters
      "sha256:" + kHex.substr(0, 63) + "g",     // not hex
      "",
  };
  for (const std::string& s : bad) {
    INFO(s);
    auto d = d4c::ParseDigest(s, "manifest layer");
    REQUIRE_FALSE(d.ok());
    CHECK(d.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_FALSE(d4c::IsDigestString(s));
  }
  auto d = d4c::ParseDigest("sha256:../x\n", "index.json: manifest");
  CHECK(d4c::Msg(d.status().message()) ==
        "index.json: manifest: unsupported or malformed digest \"sha256:../x\\n\" (want sha256:<64 lowercase hex>)");
}

TEST_CASE("ParseDigestHex takes bare hex with an optional prefix", "[base][digest]") {
  Digest d{};
  CHECK(d4c::ParseDigestHex(kHex, &d));
  CHECK(d4c::DigestHex(d) == kHex);
  Digest e{};
  CHECK(d4c::ParseDigestHex("sha256:" + kHex, &e));
  CHECK(e == d);
  CHECK_FALSE(d4c::ParseDigestHex(kHex.substr(1), &e));
  CHECK_FALSE(d4c::ParseDigestHex("E3" + kHex.substr(2), &e));
}

TEST_CASE("Digest compares and hashes by value", "[base][digest]") {
  Digest a{}, b{};
  b[31] = 1;
  CHECK(a < b);
  CHECK(a != b);
  std::unordered_set<Digest, d4c::DigestHash> set{a, b, a};
  CHECK(set.size() == 2);
}
