// di3fs without and with a mount: the inode view (FsTree) of a small image
// with every entry type, then the same image served by an in-process mount
// (when root and /dev/fuse are available) including a corrupt file.
#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "d4c/cache_budget.h"
#include "d4c/cdimg.h"
#include "d4c/chain.h"
#include "d4c/content_cache.h"
#include "d4c/di3fs.h"
#include "d4c/fs_tree.h"
#include "d4c/base/strcat.h"

using namespace d4c;

namespace {

std::string TempDir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / StrCat("d4c-fs-test-", getpid()) / name;
  std::filesystem::create_directories(dir);
  return dir.string();
}

Entry Dir(std::string path, uint32_t mode = 0755) {
  Entry e;
  e.path = std::move(path);
  e.type = EntryType::kDirectory;
  e.mode = mode;
  e.mtime_sec = 1600000000;
  return e;
}

Entry File(std::string path, const std::string& content, uint32_t mode = 0644) {
  Entry e;
  e.path = std::move(path);
  e.type = EntryType::kRegular;
  e.mode = mode;
  e.uid = 1000;
  e.gid = 100;
  e.size = content.size();
  e.digest = Sha256(content);
  e.mtime_sec = 1700000000;
  e.mtime_nsec = 123456789;
  return e;
}

std::string Zstd(const std::string& s) {
  std::string out(ZSTD_compressBound(s.size()), '\0');
  out.resize(ZSTD_compress(out.data(), out.size(), s.data(), s.size(), 3));
  return out;
}

const std::string kCap("\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);

struct Sample {
  std::string path;
  std::map<std::string, std::string> content;  // what each file must read as
};

// / bin/{app(setuid, caps), app2 -> hardlink app, app3 -> hardlink app, sh -> busybox}
// bin-extra/ dev/{null, sda, pipe} empty etc/{big, corrupt} tmp(sticky)/sub/deeper/
Sample WriteSample(const std::string& name) {
  Sample s;
  s.path = TempDir("images") + "/" + name;
  std::vector<Entry> es;
  es.push_back(Dir(""));
  es.push_back(Dir("bin"));
  s.content["bin/app"] = std::string(10000, 'x') + "tail";
  es.push_back(File("bin/app", s.content["bin/app"], 04755));
  es.back().xattrs = {{"security.capability", kCap}, {"user.note", "hello"}};
  for (const char* l : {"bin/app2", "bin/app3"}) {
    Entry link;
    link.path = l;
    link.type = EntryType::kHardlink;
    link.link_target = "bin/app";
    es.push_back(link);
  }
  Entry sym;
  sym.path = "bin/sh";
  sym.type = EntryType::kSymlink;
  sym.mode = 0777;
  sym.link_target = "busybox";
  es.push_back(sym);
  es.push_back(Dir("bin-extra"));
  es.push_back(Dir("dev"));
  Entry null;
  null.path = "dev/null";
  null.type = EntryType::kCharDevice;
  null.mode = 0666;
  null.dev_major = 1;
  null.dev_minor = 3;
  es.push_back(null);
  Entry fifo;
  fifo.path = "dev/pipe";
  fifo.type = EntryType::kFifo;
  fifo.mode = 0600;
  es.push_back(fifo);
  Entry sda = null;
  sda.path = "dev/sda";
  sda.type = EntryType::kBlockDevice;
  sda.dev_major = 8;
  sda.dev_minor = 0;
  es.push_back(sda);
  es.push_back(File("empty", ""));
  s.content["empty"] = "";
  es.push_back(Dir("etc"));
  std::string big;
  for (int i = 0; i < 300000; ++i) big += StrCat("line ", i, "\n");
  s.content["etc/big"] = big;
  es.push_back(File("etc/big", big));
  es.push_back(File("etc/corrupt", "the right bytes"));  // its blob holds other bytes
  s.content["etc/corrupt"] = "the right bytes";
  es.push_back(Dir("tmp", 01777));
  es.push_back(Dir("tmp/sub"));
  es.push_back(Dir("tmp/sub/deeper"));
  std::sort(es.begin(), es.end(), [](const Entry& a, const Entry& b) { return PathLess(a.path, b.path); });

  auto w = CdimgWriter::Create(s.path, {});
  REQUIRE(w.ok());
  std::vector<Recipe> recipes(es.size());
  for (size_t i = 0; i < es.size(); ++i) {
    const Entry& e = es[i];
    if (e.type != EntryType::kRegular) continue;
    if (e.size == 0) {
      recipes[i].kind = Recipe::Kind::kEmpty;
      continue;
    }
    std::string bytes = e.path == "etc/corrupt" ? std::string("the WRONG bytes") : s.content.at(e.path);
    auto ref = (*w)->AppendBlob(Zstd(bytes));
    REQUIRE(ref.ok());
    recipes[i] = {Recipe::Kind::kFull, CodecId::kZstd, {}, *ref};
  }
  REQUIRE((*w)->Finish("{}", es, recipes).ok());
  return s;
}

struct Opened {
  std::unique_ptr<CdimgImage> image;
  std::unique_ptr<FsTree> tree;
  size_t At(const std::string& path) const {
    auto i = image->Find(path);
    REQUIRE(i.has_value());
    return *i;
  }
};

Opened OpenSample(const Sample& s) {
  Opened o;
  auto img = CdimgImage::Open(s.path);
  REQUIRE(img.ok());
  o.image = std::move(*img);
  auto t = FsTree::Build(*o.image);
  REQUIRE(t.ok());
  o.tree = std::move(*t);
  return o;
}

std::vector<std::string> Children(const FsTree& t, size_t dir) {
  std::vector<std::string> out;
  for (size_t c = t.FirstChild(dir); c < t.ChildrenEnd(dir); c = t.NextSibling(c))
    out.emplace_back(BaseName(t.image().PathAt(c)));
  return out;
}

}  // namespace

