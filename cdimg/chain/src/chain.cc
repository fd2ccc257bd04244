#include "d4c/chain.h"

#include <zstd.h>
#include <zstd_errors.h>

#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>

#include "d4c/base/strcat.h"
#include "d4c/base/zstd.h"
#include "d4c/codec.h"

namespace d4c {
namespace {

// Deltas of deltas are legal, but a chain this deep means a cycle.
constexpr int kMaxResolveDepth = 256;

// A rebuilt file smaller than this gets its sha256 check and its use (patch:
// the compression) one after the other: handing one to another thread costs
// more in wake-ups than it saves.
constexpr size_t kParallelCheckMin = 256 << 10;

bool HasBlob(Recipe::Kind k) { return k == Recipe::Kind::kFull || k == Recipe::Kind::kDelta; }

// "<image>: /<path>: <cause>", keeping the cause's code: a read error stays
// an I/O error (retried by di3fs), only bad bytes are DataLoss.
absl::Status AtEntry(const absl::Status& s, const CdimgImage& img, size_t i) {
  return absl::Status(s.code(), StrCat(img.path(), ": /", img.PathAt(i), ": ", s.message()));
}

}  // namespace

absl::StatusOr<std::string> DecompressFullBlob(std::string_view blob, uint64_t size) {
  unsigned long long declared = ZSTD_getFrameContentSize(blob.data(), blob.size());
  if (declared != size)
    return absl::DataLossError(StrCat("full blob declares ", declared, " bytes, entry has ", size));
  auto buffer = AllocateWholeBuffer(size);  // declared size: at most the entry's, checked above
  if (!buffer.ok()) return buffer.status();
  std::string& out = *buffer;
  size_t n = ZSTD_decompress(out.data(), out.size(), blob.data(), blob.size());
  if (ZSTD_isError(n) && ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation)
    return absl::ResourceExhaustedError(StrCat("zstd: ", ZSTD_getErrorName(n)));  // not the blob's fault
  if (ZSTD_isError(n)) return absl::DataLossError(StrCat("zstd: ", ZSTD_getErrorName(n)));
  if (n != size) return absl::DataLossError("full blob decompresses to the wrong size");
  return buffer;
}

// Immutable after FromImages except the digest maps, each built once under
// its once_flag, and the test seam, set before the chain is shared.
struct ImageChain::State {
  std::vector<std::unique_ptr<CdimgImage>> images;  // bottom first
  // Per image: content digest -> entry, preferring entries that carry bytes.
  std::vector<std::unordered_map<Digest, uint32_t, DigestHash>> by_digest;
  std::vector<std::once_flag> built;
  ReadFault read_fault;  // tests only

  absl::StatusOr<std::string> ReadPayload(const CdimgImage& img, const Recipe& r) const {
    if (read_fault)
      if (absl::Status st = read_fault(img, r); !st.ok()) return st;
    return img.ReadPayload(r);
  }

  const std::unordered_map<Digest, uint32_t, DigestHash>& Map(size_t level) {
    std::call_once(built[level], [&] {
      const CdimgImage& img = *images[level];
      auto& m = by_digest[level];
      for (size_t i = 0; i < img.size(); ++i) {
        if (img.TypeAt(i) != EntryType::kRegular || img.SizeAt(i) == 0) continue;
        auto [it, added] = m.emplace(img.DigestAt(i), static_cast<uint32_t>(i));
        if (!added && !HasBlob(img.RecipeAt(it->second).kind) && HasBlob(img.RecipeAt(i).kind))
          it->second = static_cast<uint32_t>(i);
      }
    });
    return by_digest[level];
  }

