#include "oci_fixture.h"

#include <archive.h>
#include <archive_entry.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "nlohmann/json.hpp"

namespace d4c::oci_test {
namespace {

using nlohmann::json;

[[noreturn]] void Die(const char* what, struct archive* a) {
  std::fprintf(stderr, "oci_fixture: %s: %s\n", what, a ? archive_error_string(a) : "");
  std::abort();
}

la_ssize_t AppendCallback(struct archive*, void* out, const void* buf, size_t n) {
  static_cast<std::string*>(out)->append(static_cast<const char*>(buf), n);
  return static_cast<la_ssize_t>(n);
}

void SetFormat(struct archive* a, TarFormat f) {
  int r = f == TarFormat::kPax   ? archive_write_set_format_pax(a)
          : f == TarFormat::kGnu ? archive_write_set_format_gnutar(a)
                                 : archive_write_set_format_ustar(a);
  if (r != ARCHIVE_OK) Die("set format", a);
}

void AddFilter(struct archive* a, Compression c) {
  int r = c == Compression::kGzip   ? archive_write_add_filter_gzip(a)
          : c == Compression::kZstd ? archive_write_add_filter_zstd(a)
                                    : archive_write_add_filter_none(a);
  if (r != ARCHIVE_OK) Die("add filter", a);
}

unsigned FileType(EntryType t) {
  switch (t) {
    case EntryType::kDirectory:
      return AE_IFDIR;
    case EntryType::kSymlink:
      return AE_IFLNK;
    case EntryType::kCharDevice:
      return AE_IFCHR;
    case EntryType::kBlockDevice:
      return AE_IFBLK;
    case EntryType::kFifo:
      return AE_IFIFO;
    default:
      return AE_IFREG;
  }
}

void WriteMember(struct archive* a, const TarMember& m) {
  struct archive_entry* e = archive_entry_new();
  archive_entry_copy_pathname(e, m.name.c_str());
  archive_entry_set_filetype(e, FileType(m.type));
  archive_entry_set_perm(e, m.mode);
  archive_entry_set_uid(e, m.uid);
  archive_entry_set_gid(e, m.gid);
  archive_entry_set_mtime(e, m.mtime_sec, m.mtime_nsec);
  if (m.type == EntryType::kSymlink) archive_entry_copy_symlink(e, m.link.c_str());
  if (m.type == EntryType::kHardlink) archive_entry_copy_hardlink(e, m.link.c_str());
  if (m.type == EntryType::kCharDevice || m.type == EntryType::kBlockDevice) {
    archive_entry_set_rdevmajor(e, m.dev_major);
    archive_entry_set_rdevminor(e, m.dev_minor);
  }
  for (const Xattr& x : m.xattrs) archive_entry_xattr_add_entry(e, x.name.c_str(), x.value.data(), x.value.size());
  archive_entry_set_size(e, m.type == EntryType::kRegular ? static_cast<la_int64_t>(m.content.size()) : 0);
  int r = archive_write_header(a, e);
  if (r != ARCHIVE_OK && r != ARCHIVE_WARN) Die("write header", a);
  if (m.type == EntryType::kRegular && !m.content.empty() &&
      archive_write_data(a, m.content.data(), m.content.size()) < 0)
    Die("write data", a);
  archive_entry_free(e);
}

std::string Hex(const Digest& d) { return DigestHex(d); }

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "oci_fixture: cannot write %s\n", path.c_str());
    std::abort();
  }
}

json Descriptor(const std::string& media_type, const std::string& bytes) {
  return json{{"mediaType", media_type}, {"digest", Sha256String(bytes)}, {"size", bytes.size()}};
}

class StringStream : public ByteStream {
 public:
  explicit StringStream(const std::string* s) : s_(s) {}
  absl::StatusOr<size_t> Read(char* buf, size_t n) override {
    size_t k = std::min(n, s_->size() - pos_);
    std::copy_n(s_->data() + pos_, k, buf);
    pos_ += k;
    return k;
  }

 private:
  const std::string* s_;
  size_t pos_ = 0;
};

}  // namespace

TarMember Member(std::string name, EntryType type, uint32_t mode, std::string link) {
  TarMember m;
  m.name = std::move(name);
  m.type = type;
  m.mode = mode;
  m.link = std::move(link);
  return m;
}

LayerBuilder& LayerBuilder::Add(TarMember m) {
  members_.push_back(std::move(m));
  return *this;
}

LayerBuilder& LayerBuilder::File(std::string name, std::string content, uint32_t mode) {
  TarMember m = Member(std::move(name), EntryType::kRegular, mode);
  m.content = std::move(content);
  return Add(std::move(m));
}

