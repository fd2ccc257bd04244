// convert keeps memory bounded whatever the input: files over
// SquashOptions::whole_file_bytes are streamed (read, hashed and compressed
// piece by piece) and give the same bytes as when held whole; a gzip bomb of
// big zero files is refused with a peak RSS far below its file sizes.
#include <archive.h>
#include <archive_entry.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <string>

#include "d4c/base/strcat.h"
#include "d4c/chain.h"
#include "d4c/convert.h"
#include "oci_fixture.h"

using namespace d4c;
using oci_test::Compression;
using oci_test::LayerBuilder;
using oci_test::ReadAll;
using oci_test::ScratchDir;

namespace {

// Deterministic compressible text (many zstd jobs' worth when big).
std::string Text(uint32_t seed, size_t bytes) {
  static const char* words[] = {"alpha", "beta", "gamma", "delta", "const", "return", "function", "value"};
  std::string out;
  out.reserve(bytes + 64);
  uint32_t x = seed * 2654435761u + 1;
  while (out.size() < bytes) {
    x = x * 1103515245u + 12345u;
    out += words[(x >> 16) % 8];
    out += std::to_string((x >> 4) % 1000);
    out += (x >> 12) % 9 ? ' ' : '\n';
  }
  out.resize(bytes);
  return out;
}

std::string ConvertTo(const ScratchDir& dir, const std::string& name, const ImageSource& src, int level,
                      uint64_t whole_file_bytes) {
  ConvertOptions o;
  o.threads = 2;
  o.zstd_level = level;
  o.squash.whole_file_bytes = whole_file_bytes;
  std::string out = StrCat(dir.path(), "/", name, ".cdimg");
  auto st = ConvertImage(src, out, o);
  INFO(Msg(st.status().message()));
  REQUIRE(st.ok());
  return out;
}

// A gzip'd tar of `files` zero-filled files of `size` bytes each, written in
// pieces (a few MB whatever the sizes): the bomb of the test below.
std::string ZeroBomb(int files, uint64_t size) {
  std::string out;
  archive* a = archive_write_new();
  archive_write_add_filter_gzip(a);
  archive_write_set_filter_option(a, "gzip", "compression-level", "1");
  archive_write_set_format_pax_restricted(a);
  archive_write_set_bytes_in_last_block(a, 1);
  auto write = [](archive*, void* ctx, const void* buf, size_t n) -> la_ssize_t {
    static_cast<std::string*>(ctx)->append(static_cast<const char*>(buf), n);
    return static_cast<la_ssize_t>(n);
  };
  REQUIRE(archive_write_open(a, &out, nullptr, write, nullptr) == ARCHIVE_OK);
  std::string zeros(1 << 20, '\0');
  for (int f = 0; f < files; ++f) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, StrCat("zero-", f).c_str());
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, static_cast<la_int64_t>(size));
    REQUIRE(archive_write_header(a, e) == ARCHIVE_OK);
    archive_entry_free(e);
    bool written = true;
    for (uint64_t done = 0; done < size && written; done += zeros.size())
      written = archive_write_data(a, zeros.data(), std::min<uint64_t>(zeros.size(), size - done)) > 0;
    REQUIRE(written);
  }
  REQUIRE(archive_write_close(a) == ARCHIVE_OK);
  archive_write_free(a);
  return out;
}

}  // namespace

