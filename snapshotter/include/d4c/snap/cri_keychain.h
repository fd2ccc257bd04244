// CRI keychain: registry credentials that kubelet sends with each CRI
// PullImage (an image pull secret, in the request's `auth` field), kept for the
// snapshotter's own pulls. containerd uses that auth for its layer pull but
// never passes it to snapshotters, so the snapshotter can serve the CRI v1
// ImageService itself (CriImageProxy, `--cri-image-proxy`): it forwards every
// call to containerd's CRI socket unchanged and, before forwarding a PullImage
// with auth, remembers the credentials for the image's registry host and
// repository. Memory only, each entry for `ttl` after its last PullImage.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "d4c/registry/reference.h"
#include "d4c/registry/registry_client.h"

namespace grpc {
class Channel;
class Service;
}  // namespace grpc

namespace d4c::snap {

// The fields of CRI's AuthConfig the registry client can use: `username` and
// `password`, else `auth` = base64(user:password). Nullopt when all are empty;
// InvalidArgument for an `auth` that is not base64 of "user:password".
// identity_token / registry_token are not supported (the caller logs them).
absl::StatusOr<std::optional<registry::Credentials>> CriAuthCredentials(std::string_view username,
                                                                         std::string_view password,
                                                                         std::string_view auth);

// Credentials by registry host + repository. Thread-safe: every method takes
// `mu_` (PullImage handlers store while the snapshotter's Prepare looks up).
class CriKeychain {
 public:
  using Clock = std::function<absl::Time()>;
  explicit CriKeychain(absl::Duration ttl = absl::Minutes(10), Clock now = absl::Now);

  // Stores `c` for ref.domain + ref.path, replacing any entry, valid for ttl.
  void Put(const registry::ImageReference& ref, registry::Credentials c);
  // The credentials stored for ref.domain + ref.path if not expired (an
  // expired entry is dropped), else nullopt.
  std::optional<registry::Credentials> Get(const registry::ImageReference& ref);
  size_t size();

 private:
  struct Entry {
    registry::Credentials credentials;
    absl::Time expires;
  };
  const absl::Duration ttl_;
  const Clock now_;
  absl::Mutex mu_;
  std::map<std::pair<std::string, std::string>, Entry> entries_ ABSL_GUARDED_BY(mu_);  // (domain, path)
};

// runtime.v1.ImageService forwarding each RPC (PullImage, ImageStatus,
// ListImages, RemoveImage, ImageFsInfo) to `upstream` (containerd's CRI
// socket) and returning its answer and status unchanged; a PullImage's auth is
// put into `keychain` first (containerd calls Prepare during that pull). A bad
// `auth` is logged and forwarded as is (containerd answers it). Handlers run on
// gRPC's threads; `keychain` must outlive the service.
std::unique_ptr<grpc::Service> MakeCriImageProxy(std::shared_ptr<grpc::Channel> upstream, CriKeychain* keychain);

}  // namespace d4c::snap
