// A small client of containerd's gRPC API (content, images, leases,
// snapshots) as ctr-cli needs it. Every call carries the namespace header
// (containerd-namespace) and, when set, the lease header (containerd-lease).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "d4c/oci.h"

namespace d4c::snap {

struct ContentDescriptor {
  std::string media_type;
  std::string digest;  // sha256:<hex>
  int64_t size = 0;
};

struct ImageRecord {
  std::string name;
  ContentDescriptor target;
  std::map<std::string, std::string> labels;
};

// A snapshot as containerd's metadata lists it (one namespace).
struct SnapshotRecord {
  enum class Kind { kUnknown, kView, kActive, kCommitted };
  std::string name;
  std::string parent;  // "" for none
  Kind kind = Kind::kUnknown;
  std::map<std::string, std::string> labels;
};

// The part of containerd's API that LoadImage uses (tests: a fake).
class ContainerdApi {
 public:
  virtual ~ContainerdApi() = default;
  virtual const std::string& address() const = 0;
  // Every later call carries this lease ("" = none).
  virtual void set_lease(std::string id) = 0;
  virtual absl::StatusOr<std::string> CreateLease(int expire_sec,
                                                  const std::map<std::string, std::string>& labels) = 0;
  virtual absl::Status DeleteLease(const std::string& id) = 0;
  // Leases (id -> labels) that carry label `key`.
  virtual absl::StatusOr<std::map<std::string, std::map<std::string, std::string>>> LeasesWithLabel(
      const std::string& key) = 0;
  virtual absl::Status WriteBlob(const std::string& ref, const std::string& data, const std::string& digest,
                                 const std::map<std::string, std::string>& labels) = 0;
  virtual absl::Status PutImage(const ImageRecord& image) = 0;
  virtual absl::StatusOr<bool> SnapshotExists(const std::string& snapshotter, const std::string& key) = 0;
  virtual absl::Status PrepareSnapshot(const std::string& snapshotter, const std::string& key,
                                       const std::string& parent,
                                       const std::map<std::string, std::string>& labels) = 0;
  virtual absl::Status RemoveSnapshot(const std::string& snapshotter, const std::string& key) = 0;
};

// Not thread-safe: the lease set by set_lease applies to every later call, so
// one client serves one operation (a load) at a time. The gRPC channel under
// it is thread-safe; use one client per concurrent operation.
class ContainerdClient final : public ContainerdApi {
 public:
  // `address`: unix socket path (or a grpc target "unix:..."). Checks that the
  // server answers within `timeout_sec`.
  static absl::StatusOr<std::unique_ptr<ContainerdClient>> Connect(const std::string& address,
                                                                   const std::string& ns, int timeout_sec = 10);
  ~ContainerdClient() override;

  const std::string& address() const override;
  const std::string& ns() const;
  void set_lease(std::string id) override;

  // Leases: a temporary lease protects what is created under it from GC.
  absl::StatusOr<std::string> CreateLease(int expire_sec, const std::map<std::string, std::string>& labels) override;
  absl::Status DeleteLease(const std::string& id) override;
  absl::StatusOr<std::map<std::string, std::map<std::string, std::string>>> LeasesWithLabel(
      const std::string& key) override;

  // Content store.
  absl::StatusOr<std::map<std::string, std::string>> ContentLabels(const std::string& digest);  // NotFound
  absl::StatusOr<std::string> ReadBlob(const std::string& digest, int64_t max_size);
  absl::StatusOr<std::unique_ptr<ByteStream>> OpenBlob(const std::string& digest);
  // Writes `data` (digest checked by containerd) with labels; if the blob
  // exists already, only sets the labels. Idempotent.
  absl::Status WriteBlob(const std::string& ref, const std::string& data, const std::string& digest,
                         const std::map<std::string, std::string>& labels) override;

  // Image records.
  absl::StatusOr<ImageRecord> GetImage(const std::string& name);  // NotFound
  // Creates, or replaces target and labels of, the image record.
  absl::Status PutImage(const ImageRecord& image) override;
  // Every image record of the namespace.
  absl::StatusOr<std::vector<ImageRecord>> ListImages();
  // Deletes the image record `name` (NotFound if absent). With `sync`,
  // containerd runs its garbage collection before answering (`ctr images rm
  // --sync`): what the record alone kept (content, snapshots) is gone then.
  absl::Status DeleteImage(const std::string& name, bool sync);
  // Runs containerd's garbage collection and waits for it (a lease created
  // and deleted with sync: containerd has no GC call of its own).
  absl::Status CollectGarbage();

  // Snapshots of `snapshotter` in the namespace.
  absl::StatusOr<std::vector<SnapshotRecord>> ListSnapshots(const std::string& snapshotter);

  // Snapshots through containerd (its metadata layer, then the proxy plugin).
  absl::StatusOr<bool> SnapshotExists(const std::string& snapshotter, const std::string& key) override;
  // Prepare; returns the gRPC result as a status (AlreadyExists is expected
  // for the remote-snapshot protocol).
  absl::Status PrepareSnapshot(const std::string& snapshotter, const std::string& key, const std::string& parent,
                               const std::map<std::string, std::string>& labels) override;
  absl::Status RemoveSnapshot(const std::string& snapshotter, const std::string& key) override;

 private:
  ContainerdClient() = default;
  struct State;
  std::unique_ptr<State> s_;
};

// An image in containerd's image + content store as an ImageSource
// (for `ctr-cli convert --image NAME`). Resolves an index to the manifest of
// this host's platform (linux/<arch>).
absl::StatusOr<std::unique_ptr<ImageSource>> OpenContainerdImage(ContainerdClient* client, const std::string& name);

}  // namespace d4c::snap
