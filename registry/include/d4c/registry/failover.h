// Several endpoints of one registry (hosts.toml: the [host."..."] mirrors with
// the pull and resolve capabilities, in file order, then `server`) as one
// RegistryApi, tried in order as containerd's resolver tries them: a read that
// fails with no answer from an endpoint (connection refused or cut, TLS
// handshake timeouts: Unavailable; a 5xx after its retries: Unavailable; 429:
// ResourceExhausted; DeadlineExceeded) goes to the next endpoint, as does a
// manifest the endpoint does not have (404: a mirror may hold only part of
// the registry). Any other answer (401, 403, a digest mismatch, a
// certificate the endpoint's CA does not verify: FailedPrecondition) is
// returned as it is; containerd would try the next host for those too. A blob download that fails half-way continues from its
// `.partial` file at the next endpoint. Writes (uploads, PutManifest) go to
// the first endpoint only: push endpoints are chosen by HostConfig::EndpointFor.
// Thread-safe if every endpoint is (no state of its own besides them).
#pragma once

#include <memory>
#include <vector>

#include "d4c/registry/hosts.h"
#include "d4c/registry/registry_client.h"
#include "d4c/registry/transfer.h"

namespace d4c::registry {

// Whether a failed read is worth trying at the next endpoint.
bool TryNextEndpoint(const absl::Status& s);

// `endpoints` in the order to try (at least one; the first one names the
// registry in host()).
std::unique_ptr<RegistryApi> NewFailoverRegistry(std::vector<std::shared_ptr<RegistryApi>> endpoints);

// The RegistryApi a pull uses for `config`'s registry: one RegistryClient per
// HostConfig::PullEndpoints entry, each made from `base` (host, credentials,
// attempts, rate limit, flags such as plain_http and extra CA files) with
// that endpoint applied on top (ApplyHostEndpoint), tried in order; a single
// endpoint is used as it is. The clients live as long as the result.
absl::StatusOr<std::shared_ptr<RegistryApi>> OpenPullRegistry(const HostConfig& config, const RegistryOptions& base);

}  // namespace d4c::registry
