// ContentCache: one build per digest, LRU bound, reuse across restarts and
// between caches sharing a directory, rejection of damaged files, and the
// node-wide budget: a hard bound under 16 threads, LRU across caches sharing
// a root (two daemons), pinned files, budget changes picked up.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "d4c/cache_budget.h"
#include "d4c/content_cache.h"
#include "d4c/base/strcat.h"

using namespace d4c;

namespace {

std::string FreshDir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / StrCat("d4c-fs-cache-test-", getpid()) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// A cache with plain LRU (no pinning) and no sweep thread unless asked.
std::unique_ptr<ContentCache> OpenCache(const std::string& dir, uint64_t max_bytes,
                                        std::function<void(const Digest&)> on_evict = nullptr,
                                        std::string root = "", double pin_seconds = 0, double sweep_seconds = 0) {
  ContentCache::Options o;
  o.dir = dir;
  o.root = std::move(root);
  o.max_bytes = max_bytes;
  o.pin_seconds = pin_seconds;
  o.sweep_seconds = sweep_seconds;
  o.on_evict = std::move(on_evict);
  auto c = ContentCache::Open(o);
  REQUIRE(c.ok());
  return std::move(*c);
}

std::string ReadFd(int fd) {
  std::string out;
  char buf[4096];
  for (off_t off = 0;;) {
    ssize_t n = pread(fd, buf, sizeof buf, off);
    REQUIRE(n >= 0);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    off += n;
  }
  return out;
}

// Content helper: bytes and their digest, plus a producer that counts runs.
struct Content {
  std::string bytes;
  Digest digest;
  std::atomic<int> runs{0};
  explicit Content(std::string b) : bytes(std::move(b)), digest(Sha256(bytes)) {}
  ContentCache::Producer Producer(int sleep_ms = 0) {
    return [this, sleep_ms]() -> absl::StatusOr<std::string> {
      ++runs;
      if (sleep_ms) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
      return bytes;
    };
  }
};

// Opens `c` through the cache and checks the bytes that come back.
void Fetch(ContentCache& cache, Content& c) {
  auto fd = cache.OpenContent(c.digest, c.bytes.size(), c.Producer());
  REQUIRE(fd.ok());
  CHECK(ReadFd(*fd) == c.bytes);
  close(*fd);
}

ContentCache::Producer Failing() {
  return []() -> absl::StatusOr<std::string> { return absl::DataLossError("must not be called"); };
}

bool IsCacheFile(const std::string& name) { return name[0] != '.' || name.rfind(".tmp.", 0) == 0; }

// Sum of sizes and count of the content and temporary files in a cache
// directory (not the root's .lock, .ledger, .budget).
std::pair<uint64_t, size_t> DiskUsage(const std::string& dir) {
  uint64_t bytes = 0;
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (!e.is_regular_file() || !IsCacheFile(e.path().filename())) continue;
    bytes += e.file_size();
    ++files;
  }
  return {bytes, files};
}

// The bytes under a cache root as admissions see them: taken under the root's
// flock (no eviction or reservation runs meanwhile), content files at their
// size and temporary files at the size they reserved (in their name: ".tmp.
// <pid>.<n>.<size>.<hex>"), a content counted once when both its temporary
// file and its renamed file are seen in one walk.
uint64_t LockedRootBytes(const std::string& root) {
  int lock = open((root + "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  REQUIRE(lock >= 0);
  REQUIRE(flock(lock, LOCK_EX) == 0);
  std::map<std::string, uint64_t> by_digest;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(root, ec);
       it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    std::string name = it->path().filename();
    std::error_code ec2;
    if (!it->is_regular_file(ec2) || !IsCacheFile(name)) continue;
    uint64_t size = it->file_size(ec2);
    if (ec2) continue;  // renamed away meanwhile
    std::string key = it->path().parent_path().string() + "/" + name.substr(name.size() - 64);
    if (name.rfind(".tmp.", 0) == 0) {
      std::vector<std::string> parts;
      std::stringstream ss(name.substr(5));
      for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
      if (parts.size() == 4) size = std::max<uint64_t>(size, std::stoull(parts[2]));
    }
    by_digest[key] = std::max(by_digest[key], size);
  }
  close(lock);
  uint64_t total = 0;
  for (const auto& [k, v] : by_digest) total += v;
  return total;
}

}  // namespace

