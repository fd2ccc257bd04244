// Finding the parent images a delta needs, by image id, from headers only.
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <system_error>

#include "d4c/delta.h"
#include "d4c/base/strcat.h"

namespace d4c {
namespace {

namespace fs = std::filesystem;

// Deltas of deltas are legal, but a chain this deep means a cycle.
constexpr size_t kMaxChainDepth = 1024;

struct Candidate {
  std::string path;
  ImageHeader header;
};

// Image id -> every readable cdimg among `paths` with that id, in order.
// Several files may share an id (a full image B and deltas A→B, X→B all
// are image B); unreadable or corrupt files are skipped, never an error.
void AddCandidates(const std::vector<std::string>& paths, std::map<Digest, std::vector<Candidate>>* by_id) {
  for (const std::string& p : paths) {
    auto h = CdimgImage::ReadHeader(p);
    if (h.ok()) (*by_id)[h->image_id].push_back({p, *h});
  }
}

// *.cdimg files of the directories, sorted so that the choice among
// duplicates does not depend on directory order.
std::vector<std::string> ListCdimgs(const std::vector<std::string>& dirs) {
  std::set<std::string> out;
  for (const std::string& d : dirs) {
    std::error_code ec;
    for (fs::directory_iterator it(d.empty() ? "." : d, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->path().extension() == ".cdimg" && it->is_regular_file(ec)) out.insert(it->path().string());
    }
  }
  return {out.begin(), out.end()};
}

// Depth-first search of the parent chain below one image id: candidates are
// tried in order (the --base files, then the sorted directory files) and
// the first whose own chain resolves wins, so a file that is not on a
// resolvable chain (a delta from some other image whose parent is absent)
// is passed over instead of failing the search.
class ChainSearch {
 public:
  explicit ChainSearch(const std::map<Digest, std::vector<Candidate>>& by_id) : by_id_(by_id) {}

  // Paths from image `id` down to a full image, or nullopt (then Why(id)).
  std::optional<std::vector<std::string>> Resolve(const Digest& id) {
    if (why_.count(id)) return std::nullopt;
    if (visiting_.count(id) || visiting_.size() > kMaxChainDepth) return std::nullopt;
    auto it = by_id_.find(id);
    if (it == by_id_.end()) {
      why_[id] = "no file has that image id";
      return std::nullopt;
    }
    visiting_.insert(id);
    std::optional<std::vector<std::string>> out;
    std::string why;
    for (const Candidate& c : it->second) {
      if (!c.header.is_delta) {
        out = std::vector<std::string>{c.path};
        break;
      }
      if (auto below = Resolve(c.header.parent_id)) {
        below->insert(below->begin(), c.path);
        out = std::move(below);
        break;
      }
      why += StrCat(why.empty() ? "no full image has that id, and the deltas to it lack their own parents: "
                                : "; ",
                    c.path, " needs image ", DigestString(c.header.parent_id), " (", Why(c.header.parent_id), ")");
    }
    visiting_.erase(id);
    if (!out) why_[id] = why;
    return out;
  }

  std::string Why(const Digest& id) const {
    auto it = why_.find(id);
    return it != why_.end() ? it->second : "chain too deep or cyclic";
  }

 private:
  const std::map<Digest, std::vector<Candidate>>& by_id_;
  std::set<Digest> visiting_;
  std::map<Digest, std::string> why_;  // ids that cannot be resolved, and why
};

std::string DirList(const std::vector<std::string>& dirs) {
  std::string where;
  for (const std::string& d : dirs) where += StrCat(where.empty() ? "" : ", ", d.empty() ? "." : d);
  return where.empty() ? std::string("(no directory)") : where;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> FindAncestors(const std::string& cdimg,
                                                      const std::vector<std::string>& candidates,
                                                      const std::vector<std::string>& search_dirs) {
  auto h = CdimgImage::ReadHeader(cdimg);
  if (!h.ok()) return h.status();
  if (!h->is_delta) return std::vector<std::string>{};
  // The --base files alone first; the directories are read only if needed.
  std::map<Digest, std::vector<Candidate>> by_id;
  AddCandidates(candidates, &by_id);
  if (auto found = ChainSearch(by_id).Resolve(h->parent_id)) return *found;
  AddCandidates(ListCdimgs(search_dirs), &by_id);
  ChainSearch search(by_id);
  if (auto found = search.Resolve(h->parent_id)) return *found;
  std::string where = DirList(search_dirs);
  return absl::NotFoundError(StrCat(
      cdimg, ": needs its parent image ", DigestString(h->parent_id), " and its ancestors down to a full image: ",
      search.Why(h->parent_id), "; looked among the --base files and the *.cdimg files in ", where,
      "; pass the missing cdimg with --base (`ctr-cli cdimg show --cdimg FILE` prints a file's image id)",
      search_dirs.empty() ? std::string() : StrCat(" or put it in ", where)));
}

}  // namespace d4c
