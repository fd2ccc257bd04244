// fuzz_seeds OUT_DIR: writes structured seed inputs for the libFuzzer targets
// into OUT_DIR/<target>/gen-<case> (scripts/fuzz.sh runs it before fuzzing).
//
// Random bytes rarely get past a tar header, a cdimg header checksum or a
// codec's framing; these seeds start the fuzzers on real structure:
//   oci_layer_fuzz     the hostile layer layouts the unit tests refuse (path
//                      escapes, writes through symlinked parents, bad
//                      hardlinks, whiteouts through symlinks, a root replaced
//                      by a symlink, oversized declared sizes) and well-formed
//                      layers with every entry type, as plain tar (mutations
//                      land in headers) and a few compressed;
//   format_cdimg_fuzz  small real cdimgs (packed, standalone, empty files,
//                      hardlinks, devices, xattrs) written by ConvertImage;
//   codec_*_fuzz       real base/target pairs in both modes of codec_fuzz.h:
//                      "mutated" (encode, flip, decode) and "raw" (a real
//                      patch as the decoder's input), standalone and pack form;
//   codec_bsdiff_x86_fuzz  machine-code-like bytes for the transform, and
//                      pairs and real patches in bsdiff's x86 code form.
// Everything is generated from code so that the seeds are reviewable and
// follow format changes; nothing here is copied from an image.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bsdiff_codec.h"
#include "codec_fuzz.h"
#include "x86_code.h"
#include "d4c/codec.h"
#include "d4c/convert.h"
#include "oci_fixture.h"
#include "zip_fixture.h"

namespace {

using d4c::EntryType;
using d4c::oci_test::Compression;
using d4c::oci_test::LayerBuilder;
using d4c::oci_test::Member;
using d4c::oci_test::TarFormat;

namespace fs = std::filesystem;

std::string g_out;
int g_written = 0;

[[noreturn]] void Die(const std::string& what) {
  fprintf(stderr, "fuzz_seeds: %s\n", what.c_str());
  std::exit(1);
}

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  fs::path dir = fs::path(g_out) / target;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) Die("cannot create " + dir.string() + ": " + ec.message());
  fs::path p = dir / ("gen-" + name);
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) Die("cannot write " + p.string());
  ++g_written;
}

std::string Text(int seed, int lines) {
  std::string s;
  for (int i = 0; i < lines; ++i)
    s += "line " + std::to_string(i * 7919 % (seed * 1000 + 17)) + " of file " + std::to_string(seed) + "\n";
  return s;
}

std::string Binary(int seed, size_t n) {
  std::string s(n, '\0');
  uint32_t x = 2463534242u + static_cast<uint32_t>(seed);
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    // Runs of structure (as in code): mostly small values, some noise.
    s[i] = static_cast<char>((i % 64 < 48) ? (i / 64 + seed) & 0x1f : x & 0xff);
  }
  return s;
}

// ---- oci_layer_fuzz ---------------------------------------------------------

struct LayerCase {
  std::string name;
  LayerBuilder layer;
};