LayerBuilder& LayerBuilder::Dir(std::string name, uint32_t mode) {
  return Add(Member(std::move(name), EntryType::kDirectory, mode));
}

LayerBuilder& LayerBuilder::Symlink(std::string name, std::string target) {
  return Add(Member(std::move(name), EntryType::kSymlink, 0777, std::move(target)));
}

LayerBuilder& LayerBuilder::Hardlink(std::string name, std::string target) {
  return Add(Member(std::move(name), EntryType::kHardlink, 0644, std::move(target)));
}

LayerBuilder& LayerBuilder::Device(std::string name, EntryType type, uint32_t major, uint32_t minor,
                                   uint32_t mode) {
  TarMember m = Member(std::move(name), type, mode);
  m.dev_major = major;
  m.dev_minor = minor;
  return Add(std::move(m));
}

LayerBuilder& LayerBuilder::Fifo(std::string name, uint32_t mode) {
  return Add(Member(std::move(name), EntryType::kFifo, mode));
}

LayerBuilder& LayerBuilder::Whiteout(std::string path) {
  size_t slash = path.rfind('/');
  std::string name =
      slash == std::string::npos ? ".wh." + path : path.substr(0, slash + 1) + ".wh." + path.substr(slash + 1);
  return File(std::move(name), "");
}

LayerBuilder& LayerBuilder::Opaque(std::string dir) {
  return File(dir.empty() ? ".wh..wh..opq" : dir + "/.wh..wh..opq", "");
}

LayerBuilder& LayerBuilder::Owner(uint32_t uid, uint32_t gid) {
  members_.back().uid = uid;
  members_.back().gid = gid;
  return *this;
}

LayerBuilder& LayerBuilder::Mtime(int64_t sec, uint32_t nsec) {
  members_.back().mtime_sec = sec;
  members_.back().mtime_nsec = nsec;
  return *this;
}

LayerBuilder& LayerBuilder::WithXattr(std::string name, std::string value) {
  members_.back().xattrs.push_back({std::move(name), std::move(value)});
  return *this;
}

std::string LayerBuilder::Tar() const {
  std::string out;
  struct archive* a = archive_write_new();
  SetFormat(a, format_);
  archive_write_add_filter_none(a);
  archive_write_set_bytes_in_last_block(a, 1);
  if (archive_write_open(a, &out, nullptr, AppendCallback, nullptr) != ARCHIVE_OK) Die("open", a);
  for (const TarMember& m : members_) WriteMember(a, m);
  if (archive_write_close(a) != ARCHIVE_OK) Die("close", a);
  archive_write_free(a);
  return out;
}

std::string LayerBuilder::Build(Compression c) const { return Compress(Tar(), c); }

std::string Compress(const std::string& bytes, Compression c) {
  if (c == Compression::kNone) return bytes;
  std::string out;
  struct archive* a = archive_write_new();
  archive_write_set_format_raw(a);
  AddFilter(a, c);
  archive_write_set_bytes_in_last_block(a, 1);
  if (archive_write_open(a, &out, nullptr, AppendCallback, nullptr) != ARCHIVE_OK) Die("open raw", a);
  struct archive_entry* e = archive_entry_new();
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_copy_pathname(e, "data");
  if (archive_write_header(a, e) != ARCHIVE_OK) Die("raw header", a);
  if (!bytes.empty() && archive_write_data(a, bytes.data(), bytes.size()) < 0) Die("raw data", a);
  archive_entry_free(e);
  if (archive_write_close(a) != ARCHIVE_OK) Die("close raw", a);
  archive_write_free(a);
  return out;
}

const char* LayerMediaType(Compression c) {
  switch (c) {
    case Compression::kGzip:
      return "application/vnd.oci.image.layer.v1.tar+gzip";
    case Compression::kZstd:
      return "application/vnd.oci.image.layer.v1.tar+zstd";
    case Compression::kNone:
      break;
  }
  return "application/vnd.oci.image.layer.v1.tar";
}

std::string Sha256String(const std::string& bytes) { return DigestString(Sha256(bytes)); }

std::string DefaultConfig(const std::vector<std::string>& layer_tars) {
  json ids = json::array();
  for (const std::string& t : layer_tars) ids.push_back(Sha256String(t));
  json cfg = {{"architecture", "amd64"},
              {"os", "linux"},
              {"config", {{"Env", {"PATH=/bin"}}}},
              {"rootfs", {{"type", "layers"}, {"diff_ids", ids}}}};
  return cfg.dump();
}