TEST_CASE("cache builds a content once, then serves it from disk") {
  auto cache = OpenCache(FreshDir("once"), 1 << 20);
  Content a(std::string(5000, 'a') + "end");
  Fetch(*cache, a);
  Fetch(*cache, a);
  CHECK(a.runs == 1);
  CHECK(cache->Contains(a.digest));
  auto st = cache->stats();
  CHECK(st.builds == 1);
  CHECK(st.hits == 1);
  CHECK(st.bytes == a.bytes.size());
  CHECK(std::filesystem::file_size(cache->dir() + "/" + DigestHex(a.digest)) == a.bytes.size());
}

TEST_CASE("cache stays under its size limit, evicting the least recently used") {
  std::string dir = FreshDir("lru");
  auto cache = OpenCache(dir, 3000);
  std::vector<std::unique_ptr<Content>> cs;
  for (char ch : std::string("abcde")) cs.push_back(std::make_unique<Content>(std::string(1000, ch)));
  Fetch(*cache, *cs[0]);
  Fetch(*cache, *cs[1]);
  Fetch(*cache, *cs[2]);
  Fetch(*cache, *cs[0]);  // a is now the most recently used
  Fetch(*cache, *cs[3]);  // evicts b
  CHECK(cache->Contains(cs[0]->digest));
  CHECK_FALSE(cache->Contains(cs[1]->digest));
  Fetch(*cache, *cs[4]);  // evicts c
  CHECK_FALSE(cache->Contains(cs[2]->digest));
  CHECK(cache->Contains(cs[3]->digest));
  auto st = cache->stats();
  CHECK(st.bytes <= 3000);
  CHECK(st.files == 3);
  CHECK(st.evictions == 2);
  auto [bytes, files] = DiskUsage(dir);
  CHECK(bytes <= 3000);
  CHECK(files == 3);
  // an evicted content comes back by rebuilding it
  Fetch(*cache, *cs[1]);
  CHECK(cs[1]->runs == 2);
}

TEST_CASE("evictions are reported so that held descriptors can be dropped") {
  std::vector<Digest> evicted;
  auto cache = OpenCache(FreshDir("on-evict"), 2500, [&](const Digest& d) { evicted.push_back(d); });
  Content a(std::string(1000, 'a')), b(std::string(1000, 'b')), c(std::string(1000, 'c'));
  Fetch(*cache, a);
  Fetch(*cache, b);
  CHECK(evicted.empty());
  Fetch(*cache, c);
  REQUIRE(evicted.size() == 1);
  CHECK(evicted[0] == a.digest);
}

TEST_CASE("a content larger than the whole budget is served from memory, not cached") {
  std::string dir = FreshDir("huge");
  auto cache = OpenCache(dir, 100);
  Content small("tiny");
  Content big(std::string(1000, 'B'));
  Fetch(*cache, small);
  auto fd = cache->OpenContent(big.digest, big.bytes.size(), big.Producer());
  REQUIRE(fd.ok());
  CHECK(ReadFd(*fd) == big.bytes);
  CHECK(ContentCache::Touch(*fd));  // a memory file stays worth keeping
  close(*fd);
  CHECK_FALSE(cache->Contains(big.digest));
  CHECK(cache->Contains(small.digest));  // nothing evicted for a file that can never fit
  auto st = cache->stats();
  CHECK(st.uncached == 1);
  CHECK(st.files == 1);
  CHECK(DiskUsage(dir).first == small.bytes.size());
}

TEST_CASE("an open file keeps working after its content is evicted") {
  auto cache = OpenCache(FreshDir("evict-open"), 1500);
  Content a(std::string(1000, 'a')), b(std::string(1000, 'b'));
  auto fd = cache->OpenContent(a.digest, a.bytes.size(), a.Producer());
  REQUIRE(fd.ok());
  CHECK(ContentCache::Touch(*fd));
  Fetch(*cache, b);
  CHECK_FALSE(cache->Contains(a.digest));
  CHECK(ReadFd(*fd) == a.bytes);
  CHECK_FALSE(ContentCache::Touch(*fd));  // evicted: di3fs drops such descriptors
  close(*fd);
}

TEST_CASE("concurrent requests for one content run one build") {
  auto cache = OpenCache(FreshDir("concurrent"), 1 << 30);
  std::vector<std::unique_ptr<Content>> cs;
  for (int k = 0; k < 4; ++k) cs.push_back(std::make_unique<Content>(std::string(100000 + k, 'a' + k)));
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < 32; ++t) {
    threads.emplace_back([&, t] {
      Content& c = *cs[t % cs.size()];
      auto fd = cache->OpenContent(c.digest, c.bytes.size(), c.Producer(100));
      if (!fd.ok()) return;
      if (ReadFd(*fd) == c.bytes) ++good;
      close(*fd);
    });
  }
  for (auto& t : threads) t.join();
  CHECK(good == 32);
  for (auto& c : cs) CHECK(c->runs == 1);
  CHECK(cache->stats().builds == 4);
}

