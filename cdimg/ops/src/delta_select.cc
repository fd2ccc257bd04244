// Base selection: which file of the parent image a new file is diffed against.
#include <cmath>
#include <tuple>

#include "delta_internal.h"

namespace d4c::delta_internal {

namespace {

// "plugins/babel.mjs" -> "plugins/babel": directory and name up to its first '.'.
std::string_view TwinKey(std::string_view path) {
  size_t slash = path.rfind('/');
  size_t start = slash == std::string_view::npos ? 0 : slash + 1;
  size_t dot = path.find('.', start);
  return path.substr(0, dot == std::string_view::npos ? path.size() : dot);
}

}  // namespace

Twins::Twins(const std::vector<Entry>& entries, const OldTree& old) : entries_(entries), offer_(entries.size()) {
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.type != EntryType::kRegular || e.size == 0) continue;
    groups_[TwinKey(e.path)].push_back(i);
    offer_[i] = !old.Has(e.digest);  // an entry whose content A has is no twin (but may have one)
  }
}

std::optional<size_t> Twins::For(size_t i) const {
  const Entry& y = entries_[i];
  auto it = groups_.find(TwinKey(y.path));
  if (it == groups_.end()) return std::nullopt;
  auto gap = [&](size_t j) {
    return entries_[j].size > y.size ? entries_[j].size - y.size : y.size - entries_[j].size;
  };
  std::optional<size_t> best;
  for (size_t j : it->second) {
    if (j >= i) break;
    const Entry& x = entries_[j];
    if (!offer_[j] || x.digest == y.digest || x.size > 2 * y.size || y.size > 2 * x.size) continue;
    if (!best || gap(j) < gap(*best)) best = j;
  }
  return best;
}

namespace {

// b's novelty for `target`, measured once.
Novelty Measured(Base& b, std::string_view target) {
  if (!b.novelty) b.novelty = MeasureNovelty(b.content, target);
  return *b.novelty;
}

}  // namespace

void OfferTwin(std::vector<Base>* bases, const Digest& digest, std::string content, std::string_view target) {
  if (bases->empty()) {
    bases->push_back({digest, std::move(content), true});
    return;
  }
  Novelty twin = MeasureNovelty(content, target);
  if (twin.missing < Measured((*bases)[0], target).missing)
    bases->push_back({digest, std::move(content), true, twin});
}

void OfferSibling(std::vector<Base>* bases, const Digest& digest, std::string content, std::string_view target) {
  if (bases->empty()) return;
  Novelty by_name = Measured((*bases)[0], target);
  Novelty sibling = MeasureNovelty(content, target);
  if (sibling.missing + by_name.anchors / 50 <= by_name.missing)
    bases->push_back({digest, std::move(content), true, sibling});
}

std::string FoldDigits(std::string_view s) {
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (!digit(s[i])) out.push_back(s[i]);
    else if (i == 0 || !digit(s[i - 1])) out.push_back('#');  // one '#' per run of digits
  }
  return out;
}

OldTree::OldTree(const CdimgImage& img) : img_(img) {
  for (size_t i = 0; i < img.size(); ++i) {
    if (img.TypeAt(i) != EntryType::kRegular || img.SizeAt(i) == 0) continue;
    by_digest_.emplace(img.DigestAt(i), i);
    by_dir_[ParentPath(img.PathAt(i))].push_back(i);
    by_folded_name_[FoldDigits(BaseName(img.PathAt(i)))].push_back(i);
  }
}

bool OldTree::SamePathSameContent(std::string_view path, const Digest& d) const {
  auto j = img_.Find(path);
  return j && img_.TypeAt(*j) == EntryType::kRegular && img_.DigestAt(*j) == d;
}

std::optional<size_t> OldTree::BaseFor(std::string_view path, uint64_t size) const {
  auto j = img_.Find(path);
  if (j && img_.TypeAt(*j) == EntryType::kRegular && img_.SizeAt(*j) > 0) return j;
  return RenameFor(path, size);
}

