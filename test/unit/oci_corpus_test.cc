// Squashes every image of the real corpus (scripts/corpus.sh) from both its OCI
// layout and its docker-archive, and compares the tree entry by entry with
// `umoci unpack` of the same tag (lstat/readlink/xattrs/sha256/inodes).
// Skipped (with a warning) when the corpus is missing; set D4C_CORPUS to use
// another location.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>
#include <vector>

#include "d4c/oci.h"
#include "oci_fixture.h"
#include "tree_scan.h"

using namespace d4c;

namespace {

class CountingSink : public ContentSink {
 public:
  absl::Status Put(const Digest& digest, std::string content) override {
    // The squasher hashes; re-check that what it hands out matches.
    if (Sha256(content) != digest) return absl::InternalError("digest does not match content");
    ++puts;
    return absl::OkStatus();
  }
  size_t puts = 0;
};

std::string CorpusRoot() {
  const char* env = std::getenv("D4C_CORPUS");
  return env && *env ? env : "/var/cache/d4c-corpus";
}

bool IsDir(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

struct Image {
  std::string series, tag;
};

const std::vector<Image> kImages = {{"typescript", "5.4.2"}, {"typescript", "5.4.3"}, {"typescript", "5.4.4"},
                                    {"typescript", "5.4.5"}, {"biome", "1.9.2"},      {"biome", "1.9.3"},
                                    {"biome", "1.9.4"},      {"debian", "v1"},        {"debian", "v2"}};

}  // namespace

TEST_CASE("corpus: squashed images equal umoci's unpack", "[oci][corpus]") {
  std::string root = CorpusRoot();
  if (!IsDir(root + "/debian/rootfs")) {
    WARN("corpus not found at " << root << "; skipping");
    return;
  }
  for (const Image& img : kImages) {
    std::string base = root + "/" + img.series;
    std::string rootfs = base + "/rootfs/" + img.tag + "/rootfs";
    if (!IsDir(rootfs)) continue;
    auto want = testing::ScanTree(rootfs);
    REQUIRE(want.ok());
    for (std::string ref : {"oci:" + base + "/oci:" + img.tag,
                            "docker-archive:" + base + "/docker/" + img.series + "-" + img.tag + ".tar"}) {
      auto src = OpenImageSource(ref);
      INFO(ref << ": " << src.status().ToString());
      REQUIRE(src.ok());
      CountingSink sink;
      auto got = SquashLayers(**src, sink);
      INFO(got.status().ToString());
      REQUIRE(got.ok());
      std::vector<std::string> diffs = testing::DiffTrees(*got, *want, 30);
      std::string report;
      for (const std::string& d : diffs) report += d + "\n";
      INFO(report);
      WARN(ref << ": " << got->size() << " entries compared, " << diffs.size() << " mismatches, " << sink.puts
               << " files stored");
      CHECK(diffs.empty());
    }
  }
}
