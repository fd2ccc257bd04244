#include "d4c/content_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "d4c/base/mutex.h"
#include "absl/time/time.h"
#include "d4c/base/io.h"
#include "d4c/base/strcat.h"
#include "d4c/cache_budget.h"

namespace d4c {
namespace {

constexpr std::string_view kTempPrefix = ".tmp.";
constexpr const char* kLockFile = ".lock";
constexpr const char* kLedgerFile = ".ledger";

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

// Whether an open file holds exactly `bytes`.
bool FileEquals(int fd, std::string_view bytes) {
  struct stat st;
  if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != bytes.size()) return false;
  std::string buf(1 << 20, '\0');
  for (uint64_t off = 0; off < bytes.size();) {
    ssize_t n = pread(fd, buf.data(), std::min<uint64_t>(buf.size(), bytes.size() - off), static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || std::memcmp(buf.data(), bytes.data() + off, static_cast<size_t>(n)) != 0) return false;
    off += static_cast<uint64_t>(n);
  }
  return true;
}

uint64_t ParseU64(std::string_view s, bool* ok) {
  uint64_t v = 0;
  *ok = !s.empty();
  for (char c : s) {
    if (c < '0' || c > '9') {
      *ok = false;
      return 0;
    }
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

// Temporary files are ".tmp.<pid>.<n>.<size>.<hex>": the size they will
// have is their reservation, counted by scans while they are written.
struct TempName {
  pid_t pid = 0;
  uint64_t size = 0;
  bool well_formed = false;
};
TempName ParseTemp(std::string_view name) {
  TempName t;
  name.remove_prefix(kTempPrefix.size());
  std::vector<std::string_view> parts;
  for (size_t p = 0;;) {
    size_t q = name.find('.', p);
    parts.push_back(name.substr(p, q == std::string_view::npos ? q : q - p));
    if (q == std::string_view::npos) break;
    p = q + 1;
  }
  bool ok1, ok2, ok3 = true;
  if (parts.size() == 3) {
    // ".tmp.<pid>.<n>.<hex>": written by a daemon of an older version (it
    // may still run, adopted): no reservation, counted at its size.
  } else if (parts.size() == 4) {
    t.size = ParseU64(parts[2], &ok3);
  } else {
    return t;
  }
  t.pid = static_cast<pid_t>(ParseU64(parts[0], &ok1));
  ParseU64(parts[1], &ok2);
  t.well_formed = ok1 && ok2 && ok3 && t.pid > 0;
  return t;
}

// A temporary file nobody will finish: malformed, or of a process that is gone.
bool IsStaleTemp(const TempName& t) {
  if (!t.well_formed) return true;
  if (t.pid == getpid()) return false;
  return kill(t.pid, 0) != 0 && errno == ESRCH;
}

struct timespec Now() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

double Seconds(const struct timespec& t) { return static_cast<double>(t.tv_sec) + t.tv_nsec * 1e-9; }

// Sets the last use (mtime) of an open file to now; the clock is the fine
// one (futimens(fd, nullptr) would use the kernel's coarse clock, and LRU
// order needs distinct times).
void SetUsedNow(int fd) {
  struct timespec times[2];
  times[0].tv_nsec = UTIME_OMIT;
  times[0].tv_sec = 0;
  times[1] = Now();
  futimens(fd, times);
}

// The exclusive flock of ROOT/.lock, held for the object's life. A fresh open
// file description each time, so that threads of one process exclude each
// other too.
class RootLock {
 public:
  explicit RootLock(const std::string& root) {
    std::string path = StrCat(root, "/", kLockFile);
    fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      status_ = InternalErrnoStatus(errno, "open", path);
      return;
    }
    while (flock(fd_, LOCK_EX) != 0) {
      if (errno == EINTR) continue;
      status_ = InternalErrnoStatus(errno, "flock", path);
      close(fd_);
      fd_ = -1;
      return;
    }
  }
  ~RootLock() {
    if (fd_ >= 0) close(fd_);  // releases the lock
  }
  RootLock(const RootLock&) = delete;
  RootLock& operator=(const RootLock&) = delete;
  const absl::Status& status() const { return status_; }

 private:
  int fd_ = -1;
  absl::Status status_;
};

// A content served without a cache file: an anonymous memory file.
absl::StatusOr<int> MemoryFile(const Digest& d, std::string_view bytes) {
  int fd = memfd_create("di3fs-uncached", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return InternalErrnoStatus(errno, "memfd_create for", DigestString(d));
  absl::Status st = WriteAll(fd, bytes, "memfd");
  if (!st.ok()) {
    close(fd);
    return st;
  }
  fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);  // immutable from now
  return fd;
}

}  // namespace

// Thread-safety: `mu` guards the in-process maps and counters and is never
// held across file I/O, a producer run or RootLock (a leaf lock). Eviction,
// admission and budget changes run under RootLock (cross-process), which is
// taken with `mu` not held; on_evict runs under RootLock. Lock order:
// RootLock -> on_evict's locks; `mu` after nothing and before nothing.
struct ContentCache::State {
  // Set at Open, immutable after.
  std::string dir;
  std::string root;
  double pin_seconds = 10;
  double sweep_seconds = 1;
  std::function<void(const Digest&)> on_evict;
  std::function<void()> on_tick;

