#include "d4c/snap/snapshotter.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <set>

#include "d4c/base/status.h"
#include "d4c/base/strcat.h"
#include "spdlog/spdlog.h"

namespace d4c::snap {
namespace fs = std::filesystem;

Usage DiskUsage(const std::string& dir) {
  Usage u;
  std::set<std::pair<dev_t, ino_t>> seen;
  auto add = [&](const fs::path& p) {
    struct stat st;
    if (lstat(p.c_str(), &st) != 0) return;
    if (!seen.insert({st.st_dev, st.st_ino}).second) return;
    u.inodes++;
    u.size += static_cast<int64_t>(st.st_blocks) * 512;
  };
  std::error_code ec;
  add(dir);
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    add(it->path());
  }
  return u;
}

Snapshotter::Snapshotter(const Options& o)
    : o_(o),
      store_(layout::StoreDir(o.root)),
      mounter_(o.mounter ? o.mounter
                         : std::make_shared<Di3fsMounter>(
                               Di3fsMounter::Options{.root = o.root,
                                                     .di3fs = o.di3fs,
                                                     .cache_size = o.cache_size,
                                                     .fdstore = o.fdstore,
                                                     .passed = o.passed_fuse})) {}

std::string Snapshotter::SnapshotDir(int64_t id) const { return layout::SnapshotDir(o_.root, id); }

absl::StatusOr<std::unique_ptr<Snapshotter>> Snapshotter::Open(const Options& given) {
  std::error_code ec;
  fs::create_directories(given.root, ec);
  if (ec) return absl::InternalError(StrCat("create ", given.root, ": ", ec.message()));
  // The kernel's mount table names mounts by their resolved path: a root given
  // through a symlink or with ".." must be resolved before any mount path is
  // made from it, or a mount that is there would never be seen.
  Options o = given;
  o.root = fs::canonical(given.root, ec).string();
  if (ec) return absl::InternalError(StrCat("resolve --root ", given.root, ": ", ec.message()));
  if (o.root != given.root) spdlog::info("root {} resolves to {}", given.root, o.root);
  // What a crash left of a compaction is never needed (the store holds the
  // old files or the new ones, each whole).
  fs::remove_all(layout::CompactDir(o.root), ec);
  for (const auto& d : {layout::SnapshotsDir(o.root), layout::StoreDir(o.root), layout::CompactDir(o.root),
                        layout::DownloadDir(o.root)}) {
    fs::create_directories(d, ec);
    if (ec) return absl::InternalError(StrCat("create ", d, ": ", ec.message()));
  }
  // Chains fetched for a CRI pull that a stop interrupted before their import.
  for (const auto& e : fs::directory_iterator(layout::DownloadDir(o.root), ec)) {
    if (!e.path().filename().string().starts_with("ready-")) continue;
    std::error_code rm;
    fs::remove_all(e.path(), rm);
  }
  fs::permissions(o.root, fs::perms::owner_all, ec);
  std::unique_ptr<Snapshotter> s(new Snapshotter(o));
  auto meta = MetaStore::Open(layout::MetadataDb(o.root));
  if (!meta.ok()) return meta.status();
  s->meta_ = std::move(*meta);
  auto marker = WriteRootMarker(o.root, o.address);
  if (!marker.ok()) return marker.status();
  s->marker_ = *marker;
  absl::StatusOr<std::vector<std::string>> needed;
  {
    absl::MutexLock g(&s->mu_);
    needed = s->meta_->ImageIds(/*with_children_only=*/true);
  }
  if (!needed.ok()) return needed.status();
  s->mounter_->Recover(*needed);
  for (const auto& id : *needed) {
    if (auto st = s->EnsureImage(id); !st.ok())
      spdlog::error("recover: image sha256:{} needed by snapshots cannot be mounted: {}", id, Msg(st.message()));
  }
  if (auto st = s->Cleanup(); !st.ok()) spdlog::warn("startup cleanup: {}", Msg(st.message()));
  if (o.compaction.enabled() && o.background_compaction) {
    s->compactor_ = std::thread([p = s.get()] { p->CompactorLoop(); });
    s->WakeCompactor();
  }
  return s;
}

