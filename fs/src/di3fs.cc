// The FUSE side of di3fs: libfuse low-level handlers over FsTree (metadata)
// and ContentCache (bytes). Every handler computes its answer first and
// replies exactly once as its last step; an exception escaping the
// computation becomes EIO (Guarded).
#include "d4c/di3fs.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <malloc.h>
#include <linux/fuse.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <list>
#include <memory>
#include <optional>
#include <thread>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "d4c/base/mutex.h"
#include "d4c/chain.h"
#include "d4c/codec.h"
#include "d4c/content_cache.h"
#include "d4c/fs_tree.h"
#include "d4c/base/strcat.h"

namespace d4c {

namespace {

// An open cache file, closed when the last reader lets go of it.
struct ContentFd {
  explicit ContentFd(int f) : fd(f) {}
  ~ContentFd() { close(fd); }
  ContentFd(const ContentFd&) = delete;
  ContentFd& operator=(const ContentFd&) = delete;
  const int fd;
};

// Open cache files by content digest, at most `max` (least recently used
// closed first). Files are opened without FUSE open/release requests (the
// kernel's no_open mode), so reads find their descriptor here; a descriptor
// is what keeps a file being read from needing a rebuild if it is evicted.
// While a file is read its cache file is Touched (last use, which pins it in
// the cache) at most once per kTouchSeconds; a descriptor whose file was
// evicted (by any daemon) is dropped at that point, and descriptors not read
// for kIdleSeconds are closed by Expire (the cache's sweep tick), so that
// evicted files do not stay allocated on disk for long.
//
// Thread-safety: internally synchronized (mu_). Drop runs from the content
// cache's on_evict with the cache root's flock held, so the lock order is
// ContentCache's root lock -> mu_; ContentFds never calls into the cache (nor
// anything else that locks) with mu_ held (Touch is a static futimens+fstat).
class ContentFds {
 public:
  static constexpr double kTouchSeconds = 1;
  static constexpr double kIdleSeconds = 3;

  explicit ContentFds(size_t max) : max_(max) {}

  std::shared_ptr<const ContentFd> Get(const Digest& d) {
    std::shared_ptr<const ContentFd> fd;
    double now = NowSeconds();
    {
      MutexLock lk(&mu_);
      auto it = map_.find(d);
      if (it == map_.end()) return nullptr;
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      it->second.last_read = now;
      if (now - it->second.last_touch < kTouchSeconds) return it->second.fd;
      it->second.last_touch = now;
      fd = it->second.fd;
    }
    if (ContentCache::Touch(fd->fd)) return fd;
    Drop(d);  // evicted: this read still gets its bytes, the next one reopens
    return fd;
  }
  void Put(const Digest& d, std::shared_ptr<const ContentFd> fd) {
    double now = NowSeconds();
    MutexLock lk(&mu_);
    if (auto it = map_.find(d); it != map_.end()) {
      it->second.fd = std::move(fd);
      it->second.last_read = it->second.last_touch = now;
      return;
    }
    lru_.push_front(d);
    map_.emplace(d, Slot{std::move(fd), lru_.begin(), now, now});
    while (map_.size() > max_) {
      map_.erase(lru_.back());
      lru_.pop_back();
    }
  }
  void Drop(const Digest& d) {
    MutexLock lk(&mu_);
    auto it = map_.find(d);
    if (it == map_.end()) return;
    lru_.erase(it->second.lru);
    map_.erase(it);
  }
  // Closes descriptors not read for kIdleSeconds (reads in flight keep theirs).
  void Expire() {
    double now = NowSeconds();
    MutexLock lk(&mu_);
    while (!lru_.empty()) {
      auto it = map_.find(lru_.back());
      if (now - it->second.last_read < kIdleSeconds) break;
      map_.erase(it);
      lru_.pop_back();
    }
  }

 private:
  static double NowSeconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }
  struct Slot {
    std::shared_ptr<const ContentFd> fd;
    std::list<Digest>::iterator lru;
    double last_read;   // steady clock seconds
    double last_touch;
  };
  Mutex mu_;
  std::unordered_map<Digest, Slot, DigestHash> map_ ABSL_GUARDED_BY(mu_);
  std::list<Digest> lru_ ABSL_GUARDED_BY(mu_);  // most recently read first
  const size_t max_;
};

// Contents whose rebuild failed on bad data: DataLoss, which ImageChain
// gives only for bytes of the image that are wrong (content that does not
// match its sha256, an undecodable blob, a truncated file). Images are
// immutable, so the answer stays EIO: later reads get it at once instead of
// decoding again, and the log names the file once. Any other failure (an
// I/O error, ENOMEM, a full cache disk) is not remembered: the next read
// tries again.
//
// Thread-safety: internally synchronized (mu_); a leaf lock.
class BadContents {
 public:
  static bool Permanent(const absl::Status& s) { return absl::IsDataLoss(s); }
  std::optional<absl::Status> Get(const Digest& d) {
    MutexLock lk(&mu_);
    auto it = map_.find(d);
    if (it == map_.end()) return std::nullopt;
    return it->second;
  }
  void Put(const Digest& d, const absl::Status& s) {
    MutexLock lk(&mu_);
    map_.emplace(d, s);
  }

