// libFuzzer target for the meta of a compact-meta delta image (docs/format.md):
// the input is the decompressed meta content, which this harness frames into
// a valid file (zstd frame against the parent's prefix, lengths, ids, header
// checksum) so that fuzzing reaches what the checksums would otherwise stop:
// the packed config, base reference 0, the inline pack, index validation.
// Input: [1 config_length][2 index_length, LE][config ‖ index ‖ inline pack].
// Opening must fail with a status or give an image whose accessors and file
// reads stay in bounds.
#define ZSTD_STATIC_LINKING_ONLY  // magicless frames
#include <sys/mman.h>
#include <unistd.h>
#include <zstd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "d4c/cdimg.h"
#include "d4c/chain.h"

namespace {

// "/proc/self/fd/N" of a fresh memfd holding `bytes`.
std::string MemFile(const char* name, const std::string& bytes) {
  int fd = memfd_create(name, 0);
  if (fd < 0 || pwrite(fd, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) __builtin_trap();
  return "/proc/self/fd/" + std::to_string(fd);
}

std::string ReadFd(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  std::string out;
  char buf[4096];
  for (size_t n; f && (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
  if (f) std::fclose(f);
  return out;
}

d4c::Entry File(const std::string& path, const std::string& content) {
  d4c::Entry e;
  e.path = path;
  e.type = d4c::EntryType::kRegular;
  e.mode = 0644;
  e.size = content.size();
  e.digest = d4c::Sha256(content);
  return e;
}

// The parent: a small full image (config without digests or 0x01 bytes, so
// its packed form is itself). Written once; opened per input.
const std::string& ParentPath() {
  static const std::string path = [] {
    std::vector<d4c::Entry> entries(1);
    entries[0].path = "";
    entries[0].type = d4c::EntryType::kDirectory;
    entries[0].mode = 0755;
    entries.push_back(File("a", std::string(300, 'a')));
    entries.push_back(File("b", "bbbb"));
    entries.push_back(File("e", ""));
    // The writer renames its temp file into place, so it needs a real
    // directory: write under /tmp, then keep the bytes in a memfd.
    std::string tmp = "/tmp/d4c-format-delta-fuzz-parent." + std::to_string(getpid());
    auto wr = d4c::CdimgWriter::Create(tmp, {});
    if (!wr.ok()) __builtin_trap();
    std::vector<d4c::Recipe> recipes(entries.size());
    for (size_t i = 1; i < entries.size(); ++i) {
      if (entries[i].size == 0) {
        recipes[i].kind = d4c::Recipe::Kind::kEmpty;
        continue;
      }
      std::string raw = entries[i].path == "a" ? std::string(300, 'a') : "bbbb";
      std::string z(ZSTD_compressBound(raw.size()), '\0');
      z.resize(ZSTD_compress(z.data(), z.size(), raw.data(), raw.size(), 3));
      auto ref = (*wr)->AppendBlob(z);
      if (!ref.ok()) __builtin_trap();
      recipes[i] = {d4c::Recipe::Kind::kFull, d4c::CodecId::kZstd, {}, *ref};
    }
    if (!(*wr)->Finish(R"({"architecture":"amd64"})", entries, recipes).ok()) __builtin_trap();
    std::string bytes = ReadFd(tmp);
    unlink(tmp.c_str());
    return MemFile("parent", bytes);
  }();
  return path;
}

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) out->push_back(static_cast<char>(v | 0x80)), v >>= 7;
  out->push_back(static_cast<char>(v));
}

bool GetVarint(std::string_view in, size_t* pos, uint64_t* v) {
  *v = 0;
  for (int shift = 0; shift < 64 && *pos < in.size(); shift += 7) {
    uint8_t c = static_cast<uint8_t>(in[(*pos)++]);
    *v |= static_cast<uint64_t>(c & 0x7f) << shift;
    if (c < 0x80) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  auto parent = d4c::CdimgImage::Open(ParentPath());
  if (!parent.ok()) __builtin_trap();
  const d4c::CdimgImage& p = **parent;
  std::string_view in(reinterpret_cast<const char*>(data) + 3, size - 3);
  uint64_t config_len = std::min<uint64_t>(data[0], in.size());
  uint64_t index_len = std::min<uint64_t>(data[1] | data[2] << 8, in.size() - config_len);
  std::string_view index = in.substr(config_len, index_len);

  // The image id the index claims: sha256 of its metadata field.
  size_t pos = 0;
  uint64_t meta_len = 0, skip;
  d4c::Digest id{};
  if (GetVarint(index, &pos, &meta_len) && GetVarint(index, &pos, &skip) && GetVarint(index, &pos, &skip) &&
      GetVarint(index, &pos, &skip) && meta_len <= index.size() - pos)
    id = d4c::Sha256(index.substr(pos, meta_len));

  // The compact prefix: packed parent config (= itself here) ‖ metadata ‖ kinds.
  std::string dict(p.config());
  dict += p.metadata();
  for (size_t i = 0; i < p.size(); ++i) {
    d4c::Recipe::Kind k = d4c::Recipe::Kind::kNone;
    if (p.TypeAt(i) == d4c::EntryType::kRegular) k = p.SizeAt(i) ? d4c::Recipe::Kind::kBase : d4c::Recipe::Kind::kEmpty;
    dict.push_back(static_cast<char>(k));
  }
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 1);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_format, ZSTD_f_zstd1_magicless);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  ZSTD_CCtx_refPrefix(cctx, dict.data(), dict.size());
  std::string frame(ZSTD_compressBound(in.size()), '\0');
  size_t n = ZSTD_compress2(cctx, frame.data(), frame.size(), in.data(), in.size());
  ZSTD_freeCCtx(cctx);
  if (ZSTD_isError(n)) __builtin_trap();
  frame.resize(n);

  std::string lead = std::string("D4CCDIMG", 8) + '\x02' + '\x03';
  std::string tail(reinterpret_cast<const char*>(id.data()), 32);
  tail.append(reinterpret_cast<const char*>(p.header().image_id.data()), 32);
  PutVarint(&tail, frame.size());
  PutVarint(&tail, config_len);
  PutVarint(&tail, index_len);
  d4c::Digest sum = d4c::Sha256(lead + tail);
  tail.append(reinterpret_cast<const char*>(sum.data()), 4);
  tail.push_back(static_cast<char>(tail.size()));
  static const std::string path = MemFile("delta", "");
  std::string file = lead + frame + tail;
  int fd = std::stoi(path.substr(path.rfind('/') + 1));
  if (ftruncate(fd, 0) != 0 || pwrite(fd, file.data(), file.size(), 0) != static_cast<ssize_t>(file.size())) return 0;

  auto img = d4c::CdimgImage::Open(path, parent->get());
  if (!img.ok()) return 0;
  const d4c::CdimgImage& im = **img;
  (void)im.config();
  for (size_t i = 0; i < im.size(); ++i) {
    d4c::Recipe r = im.RecipeAt(i);
    if (r.kind == d4c::Recipe::Kind::kFull || r.kind == d4c::Recipe::Kind::kDelta) (void)im.ReadPayload(r);
  }
  std::vector<std::unique_ptr<d4c::CdimgImage>> images;
  images.push_back(std::move(*parent));
  images.push_back(std::move(*img));
  auto chain = d4c::ImageChain::FromImages(std::move(images));
  if (chain.ok()) {
    for (size_t i = 0; i < (*chain)->top().size() && i < 64; ++i)
      if ((*chain)->top().TypeAt(i) == d4c::EntryType::kRegular) (void)(*chain)->ReadFile(i);
  }
  return 0;
}
