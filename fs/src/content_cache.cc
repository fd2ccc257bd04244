#include "d4c/content_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <list>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "d4c/base/io.h"
#include "d4c/base/strcat.h"

namespace d4c {
namespace {

constexpr std::string_view kTempPrefix = ".tmp.";

// Hashes an open file; false if its size or sha256 differ from what is wanted.
bool FileHolds(int fd, const Digest& digest, uint64_t size) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != size) return false;
  Sha256Hasher hash;
  std::string buf(1 << 20, '\0');
  uint64_t off = 0;
  while (off < size) {
    ssize_t n = pread(fd, buf.data(), buf.size(), static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    hash.Update(std::string_view(buf.data(), static_cast<size_t>(n)));
    off += static_cast<uint64_t>(n);
  }
  return hash.Finish() == digest;
}

// ".tmp.<pid>.<n>.<hex>" of a process that no longer runs.
bool IsStaleTemp(std::string_view name) {
  if (name.substr(0, kTempPrefix.size()) != kTempPrefix) return false;
  name.remove_prefix(kTempPrefix.size());
  pid_t pid = 0;
  for (char c : name.substr(0, name.find('.'))) {
    if (c < '0' || c > '9') return true;  // not ours to judge by pid: malformed, remove
    pid = pid * 10 + (c - '0');
  }
  if (pid == getpid()) return false;
  return pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH);
}

}  // namespace

// Thread-safety: internally synchronized by `mu`, which is never held across
// file I/O or a producer run (only across the on_evict callback, see
// content_cache.h: ContentCache's mu comes before the callee's locks).
struct ContentCache::State {
  // Set at Open, immutable after.
  std::string dir;
  uint64_t max_bytes = 0;
  std::function<void(const Digest&)> on_evict;

  struct Item {
    uint64_t size = 0;
    bool verified = false;  // written by this process, or hashed since found on disk
    std::list<Digest>::iterator lru;
  };
  // One producer run; its fields are guarded by State::mu.
  struct Flight {
    bool done = false;
    absl::Status status;
    absl::CondVar cv;  // signalled, with mu held, when done turns true
  };

  mutable absl::Mutex mu;
  std::unordered_map<Digest, Item, DigestHash> items ABSL_GUARDED_BY(mu);
  std::list<Digest> lru ABSL_GUARDED_BY(mu);  // most recently used first
  std::unordered_map<Digest, std::shared_ptr<Flight>, DigestHash> inflight ABSL_GUARDED_BY(mu);
  Stats stats ABSL_GUARDED_BY(mu);
  std::atomic<uint64_t> temp_counter{0};

  std::string PathOf(const Digest& d) const { return StrCat(dir, "/", DigestHex(d)); }

  void Insert(const Digest& d, uint64_t size, bool verified) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (auto it = items.find(d); it != items.end()) Erase(it, /*unlink_file=*/false);
    lru.push_front(d);
    items.emplace(d, Item{size, verified, lru.begin()});
    stats.bytes += size;
  }
  void Erase(std::unordered_map<Digest, Item, DigestHash>::iterator it, bool unlink_file)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (unlink_file) unlink(PathOf(it->first).c_str());
    if (on_evict) on_evict(it->first);
    stats.bytes -= it->second.size;
    lru.erase(it->second.lru);
    items.erase(it);
  }
  void Touch(Item& item) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { lru.splice(lru.begin(), lru, item.lru); }
  // Deletes least recently used files until the total fits, never `keep`.
  void Evict(const Digest* keep) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    while (stats.bytes > max_bytes && !lru.empty()) {
      const Digest& victim = lru.back();
      if (keep && victim == *keep) {
        if (lru.size() == 1) break;
        lru.splice(lru.begin(), lru, std::prev(lru.end()));
        continue;
      }
      Erase(items.find(victim), /*unlink_file=*/true);
      ++stats.evictions;
    }
  }

  absl::Status Scan() ABSL_LOCKS_EXCLUDED(mu);
  // Without mu: adopt a complete file another process wrote, else produce one.
  absl::StatusOr<int> Produce(const Digest& d, uint64_t size, const Producer& produce) ABSL_LOCKS_EXCLUDED(mu);
  // OpenContent's work; releases mu while it opens, hashes or produces.
  absl::StatusOr<int> OpenLocked(const Digest& digest, uint64_t size, const Producer& produce)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
};

absl::Status ContentCache::State::Scan() {
  DIR* dh = opendir(dir.c_str());
  if (!dh) return InternalErrnoStatus(errno, "opendir", dir);
  struct Found {
    struct timespec mtime;
    Digest digest;
    uint64_t size;
  };
  std::vector<Found> found;
  while (dirent* de = readdir(dh)) {
    std::string_view name = de->d_name;
    if (IsStaleTemp(name)) {
      unlinkat(dirfd(dh), de->d_name, 0);
      continue;
    }
    Digest d;
    if (name.size() != 64 || !ParseDigestHex(name, &d)) continue;
    struct stat st;
    if (fstatat(dirfd(dh), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
    found.push_back({st.st_mtim, d, static_cast<uint64_t>(st.st_size)});
  }
  closedir(dh);
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) {
    return std::tie(a.mtime.tv_sec, a.mtime.tv_nsec) < std::tie(b.mtime.tv_sec, b.mtime.tv_nsec);
  });
  absl::MutexLock lk(&mu);
  for (const Found& f : found) Insert(f.digest, f.size, /*verified=*/false);  // newest ends up first
  Evict(nullptr);
  return absl::OkStatus();
}

