// The layout of the di3fs snapshotter's root directory (--root, default
// /var/lib/di3fs): the one definition every process that touches it uses (the
// snapshotter and its mounter write it; `ctr-cli load` and `ctr-cli pull`
// only read the store, at the root the snapshotter reports (load.h)).
//
//   ROOT/snapshotter.json        identity marker (RootMarker below)
//   ROOT/metadata.db             snapshot metadata (metastore.h)
//   ROOT/snapshots/<n>/fs        upper dir of snapshot <n> (lower dir once committed)
//   ROOT/snapshots/<n>/work      overlay work dir (active snapshots)
//   ROOT/store/<image>.cdimg     images (image_store.h); written only by the
//                                snapshotter (import label, snapshotter.h)
//   ROOT/compact/<image>.cdimg   files of a compaction being built (compaction.h);
//                                emptied at start
//   ROOT/mnt/<image>             di3fs mount of an image chain (mounter.h)
//   ROOT/run/<image>.pid         pid of the di3fs serving it
//   ROOT/log/di3fs-<image>.log   its stdout/stderr
//   ROOT/cache/<image>/          its content cache
//   ROOT/downloads/              cdimgs a CRI pull fetches (remote.h):
//                                `<blob hex>.cdimg[.partial]`, resumed and
//                                pruned as registry's download_dir.h says;
//   ROOT/downloads/ready-*/      a fetched chain until it is imported
//                                (removed then, and at start)
// <image> is the 64 hex digits of the image id, <n> the snapshot's number.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace d4c::snap::layout {

inline std::string MarkerPath(const std::string& root) { return root + "/snapshotter.json"; }
inline std::string MetadataDb(const std::string& root) { return root + "/metadata.db"; }
inline std::string SnapshotsDir(const std::string& root) { return root + "/snapshots"; }
inline std::string SnapshotDir(const std::string& root, int64_t n) { return SnapshotsDir(root) + "/" + std::to_string(n); }
// Staging names inside SnapshotsDir (created, then renamed; removed by Cleanup).
inline std::string SnapshotNewDir(const std::string& root, int64_t n) { return SnapshotsDir(root) + "/new-" + std::to_string(n); }
inline std::string SnapshotRmDir(const std::string& root, int64_t n) { return SnapshotsDir(root) + "/rm-" + std::to_string(n); }
inline std::string StoreDir(const std::string& root) { return root + "/store"; }
inline std::string StorePath(const std::string& root, const std::string& id_hex) { return StoreDir(root) + "/" + id_hex + ".cdimg"; }
inline std::string CompactDir(const std::string& root) { return root + "/compact"; }
inline std::string MountDir(const std::string& root) { return root + "/mnt"; }
inline std::string MountPoint(const std::string& root, const std::string& id_hex) { return MountDir(root) + "/" + id_hex; }
inline std::string RunDir(const std::string& root) { return root + "/run"; }
inline std::string PidFile(const std::string& root, const std::string& id_hex) { return RunDir(root) + "/" + id_hex + ".pid"; }
// A daemon's command line (NUL-separated): a replacement is started from it
// when the daemon died with the snapshotter (fdstore.h).
inline std::string ArgvFile(const std::string& root, const std::string& id_hex) { return RunDir(root) + "/" + id_hex + ".argv"; }
inline std::string LogDir(const std::string& root) { return root + "/log"; }
inline std::string LogFile(const std::string& root, const std::string& id_hex) { return LogDir(root) + "/di3fs-" + id_hex + ".log"; }
inline std::string CacheDir(const std::string& root) { return root + "/cache"; }
inline std::string DownloadDir(const std::string& root) { return root + "/downloads"; }
inline std::string CacheDirFor(const std::string& root, const std::string& id_hex) { return CacheDir(root) + "/" + id_hex; }

}  // namespace d4c::snap::layout

namespace d4c::snap {

// ROOT/snapshotter.json, written by the snapshotter each time it starts. The
// root id is made once, when the root is first used, and kept: it names the
// root, whatever path a process reaches it by. `ctr-cli load` compares it with
// the root id the snapshotter containerd talks to reports (load.h).
struct RootMarker {
  std::string root_id;  // 32 hex digits
  std::string root;     // the path the snapshotter was given
  std::string address;  // the socket it serves on ("" if unknown)
  int64_t pid = 0;      // of the snapshotter that wrote it
};

// NotFound if ROOT has no marker; DataLoss if it does not parse.
absl::StatusOr<RootMarker> ReadRootMarker(const std::string& root);
// Keeps the root id of an existing marker, else makes a new one; writes
// atomically (temp file + rename). Returns what was written.
absl::StatusOr<RootMarker> WriteRootMarker(const std::string& root, const std::string& address);

// The root probe's answer: di3fs-root-probe root-id=<id> root="<root>" pid=<pid>.
// ParseRootProbeAnswer finds root and id in a message that may
// carry more text around it (containerd adds context); false if absent.
std::string RootProbeAnswer(const RootMarker& m);
bool ParseRootProbeAnswer(const std::string& message, std::string* root, std::string* root_id);

}  // namespace d4c::snap