TEST_CASE("fs tree: inode numbers, hardlinks and link counts") {
  Opened o = OpenSample(WriteSample("tree.cdimg"));
  const FsTree& t = *o.tree;
  CHECK(t.InodeOf(0) == 1);
  CHECK(t.EntryOfInode(1) == size_t{0});
  CHECK_FALSE(t.EntryOfInode(0).has_value());
  CHECK_FALSE(t.EntryOfInode(t.size() + 1).has_value());
  size_t app = o.At("bin/app"), app2 = o.At("bin/app2"), app3 = o.At("bin/app3");
  CHECK(t.InodeOf(app2) == t.InodeOf(app));
  CHECK(t.InodeOf(app3) == t.InodeOf(app));
  CHECK_FALSE(t.EntryOfInode(app2 + 1).has_value());  // a hardlink has no inode of its own
  CHECK(t.Nlink(app) == 3);
  CHECK(t.Nlink(app2) == 3);
  CHECK(t.Nlink(o.At("bin/sh")) == 1);
  // directories: 2 + subdirectories
  CHECK(t.Nlink(0) == 2 + 5);  // bin bin-extra dev etc tmp
  CHECK(t.Nlink(o.At("bin")) == 2);
  CHECK(t.Nlink(o.At("tmp")) == 3);
  CHECK(t.Nlink(o.At("tmp/sub")) == 3);
  CHECK(t.Parent(o.At("tmp/sub/deeper")) == o.At("tmp/sub"));
  CHECK(t.Parent(0) == 0);
}