 private:
  Mutex mu_;
  std::unordered_map<Digest, absl::Status, DigestHash> map_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

// Thread-safety: the FUSE handlers run on several threads at once. Set in
// Open and immutable after: opt, chain, tree, cache, private_cache_dir,
// open_ms. Set once by OnInit, before the kernel sends any other request:
// no_open, no_opendir, inited (for a takeover: by the replayed FUSE_INIT).
// Internally synchronized: fds, bad, cache (lock order cache root lock -> fds, see ContentFds; the cache's sweep thread calls
// fds.Expire with no lock held; the destructor stops that thread, by
// destroying the cache, before fds goes). The session lifecycle is guarded by `mu`
// (Mount, Serve, Stop, the destructor); no handler takes it.
struct Di3fs::State {
  Di3fsOptions opt;
  std::unique_ptr<ImageChain> chain;
  std::unique_ptr<FsTree> tree;
  std::unique_ptr<ContentCache> cache;
  ContentFds fds{1024};
  BadContents bad;
  // Threads lent to the rebuild of a big file (one reader would otherwise
  // rebuild it alone): one fewer than the CPUs, shared by all readers.
  SpawningHelpers helpers{static_cast<int>(std::max(2u, std::thread::hardware_concurrency())) - 1};
  std::string private_cache_dir;  // removed with the object
  // Set at FUSE init: the kernel opens files / directories by itself.
  bool no_open = false;
  bool no_opendir = false;
  bool inited = false;  // OnInit ran (a takeover checks its synthetic FUSE_INIT)
  double open_ms = 0;

  Mutex mu;  // session lifecycle
  fuse_session* se ABSL_GUARDED_BY(mu) = nullptr;
  std::string mountpoint ABSL_GUARDED_BY(mu);
  bool mounted ABSL_GUARDED_BY(mu) = false;
  // Serving a connection taken over from a dead daemon (TakeOver): libfuse
  // does not know the mountpoint, so Serve detaches it itself on a signal.
  bool taken_over ABSL_GUARDED_BY(mu) = false;

