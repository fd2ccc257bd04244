// cdimg-entries CDIMG [--base B ...]: one line per regular file of the image,
//   <recipe> <size> <blob file offset> <blob length> /<path>
// (tab-separated; offset and length are 0 without a blob). A test and
// benchmark helper: picks files by recipe, locates a blob to corrupt.
#include <cstdio>
#include <string>
#include <vector>

#include "d4c/chain.h"
#include "d4c/base/strcat.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: cdimg-entries CDIMG [--base B ...]\n");
    return 2;
  }
  std::vector<std::string> bases;
  for (int a = 2; a + 1 < argc; a += 2)
    if (std::string(argv[a]) == "--base") bases.push_back(argv[a + 1]);
  auto chain = d4c::ImageChain::Open(argv[1], bases);
  if (!chain.ok()) {
    std::fprintf(stderr, "cdimg-entries: %s\n", d4c::Msg(chain.status().message()).c_str());
    return 1;
  }
  const d4c::CdimgImage& img = (*chain)->top();
  const uint64_t kBlobsOffset = img.header().blobs_offset;
  for (size_t i = 0; i < img.size(); ++i) {
    if (img.TypeAt(i) != d4c::EntryType::kRegular) continue;
    d4c::Recipe r = img.RecipeAt(i);
    bool blob = r.kind == d4c::Recipe::Kind::kFull || r.kind == d4c::Recipe::Kind::kDelta;
    std::string path(img.PathAt(i));
    std::printf("%s\t%llu\t%llu\t%llu\t/%s\n", d4c::RecipeKindName(r.kind),
                static_cast<unsigned long long>(img.SizeAt(i)),
                static_cast<unsigned long long>(blob ? kBlobsOffset + r.blob.offset : 0),
                static_cast<unsigned long long>(blob ? r.blob.length : 0), path.c_str());
  }
  return 0;
}