TEST_CASE("fs tree: stat carries the full metadata") {
  Opened o = OpenSample(WriteSample("stat.cdimg"));
  const FsTree& t = *o.tree;
  struct stat st;
  t.Stat(o.At("bin/app2"), &st);
  CHECK(st.st_ino == t.InodeOf(o.At("bin/app")));
  CHECK(st.st_mode == (S_IFREG | 04755));
  CHECK(st.st_uid == 1000);
  CHECK(st.st_gid == 100);
  CHECK(st.st_size == 10004);
  CHECK(st.st_nlink == 3);
  CHECK(st.st_mtim.tv_sec == 1700000000);
  CHECK(st.st_mtim.tv_nsec == 123456789);
  t.Stat(o.At("bin/sh"), &st);
  CHECK(st.st_mode == (S_IFLNK | 0777));
  CHECK(st.st_size == 7);  // readlink callers size their buffer from this
  t.Stat(o.At("dev/null"), &st);
  CHECK(st.st_mode == (S_IFCHR | 0666));
  CHECK(st.st_rdev == makedev(1, 3));
  t.Stat(o.At("dev/sda"), &st);
  CHECK(S_ISBLK(st.st_mode));
  CHECK(st.st_rdev == makedev(8, 0));
  t.Stat(o.At("dev/pipe"), &st);
  CHECK(st.st_mode == (S_IFIFO | 0600));
  t.Stat(o.At("tmp"), &st);
  CHECK(st.st_mode == (S_IFDIR | 01777));
  CHECK(st.st_nlink == 3);
  t.Stat(o.At("empty"), &st);
  CHECK(st.st_size == 0);
}

TEST_CASE("fs tree: lookup and directory listing") {
  Opened o = OpenSample(WriteSample("lookup.cdimg"));
  const FsTree& t = *o.tree;
  CHECK(t.Lookup(0, "bin") == o.At("bin"));
  CHECK(t.Lookup(o.At("bin"), "app2") == o.At("bin/app2"));
  CHECK_FALSE(t.Lookup(o.At("bin"), "nope").has_value());
  CHECK_FALSE(t.Lookup(o.At("bin/app"), "x").has_value());  // not a directory
  CHECK_FALSE(t.Lookup(0, "bin/app").has_value());          // one component at a time
  CHECK_FALSE(t.Lookup(0, "..").has_value());
  CHECK(Children(t, 0) == std::vector<std::string>{"bin", "bin-extra", "dev", "empty", "etc", "tmp"});
  CHECK(Children(t, o.At("bin")) == std::vector<std::string>{"app", "app2", "app3", "sh"});
  CHECK(Children(t, o.At("tmp")) == std::vector<std::string>{"sub"});
  CHECK(Children(t, o.At("bin-extra")).empty());
}

TEST_CASE("fs tree: xattrs follow getxattr/listxattr size rules") {
  Opened o = OpenSample(WriteSample("xattr.cdimg"));
  const FsTree& t = *o.tree;
  size_t link = o.At("bin/app2");  // through a hardlink: the primary's xattrs
  auto probe = t.GetXattr(link, "security.capability", 0);
  CHECK(probe.error == 0);
  CHECK(probe.needed == kCap.size());
  CHECK(t.GetXattr(link, "security.capability", kCap.size()).bytes == kCap);
  CHECK(t.GetXattr(link, "security.capability", kCap.size() - 1).error == ERANGE);
  CHECK(t.GetXattr(link, "user.other", 100).error == ENODATA);
  std::string names("security.capability\0user.note\0", 30);
  CHECK(t.ListXattr(link, 0).needed == names.size());
  CHECK(t.ListXattr(link, 1000).bytes == names);
  CHECK(t.ListXattr(link, 5).error == ERANGE);
  CHECK(t.ListXattr(o.At("etc/big"), 0).needed == 0);
  CHECK(t.GetXattr(o.At("etc/big"), "user.note", 0).error == ENODATA);
}