  const FsTree& t() const { return *tree; }
};

namespace {

using State = Di3fs::State;

constexpr uint32_t kMaxTransfer = 1u << 20;

void Log(const std::string& line) {
  std::string l = StrCat("di3fs: ", line, "\n");
  fwrite(l.data(), 1, l.size(), stderr);
}

State& S(fuse_req_t req) { return *static_cast<State*>(fuse_req_userdata(req)); }

template <typename F>
void Guarded(fuse_req_t req, const char* op, F&& body) {
  try {
    body();
  } catch (const std::exception& e) {
    Log(StrCat(op, ": internal error: ", e.what()));
    fuse_reply_err(req, EIO);
  } catch (...) {
    Log(StrCat(op, ": internal error"));
    fuse_reply_err(req, EIO);
  }
}

std::string PathOf(const State& s, size_t i) { return StrCat("/", s.t().image().PathAt(i)); }

void FillEntry(const State& s, size_t i, fuse_entry_param* e) {
  std::memset(e, 0, sizeof *e);
  e->ino = s.t().InodeOf(i);
  s.t().Stat(i, &e->attr);
  e->attr_timeout = s.opt.timeout_sec;
  e->entry_timeout = s.opt.timeout_sec;
}

// ---- handlers --------------------------------------------------------------

void OnInit(void* userdata, fuse_conn_info* conn) {
  State& s = *static_cast<State*>(userdata);
  auto want = [&](unsigned cap) {
    if (conn->capable & cap) conn->want |= cap;
    return (conn->want & cap) != 0;
  };
  // Zero-message opens: no open/release round trip per opened file or
  // directory; the kernel keeps page cache and readdir cache by default.
  s.no_open = want(FUSE_CAP_NO_OPEN_SUPPORT);
  s.no_opendir = want(FUSE_CAP_NO_OPENDIR_SUPPORT);
  want(FUSE_CAP_ASYNC_READ);
  want(FUSE_CAP_PARALLEL_DIROPS);
  want(FUSE_CAP_READDIRPLUS);
  want(FUSE_CAP_CACHE_SYMLINKS);
  want(FUSE_CAP_POSIX_ACL);  // system.posix_acl_* xattrs are honoured (needs default_permissions)
  if (!std::getenv("DI3FS_NO_SPLICE")) {
    want(FUSE_CAP_SPLICE_WRITE);
    want(FUSE_CAP_SPLICE_MOVE);
  }
  // Always readdirplus (tree walks stat everything); the content never
  // changes, so no invalidation on attribute changes.
  conn->want &= ~(FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_AUTO_INVAL_DATA);
  // max_write also sets max_pages, which bounds the size of read requests.
  conn->max_write = kMaxTransfer;
  conn->time_gran = 1;
  s.inited = true;
}

void OnLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guarded(req, "lookup", [&] {
    State& s = S(req);
    auto dir = s.t().EntryOfInode(parent);
    if (!dir) return (void)fuse_reply_err(req, ENOENT);
    if (!s.t().IsDir(*dir)) return (void)fuse_reply_err(req, ENOTDIR);
    fuse_entry_param e;
    std::memset(&e, 0, sizeof e);
    auto child = s.t().Lookup(*dir, name);
    if (child) {
      FillEntry(s, *child, &e);
    } else {
      e.entry_timeout = s.opt.timeout_sec;  // ino 0: a cached negative entry
    }
    fuse_reply_entry(req, &e);
  });
}

// Inodes live as long as the mount: nothing to count or free.
void OnForget(fuse_req_t req, fuse_ino_t, uint64_t) { fuse_reply_none(req); }
void OnForgetMulti(fuse_req_t req, size_t, fuse_forget_data*) { fuse_reply_none(req); }

void OnGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  Guarded(req, "getattr", [&] {
    State& s = S(req);
    auto i = s.t().EntryOfInode(ino);
    if (!i) return (void)fuse_reply_err(req, ENOENT);
    struct stat st;
    s.t().Stat(*i, &st);
    fuse_reply_attr(req, &st, s.opt.timeout_sec);
  });
}

void OnReadlink(fuse_req_t req, fuse_ino_t ino) {
  Guarded(req, "readlink", [&] {
    State& s = S(req);
    auto i = s.t().EntryOfInode(ino);
    if (!i) return (void)fuse_reply_err(req, ENOENT);
    if (s.t().image().TypeAt(*i) != EntryType::kSymlink) return (void)fuse_reply_err(req, EINVAL);
    std::string target = s.t().image().EntryAt(*i).link_target;
    fuse_reply_readlink(req, target.c_str());
  });
}

// Opens are checked here once; with no_open the kernel then stops asking.
void OnOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guarded(req, "open", [&] {
    State& s = S(req);
    auto i = s.t().EntryOfInode(ino);
    if (!i) return (void)fuse_reply_err(req, ENOENT);
    EntryType type = s.t().image().TypeAt(*i);
    if (type == EntryType::kDirectory) return (void)fuse_reply_err(req, EISDIR);
    if (type != EntryType::kRegular) return (void)fuse_reply_err(req, EINVAL);
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) return (void)fuse_reply_err(req, EROFS);
    if (s.no_open) return (void)fuse_reply_err(req, ENOSYS);  // "open them yourself"
    fi->keep_cache = 1;  // immutable content: page cache survives reopening
    fi->noflush = 1;
    fuse_reply_open(req, fi);
  });
}

// The errno a read gets for a failed rebuild: ENOMEM when memory ran out,
// else EIO (bad image bytes, I/O errors, a cache disk that is full).
int ErrnoOf(const absl::Status& s) { return absl::IsResourceExhausted(s) ? ENOMEM : EIO; }

// Files from this size are rebuilt with State::helpers (a codec splits the
// work of a big file: bsdiff decodes its streams beside the base and
// rebuilds in parts); smaller ones are not worth a thread's start.
constexpr uint64_t kHelpedRebuildBytes = 4u << 20;

// The cache file of regular entry i: rebuilt (and verified) on first use.
absl::StatusOr<std::shared_ptr<const ContentFd>> ContentOf(State& s, size_t i) {
  const CdimgImage& img = s.t().image();
  Digest digest = img.DigestAt(i);
  if (auto fd = s.fds.Get(digest)) return fd;
  if (auto known = s.bad.Get(digest)) return *known;
  const ImageChain& chain = *s.chain;
  auto opened = s.cache->OpenContent(digest, img.SizeAt(i), [&] {
    return img.SizeAt(i) >= kHelpedRebuildBytes ? chain.ReadFile(i, s.helpers, {}) : chain.ReadFile(i);
  });
  if (!opened.ok()) {
    Log(StrCat(std::strerror(ErrnoOf(opened.status())), " for ", PathOf(s, i), ": ",
               Msg(opened.status().message()),
               BadContents::Permanent(opened.status()) ? "" : " (not remembered: retried on the next read)"));
    if (BadContents::Permanent(opened.status())) s.bad.Put(digest, opened.status());
    return opened.status();
  }
  auto fd = std::make_shared<const ContentFd>(*opened);
  s.fds.Put(digest, fd);
  return fd;
}

void OnRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  Guarded(req, "read", [&] {
    State& s = S(req);
    auto i = s.t().EntryOfInode(ino);
    if (!i) return (void)fuse_reply_err(req, ENOENT);
    if (s.t().image().TypeAt(*i) != EntryType::kRegular) return (void)fuse_reply_err(req, EINVAL);
    uint64_t file_size = s.t().image().SizeAt(*i);
    if (off < 0 || static_cast<uint64_t>(off) >= file_size) return (void)fuse_reply_buf(req, nullptr, 0);
    auto fd = ContentOf(s, *i);
    if (!fd.ok()) return (void)fuse_reply_err(req, ErrnoOf(fd.status()));  // logged by ContentOf
    fuse_bufvec buf;
    std::memset(&buf, 0, sizeof buf);
    buf.count = 1;
    buf.buf[0].size = std::min<uint64_t>(size, file_size - static_cast<uint64_t>(off));
    buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = (*fd)->fd;
    buf.buf[0].pos = off;
    fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
  });
}

void OnOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guarded(req, "opendir", [&] {
    State& s = S(req);
    auto i = s.t().EntryOfInode(ino);
    if (!i) return (void)fuse_reply_err(req, ENOENT);
    if (!s.t().IsDir(*i)) return (void)fuse_reply_err(req, ENOTDIR);
    if (s.no_opendir) return (void)fuse_reply_err(req, ENOSYS);
    fi->cache_readdir = 1;  // the kernel may keep the listing
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
  });
}

// Directory offsets: 1 after ".", 2 after "..", and after a child the entry
// index at which its next sibling would be, plus 2. Stateless and stable.
void ReadDirectory(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
  State& s = S(req);
  const FsTree& t = s.t();
  auto dir = t.EntryOfInode(ino);
  if (!dir) return (void)fuse_reply_err(req, ENOENT);
  if (!t.IsDir(*dir)) return (void)fuse_reply_err(req, ENOTDIR);
  size_t end = t.ChildrenEnd(*dir);
  size_t first = off <= 2 ? t.FirstChild(*dir) : static_cast<size_t>(off) - 2;
  if (first < t.FirstChild(*dir) ||
      (first < end && ParentPath(t.image().PathAt(first)) != t.image().PathAt(*dir)))
    return (void)fuse_reply_err(req, EINVAL);  // not an offset we handed out

  // Up to max_pages (1 MiB): not zeroed, only the used part is sent.
  std::unique_ptr<char[]> buf = std::make_unique_for_overwrite<char[]>(size);
  size_t used = 0;
  auto add = [&](const std::string& name, size_t entry, off_t next) {
    size_t room = size - used;
    size_t n;
    if (plus) {
      fuse_entry_param e;
      FillEntry(s, entry, &e);
      n = fuse_add_direntry_plus(req, buf.get() + used, room, name.c_str(), &e, next);
    } else {
      struct stat st;
      std::memset(&st, 0, sizeof st);
      st.st_ino = t.InodeOf(entry);
      st.st_mode = EntryTypeFormatBits(t.image().TypeAt(t.Primary(entry)));
      n = fuse_add_direntry(req, buf.get() + used, room, name.c_str(), &st, next);
    }
    if (n > room) return false;
    used += n;
    return true;
  };
  bool more = true;
  if (off < 1) more = add(".", *dir, 1);
  if (more && off < 2) more = add("..", t.Parent(*dir), 2);
  for (size_t c = first; more && c < end;) {
    size_t next = t.NextSibling(c);
    more = add(std::string(BaseName(t.image().PathAt(c))), c, static_cast<off_t>(next + 2));
    c = next;
  }
  fuse_reply_buf(req, buf.get(), used);
}

void OnReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  Guarded(req, "readdir", [&] { ReadDirectory(req, ino, size, off, false); });
}

void OnReaddirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  Guarded(req, "readdirplus", [&] { ReadDirectory(req, ino, size, off, true); });
}

