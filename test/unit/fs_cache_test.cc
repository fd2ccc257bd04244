// ContentCache: one build per digest, LRU bound, reuse across restarts and
// between caches sharing a directory, and rejection of damaged files.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>
#include <vector>

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

std::unique_ptr<ContentCache> OpenCache(const std::string& dir, uint64_t max_bytes,
                                        std::function<void(const Digest&)> on_evict = nullptr) {
  ContentCache::Options o;
  o.dir = dir;
  o.max_bytes = max_bytes;
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

// Sum of sizes and count of the content files in a cache directory.
std::pair<uint64_t, size_t> DiskUsage(const std::string& dir) {
  uint64_t bytes = 0;
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    bytes += e.file_size();
    ++files;
  }
  return {bytes, files};
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

TEST_CASE("a content larger than the whole cache is still served") {
  std::string dir = FreshDir("huge");
  auto cache = OpenCache(dir, 100);
  Content small("tiny");
  Content big(std::string(1000, 'B'));
  Fetch(*cache, small);
  Fetch(*cache, big);
  CHECK(cache->Contains(big.digest));
  CHECK_FALSE(cache->Contains(small.digest));
  CHECK(cache->stats().files == 1);
}

TEST_CASE("an open file keeps working after its content is evicted") {
  auto cache = OpenCache(FreshDir("evict-open"), 1500);
  Content a(std::string(1000, 'a')), b(std::string(1000, 'b'));
  auto fd = cache->OpenContent(a.digest, a.bytes.size(), a.Producer());
  REQUIRE(fd.ok());
  Fetch(*cache, b);
  CHECK_FALSE(cache->Contains(a.digest));
  CHECK(ReadFd(*fd) == a.bytes);
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
  // a temp file of a process that is gone
  std::string stale = dir + "/.tmp.999999999.0." + DigestHex(a.digest);
  std::ofstream(stale) << "partial";

  auto cache = OpenCache(dir, 1 << 20);
  CHECK_FALSE(std::filesystem::exists(stale));
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
