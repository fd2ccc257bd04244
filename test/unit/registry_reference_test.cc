// Image names normalized as ctr does (containerd's ParseDockerRef over the
// distribution/reference grammar): a table of good references and their
// normal form, and of bad ones with what the message must say.
#include <catch2/catch.hpp>

#include "d4c/base/strcat.h"
#include "d4c/registry/reference.h"

using namespace d4c::registry;
using d4c::Msg;

TEST_CASE("image names are normalized as ctr does") {
  const std::string hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  struct Case {
    std::string in, out;
  };
  const Case cases[] = {
      {"app:1", "docker.io/library/app:1"},
      {"app", "docker.io/library/app:latest"},
      {"d4c/app:1", "docker.io/d4c/app:1"},
      {"docker.io/app:1", "docker.io/library/app:1"},
      {"index.docker.io/d4c/app:1", "docker.io/d4c/app:1"},
      {"docker.io/library/app:1", "docker.io/library/app:1"},
      {"localhost/app:1", "localhost/app:1"},
      {"localhost:5000/app:1", "localhost:5000/app:1"},
      {"localhost:5000/app", "localhost:5000/app:latest"},
      {"reg.example/team/sub/app:v1.2-rc_3", "reg.example/team/sub/app:v1.2-rc_3"},
      {"127.0.0.1:5000/app:1", "127.0.0.1:5000/app:1"},
      {"[::1]:5000/app:1", "[::1]:5000/app:1"},
      {"Reg.Example/app:1", "Reg.Example/app:1"},  // host names may have capitals
      {"a.b/app__x/y-z.w:TAG", "a.b/app__x/y-z.w:TAG"},
      {"app@sha256:" + hex, "docker.io/library/app@sha256:" + hex},
      {"app:1@sha256:" + hex, "docker.io/library/app@sha256:" + hex},  // the tag is dropped, the digest kept
      {"localhost:5000/app@sha256:" + hex, "localhost:5000/app@sha256:" + hex},
  };
  for (const auto& c : cases) {
    INFO(c.in);
    auto got = NormalizeImageName(c.in);
    REQUIRE(got.ok());
    CHECK(*got == c.out);
  }
  auto r = ParseImageReference("localhost:5000/team/app:1");
  REQUIRE(r.ok());
  CHECK(r->domain == "localhost:5000");
  CHECK(r->path == "team/app");
  CHECK(r->tag == "1");
  CHECK(r->digest.empty());
}

TEST_CASE("bad image names are refused, saying what is wrong") {
  const std::string hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  struct Case {
    std::string in, says;
  };
  const Case cases[] = {
      {"", "empty"},
      {"Bad Name:1", "'Bad Name' must be lower case and contains a space"},
      {"bad name:1", "'bad name' contains a space"},
      {"App:1", "'App' must be lower case"},
      {"d4c/App:1", "'d4c/App' must be lower case"},
      {"app:", "the tag '' is not valid"},
      {"app:-x", "the tag '-x' is not valid"},
      {"app:" + std::string(129, 'a'), "is not valid"},
      {"app:1:2", "contains ':'"},
      {"-app:1", "has an empty component"},
      {"app-:1", "has an empty component"},
      {"team//app:1", "has an empty component"},
      {"reg.example/:1", "the repository path is empty"},
      {"app@sha256:abc", "is not a digest"},
      {"app@sha256:" + hex.substr(0, 63) + "G", "is not a digest"},
      {"app@", "is not a digest"},
      {":1", "no repository name"},
      {"-bad.host/app:1", "'-bad.host' is not a registry host"},
      {"reg.example:port/app:1", "is not a registry host"},
      {"reg.example/" + std::string(250, 'a'), "at most 255"},
  };
  for (const auto& c : cases) {
    INFO(c.in);
    auto got = NormalizeImageName(c.in);
    REQUIRE(absl::IsInvalidArgument(got.status()));
    CHECK_THAT(Msg(got.status().message()), Catch::Contains(c.says) && Catch::Contains("not a valid image name"));
  }
}

TEST_CASE("SplitRegistryHost takes the registry part as containerd's parser does", "[registry][reference]") {
  struct Case {
    std::string in, host, rest;
  };
  const Case cases[] = {
      {"app:1", "", "app:1"},
      {"team/app:1", "", "team/app:1"},
      {"localhost/app:1", "localhost", "app:1"},
      {"localhost:5000/app:1", "localhost:5000", "app:1"},
      {"reg.example/team/app:1", "reg.example", "team/app:1"},
      {"127.0.0.1:5443/app:2", "127.0.0.1:5443", "app:2"},
      {"Registry/app:1", "Registry", "app:1"},  // upper case: a host, as in ParseImageReference
  };
  for (const auto& c : cases) {
    INFO(c.in);
    auto got = SplitRegistryHost(c.in);
    CHECK(got.host == c.host);
    CHECK(got.rest == c.rest);
    // The same split ParseImageReference makes (docker.io when no host).
    auto r = ParseImageReference(c.in);
    if (r.ok()) CHECK(r->domain == (c.host.empty() ? "docker.io" : c.host));
  }
}
