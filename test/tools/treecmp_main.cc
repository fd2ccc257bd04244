// treecmp DIR_A DIR_B: compares two root filesystems path by path (bytes,
// type, full mode, uid, gid, mtime, link targets, hardlink groups, xattrs,
// device numbers). Exit 0 when identical, 1 with the differences otherwise.
#include <cstdio>

#include "tree_scan.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: treecmp DIR_A DIR_B\n");
    return 2;
  }
  auto a = d4c::testing::ScanTree(argv[1]);
  auto b = d4c::testing::ScanTree(argv[2]);
  for (const auto* t : {&a, &b}) {
    if (!t->ok()) {
      std::fprintf(stderr, "treecmp: %s\n", std::string(t->status().message()).c_str());
      return 2;
    }
  }
  auto diffs = d4c::testing::DiffTrees(*a, *b, 200);
  for (const auto& d : diffs) std::printf("%s\n", d.c_str());
  if (!diffs.empty()) return 1;
  std::printf("identical: %zu entries\n", a->size());
  return 0;
}