Snapshotter::~Snapshotter() {
  {
    absl::MutexLock g(&compact_mu_);
    compact_stop_ = true;
  }
  if (compactor_.joinable()) compactor_.join();
}

void Snapshotter::WakeCompactor() {
  absl::MutexLock g(&compact_mu_);
  compact_wake_ = true;
}

void Snapshotter::CompactorLoop() {
  // Background work: below the containers' own priority (this thread only).
  setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 10);
  std::set<std::string> failed;
  for (;;) {
    {
      absl::MutexLock g(&compact_mu_);
      compact_mu_.Await(absl::Condition(this, &Snapshotter::CompactorReady));
      if (compact_stop_) return;
      compact_wake_ = false;
    }
    // One compaction may make another worth doing (a chain above it): go on
    // until there is nothing to do, a bounded number of times per wake-up.
    for (int i = 0; i < 16; ++i) {
      auto done = CompactOnce(&failed);
      if (!done.ok()) spdlog::error("compaction: {}", Msg(done.status().message()));
      if (!done.ok() || !*done) break;
      absl::MutexLock g(&compact_mu_);
      if (compact_stop_) return;
    }
  }
}

absl::StatusOr<bool> Snapshotter::CompactOnce(std::set<std::string>* skip) {
  std::set<std::string> no_skip;
  if (skip == nullptr) skip = &no_skip;
  absl::MutexLock run(&compact_run_mu_);
  // The served images, by the number of their newest image snapshot.
  std::map<std::string, int64_t> served;
  {
    auto all = Filter::ParseAll({});
    if (!all.ok()) return all.status();
    absl::MutexLock g(&mu_);
    auto walked = meta_->Walk(*all, [&](const Record& r) {
      if (!r.image_id.empty()) served[r.image_id] = std::max(served[r.image_id], r.id);
      return absl::OkStatus();
    });
    if (!walked.ok()) return walked;
  }
  auto images = ScanStore(store_);
  if (!images.ok()) return images.status();
  auto plan = PlanCompaction(*images, served, o_.compaction, *skip);
  if (!plan) return false;
  spdlog::info("compaction: image sha256:{} becomes full ({}), {} image(s) below it served by snapshots become "
               "reverse deltas",
               plan->top, plan->reason, plan->rebased.size());
  std::string work = layout::CompactDir(o_.root);
  auto files = BuildCompaction(store_, *plan, work, o_.compaction);
  absl::Status committed = files.ok() ? CommitCompaction(*plan, *files) : files.status();
  if (files.ok()) {
    for (const auto& [id, f] : *files) unlink(f.c_str());  // the ones not renamed in
  }
  if (!committed.ok()) {
    skip->insert(plan->top);
    return Annotate(committed, StrCat("compaction of image sha256:", plan->top, " (store unchanged)"));
  }
  auto gone = CollectStore();
  spdlog::info("compaction: image sha256:{} is full; store collection deleted {} image(s)", plan->top,
               gone.ok() ? gone->size() : 0);
  return true;
}

absl::Status Snapshotter::CommitCompaction(const CompactionPlan& plan,
                                           const std::vector<std::pair<std::string, std::string>>& files) {
  absl::MutexLock store_lock(&store_mu_);
  for (const auto& [id, parent] : plan.expected_parents) {
    auto now = store_.ParentOf(id);
    if (!now.ok() || *now != parent)
      return absl::AbortedError(StrCat("the store changed while the compaction was built (image sha256:", id,
                                       now.ok() ? " has another parent now" : " is gone", "); tried again later"));
  }
  // Top first, then the rebased images nearest first: every prefix of these
  // renames leaves a store whose chains resolve (compaction.h).
  for (const auto& [id, f] : files) {
    if (auto s = store_.Replace(id, f); !s.ok()) {
      absl::MutexLock g(&chains_mu_);
      chains_.clear();
      return s;
    }
  }
  absl::MutexLock g(&chains_mu_);
  chains_.clear();
  return absl::OkStatus();
}

