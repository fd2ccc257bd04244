// libFuzzer target: arbitrary bytes as a cdimg file. Opening must either fail
// with a status or yield an image whose every accessor stays in bounds.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "d4c/cdimg.h"
#include "d4c/chain.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static int fd = memfd_create("cdimg-fuzz", 0);
  if (fd < 0 || ftruncate(fd, 0) != 0) return 0;
  if (pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) return 0;
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  auto img = d4c::CdimgImage::Open(path);
  if (!img.ok()) return 0;
  const d4c::CdimgImage& im = **img;
  for (size_t i = 0; i < im.size(); ++i) {
    d4c::Entry e = im.EntryAt(i);
    auto found = im.Find(e.path);
    if (!found || *found != i) __builtin_trap();  // a validated index must find its own paths
    d4c::Recipe r = im.RecipeAt(i);
    if (r.kind == d4c::Recipe::Kind::kFull || r.kind == d4c::Recipe::Kind::kDelta) (void)im.ReadPayload(r);
    if (e.type == d4c::EntryType::kDirectory) (void)im.SubtreeEnd(i);
  }
  std::vector<std::unique_ptr<d4c::CdimgImage>> images;
  images.push_back(std::move(*img));
  auto chain = d4c::ImageChain::FromImages(std::move(images));
  if (chain.ok()) {
    for (size_t i = 0; i < (*chain)->top().size() && i < 64; ++i)
      if ((*chain)->top().TypeAt(i) == d4c::EntryType::kRegular) (void)(*chain)->ReadFile(i);
  }
  return 0;
}
