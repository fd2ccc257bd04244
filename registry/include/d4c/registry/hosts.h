// How to reach a registry, configured the way containerd users configure it:
// `DIR/HOST/hosts.toml` (containerd's registry host namespace, docs/hosts.md
// of containerd) or, when that file is absent, docker's certificate files in
// `DIR/HOST/` (`*.crt`: CA certificates; `NAME.cert` + `NAME.key`: a client
// certificate). DIR is /etc/containerd/certs.d unless the caller says
// otherwise; HOST is the registry name as in image names (`HOST[:PORT]`),
// `_default` is used when HOST has no directory.
//
// hosts.toml fields read (others are refused, naming the file and line):
//   server = "https://registry.example:5000"   # or "http://..." for plain HTTP
//   ca = "ca.crt" | ["a.crt", "b.crt"]         # relative paths: to the HOST directory
//   client = "c.pem" | [["c.cert", "c.key"]]   # libcurl uses the first pair
//   skip_verify = true                         # no TLS verification (tests only)
//   [host."https://mirror.example"]            # endpoints tried before `server`
//     capabilities = ["pull", "resolve", "push"]
//     ca / client / skip_verify                # as above, for this endpoint
// Thread-safe: plain functions over values and files.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace d4c::registry {

inline constexpr const char* kDefaultHostsDir = "/etc/containerd/certs.d";

struct ClientCertificate {
  std::string cert;  // PEM file
  std::string key;   // PEM file; empty: the key is in `cert`
};

// One place to send requests for the registry, and how to trust it.
struct HostEndpoint {
  std::string url;                        // scheme://host[:port][/path], no trailing slash
  std::vector<std::string> capabilities;  // "pull", "resolve", "push"
  std::vector<std::string> ca_files;      // trusted in addition to the system's CAs
  std::vector<ClientCertificate> client;  // client certificates (libcurl presents the first)
  bool skip_verify = false;

  bool plain_http() const { return url.starts_with("http://"); }
  bool Can(std::string_view capability) const;
};

struct HostConfig {
  std::string host;    // the registry name, HOST[:PORT]
  std::string source;  // the file or directory the settings came from; "" for the defaults
  std::vector<HostEndpoint> mirrors;  // [host."..."] sections, in file order
  HostEndpoint server;                // `server`, or https://HOST (docker.io: https://registry-1.docker.io)

  // Where a client that must `push` (else pull and resolve) sends requests:
  // the first mirror with those capabilities, else the server.
  const HostEndpoint& EndpointFor(bool push) const;
  // Where a pull goes, in the order to try (registry/failover.h): the
  // mirrors with the pull and resolve capabilities, in file order, then the
  // server (unless a mirror has the same URL).
  std::vector<const HostEndpoint*> PullEndpoints() const;
};

// The configuration of `host` from `dir`: DIR/HOST/hosts.toml, else docker's
// certificate files in DIR/HOST, else the same from DIR/_default, else the
// defaults (HTTPS to HOST, the system's CAs). A missing `dir` is not an error;
// an unreadable or invalid file is (the message names the file and line).
absl::StatusOr<HostConfig> LoadHostConfig(const std::string& host, const std::string& dir = kDefaultHostsDir);

// hosts.toml text for `host`; `path` names the file in messages, and relative
// certificate paths are taken from its directory.
absl::StatusOr<HostConfig> ParseHostsToml(const std::string& host, std::string_view text, const std::string& path);

// The endpoint a registry client uses by default: https://HOST, and
// https://registry-1.docker.io for docker.io.
std::string DefaultServerUrl(const std::string& host);

}  // namespace d4c::registry