absl::StatusOr<ChainInfo> Snapshotter::ResolveCached(const std::string& id_hex) {
  {
    absl::MutexLock g(&chains_mu_);
    auto it = chains_.find(id_hex);
    if (it != chains_.end()) return it->second;
  }
  auto c = store_.Resolve(id_hex);
  if (!c.ok()) return c.status();
  absl::MutexLock g(&chains_mu_);
  chains_[id_hex] = *c;
  return c;
}

absl::Status Snapshotter::EnsureImage(const std::string& id_hex) {
  auto c = ResolveCached(id_hex);
  if (!c.ok()) return c.status();
  return mounter_->Ensure(id_hex, c->paths);
}

absl::StatusOr<std::vector<Mount>> Snapshotter::MountsFor(const Record& r) {
  std::vector<std::string> lowers;
  for (size_t i = 0; i < r.parent_ids.size(); ++i) {
    const std::string& img = r.parent_image_ids[i];
    if (!img.empty()) {
      // An image is the whole tree: the snapshots below it (a CRI-served
      // image snapshot has the lower layers as parent) are never mounted.
      if (auto s = EnsureImage(img); !s.ok()) return s;
      lowers.push_back(mounter_->MountPoint(img));
      break;
    } else {
      lowers.push_back(SnapshotDir(r.parent_ids[i]) + "/fs");
    }
  }
  std::string dir = SnapshotDir(r.id);
  if (lowers.empty()) {
    return std::vector<Mount>{{"bind", dir + "/fs", {r.info.kind == Kind::kView ? "ro" : "rw", "rbind"}}};
  }
  if (r.info.kind == Kind::kView && lowers.size() == 1) {
    return std::vector<Mount>{{"bind", lowers[0], {"ro", "rbind"}}};
  }
  std::vector<std::string> opts;
  if (r.info.kind == Kind::kActive) {
    opts.push_back("workdir=" + dir + "/work");
    opts.push_back("upperdir=" + dir + "/fs");
  }
  std::string lowerdir = "lowerdir=";
  for (size_t i = 0; i < lowers.size(); ++i) lowerdir += (i ? ":" : "") + lowers[i];
  opts.push_back(lowerdir);
  return std::vector<Mount>{{"overlay", "overlay", opts}};
}

absl::StatusOr<std::vector<Mount>> Snapshotter::CreateImage(const std::string& parent, const Labels& labels) {
  if (!parent.empty())
    return absl::InvalidArgumentError(StrCat("a di3fs image snapshot has no parent (got \"", parent, "\")"));
  std::vector<std::pair<std::string, std::string>> imports;
  if (auto imp = labels.find(keys::kSnapshotImportLabel); imp != labels.end()) {
    if (imp->second.empty() || imp->second[0] != '/')
      return absl::InvalidArgumentError(StrCat("label ", keys::kSnapshotImportLabel, " must be an absolute path, got \"",
                                               imp->second, "\""));
    auto id = ParseSha256(labels.at(kImageIdLabel));
    if (!id.ok()) return id.status();
    imports.emplace_back(imp->second, *id);
  }
  return CreateImageFrom(parent, labels, imports);
}

