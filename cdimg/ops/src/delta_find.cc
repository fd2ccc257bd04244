// Finding the parent images a delta needs, by image id, from headers only.
#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <system_error>

#include "d4c/delta.h"
#include "d4c/base/strcat.h"

namespace d4c {
namespace {

namespace fs = std::filesystem;

// Image id -> path for every readable cdimg among `paths`; the first wins.
void AddCandidates(const std::vector<std::string>& paths, std::map<Digest, std::string>* by_id) {
  for (const std::string& p : paths) {
    auto h = CdimgImage::ReadHeader(p);
    if (h.ok()) by_id->emplace(h->image_id, p);
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

}  // namespace

absl::StatusOr<std::vector<std::string>> FindAncestors(const std::string& cdimg,
                                                      const std::vector<std::string>& candidates,
                                                      const std::vector<std::string>& search_dirs) {
  std::map<Digest, std::string> given, found;
  AddCandidates(candidates, &given);
  bool scanned = false;
  std::vector<std::string> out;
  std::string cur = cdimg;
  auto h = CdimgImage::ReadHeader(cur);
  if (!h.ok()) return h.status();
  while (h->is_delta) {
    auto it = given.find(h->parent_id);
    if (it == given.end()) {
      if (!scanned) AddCandidates(ListCdimgs(search_dirs), &found);
      scanned = true;
      it = found.find(h->parent_id);
      if (it == found.end()) {
        std::string where;
        for (const std::string& d : search_dirs) where += StrCat(where.empty() ? "" : ", ", d.empty() ? "." : d);
        return absl::NotFoundError(StrCat(cur, ": needs its parent image ", DigestString(h->parent_id),
                                          ", which is neither among the --base files nor a *.cdimg in ",
                                          where.empty() ? std::string("(no directory)") : where,
                                          "; pass it with --base"));
      }
    }
    if (out.size() > 1024 || std::find(out.begin(), out.end(), it->second) != out.end())
      return absl::FailedPreconditionError(StrCat(cdimg, ": image chain too deep or cyclic"));
    out.push_back(it->second);
    cur = it->second;
    h = CdimgImage::ReadHeader(cur);
    if (!h.ok()) return h.status();
  }
  return out;
}

}  // namespace d4c