void OnStatfs(fuse_req_t req, fuse_ino_t) {
  Guarded(req, "statfs", [&] {
    const FsTree& t = S(req).t();
    struct statvfs sv;
    std::memset(&sv, 0, sizeof sv);
    sv.f_bsize = 4096;
    sv.f_frsize = 4096;
    sv.f_blocks = (t.total_file_bytes() + 4095) / 4096;
    sv.f_files = t.size();
    sv.f_namemax = 255;
    sv.f_flag = ST_RDONLY;
    fuse_reply_statfs(req, &sv);
  });
}

void ReplyXattr(fuse_req_t req, const FsTree::XattrReply& r, size_t size) {
  if (r.error) return (void)fuse_reply_err(req, r.error);
  if (size == 0) return (void)fuse_reply_xattr(req, r.needed);
  fuse_reply_buf(req, r.bytes.data(), r.bytes.size());
}

void OnGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Guarded(req, "getxattr", [&] {
    const FsTree& t = S(req).t();
    auto i = t.EntryOfInode(ino);
    if (!i) return (void)fuse_reply_err(req, ENOENT);
    ReplyXattr(req, t.GetXattr(*i, name, size), size);
  });
}

void OnListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Guarded(req, "listxattr", [&] {
    const FsTree& t = S(req).t();
    auto i = t.EntryOfInode(ino);
    if (!i) return (void)fuse_reply_err(req, ENOENT);
    ReplyXattr(req, t.ListXattr(*i, size), size);
  });
}

const fuse_lowlevel_ops kOps = [] {
  fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof ops);
  ops.init = OnInit;
  ops.lookup = OnLookup;
  ops.forget = OnForget;
  ops.forget_multi = OnForgetMulti;
  ops.getattr = OnGetattr;
  ops.readlink = OnReadlink;
  ops.open = OnOpen;
  ops.read = OnRead;
  ops.opendir = OnOpendir;
  ops.readdir = OnReaddir;
  ops.readdirplus = OnReaddirplus;
  ops.statfs = OnStatfs;
  ops.getxattr = OnGetxattr;
  ops.listxattr = OnListxattr;
  return ops;
}();

// SIGINT/SIGTERM/SIGHUP end the request loop (then Serve unmounts). Unlike
// fuse_set_signal_handlers, a SIGINT that the parent left ignored (background
// jobs of a non-interactive shell) is taken over too.
std::atomic<fuse_session*> g_signal_session{nullptr};

void OnExitSignal(int) {
  if (fuse_session* se = g_signal_session.load()) fuse_session_exit(se);
}

absl::Status SetExitSignals(fuse_session* se) {
  g_signal_session = se;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = OnExitSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a blocked read of /dev/fuse returns EINTR
  for (int sig : {SIGINT, SIGTERM, SIGHUP})
    if (sigaction(sig, &sa, nullptr) != 0) return absl::InternalError(StrCat("sigaction: ", std::strerror(errno)));
  signal(SIGPIPE, SIG_IGN);
  return absl::OkStatus();
}

void ClearExitSignals() {
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) signal(sig, SIG_DFL);
  g_signal_session = nullptr;
}

absl::StatusOr<std::string> MakePrivateCacheDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = StrCat(tmp && *tmp ? tmp : "/var/tmp", "/di3fs-cache.XXXXXX");
  if (!mkdtemp(tmpl.data())) return absl::InternalError(StrCat("mkdtemp ", tmpl, ": ", std::strerror(errno)));
  return tmpl;
}

}  // namespace

// ---- lifecycle ---------------------------------------------------------------

Di3fs::Di3fs() : s_(std::make_unique<State>()) {}

Di3fs::~Di3fs() {
  {
    MutexLock lk(&s_->mu);
    if (s_->se) {
      if (s_->mounted) fuse_session_unmount(s_->se);
      fuse_session_destroy(s_->se);
      s_->se = nullptr;
    }
  }
  // The cache first: its sweep thread calls into fds (on_tick, on_evict),
  // which the members' destruction would free before the cache (declared
  // earlier) stops that thread.
  s_->cache.reset();
  if (!s_->private_cache_dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(s_->private_cache_dir, ec);
  }
}