absl::StatusOr<std::vector<Mount>> Snapshotter::CreateImageFrom(
    const std::string& parent, const Labels& labels, const std::vector<std::pair<std::string, std::string>>& imports) {
  auto target_it = labels.find(kSnapshotRefLabel);
  if (target_it == labels.end() || target_it->second.empty())
    return absl::InvalidArgumentError(StrCat("label ", kImageIdLabel, " needs label ", kSnapshotRefLabel,
                                             " naming the committed snapshot to create"));
  auto id = ParseSha256(labels.at(kImageIdLabel));
  if (!id.ok()) return id.status();
  const std::string& target = target_it->second;
  // Imports and snapshot creation under store_mu_: the garbage collection
  // never sees an imported image without its snapshot.
  absl::MutexLock store_lock(&store_mu_);
  std::vector<std::string> imported;  // in import order
  // Undoes the imports if no snapshot comes of them.
  auto undo = [&](absl::Status s) {
    for (auto it = imported.rbegin(); it != imported.rend(); ++it) (void)store_.Delete(*it);
    return s;
  };
  for (const auto& [path, step_id] : imports) {
    if (store_.Has(step_id)) continue;
    bool added_file = false;
    auto added = store_.Import(path, step_id, &added_file);
    if (!added.ok())
      return undo(absl::Status(added.status().code(), StrCat("import ", path, ": ", Msg(added.status().message()))));
    if (added_file) {
      imported.push_back(step_id);
      spdlog::info("imported image sha256:{} from {}", step_id, path);
    }
  }
  auto chain = ResolveCached(*id);
  if (!chain.ok()) {
    if (absl::IsNotFound(chain.status()))
      return undo(absl::NotFoundError(StrCat(Msg(chain.status().message()),
                                             " (hand it over with ctr-cli load, or pass label ",
                                             keys::kSnapshotImportLabel, ")")));
    return undo(chain.status());
  }
  absl::MutexLock g(&mu_);
  auto existing = meta_->Get(target);
  if (existing.ok()) {
    if (existing->image_id != *id)
      return undo(absl::AlreadyExistsError(StrCat("snapshot ", target, " exists and is not image sha256:", *id)));
    return absl::AlreadyExistsError(StrCat("target snapshot ", target, " (image sha256:", *id, ") already exists"));
  }
  if (!absl::IsNotFound(existing.status())) return undo(existing.status());
  Usage usage{static_cast<int64_t>(chain->bytes), static_cast<int64_t>(chain->entries)};
  // The import label names a file of the caller: not worth keeping.
  Labels kept = labels;
  kept.erase(keys::kSnapshotImportLabel);
  auto r = meta_->CreateImage(target, *id, kept, usage, nullptr, parent);
  if (!r.ok()) return undo(r.status());
  spdlog::info("image snapshot {} created for image sha256:{} (chain of {}{}{})", target, *id, chain->paths.size(),
               parent.empty() ? "" : ", parent ", parent);
  // containerd's remote-snapshot protocol: AlreadyExists tells it the target
  // now exists; it then finds it by its snapshot.ref label.
  return absl::AlreadyExistsError(StrCat("target snapshot ", target, " (image sha256:", *id, ") created"));
}

absl::Status Snapshotter::ServeFromReferrers(const CriTarget& t, const std::string& parent, const Labels& labels) {
  // One fetch per manifest at a time: pulls of the same image on several
  // threads would write the same download files. The later one then finds
  // the image held (nothing to download) or the failure remembered.
  {
    absl::MutexLock g(&remote_mu_);
    while (remote_inflight_.count(t.manifest_digest)) remote_cv_.Wait(&remote_mu_);
    remote_inflight_.insert(t.manifest_digest);
  }
  absl::Status s = ServeFromReferrersLocked(t, parent, labels);
  absl::MutexLock g(&remote_mu_);
  remote_inflight_.erase(t.manifest_digest);
  remote_cv_.SignalAll();
  return s;
}