absl::StatusOr<std::vector<WrittenImage>> WriteOciLayout(const std::string& dir,
                                                         const std::vector<ImageSpec>& images) {
  std::error_code ec;
  std::filesystem::create_directories(dir + "/blobs/sha256", ec);
  if (ec) return absl::InternalError("mkdir " + dir + ": " + ec.message());
  auto put_blob = [&](const std::string& bytes) { WriteFile(dir + "/blobs/sha256/" + Hex(Sha256(bytes)), bytes); };
  WriteFile(dir + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
  json index = {{"schemaVersion", 2},
                {"mediaType", "application/vnd.oci.image.index.v1+json"},
                {"manifests", json::array()}};
  std::vector<WrittenImage> written;
  for (const ImageSpec& img : images) {
    WrittenImage w;
    json layers = json::array();
    for (const std::string& tar : img.layers) {
      std::string stored = Compress(tar, img.compression);
      put_blob(stored);
      layers.push_back(Descriptor(LayerMediaType(img.compression), stored));
      w.layer_digests.push_back(Sha256String(stored));
    }
    std::string config = img.config_json.empty() ? DefaultConfig(img.layers) : img.config_json;
    put_blob(config);
    w.config_digest = Sha256String(config);
    json manifest = {{"schemaVersion", 2},
                     {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                     {"config", Descriptor("application/vnd.oci.image.config.v1+json", config)},
                     {"layers", layers}};
    std::string mtext = manifest.dump();
    put_blob(mtext);
    w.manifest_digest = Sha256String(mtext);
    json desc = Descriptor("application/vnd.oci.image.manifest.v1+json", mtext);
    if (!img.tag.empty()) desc["annotations"] = {{"org.opencontainers.image.ref.name", img.tag}};
    index["manifests"].push_back(desc);
    written.push_back(std::move(w));
  }
  WriteFile(dir + "/index.json", index.dump());
  return written;
}

absl::Status WriteDockerArchive(const std::string& path, const std::vector<ImageSpec>& images, bool legacy_links) {
  std::string out;
  struct archive* a = archive_write_new();
  SetFormat(a, TarFormat::kPax);
  archive_write_add_filter_none(a);
  if (archive_write_open(a, &out, nullptr, AppendCallback, nullptr) != ARCHIVE_OK) Die("open", a);
  json manifest = json::array();
  std::map<std::string, bool> written;
  auto add = [&](TarMember m) {
    if (!written.emplace(m.name, true).second) return;
    m.mtime_sec = 0;
    WriteMember(a, m);
  };
  for (const ImageSpec& img : images) {
    json layer_names = json::array();
    for (size_t i = 0; i < img.layers.size(); ++i) {
      std::string hex = Hex(Sha256(img.layers[i]));
      TarMember layer = Member(hex + ".tar", EntryType::kRegular, 0444);
      layer.content = Compress(img.layers[i], img.compression);
      add(std::move(layer));
      if (legacy_links) {
        std::string link_dir = Hex(Sha256(hex + std::to_string(i)));
        add(Member(link_dir + "/layer.tar", EntryType::kSymlink, 0777, "../" + hex + ".tar"));
        layer_names.push_back(link_dir + "/layer.tar");
      } else {
        layer_names.push_back(hex + ".tar");
      }
    }
    std::string config = img.config_json.empty() ? DefaultConfig(img.layers) : img.config_json;
    std::string config_name = Hex(Sha256(config)) + ".json";
    TarMember cfg = Member(config_name, EntryType::kRegular, 0444);
    cfg.content = config;
    add(std::move(cfg));
    json item = {{"Config", config_name}, {"RepoTags", json::array()}, {"Layers", layer_names}};
    if (!img.tag.empty()) item["RepoTags"].push_back(img.tag);
    manifest.push_back(item);
  }
  TarMember m = Member("manifest.json", EntryType::kRegular, 0444);
  m.content = manifest.dump();
  add(std::move(m));
  if (archive_write_close(a) != ARCHIVE_OK) Die("close", a);
  archive_write_free(a);
  WriteFile(path, out);
  return absl::OkStatus();
}

MemoryImageSource::MemoryImageSource(std::vector<Layer> layers, std::string config)
    : layers_(std::move(layers)), config_(std::move(config)) {
  for (const Layer& l : layers_) descs_.push_back({l.media_type, Sha256String(l.bytes), l.bytes.size()});
}

absl::StatusOr<std::unique_ptr<ByteStream>> MemoryImageSource::OpenLayer(size_t i) const {
  if (i >= layers_.size()) return absl::OutOfRangeError("no such layer");
  return std::unique_ptr<ByteStream>(std::make_unique<StringStream>(&layers_[i].bytes));
}

MemoryImageSource MemoryImage(const std::vector<LayerBuilder>& layers, Compression c) {
  std::vector<MemoryImageSource::Layer> out;
  for (const LayerBuilder& b : layers) out.push_back({LayerMediaType(c), b.Build(c)});
  return MemoryImageSource(std::move(out));
}

absl::Status RecordingSink::Put(const Digest& digest, std::string content) {
  ++puts;
  blobs[digest] = std::move(content);
  return absl::OkStatus();
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string Text(uint32_t seed, size_t lines) {
  static const char* words[] = {"alpha", "beta", "gamma", "delta", "const", "return", "function",
                                "value", "index", "module", "export", "import", "type", "string"};
  std::string out;
  uint32_t x = seed * 2654435761u + 1;
  for (size_t l = 0; l < lines; ++l) {
    out += "line " + std::to_string(l) + ":";
    for (int w = 0; w < 8; ++w) {
      x = x * 1103515245u + 12345u;
      out += ' ';
      out += words[(x >> 16) % 14];
      out += std::to_string((x >> 8) % 100);
    }
    out += '\n';
  }
  return out;
}

std::string Edit(const std::string& base, size_t every, const std::string& tag) {
  std::istringstream in(base);
  std::string line, out;
  for (size_t n = 0; std::getline(in, line); ++n) out += (n % every == 0 ? tag + line : line) + "\n";
  return out;
}

ScratchDir::ScratchDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/d4c-oci-test-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  path_ = tmpl;
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

Entry DirEntry(std::string path, uint32_t mode, int64_t mtime) {
  Entry e;
  e.path = std::move(path);
  e.type = EntryType::kDirectory;
  e.mode = mode;
  e.mtime_sec = mtime;
  return e;
}

Entry FileEntry(std::string path, const std::string& content, uint32_t mode, int64_t mtime) {
  Entry e;
  e.path = std::move(path);
  e.type = EntryType::kRegular;
  e.mode = mode;
  e.mtime_sec = mtime;
  e.size = content.size();
  e.digest = Sha256(content);
  return e;
}

Entry SymlinkEntry(std::string path, std::string target, uint32_t mode, int64_t mtime) {
  Entry e;
  e.path = std::move(path);
  e.type = EntryType::kSymlink;
  e.mode = mode;
  e.mtime_sec = mtime;
  e.link_target = std::move(target);
  return e;
}

Entry HardlinkEntry(std::string path, std::string primary) {
  Entry e;
  e.path = std::move(path);
  e.type = EntryType::kHardlink;
  e.link_target = std::move(primary);
  return e;
}

Entry ImpliedRoot() { return DirEntry("", 0755, 0); }

std::string Describe(const Entry& e) {
  char mode[16];
  std::snprintf(mode, sizeof mode, "%04o", e.mode);
  std::string s = "\"" + e.path + "\" " + EntryTypeName(e.type) + " " + mode + " " + std::to_string(e.uid) + ":" +
                  std::to_string(e.gid) + " t=" + std::to_string(e.mtime_sec) + "." + std::to_string(e.mtime_nsec);
  if (e.type == EntryType::kRegular)
    s += " size=" + std::to_string(e.size) + " " + DigestHex(e.digest).substr(0, 12);
  if (!e.link_target.empty()) s += " -> " + e.link_target;
  if (e.type == EntryType::kCharDevice || e.type == EntryType::kBlockDevice)
    s += " dev=" + std::to_string(e.dev_major) + ":" + std::to_string(e.dev_minor);
  for (const Xattr& x : e.xattrs) s += " x:" + x.name + "=" + std::to_string(x.value.size()) + "B";
  return s;
}

std::string Describe(const std::vector<Entry>& entries) {
  std::string s;
  for (const Entry& e : entries) s += Describe(e) + "\n";
  return s;
}

absl::StatusOr<ChildRun> RunInChild(const std::function<std::string()>& f) {
  int pipefd[2];
  if (pipe(pipefd) != 0) return absl::InternalError("pipe failed");
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    close(pipefd[0]);
    std::string msg = f();
    ssize_t w = write(pipefd[1], msg.data(), msg.size());
    _exit(w < 0 ? 2 : 0);
  }
  close(pipefd[1]);
  ChildRun out;
  char buf[4096];
  for (ssize_t n; (n = read(pipefd[0], buf, sizeof buf)) > 0;) out.msg.append(buf, static_cast<size_t>(n));
  close(pipefd[0]);
  int status = 0;
  rusage ru{};
  if (wait4(pid, &status, 0, &ru) != pid) return absl::InternalError("wait4 failed");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return absl::InternalError("child did not exit 0 (status " + std::to_string(status) + "): " + out.msg);
  out.peak_mib = static_cast<uint64_t>(ru.ru_maxrss) / 1024;  // ru_maxrss is in KiB
  return out;
}

}  // namespace d4c::oci_test