namespace {

bool CanMount() {
  return geteuid() == 0 && access("/dev/fuse", R_OK | W_OK) == 0 && !std::getenv("D4C_NO_FUSE");
}

bool IsMounted(const std::string& mp) {
  struct stat a, b;
  return stat(mp.c_str(), &a) == 0 && stat((mp + "/..").c_str(), &b) == 0 && a.st_dev != b.st_dev;
}

std::string ReadFile(const std::string& path, int* err) {
  *err = 0;
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    *err = errno;
    return "";
  }
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) {
      *err = errno;
      break;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

std::vector<std::string> List(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  while (dirent* de = readdir(d)) out.emplace_back(de->d_name);
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("di3fs: an in-process mount serves the image and isolates a corrupt file") {
  if (!CanMount()) {
    WARN("not root or no /dev/fuse: mount test not run");
    return;
  }
  Sample s = WriteSample("mount.cdimg");
  std::string mp = TempDir("mnt");
  Di3fsOptions opt;
  opt.cdimg = s.path;
  opt.cache_dir = TempDir("mount-cache");
  opt.cache_size = 1 << 20;
  auto fs = Di3fs::Open(opt);
  REQUIRE(fs.ok());
  REQUIRE((*fs)->Mount(mp).ok());
  absl::Status served;
  std::thread loop([&] { served = (*fs)->Serve(); });
  REQUIRE(IsMounted(mp));

  struct stat st, st2;
  REQUIRE(lstat((mp + "/bin/app").c_str(), &st) == 0);
  REQUIRE(lstat((mp + "/bin/app3").c_str(), &st2) == 0);
  CHECK(st.st_ino == st2.st_ino);
  CHECK(st.st_nlink == 3);
  CHECK(st.st_mode == (S_IFREG | 04755));
  CHECK(st.st_mtim.tv_nsec == 123456789);
  REQUIRE(lstat((mp + "/dev/null").c_str(), &st) == 0);
  CHECK(st.st_rdev == makedev(1, 3));
  char target[64] = {};
  CHECK(readlink((mp + "/bin/sh").c_str(), target, sizeof target) == 7);
  CHECK(std::string(target) == "busybox");
  CHECK(List(mp + "/bin") == std::vector<std::string>{".", "..", "app", "app2", "app3", "sh"});
  char cap[64];
  CHECK(lgetxattr((mp + "/bin/app2").c_str(), "security.capability", cap, sizeof cap) ==
        static_cast<ssize_t>(kCap.size()));
  CHECK(std::string(cap, kCap.size()) == kCap);
  CHECK(lgetxattr((mp + "/bin/app").c_str(), "user.none", cap, sizeof cap) == -1);
  CHECK(errno == ENODATA);

  int err;
  CHECK(ReadFile(mp + "/etc/big", &err) == s.content["etc/big"]);
  CHECK(err == 0);
  CHECK(ReadFile(mp + "/empty", &err).empty());
  CHECK(err == 0);
  ReadFile(mp + "/etc/corrupt", &err);
  CHECK(err == EIO);
  CHECK(ReadFile(mp + "/bin/app2", &err) == s.content["bin/app"]);  // the mount keeps working
  CHECK(open((mp + "/etc/big").c_str(), O_WRONLY) == -1);
  CHECK(errno == EROFS);
  ReadFile(mp + "/etc/corrupt", &err);
  CHECK(err == EIO);
  CHECK((*fs)->cache().stats().builds == 2);
  CHECK((*fs)->cache().stats().failures == 1);  // the bad content is remembered, not decoded again

  (*fs)->Stop();
  loop.join();
  CHECK(served.ok());
  CHECK_FALSE(IsMounted(mp));
}

// Two daemons (here: two mounts in one process, each with its own cache
// thread, as separate processes would have) under one cache root share one
// budget; a new budget written to the root (what a restarted snapshotter
// does) applies to the running mounts within seconds, and their readers keep
// getting correct bytes.
TEST_CASE("di3fs: mounts under one cache root share the budget and apply a new one") {
  if (!CanMount()) {
    WARN("not root or no /dev/fuse: mount test not run");
    return;
  }
  Sample s = WriteSample("shared.cdimg");
  std::string root = TempDir("shared-cache");
  const std::string& big = s.content["etc/big"];
  struct Mount {
    std::unique_ptr<Di3fs> fs;
    std::string mp;
    std::thread loop;
  };
  std::vector<Mount> mounts(2);
  for (size_t k = 0; k < mounts.size(); ++k) {
    Di3fsOptions opt;
    opt.cdimg = s.path;
    opt.cache_dir = StrCat(root, "/img", k);
    opt.cache_root = root;
    opt.cache_size = 64 << 20;
    auto fs = Di3fs::Open(opt);
    REQUIRE(fs.ok());
    mounts[k].fs = std::move(*fs);
    mounts[k].mp = TempDir(StrCat("shared-mnt", k));
    REQUIRE(mounts[k].fs->Mount(mounts[k].mp).ok());
    Di3fs* f = mounts[k].fs.get();
    mounts[k].loop = std::thread([f] { (void)f->Serve(); });
  }
  int err;
  for (auto& m : mounts) {
    CHECK(ReadFile(m.mp + "/etc/big", &err) == big);
    CHECK(ReadFile(m.mp + "/bin/app", &err) == s.content["bin/app"]);
  }
  const ContentCache& cache = mounts[0].fs->cache();
  CHECK(cache.stats().bytes == 2 * (big.size() + s.content["bin/app"].size()));  // one copy per image dir
  CHECK(cache.max_bytes() == 64u << 20);

  const uint64_t budget = big.size() + 100;
  REQUIRE(WriteCacheBudget(root, budget).ok());
  // Each cache re-reads the budget about once a second: wait until both have
  // it (a loaded machine may take longer) and the bytes are back under it.
  auto applied = [&] {
    return mounts[0].fs->cache().max_bytes() == budget && mounts[1].fs->cache().max_bytes() == budget &&
           cache.stats().bytes <= budget;
  };
  for (int i = 0; i < 400 && !applied(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(cache.stats().bytes <= budget);
  CHECK(cache.max_bytes() == budget);
  CHECK(mounts[1].fs->cache().max_bytes() == budget);
  for (auto& m : mounts) CHECK(ReadFile(m.mp + "/etc/big", &err) == big);
  CHECK(cache.stats().bytes <= budget);

  for (auto& m : mounts) {
    m.fs->Stop();
    m.loop.join();
  }
}

// A rebuild that fails for a reason other than bad image bytes (a read error
// of the image, memory) gives the reader the matching errno and is tried
// again on the next read; bad bytes stay EIO without being decoded again.
TEST_CASE("di3fs: a transient read error is returned, not remembered") {
  if (!CanMount()) {
    WARN("not root or no /dev/fuse: mount test not run");
    return;
  }
  Sample s = WriteSample("transient.cdimg");
  std::string mp = TempDir("mnt-transient");
  Di3fsOptions opt;
  opt.cdimg = s.path;
  opt.cache_dir = TempDir("transient-cache");
  auto fs = Di3fs::Open(opt);
  REQUIRE(fs.ok());
  const CdimgImage& img = (*fs)->chain().top();
  BlobRef big = img.RecipeAt(*img.Find("etc/big")).blob;
  BlobRef app = img.RecipeAt(*img.Find("bin/app")).blob;
  // Faults last until turned off: the kernel retries a failed readahead
  // with a read of its own before it gives up.
  std::atomic<bool> big_fails{true}, app_fails{true};
  (*fs)->mutable_chain().SetReadFaultForTesting([&](const CdimgImage&, const Recipe& r) -> absl::Status {
    if (r.blob == big && big_fails) return absl::InternalError(StrCat(s.path, ": read: Input/output error"));
    if (r.blob == app && app_fails) return absl::ResourceExhaustedError("out of memory");
    return absl::OkStatus();
  });
  REQUIRE((*fs)->Mount(mp).ok());
  absl::Status served;
  std::thread loop([&] { served = (*fs)->Serve(); });
  REQUIRE(IsMounted(mp));

  int err;
  ReadFile(mp + "/etc/big", &err);
  CHECK(err == EIO);
  big_fails = false;  // the I/O error went away: the same mount now serves the file
  CHECK(ReadFile(mp + "/etc/big", &err) == s.content["etc/big"]);
  CHECK(err == 0);
  ReadFile(mp + "/bin/app", &err);
  CHECK(err == ENOMEM);
  app_fails = false;
  CHECK(ReadFile(mp + "/bin/app", &err) == s.content["bin/app"]);
  CHECK(err == 0);
  CHECK((*fs)->cache().stats().builds == 2);
  uint64_t transient_failures = (*fs)->cache().stats().failures;
  CHECK(transient_failures >= 2);
  for (int i = 0; i < 3; ++i) {
    ReadFile(mp + "/etc/corrupt", &err);
    CHECK(err == EIO);
  }
  // The corrupt content was decoded once, then remembered.
  CHECK((*fs)->cache().stats().failures == transient_failures + 1);

  (*fs)->Stop();
  loop.join();
  CHECK(served.ok());
}

TEST_CASE("di3fs: a missing image or a delta without its base fails with a clear message") {
  Di3fsOptions opt;
  opt.cdimg = TempDir("images") + "/does-not-exist.cdimg";
  auto fs = Di3fs::Open(opt);
  REQUIRE_FALSE(fs.ok());
  CHECK_THAT(Msg(fs.status().message()), Catch::Contains("does-not-exist.cdimg"));

  // a delta of the sample whose files all come from the base
  Sample base = WriteSample("base.cdimg");
  auto parent = CdimgImage::Open(base.path);
  REQUIRE(parent.ok());
  std::vector<Entry> es;
  std::vector<Recipe> recipes;
  for (size_t i = 0; i < (*parent)->size(); ++i) {
    es.push_back((*parent)->EntryAt(i));
    Recipe r = (*parent)->RecipeAt(i);
    if (r.kind == Recipe::Kind::kFull) r = Recipe{Recipe::Kind::kBase, CodecId::kZstd, {}, {}};
    recipes.push_back(r);
  }
  std::string delta = TempDir("images") + "/delta.cdimg";
  auto w = CdimgWriter::Create(delta, {parent->get()});
  REQUIRE(w.ok());
  REQUIRE((*w)->Finish("{}", es, recipes).ok());
  opt.cdimg = delta;
  fs = Di3fs::Open(opt);
  REQUIRE_FALSE(fs.ok());
  CHECK_THAT(Msg(fs.status().message()), Catch::Contains("delta.cdimg") && Catch::Contains("--base"));
  opt.bases = {base.path};
  fs = Di3fs::Open(opt);
  REQUIRE(fs.ok());
  CHECK((*fs)->chain().depth() == 2);
}

namespace {

// A copy of the /dev/fuse descriptor of process `pid` (what the snapshotter
// holds), or -1.
int GrabFuseFd(pid_t pid) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(StrCat("/proc/", pid, "/fd"), ec)) {
    std::error_code ec2;
    if (std::filesystem::read_symlink(e.path(), ec2) != "/dev/fuse") continue;
    int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0) return -1;
    int fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, std::atoi(e.path().filename().c_str()), 0));
    close(pidfd);
    return fd;
  }
  return -1;
}