absl::Status Snapshotter::ServeFromReferrersLocked(const CriTarget& t, const std::string& parent,
                                                   const Labels& labels) {
  auto now = std::chrono::steady_clock::now();
  {
    absl::MutexLock g(&remote_mu_);
    auto it = remote_failures_.find(t.manifest_digest);
    if (it != remote_failures_.end()) {
      if (now < it->second.first)
        return absl::Status(it->second.second.code(),
                            StrCat(Msg(it->second.second.message()), " (answer of an earlier pull, kept ",
                                   o_.remote_failure_ttl.count(), " s)"));
      remote_failures_.erase(it);
    }
  }
  auto remember = [&](const absl::Status& s) {
    // A registry that did not answer (down, cut, timed out) may answer the
    // kubelet's retry a few seconds later: only answers are remembered.
    if (absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) || absl::IsCancelled(s) || absl::IsAborted(s)) return s;
    absl::MutexLock g(&remote_mu_);
    for (auto it = remote_failures_.begin(); it != remote_failures_.end();)
      it = it->second.first <= now ? remote_failures_.erase(it) : std::next(it);
    if (o_.remote_failure_ttl.count() > 0 && remote_failures_.size() < 4096)
      remote_failures_[t.manifest_digest] = {now + o_.remote_failure_ttl, s};
    return s;
  };
  // No lock held while the registry is asked and files download: what the
  // store holds may change meanwhile, the import below checks every step.
  std::set<std::string> held;
  for (const auto& id : store_.List()) held.insert("sha256:" + id);
  auto chain = o_.remote->Fetch(t, held, layout::DownloadDir(o_.root));
  if (!chain.ok()) return remember(chain.status());
  Labels kept = labels;
  kept[kImageIdLabel] = chain->image_id;
  auto created = CreateImageFrom(parent, kept, chain->files);
  std::error_code ec;
  fs::remove_all(chain->ready_dir, ec);
  if (created.ok()) return absl::InternalError("image snapshot creation answered no status");  // not reached
  if (!absl::IsAlreadyExists(created.status())) return remember(created.status());
  std::string steps;
  for (const auto& f : chain->files) steps += StrCat(steps.empty() ? "" : " -> ", "sha256:", f.second.substr(0, 12));
  spdlog::info("cri pull {} (manifest {}): snapshot {} served by image {} from {}: {} cdimg(s) [{}], {} bytes downloaded, "
               "{} bytes of referrers read; containerd fetches no layer for it",
               t.image_ref, t.manifest_digest, kept.at(kSnapshotRefLabel), chain->image_id,
               chain->from.empty() ? "nothing held" : "held " + chain->from, chain->files.size(), steps,
               chain->bytes_downloaded, chain->document_bytes);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Mount>> Snapshotter::Create(Kind kind, const std::string& key, const std::string& parent,
                                                       const Labels& labels) {
  if (labels.count(keys::kSnapshotRootProbeLabel))
    return absl::FailedPreconditionError(RootProbeAnswer(marker_));  // creates nothing
  if (labels.count(kImageIdLabel)) {
    auto created = CreateImage(parent, labels);
    if (o_.compaction.enabled()) WakeCompactor();
    return created;
  }
  if (kind == Kind::kActive && o_.remote) {
    // containerd unpacking an image's top layer with snapshot annotations:
    // served from the cdimgs attached to the image when it has some.
    auto target = CriTopLayer(labels);
    if (!target.ok()) {
      spdlog::warn("prepare {}: CRI labels ignored: {}", key, Msg(target.status().message()));
    } else if (target->has_value()) {
      auto served = ServeFromReferrers(**target, parent, labels);
      if (served.ok() || absl::IsAlreadyExists(served)) {
        if (o_.compaction.enabled()) WakeCompactor();
        return absl::AlreadyExistsError(StrCat("target snapshot ", labels.at(kSnapshotRefLabel), " (", (*target)->image_ref,
                                               ") served from its cdimgs"));
      }
      spdlog::info("cri pull {} (manifest {}): layer {} is fetched by containerd: {}", (*target)->image_ref,
                   (*target)->manifest_digest, (*target)->layer_digest, Msg(served.message()));
    }
  }
  // Mount the images below first, so a failure changes nothing.
  if (!parent.empty()) {
    absl::StatusOr<Record> p;
    {
      absl::MutexLock g(&mu_);
      p = meta_->Get(parent);
    }
    if (p.ok()) {
      if (!p->image_id.empty()) {
        if (auto s = EnsureImage(p->image_id); !s.ok()) return s;
      }
      for (size_t i = 0; p->image_id.empty() && i < p->parent_image_ids.size(); ++i) {
        if (p->parent_image_ids[i].empty()) continue;
        if (auto s = EnsureImage(p->parent_image_ids[i]); !s.ok()) return s;
        break;  // the first image below is the whole tree (MountsFor)
      }
    }
  }
  absl::StatusOr<Record> r;
  {
    absl::MutexLock g(&mu_);
    r = meta_->Create(kind, key, parent, labels, [&](const Record& rec) -> absl::Status {
      std::string dir = SnapshotDir(rec.id);
      std::string tmp = layout::SnapshotNewDir(o_.root, rec.id);
      std::error_code ec;
      fs::remove_all(tmp, ec);
      fs::create_directories(tmp + "/fs", ec);
      if (!ec && kind == Kind::kActive) fs::create_directory(tmp + "/work", ec);
      if (!ec) fs::rename(tmp, dir, ec);
      if (ec) {
        fs::remove_all(tmp, ec);
        return absl::InternalError(StrCat("create snapshot directory ", dir, ": ", ec.message()));
      }
      return absl::OkStatus();
    });
  }
  if (!r.ok()) return r.status();
  return MountsFor(*r);
}

