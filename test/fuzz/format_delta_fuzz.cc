// libFuzzer target: damaged delta cdimgs against their real parent. The
// single-file cdimg target cannot reach a delta's config+index or its packs
// (both decode only against the parent), so this one builds a real pair A, B
// at start-up, diffs them (packs of small patches, a standalone patch, new and
// renamed files) and then reads every file of B through a chain whose top is
// the fuzzed delta. The property: a file either fails with a status or has
// exactly the bytes its digest names - and B's bytes when the index is B's.
//
// Input: first byte selects the mode. Even: the rest are 4-byte edits
// (24-bit position, xor mask) applied to the real delta, optionally
// truncated - damage the way disks and networks do it. Odd: the rest is the
// whole delta.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "d4c/chain.h"
#include "d4c/convert.h"
#include "d4c/delta.h"
#include "d4c/entry.h"
#include "oci_fixture.h"

namespace {

using d4c::oci_test::LayerBuilder;
using d4c::oci_test::ReadAll;

struct Fixture {
  std::string dir;
  std::string parent;                        // A.cdimg
  std::string delta;                         // bytes of A→B
  d4c::Digest b_id{};                        // B's image id
  std::map<std::string, std::string> files;  // B's regular files by path
};

std::string Text(int seed, int lines) {
  std::string s;
  for (int i = 0; i < lines; ++i)
    s += "line " + std::to_string(i * 7919 % (seed * 1000 + 17)) + " of file " + std::to_string(seed) + "\n";
  return s;
}

void Die(const std::string& what) {
  fprintf(stderr, "format_delta_fuzz setup: %s\n", what.c_str());
  std::abort();
}

std::string Convert(const std::string& dir, const std::string& name, const LayerBuilder& layer) {
  std::string layout = dir + "/oci-" + name, out = dir + "/" + name + ".cdimg";
  if (auto st = d4c::oci_test::WriteOciLayout(layout, {{name, {layer.Tar()}}}); !st.ok())
    Die(std::string(st.status().message()));
  d4c::ConvertOptions co;
  co.threads = 1;
  co.zstd_level = 3;  // setup speed; the recipes are what matters
  if (auto st = d4c::ConvertImage("oci:" + layout + ":" + name, out, co); !st.ok())
    Die(std::string(st.status().message()));
  return out;
}

Fixture Build() {
  Fixture f;
  char tmpl[] = "/tmp/d4c-delta-fuzz-XXXXXX";
  if (!mkdtemp(tmpl)) Die("mkdtemp");
  f.dir = tmpl;
  std::string big = Text(1, 6000), small = Text(2, 200), conf = Text(3, 20);
  std::string big2 = big, small2 = small;
  big2.replace(20000, 40, "a standalone patch: changed in the middle");
  small2.replace(100, 10, "v2 change");
  LayerBuilder a, b;
  a.Dir("usr").File("usr/big.txt", big).File("usr/small.txt", small).File("etc/app.conf", conf)
      .File("lib/pkg@1.2.3/index.js", Text(4, 300)).Symlink("bin", "usr/bin");
  b.Dir("usr").File("usr/big.txt", big2).File("usr/small.txt", small2).File("etc/app.conf", conf + "x=1\n")
      .File("lib/pkg@1.2.4/index.js", Text(4, 300) + "// 1.2.4\n").File("usr/new.txt", Text(5, 50))
      .Symlink("bin", "usr/local/bin");
  f.parent = Convert(f.dir, "a", a);
  std::string b_path = Convert(f.dir, "b", b), d_path = f.dir + "/d.cdimg";
  auto old_chain = d4c::ImageChain::Open(f.parent, {});
  auto new_chain = d4c::ImageChain::Open(b_path, {});
  if (!old_chain.ok() || !new_chain.ok()) Die("open A or B");
  d4c::DiffOptions o;
  o.threads = 1;
  o.zstd_level = 3;
  if (auto st = d4c::DiffImages(**old_chain, **new_chain, d_path, o); !st.ok()) Die(std::string(st.status().message()));
  f.delta = ReadAll(d_path);
  const d4c::CdimgImage& bi = (*new_chain)->top();
  f.b_id = bi.header().image_id;
  for (size_t i = 0; i < bi.size(); ++i) {
    if (bi.TypeAt(i) != d4c::EntryType::kRegular) continue;
    auto bytes = (*new_chain)->ReadFile(i);
    if (!bytes.ok()) Die("read B");
    f.files[std::string(bi.PathAt(i))] = *bytes;
  }
  return f;
}

const Fixture& Fx() {
  static const Fixture f = Build();
  return f;
}

std::string Damaged(const uint8_t* data, size_t size) {
  const std::string& good = Fx().delta;
  if (size == 0) return good;
  if (data[0] & 1) return std::string(reinterpret_cast<const char*>(data + 1), size - 1);
  std::string bytes = good;
  size_t i = 1;
  for (; i + 4 <= size; i += 4) {
    size_t at = (size_t{data[i]} | size_t{data[i + 1]} << 8 | size_t{data[i + 2]} << 16) % bytes.size();
    bytes[at] = static_cast<char>(bytes[at] ^ (data[i + 3] ? data[i + 3] : 1));
  }
  if ((data[0] & 2) && i < size) bytes.resize(bytes.size() - std::min<size_t>(bytes.size(), data[i] + 1u));
  return bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Fixture& fx = Fx();
  static int fd = memfd_create("delta-fuzz", 0);
  std::string bytes = Damaged(data, size);
  if (fd < 0 || ftruncate(fd, 0) != 0) return 0;
  if (pwrite(fd, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) return 0;
  auto chain = d4c::ImageChain::Open("/proc/self/fd/" + std::to_string(fd), {fx.parent});
  if (!chain.ok()) return 0;
  const d4c::CdimgImage& top = (*chain)->top();
  bool is_b = top.header().image_id == fx.b_id;
  for (size_t i = 0; i < top.size(); ++i) {
    if (top.TypeAt(i) != d4c::EntryType::kRegular) continue;
    auto got = (*chain)->ReadFile(i);
    if (!got.ok()) continue;
    if (d4c::Sha256(*got) != top.DigestAt(i)) __builtin_trap();  // served bytes its digest does not name
    if (is_b) {
      auto want = fx.files.find(std::string(top.PathAt(i)));
      if (want == fx.files.end() || want->second != *got) __builtin_trap();  // wrong bytes under B's id
    }
  }
  return 0;
}