TEST_CASE("a failed build is reported to every waiter and retried later") {
  auto cache = OpenCache(FreshDir("failure"), 1 << 20);
  Content a("some content");
  std::atomic<int> runs{0};
  auto failing = [&]() -> absl::StatusOr<std::string> {
    ++runs;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    return absl::DataLossError("/x: rebuilt content does not match its sha256");
  };
  std::vector<std::thread> threads;
  std::atomic<int> errors{0};
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      auto fd = cache->OpenContent(a.digest, a.bytes.size(), failing);
      if (!fd.ok() && absl::IsDataLoss(fd.status())) ++errors;
    });
  for (auto& t : threads) t.join();
  CHECK(errors == 8);
  CHECK(runs == 1);
  CHECK_FALSE(cache->Contains(a.digest));
  CHECK(DiskUsage(cache->dir()).second == 0);  // no temp file left behind
  Fetch(*cache, a);  // a later request builds again
  CHECK(a.runs == 1);
}

TEST_CASE("a producer returning the wrong size is an error") {
  auto cache = OpenCache(FreshDir("size"), 1 << 20);
  Content a("12345");
  auto fd = cache->OpenContent(a.digest, 4, a.Producer());
  CHECK_FALSE(fd.ok());
  CHECK_FALSE(cache->Contains(a.digest));
}

TEST_CASE("a restarted cache reuses its files and drops damaged ones") {
  std::string dir = FreshDir("restart");
  Content a(std::string(3000, 'a')), b(std::string(3000, 'b')), c(std::string(3000, 'c'));
  {
    auto cache = OpenCache(dir, 1 << 20);
    Fetch(*cache, a);
    Fetch(*cache, b);
    Fetch(*cache, c);
  }
  // same size, different bytes (a crash before writeback, a bad disk)
  {
    std::fstream f(dir + "/" + DigestHex(b.digest), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('X');
  }
  // truncated
  std::filesystem::resize_file(dir + "/" + DigestHex(c.digest), 10);
  // temp files of processes that are gone (older and current name forms),
  // and one of a live process in the older form (an adopted older daemon)
  std::string stale = dir + "/.tmp.999999999.0." + DigestHex(a.digest);
  std::ofstream(stale) << "partial";
  std::string stale4 = dir + "/.tmp.999999999.0.3000." + DigestHex(a.digest);
  std::ofstream(stale4) << "partial";
  std::string live = StrCat(dir, "/.tmp.", getppid(), ".0.", DigestHex(a.digest));
  std::ofstream(live) << "being written";

  auto cache = OpenCache(dir, 1 << 20);
  CHECK_FALSE(std::filesystem::exists(stale));
  CHECK_FALSE(std::filesystem::exists(stale4));
  CHECK(std::filesystem::exists(live));
  std::filesystem::remove(live);
  CHECK(cache->stats().files == 3);
  auto fd = cache->OpenContent(a.digest, a.bytes.size(), Failing());  // reused, no rebuild
  REQUIRE(fd.ok());
  CHECK(ReadFd(*fd) == a.bytes);
  close(*fd);
  Fetch(*cache, b);
  Fetch(*cache, c);
  CHECK(a.runs == 1);
  CHECK(b.runs == 2);
  CHECK(c.runs == 2);
  CHECK(cache->stats().rejected == 2);
}

TEST_CASE("a restarted cache with a smaller limit trims to it, oldest first") {
  std::string dir = FreshDir("trim");
  Content a(std::string(1000, 'a')), b(std::string(1000, 'b'));
  {
    auto cache = OpenCache(dir, 1 << 20);
    Fetch(*cache, a);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    Fetch(*cache, b);
  }
  auto cache = OpenCache(dir, 1500);
  CHECK_FALSE(cache->Contains(a.digest));
  CHECK(cache->Contains(b.digest));
  CHECK(DiskUsage(dir).first <= 1500);
}

TEST_CASE("caches sharing a directory use each other's files") {
  std::string dir = FreshDir("shared");
  auto one = OpenCache(dir, 1 << 20);
  auto two = OpenCache(dir, 1 << 20);
  Content a(std::string(4000, 'a'));
  Fetch(*one, a);
  auto fd = two->OpenContent(a.digest, a.bytes.size(), Failing());
  REQUIRE(fd.ok());
  CHECK(ReadFd(*fd) == a.bytes);
  close(*fd);
  // one deletes it behind two's back: two rebuilds instead of failing
  std::filesystem::remove(dir + "/" + DigestHex(a.digest));
  Fetch(*two, a);
  CHECK(a.runs == 2);
}

TEST_CASE("16 threads: the bytes under the root never exceed the budget") {
  const bool pinned = GENERATE(false, true);
  CAPTURE(pinned);
  std::string root = FreshDir(pinned ? "bound-pinned" : "bound");
  const uint64_t budget = 64 * 1024;
  // two caches under one root, as two daemons: 8 threads each
  auto one = OpenCache(root + "/one", budget, nullptr, root, pinned ? 10 : 0);
  auto two = OpenCache(root + "/two", budget, nullptr, root, pinned ? 10 : 0);
  std::vector<std::unique_ptr<Content>> cs;
  std::mt19937 rng(7);
  for (int k = 0; k < 48; ++k) {
    std::string bytes(1000 + rng() % 12000, 'a' + k % 26);
    bytes += std::to_string(k);
    cs.push_back(std::make_unique<Content>(std::move(bytes)));
  }
  std::atomic<bool> done{false};
  std::atomic<uint64_t> peak{0};
  std::atomic<int> samples{0};
  std::thread sampler([&] {
    while (!done) {
      uint64_t b = LockedRootBytes(root);
      if (b > peak) peak = b;
      ++samples;
    }
  });
  std::atomic<int> good{0}, bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t)
    threads.emplace_back([&, t] {
      ContentCache& cache = t % 2 ? *two : *one;
      std::mt19937 r(t);
      for (int i = 0; i < 60; ++i) {
        Content& c = *cs[r() % cs.size()];
        auto fd = cache.OpenContent(c.digest, c.bytes.size(), c.Producer(1));
        if (fd.ok() && ReadFd(*fd) == c.bytes) ++good;
        else ++bad;
        if (fd.ok()) close(*fd);
      }
    });
  for (auto& t : threads) t.join();
  done = true;
  sampler.join();
  CHECK(bad == 0);
  CHECK(good == 16 * 60);
  CHECK(samples > 10);
  CHECK(peak <= budget);
  CHECK(peak > budget / 2);  // the cache was used, not bypassed
  CHECK(one->stats().bytes <= budget);
  if (pinned) CHECK(one->stats().uncached + two->stats().uncached > 0);
}

