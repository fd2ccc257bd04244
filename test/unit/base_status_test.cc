// d4c/base/status.h: Annotate adds context and keeps everything else.
#include <catch2/catch.hpp>

#include "absl/strings/cord.h"
#include "d4c/base/status.h"
#include "d4c/base/strcat.h"

TEST_CASE("Annotate keeps the code and payloads and prefixes the message", "[base][status]") {
  absl::Status inner = absl::NotFoundError("blobs/sha256/ab: no such file");
  inner.SetPayload("d4c/test", absl::Cord("payload"));
  absl::Status outer = d4c::Annotate(inner, "reading the parent image");
  CHECK(outer.code() == absl::StatusCode::kNotFound);
  CHECK(d4c::Msg(outer.message()) == "reading the parent image: blobs/sha256/ab: no such file");
  auto payload = outer.GetPayload("d4c/test");
  REQUIRE(payload.has_value());
  CHECK(std::string(*payload) == "payload");

  CHECK(d4c::Annotate(absl::DataLossError("x"), "y").code() == absl::StatusCode::kDataLoss);
}

TEST_CASE("Annotate leaves OK alone", "[base][status]") {
  absl::Status ok = d4c::Annotate(absl::OkStatus(), "context");
  CHECK(ok.ok());
  CHECK(ok.message().empty());
}