namespace {

// Number of equal trailing directory components of two folded paths.
int CommonDirSuffix(std::string_view a, std::string_view b) {
  int n = 0;
  a = ParentPath(a);
  b = ParentPath(b);
  while (!a.empty() && !b.empty() && BaseName(a) == BaseName(b)) {
    ++n;
    a = ParentPath(a);
    b = ParentPath(b);
  }
  return n;
}

double SizeRatio(uint64_t a, uint64_t b) {
  double x = static_cast<double>(std::max<uint64_t>(a, 1)), y = static_cast<double>(std::max<uint64_t>(b, 1));
  return x > y ? x / y : y / x;
}

}  // namespace

// A rename keeps the file name up to version digits. Preferred, in order:
// the whole path equal once digit runs are folded (python3.11/x.py ->
// python3.12/x.py, pkg@1.2.3/ -> pkg@1.2.4/, libfoo.so.1.2 -> libfoo.so.1.3;
// size within 8x), else the same exact name elsewhere (a moved directory;
// size within 2x) sharing the most trailing directories; then the closest
// size; then the first in entry order. A wrong guess costs only time: the
// delta is kept only if it beats the full blob.
std::optional<size_t> OldTree::RenameFor(std::string_view path, uint64_t size) const {
  std::string_view name = BaseName(path);
  auto it = by_folded_name_.find(FoldDigits(name));
  if (it == by_folded_name_.end()) return std::nullopt;
  std::string folded = FoldDigits(path);
  std::optional<size_t> best;
  std::tuple<int, int, double> best_score{};
  for (size_t j : it->second) {
    std::string_view old_path = img_.PathAt(j);
    double ratio = SizeRatio(img_.SizeAt(j), size);
    std::string old_folded = FoldDigits(old_path);
    int kind = old_folded == folded ? 2 : BaseName(old_path) == name ? 1 : 0;
    if (kind == 0 || ratio > (kind == 2 ? 8.0 : 2.0)) continue;
    std::tuple<int, int, double> score{kind, CommonDirSuffix(old_folded, folded), -std::log(ratio)};
    if (!best || score > best_score) {
      best = j;
      best_score = score;
    }
  }
  return best;
}

std::string_view Extension(std::string_view name) {
  size_t dot = name.rfind('.');
  return dot == std::string_view::npos || dot == 0 ? std::string_view() : name.substr(dot);
}

std::vector<size_t> OldTree::NeighborsFor(std::string_view path, uint64_t size, const CdimgImage& next) const {
  std::vector<size_t> out;
  auto it = by_dir_.find(ParentPath(path));
  if (it == by_dir_.end()) return out;
  std::string_view ext = Extension(BaseName(path));
  for (size_t j : it->second) {
    std::string_view old_path = img_.PathAt(j);
    if (Extension(BaseName(old_path)) != ext || SizeRatio(img_.SizeAt(j), size) > 4.0 || next.Find(old_path))
      continue;
    out.push_back(j);
  }
  std::stable_sort(out.begin(), out.end(), [&](size_t x, size_t y) {
    return SizeRatio(img_.SizeAt(x), size) < SizeRatio(img_.SizeAt(y), size);
  });
  if (out.size() > kMaxNeighbors) out.resize(kMaxNeighbors);
  return out;
}

std::optional<size_t> OldTree::SiblingFor(std::string_view path, uint64_t size) const {
  auto it = by_dir_.find(ParentPath(path));
  if (it == by_dir_.end()) return std::nullopt;
  std::string_view key = TwinKey(path);
  std::optional<size_t> best;
  for (size_t j : it->second) {
    std::string_view old_path = img_.PathAt(j);
    if (old_path == path || TwinKey(old_path) != key || SizeRatio(img_.SizeAt(j), size) > 2.0) continue;
    if (!best || SizeRatio(img_.SizeAt(j), size) < SizeRatio(img_.SizeAt(*best), size)) best = j;
  }
  return best;
}

}  // namespace d4c::delta_internal