  // `full_blob` (may be null): receives the standalone full blob of entry i
  // itself, if that is how it is stored.
  // `helpers`: idle threads for a delta's decode (DeltaCodec::DecodeWith);
  // `use` (may be null): runs on the rebuilt bytes beside their sha256 check.
  // `verify` false (a delta's base only): the bytes are not checked against
  // their digest. What is built from them is (the base's own check, a sha256
  // of the whole base, is ~a quarter of a big file's rebuild); only when that
  // fails is the base read again, verified, to blame it if it is bad.
  absl::StatusOr<std::string> ReadAt(size_t level, size_t i, int depth,
                                     std::optional<std::string>* full_blob = nullptr,
                                     Helpers& helpers = NoHelpers(), const UseBytes* use = nullptr,
                                     bool verify = true);
  absl::StatusOr<std::string> ReadDigestFrom(size_t level, const Digest& d, int depth,
                                             Helpers& helpers = NoHelpers(), const UseBytes* use = nullptr,
                                             bool verify = true);
};

absl::StatusOr<std::string> ImageChain::State::ReadAt(size_t level, size_t i, int depth,
                                                      std::optional<std::string>* full_blob, Helpers& helpers,
                                                      const UseBytes* use, bool verify) {
  if (full_blob) full_blob->reset();
  const CdimgImage& img = *images[level];
  if (depth > kMaxResolveDepth)
    return absl::DataLossError(StrCat(img.path(), ": /", img.PathAt(i), ": recipe chain too deep (cycle?)"));
  Recipe r = img.RecipeAt(i);
  uint64_t size = img.SizeAt(i);
  Digest want = img.DigestAt(i);
  absl::StatusOr<std::string> out;
  std::optional<std::string> frame;  // the standalone full blob, if that is the recipe
  std::function<absl::Status()> blame_base;  // a delta's: its base's error, if the base is bad
  switch (r.kind) {
    case Recipe::Kind::kEmpty:
      if (use)
        if (absl::Status st = (*use)(std::string_view()); !st.ok()) return st;
      return std::string();
    case Recipe::Kind::kNone:
      return absl::InvalidArgumentError(StrCat("/", img.PathAt(i), " is not a regular file"));
    case Recipe::Kind::kBase: {
      // Same bytes as elsewhere: a blob-bearing twin here, else a parent.
      const auto& m = Map(level);
      auto it = m.find(want);
      if (it != m.end() && it->second != i && HasBlob(img.RecipeAt(it->second).kind))
        return ReadAt(level, it->second, depth + 1, nullptr, helpers, use, verify);
      if (level == 0)
        return absl::DataLossError(StrCat(img.path(), ": /", img.PathAt(i), ": content ",
                                                DigestString(want), " is in no image of the chain"));
      return ReadDigestFrom(level - 1, want, depth + 1, helpers, use, verify);
    }
    case Recipe::Kind::kFull: {
      auto blob = ReadPayload(img, r);
      if (!blob.ok()) {
        out = blob.status();  // named below
        break;
      }
      if (r.packed) {
        out = std::move(blob);  // packed: raw content
        break;
      }
      out = DecompressFullBlob(*blob, size);
      if (full_blob) frame = std::move(*blob);
      break;
    }
    case Recipe::Kind::kDelta: {
      auto patch = ReadPayload(img, r);
      // The base is read by the codec when it needs it, maybe while it
      // decodes the patch's streams on `helpers`, and not verified (`verify`
      // above); its error is reported as the base's, before the patch's.
      auto read_base = [&] { return ReadDigestFrom(level, r.base, depth + 1, helpers, nullptr, false); };
      if (!patch.ok()) {
        if (auto base = ReadDigestFrom(level, r.base, depth + 1, helpers); !base.ok())
          return AtEntry(base.status(), img, i);
        out = patch.status();
        break;
      }
      out = GetCodec(r.codec).DecodeWith(read_base, *patch, size, r.packed, helpers);
      blame_base = [&, base = r.base]() -> absl::Status {
        if (auto b = ReadDigestFrom(level, base, depth + 1, helpers); !b.ok()) return AtEntry(b.status(), img, i);
        return absl::OkStatus();
      };
      break;
    }
  }
  // A delta's unverified base, read again verified once what was built on it
  // proves bad bytes (DataLoss): a bad base is named as the cause, not the
  // patch. Other errors (a failed read) are already the base's or the patch's.
  auto failed = [&](absl::Status s) -> absl::Status {
    if (blame_base && s.code() == absl::StatusCode::kDataLoss)
      if (absl::Status b = blame_base(); !b.ok()) return b;
    return s;
  };
  if (!out.ok()) return failed(AtEntry(out.status(), img, i));
  if (!verify) return out;
  bool match = false;
  absl::Status used;
  if (use && out->size() >= kParallelCheckMin) {
    helpers.Run({[&] { match = Sha256(*out) == want; }, [&] { used = (*use)(*out); }});
  } else if (use) {
    match = Sha256(*out) == want;
    if (match) used = (*use)(*out);
  } else {
    match = Sha256(*out) == want;
  }
  if (!match)
    return failed(absl::DataLossError(StrCat(img.path(), ": /", img.PathAt(i),
                                             ": rebuilt content does not match its sha256 (corrupt image)")));
  if (!used.ok()) return used;
  if (full_blob) *full_blob = std::move(frame);  // only once the bytes are verified
  return out;
}

absl::StatusOr<std::string> ImageChain::State::ReadDigestFrom(size_t level, const Digest& d, int depth,
                                                              Helpers& helpers, const UseBytes* use, bool verify) {
  if (d == EmptyDigest()) {
    if (use)
      if (absl::Status st = (*use)(std::string_view()); !st.ok()) return st;
    return std::string();
  }
  for (size_t l = level + 1; l-- > 0;) {
    const auto& m = Map(l);
    auto it = m.find(d);
    if (it == m.end()) continue;
    if (images[l]->RecipeAt(it->second).kind == Recipe::Kind::kBase) continue;  // lives further down
    return ReadAt(l, it->second, depth, nullptr, helpers, use, verify);
  }
  return absl::NotFoundError(StrCat("content ", DigestString(d), " is in no image of the chain below ",
                                          images[level]->path()));
}

ImageChain::ImageChain() : s_(std::make_unique<State>()) {}
ImageChain::~ImageChain() = default;

absl::StatusOr<std::unique_ptr<ImageChain>> ImageChain::FromImages(
    std::vector<std::unique_ptr<CdimgImage>> images) {
  if (images.empty()) return absl::InvalidArgumentError("empty image chain");
  if (images[0]->header().is_delta)
    return absl::FailedPreconditionError(StrCat(images[0]->path(), ": bottom of the chain is a delta"));
  std::unique_ptr<ImageChain> c(new ImageChain());
  c->s_->by_digest.resize(images.size());
  c->s_->built = std::vector<std::once_flag>(images.size());
  c->s_->images = std::move(images);
  return c;
}

absl::StatusOr<std::unique_ptr<ImageChain>> ImageChain::Open(const std::string& top,
                                                             const std::vector<std::string>& bases) {
  std::map<Digest, std::string> by_id;
  for (const std::string& b : bases) {
    auto h = CdimgImage::ReadHeader(b);
    if (!h.ok()) return h.status();
    by_id.emplace(h->image_id, b);
  }
  std::vector<std::string> paths{top};  // top first while walking down
  auto h = CdimgImage::ReadHeader(top);
  if (!h.ok()) return h.status();
  while (h->is_delta) {
    auto it = by_id.find(h->parent_id);
    if (it == by_id.end())
      return absl::NotFoundError(StrCat(paths.back(), ": parent image ", DigestString(h->parent_id),
                                              " is not among the given bases (--base)"));
    if (paths.size() > 1024) return absl::FailedPreconditionError("image chain too deep or cyclic");
    paths.push_back(it->second);
    h = CdimgImage::ReadHeader(it->second);
    if (!h.ok()) return h.status();
  }
  std::vector<std::unique_ptr<CdimgImage>> images;
  for (auto it = paths.rbegin(); it != paths.rend(); ++it) {
    auto img = CdimgImage::Open(*it, images.empty() ? nullptr : images.back().get());
    if (!img.ok()) return img.status();
    images.push_back(std::move(*img));
  }
  return FromImages(std::move(images));
}

const CdimgImage& ImageChain::top() const { return *s_->images.back(); }
size_t ImageChain::depth() const { return s_->images.size(); }
const CdimgImage& ImageChain::image(size_t level) const { return *s_->images[level]; }

absl::StatusOr<std::string> ImageChain::ReadFile(size_t i) const {
  return s_->ReadAt(s_->images.size() - 1, i, 0);
}

absl::StatusOr<std::string> ImageChain::ReadFile(size_t i, std::optional<std::string>* full_blob) const {
  return s_->ReadAt(s_->images.size() - 1, i, 0, full_blob);
}

absl::StatusOr<std::string> ImageChain::ReadFile(size_t i, Helpers& helpers, const UseBytes& use) const {
  return s_->ReadAt(s_->images.size() - 1, i, 0, nullptr, helpers, use ? &use : nullptr);
}

void ImageChain::SetReadFaultForTesting(ReadFault fault) { s_->read_fault = std::move(fault); }

absl::StatusOr<std::string> ImageChain::ReadByDigest(const Digest& digest) const {
  return s_->ReadDigestFrom(s_->images.size() - 1, digest, 0);
}

bool ImageChain::HasDigest(const Digest& digest) const {
  if (digest == EmptyDigest()) return true;
  for (size_t l = 0; l < s_->images.size(); ++l)
    if (s_->Map(l).count(digest)) return true;
  return false;
}

}  // namespace d4c
