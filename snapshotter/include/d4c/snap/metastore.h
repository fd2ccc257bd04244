// Snapshot metadata: one SQLite database, every operation one transaction,
// with the semantics of containerd's snapshots/storage (bolt metastore):
// keys are unique across kinds, only Active/View are created, only Active is
// committed (keeping its numeric id, so its directory stays), a snapshot with
// children cannot be removed, parents must be committed.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "d4c/snap/filters.h"

struct sqlite3;

namespace d4c::snap {

enum class Kind : int { kUnknown = 0, kView = 1, kActive = 2, kCommitted = 3 };
const char* KindName(Kind k);  // "view", "active", "committed" (filter spelling)

using Labels = std::map<std::string, std::string>;

struct Usage {
  int64_t size = 0;
  int64_t inodes = 0;
};

struct Info {
  std::string name;
  std::string parent;
  Kind kind = Kind::kUnknown;
  int64_t created_ns = 0;  // unix nanoseconds, UTC
  int64_t updated_ns = 0;
  Labels labels;
};

struct Record {
  int64_t id = 0;                  // stable for the snapshot's life (directory name)
  Info info;
  std::vector<int64_t> parent_ids;  // nearest parent first
  std::vector<std::string> parent_image_ids;  // parallel to parent_ids: image id hex or ""
  std::string image_id;             // hex image id for di3fs image snapshots, else ""
  Usage usage;                      // recorded at commit (committed only)
};

// Field lookup for containerd filters on a snapshot: kind, name, parent, labels.<k>.
FieldLookup SnapshotFields(const Info& info);

// labels: each key+value at most 4096 bytes (containerd's limit).
absl::Status ValidateLabels(const Labels& labels);

// Not thread-safe: one SQLite connection. The owner serializes every call
// (Snapshotter holds its mu_ around each one).
class MetaStore {
 public:
  // Creates the database and schema if missing.
  static absl::StatusOr<std::unique_ptr<MetaStore>> Open(const std::string& path);
  ~MetaStore();
  MetaStore(const MetaStore&) = delete;
  MetaStore& operator=(const MetaStore&) = delete;

  // Runs inside the write transaction once the row exists; a failure rolls
  // the transaction back (used to create directories atomically with rows).
  using Hook = std::function<absl::Status(const Record&)>;

  // Active or View. AlreadyExists (key taken), NotFound (parent),
  // InvalidArgument (kind, parent not committed, labels).
  absl::StatusOr<Record> Create(Kind kind, const std::string& key, const std::string& parent,
                                const Labels& labels, const Hook& hook = nullptr);
  // A committed snapshot served from image `image_id` (hex). `parent` (a
  // committed snapshot, or "" for none) is only recorded: the image is the
  // whole tree, its mounts never include the parents (snapshotter.h).
  absl::StatusOr<Record> CreateImage(const std::string& name, const std::string& image_id,
                                     const Labels& labels, Usage usage, const Hook& hook = nullptr,
                                     const std::string& parent = "");
  absl::StatusOr<Record> Get(const std::string& key);
  // Active `key` becomes committed `name` (same id), labels replaced.
  absl::StatusOr<Record> Commit(const std::string& key, const std::string& name, Usage usage,
                                const Labels& labels, const Hook& hook = nullptr);
  // FailedPrecondition if it has children; returns the removed record.
  absl::StatusOr<Record> Remove(const std::string& key, const Hook& hook = nullptr);
  // Fieldpaths: "labels" or "labels.<key>"; none: replace all labels.
  absl::StatusOr<Info> Update(const Info& info, const std::vector<std::string>& fieldpaths);
  absl::Status Walk(const Filter& filter, const std::function<absl::Status(const Record&)>& fn);
  // Number of snapshots whose parent is `key`'s snapshot.
  absl::StatusOr<int64_t> CountChildren(int64_t id);
  // All ids (cleanup of orphan directories).
  absl::StatusOr<std::vector<int64_t>> AllIds();
  // Image ids (hex) of all image snapshots, and those that have children.
  absl::StatusOr<std::vector<std::string>> ImageIds(bool with_children_only);

 private:
  explicit MetaStore(sqlite3* db) : db_(db) {}
  sqlite3* db_;
};

}  // namespace d4c::snap