TEST_CASE("16 threads asking for one content share one build, cached or not") {
  const uint64_t size = GENERATE(50000u, 200000u);  // fits the 100 KB budget, or does not
  CAPTURE(size);
  auto cache = OpenCache(FreshDir(StrCat("flight-", size)), 100000);
  Content c(std::string(size, 'f'));
  std::vector<std::thread> threads;
  std::atomic<int> good{0}, arrived{0};
  // The build lasts until every thread has asked (and 200 ms more), so that
  // none comes after it on a loaded machine.
  auto slow = [&]() -> absl::StatusOr<std::string> {
    ++c.runs;
    while (arrived < 16) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    return c.bytes;
  };
  for (int t = 0; t < 16; ++t)
    threads.emplace_back([&] {
      ++arrived;
      auto fd = cache->OpenContent(c.digest, size, slow);
      if (fd.ok() && ReadFd(*fd) == c.bytes) ++good;
      if (fd.ok()) close(*fd);
    });
  for (auto& t : threads) t.join();
  CHECK(good == 16);
  CHECK(c.runs == 1);
  auto st = cache->stats();
  CHECK(st.builds == 1);
  CHECK(st.uncached == (size > 100000 ? 1u : 0u));
}

TEST_CASE("two caches sharing a root evict across both, least recently used first") {
  std::string root = FreshDir("two-daemons");
  std::vector<Digest> evicted_one, evicted_two;
  auto one = OpenCache(root + "/img1", 3000, [&](const Digest& d) { evicted_one.push_back(d); }, root);
  auto two = OpenCache(root + "/img2", 3000, [&](const Digest& d) { evicted_two.push_back(d); }, root);
  Content x(std::string(1000, 'x')), y(std::string(1000, 'y')), z(std::string(1000, 'z'));
  Content w(std::string(1000, 'w')), v(std::string(1000, 'v'));
  auto x_fd = one->OpenContent(x.digest, x.bytes.size(), x.Producer());  // held, as di3fs does
  REQUIRE(x_fd.ok());
  Fetch(*two, y);
  Fetch(*one, z);
  Fetch(*two, y);  // a hit: y is now the most recent, order x z y
  CHECK(y.runs == 1);
  Fetch(*two, w);  // evicts x, from the other cache's directory
  CHECK_FALSE(one->Contains(x.digest));
  // on_evict is in-process: it reports only the evicting cache's own files;
  // the other daemon learns it through Touch and still reads its bytes
  CHECK(evicted_one.empty());
  CHECK(evicted_two.empty());
  CHECK_FALSE(ContentCache::Touch(*x_fd));
  CHECK(ReadFd(*x_fd) == x.bytes);
  close(*x_fd);
  Fetch(*one, v);  // evicts z (y was used after it)
  CHECK_FALSE(one->Contains(z.digest));
  CHECK(two->Contains(y.digest));
  CHECK(two->Contains(w.digest));
  CHECK(one->Contains(v.digest));
  CHECK(DiskUsage(root + "/img1").first + DiskUsage(root + "/img2").first == 3000);
  CHECK(one->stats().bytes == 3000);
  CHECK(two->stats().evictions == 1);
  CHECK(one->stats().evictions == 1);
  REQUIRE(evicted_one.size() == 1);
  CHECK(evicted_one[0] == z.digest);
}