TEST_CASE("convert: streamed big files give the bytes of whole ones", "[convert]") {
  ScratchDir dir;
  LayerBuilder l;
  std::string big = Text(1, 30 << 20), mid = Text(2, (8 << 20) + 4096);
  l.Dir("data").File("data/big", big).File("data/big-copy", big).File("data/mid", mid)
      .File("data/small", Text(3, 5000)).File("data/big-edited", big.substr(0, 20 << 20) + "edit");
  auto src = oci_test::MemoryImage({l});
  for (int level : {3, 19}) {
    DYNAMIC_SECTION("level " << level) {
      if (level == 19) {  // slow: the mid-sized file alone (zstd workers, one job)
        LayerBuilder m;
        m.File("mid", mid).File("small", Text(4, 100));
        auto msrc = oci_test::MemoryImage({m});
        std::string whole = ConvertTo(dir, "mid-whole", msrc, level, 64 << 20);
        std::string streamed = ConvertTo(dir, "mid-streamed", msrc, level, 0);
        REQUIRE(ReadAll(streamed) == ReadAll(whole));
      } else {
        std::string whole = ConvertTo(dir, "whole", src, level, 64 << 20);
        std::string streamed = ConvertTo(dir, "streamed", src, level, 0);  // all over 8 MiB
        REQUIRE(ReadAll(streamed) == ReadAll(whole));
        auto chain = ImageChain::Open(streamed, {});
        REQUIRE(chain.ok());
        const CdimgImage& img = (*chain)->top();
        for (size_t i = 0; i < img.size(); ++i)
          if (img.PathAt(i) == "data/big") CHECK(*(*chain)->ReadFile(i) == big);
      }
    }
  }
}

TEST_CASE("convert: a full blob handed out in pieces joins to CompressFullBlob's bytes", "[convert]") {
  std::string big = Text(5, kFullBlobWorkersAbove + 3 * (1 << 20) + 17), small = Text(6, 70000);
  for (int level : {1, 3}) {
    INFO("level " << level);
    for (const std::string* content : {&big, &small}) {
      std::string joined;
      size_t pieces = 0, largest = 0;
      REQUIRE(StreamFullBlob(*content, level, [&](std::string_view piece) {
                joined += piece;
                ++pieces;
                largest = std::max(largest, piece.size());
                return absl::OkStatus();
              }).ok());
      auto whole = CompressFullBlob(*content, level);
      REQUIRE(whole.ok());
      CHECK(joined == *whole);
      if (content == &small) {
        CHECK(pieces == 1);
      } else {
        CHECK(pieces > 1);
        CHECK(largest <= (size_t{1} << 20));
      }
    }
  }
  // The sink's error ends the stream and is returned as it is.
  int calls = 0;
  absl::Status st = StreamFullBlob(big, 1, [&](std::string_view) {
    ++calls;
    return absl::ResourceExhaustedError("disk full: spool");
  });
  CHECK(st.code() == absl::StatusCode::kResourceExhausted);
  CHECK(st.message() == "disk full: spool");
  CHECK(calls == 1);
}

TEST_CASE("convert: a gzip bomb of big files is refused in bounded memory", "[convert]") {
  // 3 x 768 MiB of zeros in ~10 MB of gzip (level 1); with a 2 GiB layer limit the
  // third file trips the bomb guard. Held whole, the files took ~2.3 GB of
  // RSS on the way; streamed, convert stays under a fixed bound.
  constexpr uint64_t kFile = 768ull << 20;
  std::string bomb = ZeroBomb(3, kFile);
  CHECK(bomb.size() < (16 << 20));
  ScratchDir dir;
  oci_test::MemoryImageSource src({{oci_test::LayerMediaType(Compression::kGzip), std::move(bomb)}});
  std::string out = dir.path() + "/bomb.cdimg";
  // In a child, so that its peak RSS is the convert's alone.
  auto run = oci_test::RunInChild([&] {
    ConvertOptions o;
    o.threads = 2;
    o.zstd_level = 3;
    o.squash.layer_floor_bytes = 2ull << 30;
    auto st = ConvertImage(src, out, o);
    return st.ok() ? std::string("ok") : StrCat(static_cast<int>(st.status().code()), " ", st.status().message());
  });
  INFO((run.ok() ? std::string() : std::string(run.status().message())));
  REQUIRE(run.ok());
  const std::string& msg = run->msg;
  INFO(msg);
  CHECK_THAT(msg, Catch::StartsWith(StrCat(static_cast<int>(absl::StatusCode::kResourceExhausted), " ")));
  CHECK_THAT(msg, Catch::Contains("possible decompression bomb"));
  uint64_t peak_mib = run->peak_mib;
  WARN("convert of the bomb: child peak RSS " << peak_mib << " MiB");
  CHECK(peak_mib < 400);
  CHECK_FALSE(std::filesystem::exists(out));
}