std::vector<LayerCase> LayerCases() {
  std::vector<LayerCase> c;
  auto add = [&](std::string name, LayerBuilder l) { c.push_back({std::move(name), std::move(l)}); };
  {
    LayerBuilder l;
    l.Dir("etc").File("etc/hosts", "127.0.0.1 localhost\n").Symlink("etc/alias", "hosts")
        .File("usr/bin/tool", Binary(1, 3000), 04755).Owner(0, 0)
        .Hardlink("usr/bin/tool2", "usr/bin/tool")
        .Device("dev/null", EntryType::kCharDevice, 1, 3, 0666)
        .Device("dev/sda", EntryType::kBlockDevice, 8, 0)
        .Fifo("run/fifo")
        .File("bin/ping", "elf", 0755).WithXattr("security.capability", std::string("\x01\x00\x00\x02\x00\x20", 6))
        .File("empty", "").Mtime(1700000000, 123456789);
    add("every-type", l);
  }
  {
    LayerBuilder l;
    l.Dir("a").File("a/keep", "x").Whiteout("a/gone").Opaque("b").File("b/new", "y").Whiteout("c");
    add("whiteouts-opaque", l);
  }
  {
    LayerBuilder l;
    l.File(".wh..wh..opq", "").File(".wh..wh.aufs", "").Dir(".wh..wh.plnk").File("x", "y");
    add("opaque-root-aufs", l);
  }
  {
    LayerBuilder l;
    l.File("ok", "fine").File("../etc/passwd", "root::0:0");
    add("escape-dotdot", l);
  }
  {
    LayerBuilder l;
    l.Dir("a").File("a/../../b", "x");
    add("escape-middle", l);
  }
  {
    LayerBuilder l;
    l.File("/etc/passwd", "x");
    add("escape-absolute", l);
  }
  {
    LayerBuilder l;
    l.Symlink("../up", "x");
    add("escape-symlink-name", l);
  }
  {
    LayerBuilder l;
    l.Symlink("a", "/etc").File("a/passwd", "evil");
    add("write-through-symlink", l);
  }
  {
    LayerBuilder l;
    l.Dir("x").Symlink("x/y", "../../..").Dir("x/y/z");
    add("dir-through-symlink", l);
  }
  {
    LayerBuilder l;
    l.Symlink("etc", "/etc").Whiteout("etc/shadow");
    add("whiteout-through-symlink", l);
  }
  {
    LayerBuilder l;
    l.File("f", "x").File("f/g", "y");
    add("file-as-parent", l);
  }
  {
    LayerBuilder l;
    l.Symlink(".", "/");
    add("root-symlink", l);
  }
  {
    LayerBuilder l;
    l.File("a", "x").Hardlink("b", "missing").Hardlink("c", "../../etc/shadow").Dir("d").Hardlink("e", "d")
        .Hardlink("f", "f");
    add("bad-hardlinks", l);
  }
  {
    LayerBuilder l;
    l.File("a", "1").Dir("a").File("a/b", "2").Symlink("a", "elsewhere").File("a", "3");
    add("replace-chain", l);
  }
  {
    LayerBuilder l;
    l.File("dup", "one").File("dup", "two").Dir("dir").Dir("dir", 0700);
    add("duplicates", l);
  }
  {
    LayerBuilder l(TarFormat::kGnu);
    l.File(std::string(300, 'n') + "/" + std::string(200, 'm'), "long").Symlink("s", std::string(400, 't'));
    add("gnu-long-names", l);
  }
  {
    LayerBuilder l;
    l.File(std::string("bad\xff\xfe-utf8"), "x").File(std::string(250, 'p') + "/q", "pax");
    add("pax-names", l);
  }
  {
    LayerBuilder l(TarFormat::kUstar);
    l.Dir("u").File("u/f", Text(1, 20));
    add("ustar", l);
  }
  {
    auto m = Member("huge", EntryType::kRegular, 0644);
    m.content = "short";
    LayerBuilder l;
    l.Add(m).File("zeros", std::string(1 << 16, '\0'));
    add("zeros", l);
  }
  return c;
}

void LayerSeeds() {
  for (const LayerCase& c : LayerCases()) {
    Write("oci_layer_fuzz", c.name, c.layer.Tar());
    if (c.name == "every-type" || c.name == "whiteouts-opaque" || c.name == "escape-dotdot") {
      Write("oci_layer_fuzz", c.name + ".gz", c.layer.Build(Compression::kGzip));
      Write("oci_layer_fuzz", c.name + ".zst", c.layer.Build(Compression::kZstd));
    }
  }
  // A tar whose first header claims far more data than follows.
  std::string t = LayerBuilder().File("big", std::string(600, 'x')).Tar();
  std::string cut = t.substr(0, 1024);
  Write("oci_layer_fuzz", "truncated-member", cut);
}

// ---- format_cdimg_fuzz ------------------------------------------------------

void CdimgSeeds(const std::string& tmp) {
  struct Img {
    std::string name;
    LayerBuilder layer;
  };
  std::vector<Img> imgs;
  {
    LayerBuilder l;
    l.Dir("usr").File("usr/big.txt", Text(1, 3000)).File("usr/small.txt", Text(2, 40))
        .File("etc/app.conf", Text(3, 5)).File("empty", "").Hardlink("usr/link.txt", "usr/small.txt")
        .Symlink("bin", "usr/bin").Device("dev/null", EntryType::kCharDevice, 1, 3, 0666)
        .File("usr/bin/tool", Binary(2, 5000), 04755).WithXattr("user.k", "v");
    imgs.push_back({"mixed", l});
  }
  {
    LayerBuilder l;
    l.Dir("only");
    imgs.push_back({"no-files", l});
  }
  {
    LayerBuilder l;
    for (int i = 0; i < 12; ++i) l.File("pkg/f" + std::to_string(i) + ".js", Text(i + 5, 10));
    imgs.push_back({"packed", l});
  }
  for (const Img& img : imgs) {
    std::string layout = tmp + "/oci-" + img.name, out = tmp + "/" + img.name + ".cdimg";
    auto w = d4c::oci_test::WriteOciLayout(layout, {{img.name, {img.layer.Tar()}}});
    if (!w.ok()) Die(std::string(w.status().message()));
    d4c::ConvertOptions co;
    co.threads = 1;
    co.zstd_level = 3;
    if (auto st = d4c::ConvertImage("oci:" + layout + ":" + img.name, out, co); !st.ok())
      Die(std::string(st.status().message()));
    Write("format_cdimg_fuzz", img.name, d4c::oci_test::ReadAll(out));
  }
}