absl::StatusOr<std::unique_ptr<Di3fs>> Di3fs::Open(const Di3fsOptions& options) {
  std::unique_ptr<Di3fs> fs(new Di3fs());
  State& s = *fs->s_;
  s.opt = options;
  auto t0 = std::chrono::steady_clock::now();
  auto chain = ImageChain::Open(options.cdimg, options.bases);
  if (!chain.ok()) return chain.status();
  s.chain = std::move(*chain);
  auto tree = FsTree::Build(s.chain->top());
  if (!tree.ok()) return tree.status();
  s.tree = std::move(*tree);
  s.open_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  std::string dir = options.cache_dir;
  if (dir.empty()) {
    auto d = MakePrivateCacheDir();
    if (!d.ok()) return d.status();
    dir = s.private_cache_dir = *d;
  }
  ContentCache::Options co;
  co.dir = dir;
  co.root = s.private_cache_dir.empty() ? options.cache_root : "";
  co.max_bytes = options.cache_size;
  co.on_evict = [&s](const Digest& d) { s.fds.Drop(d); };
  co.on_tick = [&s] { s.fds.Expire(); };
  auto cache = ContentCache::Open(std::move(co));
  if (!cache.ok()) return cache.status();
  s.cache = std::move(*cache);
  return fs;
}

namespace {

// A session with di3fs's options, not yet connected to the kernel.
absl::StatusOr<fuse_session*> NewSession(State& s) {
  std::string id = DigestHex(s.chain->top().header().image_id).substr(0, 12);
  std::string opts = StrCat("ro,default_permissions,fsname=di3fs:", id, ",subtype=di3fs");
  // A container root needs its setuid binaries and device nodes to work as on
  // overlayfs (libfuse defaults to nosuid,nodev); "-o nosuid,nodev" still wins.
  if (geteuid() == 0) opts += ",suid,dev";
  for (const std::string& o : s.opt.mount_options)
    if (!o.empty()) opts = StrCat(opts, ",", o);
  fuse_args args = FUSE_ARGS_INIT(0, nullptr);
  fuse_opt_add_arg(&args, "di3fs");
  fuse_opt_add_arg(&args, "-o");
  fuse_opt_add_arg(&args, opts.c_str());
  if (s.opt.debug) fuse_opt_add_arg(&args, "-d");
  fuse_session* se = fuse_session_new(&args, &kOps, sizeof kOps, &s);
  fuse_opt_free_args(&args);
  if (!se) return absl::InvalidArgumentError(StrCat("bad mount options: ", opts));
  return se;
}

// FUSE_NOTIFY_RESEND (Linux 6.9; newer than this system's <linux/fuse.h>).
constexpr int32_t kNotifyResend = 7;

// The FUSE_INIT a kernel sends, as Linux 6.x does: protocol 7.38 and every
// capability flag libfuse 3 knows, so that OnInit makes the choices it made
// for the first daemon on this kernel. Its unique id is one the kernel never
// hands out (its ids are small and counted up): libfuse's reply gets ENOENT
// from the kernel, which libfuse takes for an interrupted request and ignores.
std::vector<char> SyntheticInit() {
  std::vector<char> buf(sizeof(fuse_in_header) + sizeof(fuse_init_in), 0);
  auto* h = reinterpret_cast<fuse_in_header*>(buf.data());
  auto* in = reinterpret_cast<fuse_init_in*>(buf.data() + sizeof *h);
  h->len = static_cast<uint32_t>(buf.size());
  h->opcode = FUSE_INIT;
  h->unique = ~uint64_t{0} - 1;  // even: not an interrupt id
  in->major = FUSE_KERNEL_VERSION;
  in->minor = FUSE_KERNEL_MINOR_VERSION;
  in->max_readahead = 128 << 10;
  in->flags = FUSE_ASYNC_READ | FUSE_POSIX_LOCKS | FUSE_ATOMIC_O_TRUNC | FUSE_EXPORT_SUPPORT | FUSE_BIG_WRITES |
              FUSE_DONT_MASK | FUSE_SPLICE_WRITE | FUSE_SPLICE_MOVE | FUSE_SPLICE_READ | FUSE_FLOCK_LOCKS |
              FUSE_HAS_IOCTL_DIR | FUSE_AUTO_INVAL_DATA | FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO |
              FUSE_ASYNC_DIO | FUSE_WRITEBACK_CACHE | FUSE_NO_OPEN_SUPPORT | FUSE_PARALLEL_DIROPS |
              FUSE_HANDLE_KILLPRIV | FUSE_POSIX_ACL | FUSE_ABORT_ERROR | FUSE_MAX_PAGES | FUSE_CACHE_SYMLINKS |
              FUSE_NO_OPENDIR_SUPPORT | FUSE_EXPLICIT_INVAL_DATA;
  return buf;
}

}  // namespace