absl::StatusOr<int> ContentCache::State::Produce(const Digest& d, uint64_t size, const Producer& produce) {
  std::string final_path = PathOf(d);
  int fd = open(final_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (FileHolds(fd, d, size)) return fd;
    close(fd);
    unlink(final_path.c_str());
    absl::MutexLock lk(&mu);
    ++stats.rejected;
  }
  auto bytes = produce();
  if (!bytes.ok()) return bytes.status();
  if (bytes->size() != size)
    return absl::DataLossError(StrCat("content ", DigestString(d), " has ", bytes->size(),
                                      " bytes instead of ", size));
  std::string temp = StrCat(dir, "/", kTempPrefix, getpid(), ".", temp_counter.fetch_add(1), ".",
                            DigestHex(d));
  fd = open(temp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return InternalErrnoStatus(errno, "create", temp);
  absl::Status st = WriteAll(fd, *bytes, temp);
  if (st.ok() && rename(temp.c_str(), final_path.c_str()) != 0) st = InternalErrnoStatus(errno, "rename", temp);
  if (!st.ok()) {
    close(fd);
    unlink(temp.c_str());
    return st;
  }
  return fd;
}

ContentCache::ContentCache() : s_(std::make_unique<State>()) {}
ContentCache::~ContentCache() = default;

absl::StatusOr<std::unique_ptr<ContentCache>> ContentCache::Open(Options options) {
  if (options.dir.empty()) return absl::InvalidArgumentError("content cache: no directory given");
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) return absl::InternalError(StrCat("content cache: mkdir ", options.dir, ": ", ec.message()));
  std::unique_ptr<ContentCache> c(new ContentCache());
  c->s_->dir = options.dir;
  c->s_->max_bytes = options.max_bytes;
  c->s_->on_evict = std::move(options.on_evict);
  if (auto st = c->s_->Scan(); !st.ok()) return st;
  return c;
}

absl::StatusOr<int> ContentCache::OpenContent(const Digest& digest, uint64_t size, const Producer& produce) {
  absl::MutexLock lk(&s_->mu);
  return s_->OpenLocked(digest, size, produce);
}

absl::StatusOr<int> ContentCache::State::OpenLocked(const Digest& digest, uint64_t size,
                                                    const Producer& produce) {
  for (;;) {
    if (auto it = items.find(digest); it != items.end()) {
      if (it->second.size != size) {
        Erase(it, /*unlink_file=*/true);
        ++stats.rejected;
        continue;
      }
      Touch(it->second);
      bool verified = it->second.verified;
      mu.Unlock();
      int fd = open(PathOf(digest).c_str(), O_RDONLY | O_CLOEXEC);
      int err = errno;
      bool good = fd >= 0 && (verified || FileHolds(fd, digest, size));
      mu.Lock();
      it = items.find(digest);
      if (good) {
        if (it != items.end()) it->second.verified = true;
        ++stats.hits;
        return fd;
      }
      if (fd >= 0) {
        close(fd);
        ++stats.rejected;
        if (it != items.end()) Erase(it, /*unlink_file=*/true);
        continue;
      }
      if (err != ENOENT) return InternalErrnoStatus(err, "open", PathOf(digest));
      if (it != items.end()) Erase(it, /*unlink_file=*/false);  // deleted by another process
      continue;
    }
    if (auto f = inflight.find(digest); f != inflight.end()) {
      std::shared_ptr<Flight> flight = f->second;
      while (!flight->done) flight->cv.Wait(&mu);
      if (!flight->status.ok()) return flight->status;
      continue;
    }
    auto flight = std::make_shared<Flight>();
    inflight.emplace(digest, flight);
    mu.Unlock();
    absl::StatusOr<int> fd = absl::InternalError("content cache: producer threw");
    try {
      fd = Produce(digest, size, produce);
    } catch (const std::exception& e) {
      fd = absl::InternalError(StrCat("content cache: producer failed: ", e.what()));
    } catch (...) {
    }
    mu.Lock();
    if (fd.ok()) {
      Insert(digest, size, /*verified=*/true);
      Evict(&digest);
      ++stats.builds;
    } else {
      ++stats.failures;  // not remembered: the next request runs the producer again
    }
    flight->done = true;
    flight->status = fd.status();
    inflight.erase(digest);
    flight->cv.SignalAll();
    return fd;
  }
}

bool ContentCache::Contains(const Digest& digest) const {
  absl::MutexLock lk(&s_->mu);
  return s_->items.count(digest) != 0;
}

ContentCache::Stats ContentCache::stats() const {
  absl::MutexLock lk(&s_->mu);
  Stats st = s_->stats;
  st.files = s_->items.size();
  return st;
}

const std::string& ContentCache::dir() const { return s_->dir; }
uint64_t ContentCache::max_bytes() const { return s_->max_bytes; }

}  // namespace d4c
