#include "squash_tree.h"

#include <unordered_map>

#include "d4c/base/strcat.h"
#include "util.h"

namespace d4c::oci_internal {
namespace {

// Directories a layer implies but does not contain, and the root when no
// layer has a "./" entry. umoci and containerd create both with
// mkdir(0755 after umask) as root; umoci sets the root's mtime to the epoch,
// an implied directory gets the extraction time, which we cannot reproduce:
// the epoch keeps the result deterministic.
std::shared_ptr<Entry> ImpliedDir() {
  auto e = std::make_shared<Entry>();
  e->type = EntryType::kDirectory;
  e->mode = 0755;
  return e;
}

std::string JoinPath(std::string_view dir, std::string_view name) {
  return dir.empty() ? std::string(name) : StrCat(dir, "/", name);
}

std::string SymlinkParent(std::string_view what, std::string_view parent) {
  return StrCat(what, "escapes the image root: its parent ", Quote(parent), " is a symlink");
}

}  // namespace

SquashTree::SquashTree() { nodes_.emplace("", Node{ImpliedDir(), 0}); }

SquashTree::Map::iterator SquashTree::SubtreeEnd(Map::iterator it) {
  if (it->first.empty()) return nodes_.end();
  // '/' sorts below every byte, so "P/..." < "P\0" <= anything after P's
  // subtree; names never contain NUL.
  return nodes_.lower_bound(it->first + std::string(1, '\0'));
}

void SquashTree::RemoveLower(Map::iterator first, Map::iterator last) {
  for (auto it = first; it != last;) {
    if (it->second.touched != layer_) {
      it = nodes_.erase(it, SubtreeEnd(it));
    } else {
      ++it;
    }
  }
}

absl::Status SquashTree::PrepareParents(std::string_view path) {
  nodes_.find("")->second.touched = layer_;
  for (size_t slash = path.find('/'); slash != std::string_view::npos; slash = path.find('/', slash + 1)) {
    std::string parent(path.substr(0, slash));
    auto it = nodes_.find(parent);
    if (it == nodes_.end()) {
      it = nodes_.emplace(parent, Node{ImpliedDir(), layer_}).first;
    } else if (it->second.inode->type == EntryType::kSymlink) {
      return absl::InvalidArgumentError(SymlinkParent("", parent));
    } else if (it->second.inode->type != EntryType::kDirectory) {
      return absl::InvalidArgumentError(
          StrCat("cannot be created: its parent ", Quote(parent), " is not a directory"));
    }
    it->second.touched = layer_;
  }
  return absl::OkStatus();
}

absl::Status SquashTree::Apply(Entry meta) {
  if (meta.path.empty()) {
    // umoci refuses this too: a root of another type could be a symlink
    // that later entries would be written through.
    if (meta.type != EntryType::kDirectory)
      return absl::InvalidArgumentError("would replace the root directory with a non-directory");
    Node& root = nodes_.find("")->second;
    root.inode = std::make_shared<Entry>(std::move(meta));
    root.touched = layer_;
    return absl::OkStatus();
  }
  if (auto s = PrepareParents(meta.path); !s.ok()) return s;
  std::string path = meta.path;
  if (meta.type == EntryType::kHardlink) return ApplyHardlink(path, meta.link_target);
  auto it = nodes_.find(path);
  if (it != nodes_.end()) {
    // A directory over a directory only updates metadata (children stay);
    // anything else replaces the old path and its whole subtree.
    if (it->second.inode->type == EntryType::kDirectory && meta.type == EntryType::kDirectory) {
      it->second.inode = std::make_shared<Entry>(std::move(meta));
      it->second.touched = layer_;
      return absl::OkStatus();
    }
    nodes_.erase(it, SubtreeEnd(it));
  }
  nodes_.emplace(path, Node{std::make_shared<Entry>(std::move(meta)), layer_});
  return absl::OkStatus();
}

absl::Status SquashTree::ApplyHardlink(const std::string& path, const std::string& target) {
  if (target == path) return absl::InvalidArgumentError("is a hardlink to itself");
  // Like umoci: the old path goes first (so a link never points into what
  // it replaces), then the target must exist as a real, non-directory path.
  if (auto it = nodes_.find(path); it != nodes_.end()) nodes_.erase(it, SubtreeEnd(it));
  for (size_t slash = target.find('/'); slash != std::string::npos; slash = target.find('/', slash + 1)) {
    auto p = nodes_.find(target.substr(0, slash));
    if (p != nodes_.end() && p->second.inode->type == EntryType::kSymlink)
      return absl::InvalidArgumentError(
          SymlinkParent(StrCat("is a hardlink whose target ", Quote(target), " "), p->first));
  }
  auto t = nodes_.find(target);
  if (t == nodes_.end())
    return absl::InvalidArgumentError(StrCat("is a hardlink to ", Quote(target), ", which does not exist"));
  if (t->second.inode->type == EntryType::kDirectory)
    return absl::InvalidArgumentError(StrCat("is a hardlink to directory ", Quote(target)));
  nodes_.emplace(path, Node{t->second.inode, layer_});
  return absl::OkStatus();
}

absl::Status SquashTree::FindWhiteoutDir(std::string_view dir, const Node** node) const {
  *node = &nodes_.find("")->second;
  for (size_t start = 0; !dir.empty() && start <= dir.size();) {
    size_t slash = dir.find('/', start);
    if (slash == std::string_view::npos) slash = dir.size();
    std::string prefix(dir.substr(0, slash));
    start = slash + 1;
    auto it = nodes_.find(prefix);
    if (it != nodes_.end() && it->second.inode->type == EntryType::kSymlink)
      return absl::InvalidArgumentError(SymlinkParent("", prefix));
    // Missing or not a directory: nothing below it to white out.
    if (it == nodes_.end() || it->second.inode->type != EntryType::kDirectory) {
      *node = nullptr;
      return absl::OkStatus();
    }
    *node = &it->second;
  }
  return absl::OkStatus();
}

absl::Status SquashTree::Whiteout(std::string_view dir, std::string_view name) {
  const Node* d = nullptr;
  if (auto s = FindWhiteoutDir(dir, &d); !s.ok() || d == nullptr) return s;
  auto it = nodes_.find(JoinPath(dir, name));
  if (it == nodes_.end()) return absl::OkStatus();
  // Whiteouts only hide lower layers: a path this layer already wrote stays,
  // though lower content below it goes (OCI image spec; umoci does the same).
  if (it->second.touched != layer_) {
    nodes_.erase(it, SubtreeEnd(it));
  } else {
    RemoveLower(std::next(it), SubtreeEnd(it));
  }
  return absl::OkStatus();
}

absl::Status SquashTree::Opaque(std::string_view dir) {
  const Node* d = nullptr;
  if (auto s = FindWhiteoutDir(dir, &d); !s.ok() || d == nullptr) return s;
  auto it = nodes_.find(std::string(dir));
  RemoveLower(std::next(it), SubtreeEnd(it));
  return absl::OkStatus();
}

std::vector<Entry> SquashTree::Finish() const {
  std::vector<Entry> out;
  out.reserve(nodes_.size());
  // Iteration is in ComparePaths order, so the first name seen of an inode
  // is the smallest: it becomes the primary.
  std::unordered_map<const Entry*, const std::string*> primary;
  for (const auto& [path, node] : nodes_) {
    if (node.inode->type != EntryType::kDirectory) {
      auto [p, first] = primary.emplace(node.inode.get(), &path);
      if (!first) {
        Entry link;
        link.path = path;
        link.type = EntryType::kHardlink;
        link.link_target = *p->second;
        out.push_back(std::move(link));
        continue;
      }
    }
    out.push_back(*node.inode);
    out.back().path = path;
  }
  return out;
}

}  // namespace d4c::oci_internal