// Child process: serves `opt` at `mp` (takeover_fd < 0: a new mount) until
// unmounted or killed; a takeover writes to `report` whether the kernel
// replayed ('1') or not ('0') once it serves. Exit status 2: failed.
[[noreturn]] void ServeChild(const Di3fsOptions& opt, const std::string& mp, int takeover_fd, int report = -1) {
  auto fs = Di3fs::Open(opt);
  if (!fs.ok()) _exit(2);
  if (takeover_fd >= 0) {
    auto r = (*fs)->TakeOver(mp, takeover_fd);
    if (!r.ok()) _exit(2);
    char c = *r ? '1' : '0';
    if (write(report, &c, 1) != 1) _exit(2);
  } else if (!(*fs)->Mount(mp).ok()) {
    _exit(2);
  }
  if (!(*fs)->Serve().ok()) _exit(2);
  _exit(0);
}

}  // namespace

// kill -9 of the daemon while another process holds a copy of its /dev/fuse
// descriptor: the mount stays; a new daemon takes the connection over and a
// file opened before the kill reads on with the right bytes.
TEST_CASE("di3fs: a killed daemon's connection is taken over, files opened before read on") {
  if (!CanMount()) {
    WARN("not root or no /dev/fuse: mount test not run");
    return;
  }
  Sample s = WriteSample("takeover.cdimg");
  std::string mp = TempDir("takeover-mnt");
  Di3fsOptions opt;
  opt.cdimg = s.path;
  opt.cache_dir = TempDir("takeover-cache");
  const std::string& big = s.content["etc/big"];

  pid_t first = fork();
  REQUIRE(first >= 0);
  if (first == 0) ServeChild(opt, mp, -1);
  for (int i = 0; i < 500 && !IsMounted(mp); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(IsMounted(mp));
  int held = GrabFuseFd(first);
  REQUIRE(held >= 0);

  int f = open((mp + "/etc/big").c_str(), O_RDONLY);
  REQUIRE(f >= 0);
  std::string head(1000, '\0');
  REQUIRE(pread(f, head.data(), head.size(), 0) == 1000);
  CHECK(head == big.substr(0, 1000));

  kill(first, SIGKILL);
  int wst = 0;
  REQUIRE(waitpid(first, &wst, 0) == first);
  posix_fadvise(f, 0, 0, POSIX_FADV_DONTNEED);  // the next reads must reach a daemon

  int report[2];
  REQUIRE(pipe(report) == 0);
  pid_t second = fork();
  REQUIRE(second >= 0);
  if (second == 0) ServeChild(opt, mp, held, report[1]);
  char replayed = 0;
  CHECK(read(report[0], &replayed, 1) == 1);
  CHECK(replayed == '1');  // '0': the kernel is older than Linux 6.9

  std::string rest(big.size() - 1000, '\0');
  size_t got = 0;
  while (got < rest.size()) {
    ssize_t n = pread(f, rest.data() + got, rest.size() - got, static_cast<off_t>(1000 + got));
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  CHECK(got == rest.size());
  CHECK(rest == big.substr(1000));  // through the descriptor opened before the kill
  close(f);
  int err;
  CHECK(ReadFile(mp + "/bin/app", &err) == s.content["bin/app"]);
  CHECK(err == 0);
  CHECK(List(mp + "/bin") == std::vector<std::string>{".", "..", "app", "app2", "app3", "sh"});

  // The replacement holds `f` too (fork): it is stopped by a kill, and the
  // connection ends with the last copy of the descriptor.
  REQUIRE(umount2(mp.c_str(), MNT_DETACH) == 0);
  kill(second, SIGKILL);
  REQUIRE(waitpid(second, &wst, 0) == second);
  close(held);
  close(report[0]);
  close(report[1]);
  CHECK_FALSE(IsMounted(mp));
}

namespace {

long AnonKib() {
  std::ifstream in("/proc/self/smaps_rollup");
  std::string key;
  while (in >> key) {
    if (key == "Anonymous:") {
      long kib = -1;
      in >> kib;
      return kib;
    }
    in.ignore(1 << 20, '\n');
  }
  return -1;
}

// In a child process (mallopt is process-wide): optionally
// BoundMallocRetention, then four threads rebuild every file of the image at
// `path` through ImageChain::ReadFile (what di3fs's FUSE workers do on a
// first read), each keeping one small object per file as the content
// cache's bookkeeping does, and drop the bytes. Returns the growth of the
// child's anonymous memory from before the threads to after they ended, in
// KiB (-1: the child failed; -2: BoundMallocRetention did not apply).
long RebuildGrowthKib(const std::string& path, bool bound) {
  int p[2];
  REQUIRE(pipe(p) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(p[0]);
    long growth = bound ? -2 : -1;
    if (!bound || BoundMallocRetention()) {
      growth = -1;
      auto chain = ImageChain::Open(path, {});
      if (chain.ok()) {
        const CdimgImage& img = (*chain)->top();
        // The child starts with the parent's heap, whose free top (building
        // the image freed big buffers) a later free may trim: release it
        // first, so the growth counts only what the rebuilds leave.
#ifdef __GLIBC__
        malloc_trim(0);
#endif
        long before = AnonKib();
        std::atomic<bool> ok{true};
        std::vector<std::vector<std::unique_ptr<char[]>>> kept(4);
        std::vector<std::thread> workers;
        for (size_t w = 0; w < 4; ++w)
          workers.emplace_back([&, w] {
            for (size_t i = w; i < img.size(); i += 4) {
              if (img.TypeAt(i) != EntryType::kRegular) continue;
              auto bytes = (*chain)->ReadFile(i);
              if (!bytes.ok() || bytes->size() != img.SizeAt(i)) ok = false;
              kept[w].push_back(std::make_unique<char[]>(64));
            }
          });
        for (std::thread& t : workers) t.join();
        if (ok) growth = AnonKib() - before;
      }
    }
    ssize_t n = write(p[1], &growth, sizeof growth);
    _exit(n == sizeof growth ? 0 : 1);
  }
  close(p[1]);
  long growth = -1;
  CHECK(read(p[0], &growth, sizeof growth) == sizeof growth);
  close(p[0]);
  int st = 0;
  REQUIRE(waitpid(pid, &st, 0) == pid);
  return growth;
}

}  // namespace

TEST_CASE("di3fs: after rebuilding every file the daemon's malloc keeps no freed contents") {
#if defined(__SANITIZE_ADDRESS__)
  WARN("AddressSanitizer replaces malloc: nothing to test");
  return;
#endif
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables && std::strstr(tunables, "glibc.malloc.")) {
    WARN("GLIBC_TUNABLES sets malloc: BoundMallocRetention leaves it alone, nothing to test");
    return;
  }
  // 256 files alternating 3 MiB and 8 KiB (different sizes, so different
  // contents): big buffers freed by several threads, as when a mount is read.
  std::string path = TempDir("malloc") + "/image.cdimg";
  std::vector<Entry> es{Dir("")};
  std::vector<std::string> contents{""};
  for (int k = 0; k < 256; ++k) {
    std::string c((k % 2 ? 3u << 20 : 8u << 10) + 4096 * (k % 7) + k, static_cast<char>('a' + k % 26));
    es.push_back(File(StrCat("f", 1000 + k), c));
    contents.push_back(std::move(c));
  }
  auto w = CdimgWriter::Create(path, {});
  REQUIRE(w.ok());
  std::vector<Recipe> recipes(es.size());
  for (size_t i = 1; i < es.size(); ++i) {
    auto ref = (*w)->AppendBlob(Zstd(contents[i]));
    REQUIRE(ref.ok());
    recipes[i] = {Recipe::Kind::kFull, CodecId::kZstd, {}, *ref};
  }
  REQUIRE((*w)->Finish("{}", es, recipes).ok());

  long bounded = RebuildGrowthKib(path, true);
  if (bounded == -2) {
    WARN("BoundMallocRetention does not apply here (not glibc): nothing to test");
    return;
  }
  long unbounded = RebuildGrowthKib(path, false);
  INFO("anon growth after the rebuilds: " << bounded << " KiB bounded, " << unbounded << " KiB with glibc's defaults");
  REQUIRE(bounded >= 0);
  REQUIRE(unbounded >= 0);
  // What stays: 256 x 64 B kept objects, the arenas' small free chunks.
  CHECK(bounded < 1024);
  // glibc's defaults keep at least one 3 MiB content per worker arena: the
  // workload does show what the bound removes.
  CHECK(unbounded > 4096);
}
