// The in-memory tree that layers are applied to, with OCI whiteout
// semantics and hardlink groups (several names sharing one inode).
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "d4c/entry.h"

namespace d4c::oci_internal {

class SquashTree {
 public:
  SquashTree();

  // Called before each layer's entries; `layer` must increase.
  void BeginLayer(size_t layer) { layer_ = layer; }

  // Applies one non-whiteout entry (its `path` normalized). A hardlink's
  // meta.link_target names an existing non-directory; it then shares that
  // inode. Errors are plain causes; the caller adds layer and entry name.
  absl::Status Apply(Entry meta);
  // `.wh.NAME` in `dir`: removes dir/NAME from lower layers.
  absl::Status Whiteout(std::string_view dir, std::string_view name);
  // `.wh..wh..opq` in `dir`: removes everything below dir from lower layers.
  absl::Status Opaque(std::string_view dir);

  // Sorted by ComparePaths; hardlink groups canonical (smallest path is the
  // primary, every other name a kHardlink to it).
  std::vector<Entry> Finish() const;

 private:
  struct PathOrder {
    bool operator()(const std::string& a, const std::string& b) const { return PathLess(a, b); }
  };
  struct Node {
    // Shared by all names of one hardlink group; path field unused.
    std::shared_ptr<Entry> inode;
    // Last layer that created/updated this path or something below it
    // (umoci's "upperPaths"): whiteouts of that layer must not remove it.
    size_t touched = 0;
  };
  using Map = std::map<std::string, Node, PathOrder>;

  // Checks/creates the ancestors of `path`, marking them touched.
  absl::Status PrepareParents(std::string_view path);
  // Finds the directory `dir` for a whiteout: nullptr if it does not exist or
  // is not a directory (nothing to remove); error if a symlink is on the way.
  absl::Status FindWhiteoutDir(std::string_view dir, const Node** node) const;
  // First entry not below `it` (exclusive end of its subtree).
  Map::iterator SubtreeEnd(Map::iterator it);
  // Removes, below [first, last), every subtree not touched by this layer.
  void RemoveLower(Map::iterator first, Map::iterator last);
  absl::Status ApplyHardlink(const std::string& path, const std::string& target);

  Map nodes_;
  size_t layer_ = 0;
};

}  // namespace d4c::oci_internal