TEST_CASE("a file used within pin_seconds is not evicted for another one") {
  std::string dir = FreshDir("pinned");
  auto cache = OpenCache(dir, 2000, nullptr, "", /*pin_seconds=*/10);
  Content a(std::string(1000, 'a')), b(std::string(1000, 'b')), c(std::string(1000, 'c'));
  Fetch(*cache, a);
  Fetch(*cache, b);
  Fetch(*cache, c);  // a and b are being read: c is served from memory
  CHECK(cache->Contains(a.digest));
  CHECK(cache->Contains(b.digest));
  CHECK_FALSE(cache->Contains(c.digest));
  CHECK(cache->stats().uncached == 1);
  CHECK(DiskUsage(dir).first == 2000);
}

TEST_CASE("a running cache picks up a new budget from the root (a restarted snapshotter)") {
  std::string root = FreshDir("budget-change");
  const bool thread = GENERATE(false, true);
  CAPTURE(thread);
  auto cache = OpenCache(root + "/img", 4000, nullptr, root, 0, thread ? 0.1 : 0);
  std::vector<std::unique_ptr<Content>> cs;
  for (char ch : std::string("abcd")) {
    cs.push_back(std::make_unique<Content>(std::string(1000, ch)));
    Fetch(*cache, *cs.back());
  }
  CHECK(DiskUsage(root + "/img").first == 4000);
  CHECK(cache->max_bytes() == 4000);
  REQUIRE(WriteCacheBudget(root, 2000).ok());  // what the snapshotter does at start
  if (thread) {
    for (int i = 0; i < 100 && DiskUsage(root + "/img").first > 2000; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } else {
    cache->Sweep();
  }
  CHECK(DiskUsage(root + "/img").first == 2000);
  CHECK(cache->max_bytes() == 2000);
  CHECK_FALSE(cache->Contains(cs[0]->digest));  // oldest first
  CHECK_FALSE(cache->Contains(cs[1]->digest));
  CHECK(cache->Contains(cs[3]->digest));
  // admissions use the new budget too
  Content e(std::string(1000, 'e'));
  Fetch(*cache, e);
  CHECK(DiskUsage(root + "/img").first == 2000);
  // raising it lets the cache grow again
  REQUIRE(WriteCacheBudget(root, 8000).ok());
  cache->Sweep();
  Fetch(*cache, *cs[0]);
  CHECK(DiskUsage(root + "/img").first == 3000);
}

TEST_CASE("a ledger left too high by a crash is corrected by the next scan") {
  std::string dir = FreshDir("ledger");
  auto cache = OpenCache(dir, 3000);
  Content a(std::string(1000, 'a')), b(std::string(1000, 'b'));
  Fetch(*cache, a);
  std::ofstream(dir + "/.ledger") << "2900\n";  // a reservation whose writer died
  Fetch(*cache, b);  // does not fit by the ledger: scans, finds 1000 bytes, keeps a
  CHECK(cache->Contains(a.digest));
  CHECK(cache->Contains(b.digest));
  CHECK(cache->stats().scans == 1);
  std::ifstream l(dir + "/.ledger");
  uint64_t ledger = 0;
  l >> ledger;
  CHECK(ledger == 2000);
}