absl::StatusOr<std::vector<Mount>> Snapshotter::Prepare(const std::string& key, const std::string& parent,
                                                        const Labels& labels) {
  return Create(Kind::kActive, key, parent, labels);
}

absl::StatusOr<std::vector<Mount>> Snapshotter::View(const std::string& key, const std::string& parent,
                                                     const Labels& labels) {
  return Create(Kind::kView, key, parent, labels);
}

absl::StatusOr<std::vector<Mount>> Snapshotter::Mounts(const std::string& key) {
  absl::StatusOr<Record> r;
  {
    absl::MutexLock g(&mu_);
    r = meta_->Get(key);
  }
  if (!r.ok()) return r.status();
  if (r->info.kind != Kind::kActive && r->info.kind != Kind::kView)
    return absl::FailedPreconditionError(StrCat("requested snapshot ", key, " not active or view"));
  return MountsFor(*r);
}

absl::Status Snapshotter::Commit(const std::string& name, const std::string& key, const Labels& labels) {
  absl::MutexLock g(&mu_);
  auto r = meta_->Get(key);
  if (!r.ok()) {
    if (absl::IsNotFound(r.status())) return absl::NotFoundError(StrCat("failed to get active snapshot \"", key, "\""));
    return r.status();
  }
  Usage u;
  if (r->info.kind == Kind::kActive) u = DiskUsage(SnapshotDir(r->id) + "/fs");
  auto c = meta_->Commit(key, name, u, labels);
  if (!c.ok()) return c.status();
  std::error_code ec;
  fs::remove_all(SnapshotDir(r->id) + "/work", ec);  // only active snapshots need one
  return absl::OkStatus();
}

