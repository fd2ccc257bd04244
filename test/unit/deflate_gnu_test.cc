// d4c::deflate::GnuGzip against the real `gzip` binary (GNU gzip) on
// synthetic inputs, against the .gz files of the Debian corpus, and
// round-tripped through zlib's inflate.

#include <sys/resource.h>
#include <unistd.h>
#include <zlib.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <ctime>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "d4c/deflate.h"
#include "oci_fixture.h"

namespace {

using d4c::deflate::GnuGzip;
using d4c::oci_test::ReadAll;
using d4c::oci_test::ScratchDir;

constexpr const char* kGzip = "/bin/gzip";

// Output of a shell command (binary-safe).
std::string RunCapture(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  REQUIRE(pclose(p) == 0);
  return out;
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  REQUIRE(f.good());
}

// The raw deflate stream of `gzip -<level> -n` for data: its output without
// the 10-byte header (no name with -n) and the 8-byte trailer.
std::string GzipRaw(const ScratchDir& dir, const std::string& data, int level) {
  REQUIRE(access(kGzip, X_OK) == 0);  // the oracle must exist: fail, do not skip
  std::string path = dir.path() + "/in";
  WriteFile(path, data);
  std::string gz = RunCapture(std::string(kGzip) + " -" + std::to_string(level) + " -n -c '" + path + "'");
  REQUIRE(gz.size() >= 18);
  REQUIRE(static_cast<unsigned char>(gz[3]) == 0);  // FLG: no name, no extra fields
  return gz.substr(10, gz.size() - 18);
}

// zlib inflate of a raw deflate stream; consumed is how many input bytes the
// stream took. Fails the test on a corrupt stream.
std::string Inflate(std::string_view raw, size_t* consumed = nullptr) {
  z_stream zs{};
  REQUIRE(inflateInit2(&zs, -15) == Z_OK);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  zs.avail_in = static_cast<uInt>(raw.size());
  std::string out;
  char buf[65536];
  int rc;
  do {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof buf;
    rc = inflate(&zs, Z_NO_FLUSH);
    REQUIRE((rc == Z_OK || rc == Z_STREAM_END));
    out.append(buf, sizeof buf - zs.avail_out);
  } while (rc != Z_STREAM_END);
  if (consumed != nullptr) *consumed = raw.size() - zs.avail_in;
  inflateEnd(&zs);
  return out;
}

// Word salad with a skewed word distribution: compresses like prose.
std::string Text(size_t size, uint32_t seed) {
  static const std::vector<std::string> kWords = {
      "the",     "of",      "and",     "to",     "in",       "a",        "is",       "that",    "for",
      "it",      "as",      "was",     "with",   "be",       "by",       "on",       "not",     "he",
      "package", "debian",  "upload",  "fixed",  "version",  "release",  "changes",  "closes",  "bug",
      "library", "files",   "support", "update", "security", "upstream", "maintain", "build",   "source",
      "removed", "patched", "manual",  "page",   "option",   "default",  "warning",  "symbols", "compat"};
  std::mt19937 rng(seed);
  std::geometric_distribution<size_t> pick(0.12);
  std::string s;
  s.reserve(size + 32);
  size_t line = 0;
  while (s.size() < size) {
    size_t w = pick(rng) % kWords.size();
    s += kWords[w];
    line += kWords[w].size() + 1;
    if (rng() % 23 == 0) s += ",";
    if (line > 60 + rng() % 15) {
      s += rng() % 5 == 0 ? ".\n\n  * " : "\n";
      line = 0;
    } else {
      s += ' ';
    }
  }
  s.resize(size);
  return s;
}

std::string Random(size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(size, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// A few random bytes, then a long copy of earlier data, again and again:
// most tallies are literals but most bytes are matched, the case where
// gzip's ct_tally ends blocks early (levels > 2, every 0x1000 literals).
std::string LiteralsAndLongCopies(size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s = Random(4096, seed + 1);
  while (s.size() < size) {
    for (int i = 0, n = 1 + static_cast<int>(rng() % 6); i < n; i++) s += static_cast<char>(rng());
    size_t len = 40 + rng() % 200;
    size_t from = s.size() - 1 - rng() % std::min<size_t>(s.size() - 1, 30000);
    for (size_t i = 0; i < len; i++) s += s[from + i];
  }
  s.resize(size);
  return s;
}

// Text, then binary noise, then text again: block statistics change.
std::string Phases(size_t size, uint32_t seed) {
  std::string s;
  uint32_t k = seed;
  while (s.size() < size) {
    s += Text(20000 + k % 30000, k);
    s += Random(3000 + k % 7000, k + 7);
    s += LiteralsAndLongCopies(30000, k + 13);
    k = k * 2654435761u + 1;
  }
  s.resize(size);
  return s;
}

struct Input {
  std::string name;
  std::string data;
};

std::vector<Input> SyntheticInputs() {
  std::vector<Input> v;
  v.push_back({"empty", ""});
  v.push_back({"1 byte", "x"});
  v.push_back({"2 bytes", "xy"});
  v.push_back({"3 bytes", "xyz"});
  v.push_back({"300 zeros", std::string(300, '\0')});
  v.push_back({"1 MiB zeros", std::string(1 << 20, '\0')});
  std::string abc;
  while (abc.size() < 200000) abc += "abcabcabd";
  v.push_back({"repetitive 200 KB", abc});
  v.push_back({"random 100 KB", Random(100000, 1)});
  v.push_back({"random 70 KB", Random(70000, 2)});
  v.push_back({"text 1 KB", Text(1000, 3)});
  v.push_back({"text 32 KiB", Text(32768, 4)});
  v.push_back({"text 64 KiB", Text(65536, 5)});
  v.push_back({"text 64 KiB + 1", Text(65537, 6)});
  v.push_back({"text 64 KiB - 262", Text(65536 - 262, 7)});
  v.push_back({"text 100 KB", Text(100000, 8)});
  v.push_back({"text 1.5 MB", Text(1500000, 9)});
  v.push_back({"literals and long copies 400 KB", LiteralsAndLongCopies(400000, 10)});
  v.push_back({"phases 600 KB", Phases(600000, 11)});
  return v;
}

}  // namespace

TEST_CASE("GnuGzip equals gzip -<level> -n on synthetic inputs at all levels", "[deflate]") {
  ScratchDir dir;
  for (const Input& in : SyntheticInputs()) {
    for (int level = 1; level <= 9; level++) {
      INFO(in.name << " (" << in.data.size() << " bytes), level " << level);
      absl::StatusOr<std::string> ours = GnuGzip(in.data, level);
      REQUIRE(ours.ok());
      std::string theirs = GzipRaw(dir, in.data, level);
      CHECK(ours->size() == theirs.size());
      REQUIRE(*ours == theirs);
    }
  }
}

// Periodic data with a few changed bytes, of sizes around the window's:
// near the end of the input gzip's longest_match reads past the data into
// two zero bytes and then whatever the window held 32 KiB earlier, which
// can pick another match distance; ours must read the same bytes.
TEST_CASE("GnuGzip equals gzip -<level> -n on periodic inputs of random sizes", "[deflate]") {
  ScratchDir dir;
  std::mt19937 rng(77);
  const size_t kPeriods[] = {1, 2, 3, 7, 256, 1000, 1024, 4096, 8192, 16384, 32768};
  for (int i = 0; i < 60; i++) {
    size_t period = kPeriods[rng() % std::size(kPeriods)];
    std::string unit = rng() % 2 ? Random(period, rng()) : Text(period, rng());
    if (rng() % 2) unit.replace(rng() % period, 2, std::string(2, '\0'));
    unit.resize(period);
    size_t size = 40000 + rng() % 160000;
    std::string data;
    while (data.size() < size) data += unit;
    data.resize(size);
    for (int k = 0, n = static_cast<int>(rng() % 20); k < n; k++) data[rng() % size] = static_cast<char>(rng());
    int level = 1 + static_cast<int>(rng() % 9);
    INFO("case " << i << ": period " << period << ", " << size << " bytes, level " << level);
    absl::StatusOr<std::string> ours = GnuGzip(data, level);
    REQUIRE(ours.ok());
    REQUIRE(*ours == GzipRaw(dir, data, level));
  }
}

// At the last bytes of a file longer than 64 KiB gzip's longest_match reads
// past the data: two zero bytes, then what the window held before it slid
// (the input 32766 bytes before the end, for this size). Two earlier copies
// of the file's 10-byte tail, both followed by two zeros, one then by the
// stale byte: gzip takes that farther copy's distance, not the nearer one.
TEST_CASE("GnuGzip reads past the end of the input as gzip does (stale window bytes)", "[deflate]") {
  ScratchDir dir;
  const size_t n = 65536 + 1000;
  // Compressible (34 symbols, so no stored block) and no long stray matches.
  const std::string symbols = "cdefghijklmnopqrstuvwxyz0123456789";
  std::string data = Random(n, 99);
  for (char& c : data) c = symbols[static_cast<unsigned char>(c) % symbols.size()];
  data.replace(n - 12, 2, "YZ");  // no match can start before the tail and cover it
  const std::string tail = data.substr(n - 10);
  data.replace(40000, 13, tail + std::string(2, '\0') + "B");  // farther copy
  data.replace(50000, 13, tail + std::string(2, '\0') + "A");  // nearer copy
  data[n - 32766] = 'B';                                        // the stale byte after the two zeros
  for (int level = 1; level <= 9; level++) {
    INFO("level " << level);
    absl::StatusOr<std::string> ours = GnuGzip(data, level);
    REQUIRE(ours.ok());
    REQUIRE(*ours == GzipRaw(dir, data, level));
  }
}

TEST_CASE("GnuGzip rejects levels outside 1..9", "[deflate]") {
  for (int level : {0, 10, -1}) {
    absl::StatusOr<std::string> r = GnuGzip("abc", level);
    REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
    REQUIRE(r.status().message().find("outside 1..9") != std::string_view::npos);
  }
}

TEST_CASE("GnuGzip output inflates back to the input (random sizes and contents)", "[deflate]") {
  std::mt19937 rng(20261204);
  for (int i = 0; i < 60; i++) {
    size_t size = rng() % 4 == 0 ? rng() % 600 : rng() % 300000;
    std::string data;
    switch (rng() % 4) {
      case 0: data = Random(size, rng()); break;
      case 1: data = Text(size, rng()); break;
      case 2: data = LiteralsAndLongCopies(std::max<size_t>(size, 1), rng()).substr(0, size); break;
      default: data = Phases(std::max<size_t>(size, 1), rng()).substr(0, size); break;
    }
    int level = 1 + static_cast<int>(rng() % 9);
    INFO("case " << i << ": " << size << " bytes, level " << level);
    absl::StatusOr<std::string> raw = GnuGzip(data, level);
    REQUIRE(raw.ok());
    size_t consumed = 0;
    REQUIRE(Inflate(*raw, &consumed) == data);
    REQUIRE(consumed == raw->size());
  }
}

namespace {

// The deflate body of a single-member .gz file: header skipped (FEXTRA,
// FNAME, FCOMMENT, FHCRC), the 8-byte trailer after it. False when the file
// is not that (not gzip, not deflate, or more members follow).
bool SplitGzip(const std::string& gz, std::string* body, std::string* content) {
  if (gz.size() < 18 || static_cast<unsigned char>(gz[0]) != 0x1f || static_cast<unsigned char>(gz[1]) != 0x8b ||
      gz[2] != 8) {
    return false;
  }
  unsigned flg = static_cast<unsigned char>(gz[3]);
  size_t pos = 10;
  if (flg & 4) {
    size_t xlen = static_cast<unsigned char>(gz[pos]) | (static_cast<unsigned char>(gz[pos + 1]) << 8);
    pos += 2 + xlen;
  }
  if (flg & 8) pos = gz.find('\0', pos) + 1;
  if (flg & 16) pos = gz.find('\0', pos) + 1;
  if (flg & 2) pos += 2;
  if (pos == 0 || pos + 8 > gz.size()) return false;
  size_t consumed = 0;
  *content = Inflate(std::string_view(gz).substr(pos, gz.size() - pos - 8), &consumed);
  if (pos + consumed + 8 != gz.size()) return false;
  *body = gz.substr(pos, consumed);
  return true;
}

}  // namespace

TEST_CASE("GnuGzip -9 rebuilds the .gz files of the Debian corpus (doc, man, info) bit for bit", "[deflate][corpus]") {
  const std::filesystem::path root = "/var/cache/d4c-corpus/debian/rootfs";
  if (!std::filesystem::is_directory(root)) {
    WARN("no Debian corpus at " << root.string() << " (built by the e2e setup, see docs/corpus.md): part skipped");
    return;
  }
  std::vector<std::filesystem::path> files;
  for (const auto& version : std::filesystem::directory_iterator(root)) {
    for (const char* sub : {"rootfs/usr/share/doc", "rootfs/usr/share/man", "rootfs/usr/share/info"}) {
      std::filesystem::path dir = version.path() / sub;
      if (!std::filesystem::is_directory(dir)) continue;
      for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
        if (e.is_regular_file() && !e.is_symlink() && e.path().extension() == ".gz") files.push_back(e.path());
      }
    }
  }
  REQUIRE(!files.empty());
  size_t identical = 0;
  size_t not_single_member = 0;
  std::set<std::string> distinct;
  std::vector<std::string> mismatches;
  for (const auto& f : files) {
    std::string gz = ReadAll(f.string());
    distinct.insert(gz);
    std::string body, content;
    if (!SplitGzip(gz, &body, &content)) {
      not_single_member++;
      mismatches.push_back(f.string() + " (not a single deflate member)");
      continue;
    }
    absl::StatusOr<std::string> ours = GnuGzip(content, 9);
    REQUIRE(ours.ok());
    if (*ours == body) {
      identical++;
    } else {
      mismatches.push_back(f.string() + " (xfl " + std::to_string(static_cast<unsigned char>(gz[8])) + ")");
    }
  }
  std::string listed;
  for (size_t i = 0; i < mismatches.size() && i < 20; i++) listed += "\n  " + mismatches[i];
  UNSCOPED_INFO(identical << " of " << files.size() << " .gz files (" << distinct.size()
                          << " distinct) bit-identical at level 9; " << not_single_member
                          << " not single-member deflate; mismatches:" << listed);
  CHECK(identical * 100 >= files.size() * 99);
  WARN(identical << " of " << files.size() << " corpus .gz files (" << distinct.size() << " distinct) bit-identical"
                 << listed);
}

double ChildrenCpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_CHILDREN, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// Manual: `deflate_gnu_test "[.speed]"`. 10 MB of text (or the file named by
// $D4C_DEFLATE_SPEED_FILE), ours vs the gzip binary, in CPU seconds (the
// machine may be shared), both single-threaded; gzip's also reads the file.
TEST_CASE("GnuGzip speed vs gzip on 10 MB of text", "[.speed]") {
  ScratchDir dir;
  const char* file = getenv("D4C_DEFLATE_SPEED_FILE");
  std::string data = file != nullptr ? ReadAll(file) : Text(10'000'000, 42);
  std::string path = dir.path() + "/text";
  WriteFile(path, data);
  for (int level : {1, 6, 9}) {
    std::clock_t c0 = std::clock();
    absl::StatusOr<std::string> ours = GnuGzip(data, level);
    std::clock_t c1 = std::clock();
    double g0 = ChildrenCpuSeconds();
    std::string gz = RunCapture(std::string(kGzip) + " -" + std::to_string(level) + " -n -c '" + path + "'");
    double g1 = ChildrenCpuSeconds();
    REQUIRE(ours.ok());
    REQUIRE(*ours == gz.substr(10, gz.size() - 18));
    WARN(data.size() << " bytes, level " << level << ": GnuGzip "
                     << static_cast<double>(c1 - c0) / CLOCKS_PER_SEC << " s CPU, gzip " << (g1 - g0)
                     << " s CPU, " << ours->size() << " bytes out");
  }
}