// ---- codec_*_fuzz (modes of codec_fuzz.h) -----------------------------------

void Le(std::string& s, uint32_t v, int n) {
  for (int i = 0; i < n; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
}

struct Pair {
  std::string name, base, target;
};

std::vector<Pair> Pairs(size_t max_encode) {
  std::vector<Pair> p;
  std::string text = Text(7, 120), bin = Binary(3, 4000);
  std::string text2 = text;
  text2.replace(text.size() / 3, 30, "an edit in the middle of the text file");
  text2 += "appended line\n";
  std::string bin2 = bin.substr(0, 1000) + Binary(9, 64) + bin.substr(1000);
  for (size_t i = 2000; i + 4 < bin2.size(); i += 97) bin2[i] = static_cast<char>(bin2[i] + 1);  // shifted pointers
  p.push_back({"text-edit", text, text2});
  p.push_back({"binary-insert", bin, bin2});
  p.push_back({"empty-base", "", text.substr(0, 500)});
  p.push_back({"to-empty", text.substr(0, 300), ""});
  std::erase_if(p, [&](const Pair& x) { return x.base.size() + x.target.size() > max_encode; });
  return p;
}

void CodecSeeds(const char* target, d4c::CodecId id, size_t max_encode) {
  const d4c::DeltaCodec& codec = d4c::GetCodec(id);
  for (const Pair& pr : Pairs(max_encode)) {
    for (bool pack : {false, true}) {
      std::string form = pack ? "-pack" : "";
      // mutated: [flag][2 pos][1 xor][2 base_len][base][target]
      for (uint8_t x : {uint8_t{0}, uint8_t{0x40}}) {
        std::string s;
        s.push_back(static_cast<char>(1 | (pack ? 2 : 0)));
        Le(s, 17, 2);
        s.push_back(static_cast<char>(x));
        Le(s, static_cast<uint32_t>(pr.base.size()), 2);
        s += pr.base + pr.target;
        Write(target, "mut-" + pr.name + form + (x ? "-flip" : ""), s);
      }
      // raw: [flag][3 target_size][2 base_len][base][patch]
      auto patch = pack ? codec.EncodeForPack(pr.base, pr.target) : codec.Encode(pr.base, pr.target);
      if (!patch.ok()) continue;  // a codec may refuse a pair (e.g. gzip without a gzip base)
      std::string s;
      s.push_back(static_cast<char>(pack ? 2 : 0));
      Le(s, static_cast<uint32_t>(pr.target.size()), 3);
      Le(s, static_cast<uint32_t>(pr.base.size()), 2);
      s += pr.base + *patch;
      Write(target, "raw-" + pr.name + form, s);
    }
  }
}

// Binary() with calls and RIP-relative loads spread through it, as the x86
// code form rewrites them.
std::string Code(int seed, size_t n) {
  std::string s = Binary(seed, n);
  for (size_t i = 0; i + 16 < s.size(); i += 23) {
    s.replace(i, 5, std::string("\xE8\x00\x01\x00\x00", 5));
    s[i + 4] = static_cast<char>(seed & 1 ? 0x00 : 0xFF);
    s.replace(i + 9, 3, "\x48\x8B\x05");
  }
  return s;
}

void X86Seeds() {
  const char* target = "codec_bsdiff_x86_fuzz";
  std::string code = Code(4, 3000);
  // transform: [0][2 start][2 size][bytes]
  std::string t(1, '\0');
  Le(t, 3, 2);
  Le(t, 0xFFFF, 2);
  Write(target, "transform", t + code);
  // The same code after a rebuild: a block inserted, displacements moved.
  std::string code2 = code.substr(0, 900) + Binary(8, 48) + code.substr(900);
  for (size_t i = 1200; i + 4 < code2.size(); i += 23) code2[i + 1] = static_cast<char>(code2[i + 1] + 48);
  for (uint8_t x : {uint8_t{0}, uint8_t{0x40}}) {
    // mutated: [1][2 pos][1 xor][2 base_len][base][target]
    std::string s(1, '\1');
    Le(s, 29, 2);
    s.push_back(static_cast<char>(x));
    Le(s, static_cast<uint32_t>(code.size()), 2);
    Write(target, std::string("mut-rebuild") + (x ? "-flip" : ""), s + code + code2);
  }
  auto patch = d4c::codec_internal::BsdiffCodec().EncodeX86(code, code2, {0, code.size()}, {0, code2.size()},
                                                             d4c::NoHelpers(), UINT64_MAX);
  if (!patch.ok()) Die("x86 seed: " + std::string(patch.status().message()));
  // raw: [2][3 target_size][2 base_len][base][patch]
  std::string s(1, '\2');
  Le(s, static_cast<uint32_t>(code2.size()), 3);
  Le(s, static_cast<uint32_t>(code.size()), 2);
  Write(target, "raw-rebuild", s + code + *patch);
  // adjusted mutated: [3][2 pos][1 xor][2 base_len][base][target], as ELF files
  for (uint8_t x : {uint8_t{0}, uint8_t{0x40}}) {
    std::string m(1, '\3');
    Le(m, 29, 2);
    m.push_back(static_cast<char>(x));
    Le(m, static_cast<uint32_t>(code.size()), 2);
    Write(target, std::string("adj-rebuild") + (x ? "-flip" : ""), m + code + code2);
  }
  // adjusted raw: [4][3 target_size][2 base_len][base][patch]
  std::string elf = d4c::fuzz::MinimalElf(code), elf2 = d4c::fuzz::MinimalElf(code2);
  auto adjusted = d4c::codec_internal::BsdiffCodec().EncodeAdjusted(
      elf, elf2, *d4c::codec_internal::X86_64CodeSpan(elf), *d4c::codec_internal::X86_64CodeSpan(elf2),
      d4c::NoHelpers(), UINT64_MAX);
  if (!adjusted.ok()) Die("adjusted x86 seed: " + std::string(adjusted.status().message()));
  std::string r(1, '\4');
  Le(r, static_cast<uint32_t>(elf2.size()), 3);
  Le(r, static_cast<uint32_t>(code.size()), 2);
  Write(target, "raw-adjusted", r + code + *adjusted);
}

// The gzip codec's zip forms: jar-like archives of two versions of a text,
// in the mutated mode (flag bit 7) and as real patches in the raw mode.
void ZipSeeds() {
  const d4c::DeltaCodec& codec = d4c::GetCodec(d4c::CodecId::kGzip);
  std::string v1 = Text(31, 60), v2 = Text(32, 60);
  for (bool pack : {false, true}) {
    std::string form = pack ? "-pack" : "";
    for (uint8_t x : {uint8_t{0}, uint8_t{0x40}}) {
      std::string s;
      s.push_back(static_cast<char>(1 | (pack ? 2 : 0) | (5 << 2) | 128));  // zlib level 6
      Le(s, 23, 2);
      s.push_back(static_cast<char>(x));
      Le(s, static_cast<uint32_t>(v1.size()), 2);
      s += v1 + v2;
      Write("codec_gzip_fuzz", "zip-mut" + form + (x ? "-flip" : ""), s);
    }
    auto zip = [](const std::string& t) {
      return d4c::testing::MakeZip({{"META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n"}, {"a.class", t}});
    };
    std::string base = zip(v1), target = zip(v2);
    auto patch = pack ? codec.EncodeForPack(base, target) : codec.Encode(base, target);
    if (!patch.ok()) Die("gzip codec refused a zip pair");
    std::string s;
    s.push_back(static_cast<char>(pack ? 2 : 0));
    Le(s, static_cast<uint32_t>(target.size()), 3);
    Le(s, static_cast<uint32_t>(base.size()), 2);
    s += base + *patch;
    Write("codec_gzip_fuzz", "zip-raw" + form, s);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: fuzz_seeds OUT_DIR  (writes OUT_DIR/<fuzz target>/gen-*)\n");
    return 2;
  }
  g_out = argv[1];
  char tmpl[] = "/tmp/d4c-fuzz-seeds-XXXXXX";
  if (!mkdtemp(tmpl)) Die("mkdtemp failed");
  LayerSeeds();
  CdimgSeeds(tmpl);
  CodecSeeds("codec_zstd_fuzz", d4c::CodecId::kZstd, 16 << 10);
  CodecSeeds("codec_bsdiff_fuzz", d4c::CodecId::kBsdiff, 16 << 10);
  CodecSeeds("codec_xdelta3_fuzz", d4c::CodecId::kXdelta3, 64 << 10);
  CodecSeeds("codec_relcopy_fuzz", d4c::CodecId::kRelcopy, 16 << 10);
  CodecSeeds("codec_lzma_fuzz", d4c::CodecId::kLzma, 16 << 10);
  ZipSeeds();
  X86Seeds();
  std::error_code ec;
  fs::remove_all(tmpl, ec);
  printf("fuzz_seeds: %d seeds written under %s\n", g_written, g_out.c_str());
  return 0;
}
