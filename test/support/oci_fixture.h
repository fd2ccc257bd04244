// Test helpers for OCI input: build layer tars with libarchive, write OCI
// image layouts and docker-archives from them, and serve layers from memory.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "d4c/entry.h"
#include "d4c/oci.h"

namespace d4c::oci_test {

enum class TarFormat { kPax, kGnu, kUstar };
enum class Compression { kNone, kGzip, kZstd };

// One member of a synthetic layer, written as is (no name sanitizing, so
// hostile names like "../x" or "/etc" can be produced).
struct TarMember {
  std::string name;
  EntryType type = EntryType::kRegular;
  std::string content;  // regular files
  std::string link;     // symlink target or hardlink target
  uint32_t mode = 0644;
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime_sec = 1000;
  uint32_t mtime_nsec = 0;
  uint32_t dev_major = 0;
  uint32_t dev_minor = 0;
  std::vector<Xattr> xattrs;
};

TarMember Member(std::string name, EntryType type, uint32_t mode, std::string link = "");

class LayerBuilder {
 public:
  explicit LayerBuilder(TarFormat format = TarFormat::kPax) : format_(format) {}

  LayerBuilder& Add(TarMember m);
  LayerBuilder& File(std::string name, std::string content, uint32_t mode = 0644);
  LayerBuilder& Dir(std::string name, uint32_t mode = 0755);
  LayerBuilder& Symlink(std::string name, std::string target);
  LayerBuilder& Hardlink(std::string name, std::string target);
  LayerBuilder& Device(std::string name, EntryType type, uint32_t major, uint32_t minor, uint32_t mode = 0600);
  LayerBuilder& Fifo(std::string name, uint32_t mode = 0644);
  // "dir/.wh.name" for path "dir/name".
  LayerBuilder& Whiteout(std::string path);
  // "dir/.wh..wh..opq"
  LayerBuilder& Opaque(std::string dir);
  // Adjust the last member.
  LayerBuilder& Owner(uint32_t uid, uint32_t gid);
  LayerBuilder& Mtime(int64_t sec, uint32_t nsec = 0);
  LayerBuilder& WithXattr(std::string name, std::string value);

  // The uncompressed tar; aborts the test binary on libarchive errors.
  std::string Tar() const;
  std::string Build(Compression c) const;

 private:
  TarFormat format_;
  std::vector<TarMember> members_;
};

// Compresses bytes with libarchive's raw writer.
std::string Compress(const std::string& bytes, Compression c);
const char* LayerMediaType(Compression c);
std::string Sha256String(const std::string& bytes);  // "sha256:<hex>"

// An image as the writers below lay it out.
struct ImageSpec {
  ImageSpec(std::string t, std::vector<std::string> l, Compression c = Compression::kGzip, std::string config = "")
      : tag(std::move(t)), layers(std::move(l)), compression(c), config_json(std::move(config)) {}
  std::string tag;                  // ref.name annotation / RepoTags entry
  std::vector<std::string> layers;  // uncompressed tars, bottom first
  Compression compression = Compression::kGzip;
  std::string config_json;  // default: minimal config with the right diff_ids
};

struct WrittenImage {
  std::string manifest_digest;
  std::string config_digest;
  std::vector<std::string> layer_digests;  // of the stored (compressed) blobs
};

// OCI image layout with every image tagged in index.json.
absl::StatusOr<std::vector<WrittenImage>> WriteOciLayout(const std::string& dir,
                                                         const std::vector<ImageSpec>& images);

// skopeo-style docker-archive: "<diffid>.tar" layers, "<config>.json",
// manifest.json. With `legacy_links`, manifest.json names "<n>/layer.tar"
// symlinks (as older docker save / skopeo do) instead of the layer files.
absl::Status WriteDockerArchive(const std::string& path, const std::vector<ImageSpec>& images,
                                bool legacy_links = false);

// Default image config for a list of uncompressed layer tars.
std::string DefaultConfig(const std::vector<std::string>& layer_tars);

// Layers served from memory, unverified (like a registry client would).
class MemoryImageSource : public ImageSource {
 public:
  struct Layer {
    std::string media_type;
    std::string bytes;  // stored form
  };
  explicit MemoryImageSource(std::vector<Layer> layers, std::string config = "{}");
  std::string Describe() const override { return "memory"; }
  const std::string& config_json() const override { return config_; }
  const std::vector<LayerDescriptor>& layers() const override { return descs_; }
  absl::StatusOr<std::unique_ptr<ByteStream>> OpenLayer(size_t i) const override;

 private:
  std::vector<Layer> layers_;
  std::vector<LayerDescriptor> descs_;
  std::string config_;
};

// Convenience: gzip'd layers from builders.
MemoryImageSource MemoryImage(const std::vector<LayerBuilder>& layers, Compression c = Compression::kGzip);

// Keeps every Put.
class RecordingSink : public ContentSink {
 public:
  absl::Status Put(const Digest& digest, std::string content) override;
  std::map<Digest, std::string> blobs;
  size_t puts = 0;
};

// A fresh directory under $TMPDIR, removed (recursively) on destruction.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The whole file (empty if it cannot be read).
std::string ReadAll(const std::string& path);

// Deterministic text with line structure (words and numbers from `seed`), so
// that small edits give small deltas.
std::string Text(uint32_t seed, size_t lines);
// `base` with every `every`-th line prefixed by `tag`.
std::string Edit(const std::string& base, size_t every, const std::string& tag);

// Expected-entry helpers for assertions.
Entry DirEntry(std::string path, uint32_t mode = 0755, int64_t mtime = 1000);
Entry FileEntry(std::string path, const std::string& content, uint32_t mode = 0644, int64_t mtime = 1000);
Entry SymlinkEntry(std::string path, std::string target, uint32_t mode = 0777, int64_t mtime = 1000);
Entry HardlinkEntry(std::string path, std::string primary);
// The root as it is when no layer has a "./" entry.
Entry ImpliedRoot();

// One line per entry ("path type mode uid:gid mtime size target xattrs") so
// Runs `f` in a forked child, so that its peak RSS (wait4's ru_maxrss) is
// its own and the parent's memory never counts; returns what `f` returned
// and that peak. An error if the child could not run or did not exit 0.
struct ChildRun {
  std::string msg;
  uint64_t peak_mib = 0;
};
absl::StatusOr<ChildRun> RunInChild(const std::function<std::string()>& f);

// Catch prints readable diffs.
std::string Describe(const Entry& e);
std::string Describe(const std::vector<Entry>& entries);

}  // namespace d4c::oci_test