  std::atomic<uint64_t> budget{0};
  std::atomic<uint64_t> temp_counter{0};

  // One producer run; its fields are guarded by State::mu.
  struct Flight {
    bool done = false;
    absl::Status status;
    int memory_fd = -1;  // an uncached result, dup()ed for each waiter; closed with the Flight
    CondVar cv;    // signalled, with mu held, when done turns true
    ~Flight() {
      if (memory_fd >= 0) close(memory_fd);
    }
  };

  mutable Mutex mu;
  std::unordered_map<Digest, std::shared_ptr<Flight>, DigestHash> inflight ABSL_GUARDED_BY(mu);
  std::unordered_set<Digest, DigestHash> verified ABSL_GUARDED_BY(mu);  // written or hashed by us
  Stats stats ABSL_GUARDED_BY(mu);

  // Sweep thread.
  Mutex stop_mu;
  bool stopping ABSL_GUARDED_BY(stop_mu) = false;
  CondVar stop_cv;  // signalled when stopping turns true
  std::thread sweeper;

  std::string PathOf(const Digest& d) const { return StrCat(dir, "/", DigestHex(d)); }

  struct Found {
    struct timespec mtime;
    std::string path;
    Digest digest;
    uint64_t size;
    bool ours;  // in this cache's dir
  };
  struct ScanResult {
    uint64_t bytes = 0;  // content files + reservations of live temporary files
    std::vector<Found> files;
  };
  // Lists ROOT and its subdirectories. With `cleanup` (RootLock held), stale
  // temporary files are deleted.
  ScanResult Scan(bool cleanup) const;
  void ScanDir(const std::string& d, bool cleanup, ScanResult* out) const;
  // RootLock held: deletes least recently used files (skipping those used in
  // the last pin_seconds when `honor_pins`) until bytes <= target; returns
  // the bytes left.
  uint64_t EvictTo(ScanResult& scan, uint64_t target, bool honor_pins);

  std::optional<uint64_t> ReadLedger() const;
  void WriteLedger(uint64_t bytes) const;
  uint64_t ReadBudget() const { return ReadCacheBudget(root, budget.load()); }