absl::Status Di3fs::Mount(const std::string& mountpoint) {
  State& s = *s_;
  MutexLock lk(&s.mu);
  if (s.se) return absl::FailedPreconditionError(StrCat("already mounted at ", s.mountpoint));
  auto se = NewSession(s);
  if (!se.ok()) return se.status();
  s.se = *se;
  if (fuse_session_mount(s.se, mountpoint.c_str()) != 0) {
    fuse_session_destroy(s.se);
    s.se = nullptr;
    return absl::InternalError(StrCat("cannot mount at ", mountpoint,
                                      " (does it exist? is /dev/fuse usable? see the line above)"));
  }
  s.mountpoint = mountpoint;
  s.mounted = true;
  return absl::OkStatus();
}

absl::StatusOr<bool> Di3fs::TakeOver(const std::string& mountpoint, int fuse_fd) {
  State& s = *s_;
  MutexLock lk(&s.mu);
  if (s.se) return absl::FailedPreconditionError(StrCat("already mounted at ", s.mountpoint));
  if (fcntl(fuse_fd, F_GETFD) == -1)
    return absl::InvalidArgumentError(StrCat("takeover of ", mountpoint, ": descriptor ", fuse_fd,
                                             " is not open (it must be inherited from the holder)"));
  auto se = NewSession(s);
  if (!se.ok()) return se.status();
  // libfuse's "/dev/fd/N": serve the already mounted connection on fd N.
  std::string devfd = StrCat("/dev/fd/", fuse_fd);
  if (fuse_session_mount(*se, devfd.c_str()) != 0) {
    fuse_session_destroy(*se);
    return absl::InternalError(StrCat("takeover of ", mountpoint, ": libfuse refused ", devfd));
  }
  // The kernel sent its FUSE_INIT to the first daemon; libfuse answers
  // nothing but FUSE_INIT until it saw one.
  std::vector<char> init = SyntheticInit();
  fuse_buf fb;
  std::memset(&fb, 0, sizeof fb);
  fb.mem = init.data();
  fb.size = init.size();
  fuse_session_process_buf(*se, &fb);
  if (!s.inited || fuse_session_exited(*se)) {
    fuse_session_destroy(*se);  // closes fuse_fd (our copy; the holder keeps its own)
    return absl::InternalError(StrCat("takeover of ", mountpoint, ": libfuse rejected the replayed FUSE_INIT"));
  }
  // Requests the dead daemon had read but not answered go back to the queue.
  fuse_out_header resend;
  std::memset(&resend, 0, sizeof resend);
  resend.len = sizeof resend;
  resend.error = kNotifyResend;
  bool resent = write(fuse_fd, &resend, sizeof resend) == static_cast<ssize_t>(sizeof resend);
  if (!resent)
    Log(StrCat("takeover of ", mountpoint, ": the kernel refused FUSE_NOTIFY_RESEND (", std::strerror(errno),
               "; it needs Linux 6.9): requests the dead daemon had read stay unanswered"));
  s.se = *se;
  s.mountpoint = mountpoint;
  s.mounted = true;
  s.taken_over = true;
  return resent;
}

absl::Status Di3fs::Serve() {
  State& s = *s_;
  fuse_session* se;
  {
    MutexLock lk(&s.mu);
    if (!s.se || !s.mounted) return absl::FailedPreconditionError("not mounted");
    se = s.se;
  }
  fuse_loop_config cfg;
  std::memset(&cfg, 0, sizeof cfg);
  // Every worker reads the one /dev/fuse descriptor (no per-thread clones):
  // a request read through a cloned descriptor is failed (ECONNABORTED) when
  // that descriptor closes with a killed daemon, while one read through the
  // main descriptor stays queued on it for a takeover daemon to replay, as
  // long as someone holds a copy of it (the snapshotter does).
  cfg.clone_fd = 0;
  cfg.max_idle_threads = s.opt.max_idle_threads;
  int rc = fuse_session_loop_mt(se, &cfg);
  MutexLock lk(&s.mu);
  if (s.taken_over) {
    // libfuse never knew the mountpoint. Ended by a signal, not by an
    // unmount (which ends the connection: POLLERR, as libfuse checks before
    // its own unmount): detach it, as a first daemon would.
    pollfd p = {fuse_session_fd(se), 0, 0};
    bool ended = rc == -ENODEV || (poll(&p, 1, 0) == 1 && (p.revents & POLLERR));
    if (!ended && umount2(s.mountpoint.c_str(), MNT_DETACH) != 0)
      Log(StrCat("umount ", s.mountpoint, ": ", std::strerror(errno)));
  } else {
    fuse_session_unmount(se);
  }
  s.mounted = false;
  // rc: 0 or -ENODEV when unmounted, the signal number after a signal
  // handler ended the loop, another negated errno on failure.
  if (rc < 0 && rc != -ENODEV)
    return absl::InternalError(StrCat("request loop at ", s.mountpoint, " failed: ", std::strerror(-rc)));
  return absl::OkStatus();
}