absl::Status Snapshotter::Remove(const std::string& key) {
  absl::StatusOr<Record> r;
  bool image_unused = false;
  {
    absl::MutexLock g(&mu_);
    r = meta_->Remove(key);
    if (!r.ok()) return r.status();
    if (!r->image_id.empty()) {
      auto ids = meta_->ImageIds(false);
      image_unused = ids.ok() && std::find(ids->begin(), ids->end(), r->image_id) == ids->end();
    }
  }
  std::error_code ec;
  if (r->image_id.empty()) {
    std::string dir = SnapshotDir(r->id);
    std::string rm = layout::SnapshotRmDir(o_.root, r->id);
    fs::rename(dir, rm, ec);
    fs::remove_all(ec ? dir : rm, ec);
    if (ec) spdlog::warn("remove {}: {} (left for Cleanup)", dir, ec.message());
  } else if (image_unused) {
    if (auto s = mounter_->Unmount(r->image_id); !s.ok())
      spdlog::warn("remove {}: {} (retried by Cleanup)", key, Msg(s.message()));
    if (auto c = CollectStore(r->image_id); !c.ok()) spdlog::warn("remove {}: store collection: {} (retried by Cleanup)", key, Msg(c.status().message()));
  }
  // One image fewer served: the chains of the others may now keep images
  // nobody else needs.
  if (!r->image_id.empty() && o_.compaction.enabled()) WakeCompactor();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> Snapshotter::CollectStore(const std::string& unmounted) {
  absl::MutexLock store_lock(&store_mu_);
  absl::StatusOr<std::vector<std::string>> used;
  {
    absl::MutexLock g(&mu_);
    used = meta_->ImageIds(false);
  }
  if (!used.ok()) return used.status();
  // What stays: the images snapshots serve and, through parent ids, their chains.
  std::set<std::string> keep;
  std::vector<std::string> todo = *used;
  while (!todo.empty()) {
    std::string id = std::move(todo.back());
    todo.pop_back();
    if (id.empty() || !keep.insert(id).second || !store_.Has(id)) continue;
    auto parent = store_.ParentOf(id);
    if (!parent.ok()) {
      // A chain that cannot be followed: keep everything rather than guess.
      return absl::DataLossError(StrCat("store collection skipped: ", Msg(parent.status().message())));
    }
    if (!parent->empty()) todo.push_back(*parent);
  }
  std::vector<std::string> gone;
  for (const auto& id : store_.List()) {
    if (keep.count(id)) continue;
    if (auto s = id == unmounted ? absl::OkStatus() : mounter_->Unmount(id); !s.ok()) {
      spdlog::warn("store collection: keeping image sha256:{}: {}", id, Msg(s.message()));
      continue;
    }
    if (auto s = store_.Delete(id); !s.ok()) {
      spdlog::warn("store collection: {}", Msg(s.message()));
      continue;
    }
    spdlog::info("store collection: deleted image sha256:{} (no snapshot uses it)", id);
    gone.push_back(id);
  }
  for (const auto& name : store_.RemoveStrays()) spdlog::info("store collection: removed stray file {}", name);
  if (!gone.empty()) {
    absl::MutexLock g(&chains_mu_);
    std::set<std::string> deleted_paths;
    for (const auto& id : gone) deleted_paths.insert(store_.PathFor(id));
    for (auto it = chains_.begin(); it != chains_.end();) {
      bool stale = false;
      for (const auto& p : it->second.paths) stale = stale || deleted_paths.count(p);
      it = stale ? chains_.erase(it) : std::next(it);
    }
  }
  return gone;
}

absl::StatusOr<Info> Snapshotter::Stat(const std::string& key) {
  absl::MutexLock g(&mu_);
  auto r = meta_->Get(key);
  if (!r.ok()) return r.status();
  return r->info;
}

absl::StatusOr<Info> Snapshotter::Update(const Info& info, const std::vector<std::string>& fieldpaths) {
  absl::MutexLock g(&mu_);
  return meta_->Update(info, fieldpaths);
}

absl::StatusOr<Usage> Snapshotter::GetUsage(const std::string& key) {
  absl::StatusOr<Record> r;
  {
    absl::MutexLock g(&mu_);
    r = meta_->Get(key);
  }
  if (!r.ok()) return r.status();
  if (r->info.kind == Kind::kActive) return DiskUsage(SnapshotDir(r->id) + "/fs");
  return r->usage;
}

absl::Status Snapshotter::List(const std::vector<std::string>& filters,
                               const std::function<absl::Status(const Info&)>& fn) {
  auto f = Filter::ParseAll(filters);
  if (!f.ok()) return f.status();
  std::vector<Info> infos;
  {
    absl::MutexLock g(&mu_);
    auto s = meta_->Walk(*f, [&](const Record& r) {
      infos.push_back(r.info);
      return absl::OkStatus();
    });
    if (!s.ok()) return s;
  }
  for (const auto& i : infos) {
    if (auto s = fn(i); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status Snapshotter::Cleanup() {
  std::vector<std::string> stale_dirs;
  std::vector<std::string> images;
  {
    absl::MutexLock g(&mu_);
    auto ids = meta_->AllIds();
    if (!ids.ok()) return ids.status();
    std::set<std::string> keep;
    for (int64_t id : *ids) keep.insert(std::to_string(id));
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(layout::SnapshotsDir(o_.root), ec)) {
      std::string n = e.path().filename();
      if (!keep.count(n)) stale_dirs.push_back(e.path());
    }
    auto in_use = meta_->ImageIds(false);
    if (!in_use.ok()) return in_use.status();
    images = std::move(*in_use);
  }
  for (const auto& d : stale_dirs) {
    std::error_code ec;
    fs::remove_all(d, ec);
    spdlog::info("cleanup: removed {}{}", d, ec ? " (failed: " + ec.message() + ")" : "");
  }
  absl::Status pruned = mounter_->Prune(images);
  auto collected = CollectStore();
  if (!pruned.ok()) return pruned;
  return collected.status();
}

}  // namespace d4c::snap