  // The produced bytes go to a cache file if they fit, else to memory.
  absl::StatusOr<int> Admit(const Digest& d, const std::string& bytes, bool* uncached);
  void Unreserve(uint64_t size);
  // Deletes a damaged file of our dir (RootLock taken here).
  void Reject(const Digest& d);
};

void ContentCache::State::ScanDir(const std::string& d, bool cleanup, ScanResult* out) const {
  DIR* dh = opendir(d.c_str());
  if (!dh) return;
  std::vector<std::string> subdirs;
  while (dirent* de = readdir(dh)) {
    std::string_view name = de->d_name;
    if (name == "." || name == "..") continue;
    struct stat st;
    if (fstatat(dirfd(dh), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (name.substr(0, kTempPrefix.size()) == kTempPrefix) {
      TempName t = ParseTemp(name);
      if (IsStaleTemp(t)) {
        if (cleanup) unlinkat(dirfd(dh), de->d_name, 0);
        else out->bytes += static_cast<uint64_t>(st.st_size);
        continue;
      }
      out->bytes += std::max<uint64_t>(t.size, static_cast<uint64_t>(st.st_size));
      continue;
    }
    if (S_ISDIR(st.st_mode) && d == root && name[0] != '.') {
      subdirs.push_back(StrCat(d, "/", name));
      continue;
    }
    Digest digest;
    if (name.size() != 64 || !ParseDigestHex(name, &digest) || !S_ISREG(st.st_mode)) continue;
    out->bytes += static_cast<uint64_t>(st.st_size);
    out->files.push_back({st.st_mtim, StrCat(d, "/", name), digest, static_cast<uint64_t>(st.st_size), d == dir});
  }
  closedir(dh);
  for (const auto& s : subdirs) ScanDir(s, cleanup, out);
}

ContentCache::State::ScanResult ContentCache::State::Scan(bool cleanup) const {
  ScanResult r;
  ScanDir(root, cleanup, &r);
  if (dir != root && dir.rfind(root + "/", 0) != 0) ScanDir(dir, cleanup, &r);  // dir outside ROOT
  return r;
}

uint64_t ContentCache::State::EvictTo(ScanResult& scan, uint64_t target, bool honor_pins) {
  if (scan.bytes <= target) return scan.bytes;
  std::sort(scan.files.begin(), scan.files.end(), [](const Found& a, const Found& b) {
    return std::tie(a.mtime.tv_sec, a.mtime.tv_nsec, a.path) < std::tie(b.mtime.tv_sec, b.mtime.tv_nsec, b.path);
  });
  double pinned_after = Seconds(Now()) - pin_seconds;
  uint64_t evicted = 0;
  std::vector<Found> kept;
  for (Found& f : scan.files) {
    if (scan.bytes <= target || (honor_pins && Seconds(f.mtime) > pinned_after)) {
      kept.push_back(std::move(f));
      continue;
    }
    if (unlink(f.path.c_str()) != 0 && errno != ENOENT) {
      kept.push_back(std::move(f));
      continue;
    }
    scan.bytes -= f.size;
    ++evicted;
    if (f.ours && on_evict) on_evict(f.digest);
  }
  scan.files = std::move(kept);
  if (evicted) {
    MutexLock lk(&mu);
    stats.evictions += evicted;
  }
  return scan.bytes;
}

std::optional<uint64_t> ContentCache::State::ReadLedger() const {
  std::string path = StrCat(root, "/", kLedgerFile);
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char buf[32];
  ssize_t n = pread(fd, buf, sizeof buf, 0);
  close(fd);
  if (n <= 0) return std::nullopt;
  std::string_view s(buf, static_cast<size_t>(n));
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
  bool ok;
  uint64_t v = ParseU64(s, &ok);
  if (!ok) return std::nullopt;
  return v;
}

void ContentCache::State::WriteLedger(uint64_t bytes) const {
  std::string path = StrCat(root, "/", kLedgerFile);
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;  // a missing ledger only forces the next admission to scan
  std::string text = StrCat(bytes, "\n");
  if (ftruncate(fd, 0) == 0) (void)!pwrite(fd, text.data(), text.size(), 0);
  close(fd);
}

void ContentCache::State::Unreserve(uint64_t size) {
  RootLock lk(root);
  if (!lk.status().ok()) return;
  if (auto l = ReadLedger()) WriteLedger(*l >= size ? *l - size : 0);
}

void ContentCache::State::Reject(const Digest& d) {
  {
    RootLock lk(root);
    unlink(PathOf(d).c_str());
    if (on_evict) on_evict(d);
  }
  MutexLock lk(&mu);
  ++stats.rejected;
  verified.erase(d);
}

absl::StatusOr<int> ContentCache::State::Admit(const Digest& d, const std::string& bytes, bool* uncached) {
  const uint64_t size = bytes.size();
  std::string final_path = PathOf(d);
  std::string temp;
  int fd = -1;
  // Set when the bytes will not go to disk; the memory file is written after
  // the lock is released.
  *uncached = false;
  {
    RootLock lk(root);
    if (!lk.status().ok()) *uncached = true;
    // Written meanwhile by another daemon: use it if it holds our bytes.
    int have = *uncached ? -1 : open(final_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (have >= 0) {
      if (FileEquals(have, bytes)) {
        SetUsedNow(have);
        return have;
      }
      close(have);
    }
    uint64_t b = ReadBudget();
    budget = b;
    if (size > b) *uncached = true;
    std::optional<uint64_t> ledger = ReadLedger();
    uint64_t used = 0;
    if (*uncached) {
      // nothing to reserve
    } else if (ledger && *ledger + size <= b) {
      used = *ledger;
    } else {
      ScanResult scan = Scan(/*cleanup=*/true);
      {
        MutexLock mlk(&mu);
        ++stats.scans;
      }
      // Make room for at least 1/64 of the budget, so that the admissions
      // that follow do not all scan again; pinned files stay.
      uint64_t room = std::max(size, b / 64);
      uint64_t low = b - std::min(room, b);
      used = EvictTo(scan, low, /*honor_pins=*/true);
      if (used + size > b) {
        WriteLedger(used);
        *uncached = true;
      }
    }
    if (!*uncached) {
      temp = StrCat(dir, "/", kTempPrefix, getpid(), ".", temp_counter.fetch_add(1), ".", size, ".", DigestHex(d));
      fd = open(temp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd < 0) *uncached = true;  // e.g. a read-only cache directory: the read still works
      else WriteLedger(used + size);  // the reservation; the temp file's name carries it for scans
    }
  }
  if (*uncached) return MemoryFile(d, bytes);
  absl::Status st = WriteAll(fd, bytes, temp);
  if (st.ok()) SetUsedNow(fd);
  if (st.ok()) {
    // Renamed under the lock: a scan (readdir) running during a rename may
    // see neither name, and would then count too little.
    RootLock lk(root);
    if (!lk.status().ok()) st = lk.status();
    else if (rename(temp.c_str(), final_path.c_str()) != 0) st = InternalErrnoStatus(errno, "rename", temp);
  }
  if (!st.ok()) {
    close(fd);
    unlink(temp.c_str());
    Unreserve(size);
    *uncached = true;  // e.g. a full disk: the read still works
    return MemoryFile(d, bytes);
  }
  return fd;
}

ContentCache::ContentCache() : s_(std::make_unique<State>()) {}

ContentCache::~ContentCache() {
  if (s_->sweeper.joinable()) {
    {
      MutexLock lk(&s_->stop_mu);
      s_->stopping = true;
    }
    s_->stop_cv.SignalAll();
    s_->sweeper.join();
  }
}

absl::StatusOr<std::unique_ptr<ContentCache>> ContentCache::Open(Options options) {
  if (options.dir.empty()) return absl::InvalidArgumentError("content cache: no directory given");
  if (options.root.empty()) options.root = options.dir;
  for (const std::string& d : {options.root, options.dir}) {
    std::error_code ec;
    std::filesystem::create_directories(d, ec);
    if (ec) return absl::InternalError(StrCat("content cache: mkdir ", d, ": ", ec.message()));
  }
  std::unique_ptr<ContentCache> c(new ContentCache());
  State& s = *c->s_;
  s.dir = options.dir;
  s.root = options.root;
  s.pin_seconds = options.pin_seconds;
  s.sweep_seconds = options.sweep_seconds;
  s.on_evict = std::move(options.on_evict);
  s.on_tick = std::move(options.on_tick);
  s.budget = ReadCacheBudget(s.root, 2ull << 30);
  if (options.max_bytes != 0) {
    if (auto st = WriteCacheBudget(s.root, options.max_bytes); !st.ok()) return st;
    s.budget = options.max_bytes;
  }
  {
    RootLock lk(s.root);
    if (!lk.status().ok()) return lk.status();
    State::ScanResult scan = s.Scan(/*cleanup=*/true);
    s.WriteLedger(s.EvictTo(scan, s.budget, /*honor_pins=*/false));
  }
  if (s.sweep_seconds > 0) {
    c->s_->sweeper = std::thread([c = c.get()] {
      State& s = *c->s_;
      for (;;) {
        {
          MutexLock lk(&s.stop_mu);
          const absl::Time next = absl::Now() + absl::Seconds(s.sweep_seconds);
          for (absl::Time now = absl::Now(); !s.stopping && now < next; now = absl::Now())
            s.stop_cv.WaitWithTimeout(&s.stop_mu, next - now);
          if (s.stopping) return;
        }
        c->Sweep();
        if (s.on_tick) s.on_tick();
      }
    });
  }
  return c;
}

void ContentCache::Sweep() {
  State& s = *s_;
  uint64_t old_budget = s.budget.load();
  uint64_t b = s.ReadBudget();
  auto ledger = s.ReadLedger();
  if (b == old_budget && ledger && *ledger <= b) return;
  RootLock lk(s.root);
  if (!lk.status().ok()) return;
  b = s.ReadBudget();
  s.budget = b;
  ledger = s.ReadLedger();
  if (ledger && *ledger <= b) return;
  State::ScanResult scan = s.Scan(/*cleanup=*/true);
  s.WriteLedger(s.EvictTo(scan, b, /*honor_pins=*/false));
}

bool ContentCache::Touch(int fd) {
  SetUsedNow(fd);
  struct stat st;
  if (fstat(fd, &st) != 0) return false;
  // A memfd (uncached content, which has seals) never had a link.
  return st.st_nlink > 0 || fcntl(fd, F_GET_SEALS) >= 0;
}

absl::StatusOr<int> ContentCache::OpenContent(const Digest& digest, uint64_t size, const Producer& produce) {
  State& s = *s_;
  std::string path = s.PathOf(digest);
  for (int attempt = 0;; ++attempt) {
    // The hit path: no global lock.
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      bool verified;
      {
        MutexLock lk(&s.mu);
        verified = s.verified.count(digest) != 0;
      }
      struct stat st;
      bool good = fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) == size &&
                  (verified || FileHolds(fd, digest, size));
      if (good) {
        SetUsedNow(fd);
        MutexLock lk(&s.mu);
        s.verified.insert(digest);
        ++s.stats.hits;
        return fd;
      }
      close(fd);
      s.Reject(digest);
    } else if (errno != ENOENT) {
      return InternalErrnoStatus(errno, "open", path);
    }

    // A miss: one producer run per digest in this process.
    std::shared_ptr<State::Flight> flight;
    {
      MutexLock lk(&s.mu);
      if (auto f = s.inflight.find(digest); f != s.inflight.end()) {
        std::shared_ptr<State::Flight> other = f->second;
        while (!other->done) other->cv.Wait(&s.mu);
        if (!other->status.ok()) return other->status;
        if (other->memory_fd >= 0) {
          int dup_fd = fcntl(other->memory_fd, F_DUPFD_CLOEXEC, 0);
          if (dup_fd < 0) return InternalErrnoStatus(errno, "dup memfd of", DigestString(digest));
          return dup_fd;
        }
        if (attempt < 3) continue;  // the file is there (unless evicted at once): open it
      }
      flight = std::make_shared<State::Flight>();
      s.inflight[digest] = flight;
    }
    absl::StatusOr<int> result = absl::InternalError("content cache: producer threw");
    bool uncached = false;
    try {
      auto bytes = produce();
      if (!bytes.ok()) {
        result = bytes.status();
      } else if (bytes->size() != size) {
        result = absl::DataLossError(StrCat("content ", DigestString(digest), " has ", bytes->size(),
                                            " bytes instead of ", size));
      } else {
        result = s.Admit(digest, *bytes, &uncached);
      }
    } catch (const std::exception& e) {
      result = absl::InternalError(StrCat("content cache: producer failed: ", e.what()));
    } catch (...) {
    }
    MutexLock lk(&s.mu);
    if (result.ok()) {
      ++s.stats.builds;
      if (uncached) {
        ++s.stats.uncached;
        flight->memory_fd = fcntl(*result, F_DUPFD_CLOEXEC, 0);
      } else {
        s.verified.insert(digest);
      }
    } else {
      ++s.stats.failures;  // not remembered: the next request runs the producer again
    }
    flight->done = true;
    flight->status = result.status();
    s.inflight.erase(digest);
    flight->cv.SignalAll();
    return result;
  }
}

bool ContentCache::Contains(const Digest& digest) const {
  struct stat st;
  return stat(s_->PathOf(digest).c_str(), &st) == 0;
}

ContentCache::Stats ContentCache::stats() const {
  State::ScanResult scan = s_->Scan(/*cleanup=*/false);
  MutexLock lk(&s_->mu);
  Stats st = s_->stats;
  st.bytes = scan.bytes;
  st.files = 0;
  for (const auto& f : scan.files) st.files += f.ours;
  st.budget = s_->budget.load();
  return st;
}

const std::string& ContentCache::dir() const { return s_->dir; }
const std::string& ContentCache::root() const { return s_->root; }
uint64_t ContentCache::max_bytes() const { return s_->budget.load(); }

}  // namespace d4c
