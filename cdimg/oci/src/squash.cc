// SquashLayers: applies an image's layers in order to one tree.
#include <algorithm>
#include <limits>

#include "absl/strings/match.h"
#include "d4c/entry.h"
#include "d4c/oci.h"
#include "d4c/base/sha256.h"
#include "d4c/base/status.h"
#include "d4c/base/strcat.h"
#include "layer_reader.h"
#include "squash_tree.h"
#include "util.h"

namespace d4c {
namespace {

using oci_internal::LayerEntry;
using oci_internal::LayerReader;
using oci_internal::SquashTree;

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kWhiteoutMetaPrefix = ".wh..wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";

uint64_t SaturatingMul(uint64_t a, uint64_t b) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return std::numeric_limits<uint64_t>::max();
  return a * b;
}

// AUFS bookkeeping (".wh..wh.plnk", ".wh..wh.aufs", ...) is not content;
// docker and containerd skip it too.
bool IsAufsMetadata(std::string_view path) {
  return path.starts_with(kWhiteoutMetaPrefix) ||
         path.find(StrCat("/", kWhiteoutMetaPrefix)) != std::string_view::npos;
}

absl::Status ApplyWhiteout(LayerReader& reader, SquashTree& tree, const LayerEntry& e) {
  std::string_view path = e.meta.path;
  std::string_view dir = ParentPath(path);
  std::string_view base = BaseName(path);
  absl::Status s;
  if (base == kOpaqueMarker) {
    s = tree.Opaque(dir);
  } else {
    std::string_view name = base.substr(kWhiteoutPrefix.size());
    if (name.empty() || name == "." || name == "..")
      return reader.EntryError(e.raw_name, "is an invalid whiteout");
    s = tree.Whiteout(dir, name);
  }
  if (!s.ok()) return reader.EntryError(e.raw_name, Msg(s.message()));
  return absl::OkStatus();
}

// Default ContentSink::BeginLarge: the whole content, then Put. The size is
// what the tar header claims: at most kReserveMax is reserved up front, so a
// tiny layer claiming a huge file cannot make it allocate gigabytes before a
// byte arrives (found by oci_layer_fuzz: 2 GiB for a 68 KB input); the
// string grows with what actually arrives, which the bomb guard bounds.
class CollectedContent : public LargeContent {
 public:
  static constexpr uint64_t kReserveMax = 8 << 20;
  CollectedContent(ContentSink& sink, uint64_t size) : sink_(sink) {
    content_.reserve(std::min<uint64_t>(size, kReserveMax));
  }
  absl::Status Write(std::string_view piece) override {
    content_.append(piece);
    return absl::OkStatus();
  }
  absl::Status Finish(const Digest& digest) override { return sink_.Put(digest, std::move(content_)); }

 private:
  ContentSink& sink_;
  std::string content_;
};

absl::Status ApplyEntry(LayerReader& reader, SquashTree& tree, ContentSink& sink, LayerEntry& e,
                        const SquashOptions& options) {
  std::string_view base = BaseName(e.meta.path);
  if (!e.meta.path.empty() && IsAufsMetadata(e.meta.path) && base != kOpaqueMarker) return absl::OkStatus();
  if (base.starts_with(kWhiteoutPrefix)) return ApplyWhiteout(reader, tree, e);
  std::string content;
  std::unique_ptr<LargeContent> large;
  bool regular = e.meta.type == EntryType::kRegular;
  if (regular && e.header_size > options.whole_file_bytes) {
    // Streamed: hashed and handed on piece by piece, never held whole.
    auto begun = sink.BeginLarge(e.header_size);
    if (!begun.ok()) return reader.EntryError(e.raw_name, StrCat("could not be stored: ", begun.status().message()));
    large = std::move(*begun);
    Sha256Hasher hasher;
    absl::Status st = reader.StreamContent(e, [&](std::string_view piece) {
      hasher.Update(piece);
      return large->Write(piece);
    });
    if (!st.ok()) return st;
    e.meta.size = e.header_size;
    e.meta.digest = hasher.Finish();
  } else if (regular) {
    absl::StatusOr<std::string> c = reader.ReadContent(e);
    if (!c.ok()) return c.status();
    content = std::move(*c);
    e.meta.size = content.size();
    e.meta.digest = Sha256(content);
  }
  Digest digest = e.meta.digest;
  if (auto s = tree.Apply(std::move(e.meta)); !s.ok()) return reader.EntryError(e.raw_name, Msg(s.message()));
  if (!regular) return absl::OkStatus();
  // Only after the entry proved valid: the sink stores what it is given.
  absl::Status s = large ? large->Finish(digest) : sink.Put(digest, std::move(content));
  if (!s.ok()) return reader.EntryError(e.raw_name, StrCat("could not be stored: ", s.message()));
  return absl::OkStatus();
}

absl::Status ApplyLayer(const ImageSource& image, size_t i, SquashTree& tree, ContentSink& sink,
                        const SquashOptions& options) {
  const LayerDescriptor& d = image.layers()[i];
  std::string name = d.digest.empty() ? StrCat("#", i + 1) : d.digest;
  if (!oci_internal::IsLayerMediaType(d.media_type))
    return absl::InvalidArgumentError(StrCat("layer ", name, " : unsupported media type ",
                                             oci_internal::Quote(d.media_type), " (not a tar layer)"));
  uint64_t limit = std::max(options.layer_floor_bytes, SaturatingMul(options.layer_ratio_limit, d.size));
  std::string limit_text = StrCat(limit, " bytes (max of ", options.layer_floor_bytes, " and ",
                                  options.layer_ratio_limit, " x stored size ", d.size, ")");
  absl::StatusOr<std::unique_ptr<ByteStream>> blob = image.OpenLayer(i);
  if (!blob.ok()) {
    if (absl::StrContains(blob.status().message(), name)) return blob.status();
    return Annotate(blob.status(), StrCat("layer ", name, " "));
  }
  LayerReader reader(name, limit, limit_text);
  if (auto s = reader.Open(std::move(*blob)); !s.ok()) return s;
  LayerEntry e;
  for (;;) {
    absl::StatusOr<bool> more = reader.Next(&e);
    if (!more.ok()) return more.status();
    if (!*more) break;
    if (auto s = ApplyEntry(reader, tree, sink, e, options); !s.ok()) return s;
  }
  return reader.Finish();
}

}  // namespace

absl::StatusOr<std::unique_ptr<LargeContent>> ContentSink::BeginLarge(uint64_t size) {
  return std::make_unique<CollectedContent>(*this, size);
}

absl::StatusOr<std::vector<Entry>> SquashLayers(const ImageSource& image, ContentSink& sink,
                                                const SquashOptions& options) {
  oci_internal::ScopedCLocale c_locale;
  SquashTree tree;
  size_t n = image.layers().size();
  for (size_t i = 0; i < n; ++i) {
    tree.BeginLayer(i + 1);  // 0 marks what existed before any layer
    if (auto s = ApplyLayer(image, i, tree, sink, options); !s.ok()) return s;
    if (options.progress) options.progress(i, n);
  }
  std::vector<Entry> entries = tree.Finish();
  // The tree keeps these invariants by construction; checking is cheap.
  if (auto s = ValidateTree(entries); !s.ok())
    return absl::InternalError(StrCat(image.Describe(), ": squashed tree is invalid: ", s.message()));
  return entries;
}

}  // namespace d4c