void Di3fs::Stop() {
  State& s = *s_;
  MutexLock lk(&s.mu);
  if (!s.se || !s.mounted) return;
  fuse_session_exit(s.se);
  // Detaching the mount ends the connection once the last user is gone;
  // blocked worker threads then see ENODEV and Serve() returns.
  if (umount2(s.mountpoint.c_str(), MNT_DETACH) != 0)
    Log(StrCat("umount ", s.mountpoint, ": ", std::strerror(errno)));
}

const ImageChain& Di3fs::chain() const { return *s_->chain; }
ImageChain& Di3fs::mutable_chain() { return *s_->chain; }
const FsTree& Di3fs::tree() const { return *s_->tree; }
const ContentCache& Di3fs::cache() const { return *s_->cache; }
double Di3fs::open_ms() const { return s_->open_ms; }

// Keeps what a daemon holds after its rebuilds close to what is live. Every
// rebuild allocates the content (and the blob, a delta's base, decoder
// buffers) on the FUSE worker that asked, and frees it once written to the
// cache. With glibc's defaults, freeing a big mapped buffer raises the mmap
// threshold to its size (up to 32 MiB) and the trim threshold to twice
// that; from then on big contents, and libfuse's 1 MiB request buffer of
// each new worker, come from per-thread arenas (one per worker, up to
// 8 x cores) whose dirty pages stay resident: neither free() nor
// malloc_trim(0) returns them, as the request buffers are live.
//   M_MMAP_THRESHOLD 128 KiB (glibc's initial value, now fixed): a buffer of
//     128 KiB or more is its own mapping, returned to the kernel by free();
//     libfuse's request buffers only use the pages a request touches;
//   M_ARENA_MAX 2: at most two arenas (the smaller contents' leftovers),
//     whatever the number of workers.
// Measured (docs/benchmarks.md, 2026-12-04 late night): anon after `tar` of
// every file, debian v1 11-13.6 -> 6.1 MiB, a depth-3 typescript chain
// 16-22 -> 1.6 MiB, same CPU time. A 4 KiB threshold leaves debian at 3.3 MiB but
// costs ~10% more CPU on a cold read (one mapping per content of a page or
// more); GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4096 chooses that.
bool BoundMallocRetention() {
#ifdef __GLIBC__
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables && std::strstr(tunables, "glibc.malloc.")) return false;
  return mallopt(M_MMAP_THRESHOLD, 128 << 10) == 1 && mallopt(M_ARENA_MAX, 2) == 1;
#else
  return false;
#endif
}

absl::Status RunDi3fs(const Di3fsOptions& options, const std::string& mountpoint, int takeover_fd) {
  auto t0 = std::chrono::steady_clock::now();
  BoundMallocRetention();  // before any worker thread exists
  // Every open file holds a descriptor of its cache file.
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  auto fs = Di3fs::Open(options);
  if (!fs.ok()) return fs.status();
  std::string how = "mounted";
  if (takeover_fd >= 0) {
    auto resent = (*fs)->TakeOver(mountpoint, takeover_fd);
    if (!resent.ok()) return resent.status();
    how = *resent ? "took over (lost requests replayed)" : "took over (lost requests not replayed)";
  } else if (auto st = (*fs)->Mount(mountpoint); !st.ok()) {
    return st;
  }
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  fuse_session* se;
  {
    MutexLock lk(&(*fs)->s_->mu);
    se = (*fs)->s_->se;
  }
  if (auto st = SetExitSignals(se); !st.ok()) return st;
  const ContentCache& cache = (*fs)->cache();
  Log(StrCat(how, " ", options.cdimg, " (", (*fs)->tree().size(), " entries, chain depth ",
             (*fs)->chain().depth(), ") at ", mountpoint, " in ", static_cast<int64_t>(ms * 1000), " us (index ",
             static_cast<int64_t>((*fs)->open_ms() * 1000), " us); cache ", cache.dir(), " (",
             cache.stats().files, " files; node budget ", cache.max_bytes(), " bytes under ", cache.root(), ")"));
  absl::Status st = (*fs)->Serve();
  ClearExitSignals();
  ContentCache::Stats cs = cache.stats();
  Log(StrCat("unmounted ", mountpoint, "; cache: ", cs.builds, " rebuilt (", cs.uncached, " served uncached), ",
             cs.hits, " hits, ", cs.failures, " failed, ", cs.evictions, " evicted, ", cs.scans, " scans; ", cs.files,
             " files here, ", cs.bytes, " bytes under the root"));
  return st;
}

}  // namespace d4c
