// d4c/base/zstd.h: contexts whose big workspaces are their own huge-page
// mappings still compress and decompress exactly; frames are bounded.
#include <zstd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <string>

#include "d4c/base/zstd.h"

namespace {

// Text-like bytes that compress, but not to nothing.
std::string Sample(size_t n) {
  std::string s;
  s.reserve(n);
  uint32_t x = 12345;
  while (s.size() < n) {
    x = x * 1103515245u + 12345u;
    s += "entry ";
    s += std::to_string(x % 9973);
    s += (x >> 16) % 7 == 0 ? "\n" : " ";
  }
  s.resize(n);
  return s;
}

TEST_CASE("a context with a workspace of several MiB round-trips a frame", "[base][zstd]") {
  const std::string src = Sample(3 << 20);
  d4c::ZstdCCtxPtr cctx = d4c::NewZstdCCtx();
  REQUIRE(cctx);
  REQUIRE(d4c::ZstdSet(cctx.get(), ZSTD_c_compressionLevel, 19).ok());
  REQUIRE(d4c::ZstdSet(cctx.get(), ZSTD_c_windowLog, 22).ok());
  auto frame = d4c::ZstdCompressWith(cctx.get(), src);
  REQUIRE(frame.ok());
  // The big-workspace path (base/src/zstd.cc, kHugeWorkspaceFrom) ran.
  REQUIRE(ZSTD_sizeof_CCtx(cctx.get()) >= (1u << 20));
  // The same context again: its workspace is reused, not reallocated.
  auto again = d4c::ZstdCompressWith(cctx.get(), src);
  REQUIRE(again.ok());
  REQUIRE(*again == *frame);
  auto back = d4c::ZstdDecompressFrame(*frame, src.size());
  REQUIRE(back.ok());
  REQUIRE(*back == src);
}

TEST_CASE("a streaming decompression context with a big window round-trips", "[base][zstd]") {
  const std::string src = Sample(5 << 20);
  auto frame = d4c::ZstdCompressFrame(src, 3, 23);
  REQUIRE(frame.ok());
  d4c::ZstdDCtxPtr dctx = d4c::NewZstdDCtx();
  REQUIRE(dctx);
  std::string out;
  std::string buf(1 << 16, '\0');
  ZSTD_inBuffer in{frame->data(), 0, 0};
  // Fed in small pieces, so zstd keeps its own 8 MiB window buffer; after
  // the last piece, output is drained until the frame is complete (rc 0).
  size_t rc = 1;
  while (rc != 0) {
    if (in.pos == in.size && in.size < frame->size()) in.size = std::min<size_t>(in.size + 4096, frame->size());
    ZSTD_outBuffer o{buf.data(), buf.size(), 0};
    rc = ZSTD_decompressStream(dctx.get(), &o, &in);
    REQUIRE_FALSE(ZSTD_isError(rc));
    out.append(buf.data(), o.pos);
    REQUIRE_FALSE((rc != 0 && in.pos == frame->size() && o.pos == 0));  // stuck: the frame ended early
  }
  REQUIRE(ZSTD_sizeof_DCtx(dctx.get()) >= (1u << 20));
  REQUIRE(out == src);
}

TEST_CASE("a frame bigger than the caller's bound is refused", "[base][zstd]") {
  auto frame = d4c::ZstdCompressFrame(Sample(1000), 3, 0);
  REQUIRE(frame.ok());
  auto r = d4c::ZstdDecompressFrame(*frame, 999);
  REQUIRE_FALSE(r.ok());
  REQUIRE(std::string(r.status().message()).find("exceeds bound 999") != std::string::npos);
}

}  // namespace
