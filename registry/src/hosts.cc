// containerd's hosts.toml and docker's certs.d files (d4c/registry/hosts.h).
#include "d4c/registry/hosts.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include <toml++/toml.h>

#include "d4c/base/strcat.h"

namespace d4c::registry {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kAllCapabilities = {"pull", "resolve", "push"};

// "FILE:LINE" of a node, for messages.
std::string Where(const std::string& path, const toml::source_region& r) { return StrCat(path, ":", r.begin.line); }

absl::Status Bad(const std::string& path, const toml::source_region& r, std::string_view what) {
  return absl::InvalidArgumentError(StrCat(Where(path, r), ": ", what));
}

// A certificate path as written: relative ones are in the host directory.
std::string InDir(const std::string& dir, const std::string& p) {
  if (p.empty() || p.front() == '/' || dir.empty()) return p;
  return (fs::path(dir) / p).string();
}

absl::StatusOr<std::string> EndpointUrl(const std::string& path, const toml::source_region& r, std::string url) {
  if (!url.starts_with("https://") && !url.starts_with("http://"))
    return Bad(path, r, StrCat("'", url, "' must start with https:// or http://"));
  while (url.ends_with("/")) url.pop_back();
  if (url.find("://") + 3 >= url.size()) return Bad(path, r, StrCat("'", url, "' names no host"));
  return url;
}

// String or array of strings.
absl::StatusOr<std::vector<std::string>> Strings(const std::string& path, const toml::node& n, std::string_view key) {
  std::vector<std::string> out;
  if (n.is_string()) {
    out.push_back(*n.value<std::string>());
    return out;
  }
  const toml::array* a = n.as_array();
  if (!a) return Bad(path, n.source(), StrCat(key, " must be a string or an array of strings"));
  for (const auto& e : *a) {
    if (!e.is_string()) return Bad(path, e.source(), StrCat(key, " must be a string or an array of strings"));
    out.push_back(*e.value<std::string>());
  }
  return out;
}

// The keys an endpoint takes (top level: the server; [host."URL"]: a mirror).
absl::Status ReadEndpointKey(const std::string& path, const std::string& dir, std::string_view key, const toml::node& v,
                             HostEndpoint& e) {
  if (key == "capabilities") {
    auto caps = Strings(path, v, key);
    if (!caps.ok()) return caps.status();
    for (const auto& c : *caps)
      if (std::find(kAllCapabilities.begin(), kAllCapabilities.end(), c) == kAllCapabilities.end())
        return Bad(path, v.source(), StrCat("capability '", c, "' is none of pull, resolve, push"));
    e.capabilities = *caps;
  } else if (key == "ca") {
    auto ca = Strings(path, v, key);
    if (!ca.ok()) return ca.status();
    for (const auto& f : *ca) e.ca_files.push_back(InDir(dir, f));
  } else if (key == "client") {
    // "cert.pem" (key inside), ["a.pem", "b.pem"], or [["cert", "key"], ...]
    e.client.clear();
    if (v.is_string()) {
      e.client.push_back({InDir(dir, *v.value<std::string>()), ""});
    } else if (const toml::array* a = v.as_array()) {
      for (const auto& item : *a) {
        if (item.is_string()) {
          e.client.push_back({InDir(dir, *item.value<std::string>()), ""});
        } else if (const toml::array* pair = item.as_array(); pair && pair->size() == 2 && (*pair)[0].is_string() &&
                                                              (*pair)[1].is_string()) {
          e.client.push_back({InDir(dir, *(*pair)[0].value<std::string>()), InDir(dir, *(*pair)[1].value<std::string>())});
        } else {
          return Bad(path, item.source(), "client entries are \"cert.pem\" or [\"client.cert\", \"client.key\"]");
        }
      }
    } else {
      return Bad(path, v.source(), "client must be a file name or an array of [\"cert\", \"key\"] pairs");
    }
  } else if (key == "skip_verify") {
    if (!v.is_boolean()) return Bad(path, v.source(), "skip_verify must be true or false");
    e.skip_verify = *v.value<bool>();
  } else if (key == "override_path") {
    if (!v.is_boolean()) return Bad(path, v.source(), "override_path must be true or false");
    if (*v.value<bool>())
      return Bad(path, v.source(), "override_path = true is not supported by d4c (the endpoint's path gets /v2/ appended)");
  } else if (key == "dial_timeout") {
    // accepted for files shared with containerd; d4c's connect timeout is fixed (15 s)
  } else if (key == "header") {
    return Bad(path, v.source(), "[header] is not supported by d4c");
  } else {
    return Bad(path, v.source(), StrCat("unknown key '", key,
                                        "' (d4c reads server, capabilities, ca, client, skip_verify and [host.\"URL\"])"));
  }
  return absl::OkStatus();
}

// docker's layout: *.crt are CAs, NAME.cert + NAME.key a client certificate.
absl::Status ReadDockerCerts(const std::string& dir, HostEndpoint& e) {
  std::error_code ec;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) files.push_back(entry.path());
  if (ec) return absl::PermissionDeniedError(StrCat(dir, ": cannot list (", ec.message(), ")"));
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    std::string ext = f.extension().string();
    if (ext == ".crt") {
      e.ca_files.push_back(f.string());
    } else if (ext == ".cert") {
      fs::path key = f;
      key.replace_extension(".key");
      if (!fs::exists(key, ec))
        return absl::InvalidArgumentError(StrCat(f.string(), ": client certificate without its key ", key.string()));
      e.client.push_back({f.string(), key.string()});
    } else if (ext == ".key") {
      fs::path cert = f;
      cert.replace_extension(".cert");
      if (!fs::exists(cert, ec))
        return absl::InvalidArgumentError(StrCat(f.string(), ": client key without its certificate ", cert.string()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool HostEndpoint::Can(std::string_view capability) const {
  return std::find(capabilities.begin(), capabilities.end(), capability) != capabilities.end();
}

const HostEndpoint& HostConfig::EndpointFor(bool push) const {
  for (const auto& m : mirrors) {
    if (push ? (m.Can("push") && m.Can("resolve")) : (m.Can("pull") && m.Can("resolve"))) return m;
  }
  return server;
}

std::vector<const HostEndpoint*> HostConfig::PullEndpoints() const {
  std::vector<const HostEndpoint*> out;
  for (const auto& m : mirrors)
    if (m.Can("pull") && m.Can("resolve")) out.push_back(&m);
  if (std::none_of(out.begin(), out.end(), [&](const HostEndpoint* e) { return e->url == server.url; }))
    out.push_back(&server);
  return out;
}

std::string DefaultServerUrl(const std::string& host) {
  return host == "docker.io" ? "https://registry-1.docker.io" : "https://" + host;
}

absl::StatusOr<HostConfig> ParseHostsToml(const std::string& host, std::string_view text, const std::string& path) {
  HostConfig c;
  c.host = host;
  c.source = path;
  c.server.url = DefaultServerUrl(host);
  c.server.capabilities = kAllCapabilities;
  const std::string dir = fs::path(path).parent_path().string();
  toml::table t;
  try {
    t = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(StrCat(path, ":", e.source().begin.line, ":", e.source().begin.column,
                                             ": not valid TOML: ", e.description()));
  }
  for (const auto& [k, v] : t) {
    std::string_view key = k.str();
    if (key == "server") {
      if (!v.is_string()) return Bad(path, v.source(), "server must be a string such as \"https://HOST\"");
      auto url = EndpointUrl(path, v.source(), *v.value<std::string>());
      if (!url.ok()) return url.status();
      c.server.url = *url;
    } else if (key == "host") {
      const toml::table* hosts = v.as_table();
      if (!hosts) return Bad(path, v.source(), "host must be a table: [host.\"https://mirror.example\"]");
      // toml++ keeps keys sorted; containerd tries mirrors in file order.
      std::vector<std::pair<const toml::key*, const toml::node*>> ordered;
      for (const auto& [hk, hv] : *hosts) ordered.emplace_back(&hk, &hv);
      std::sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) {
        return a.first->source().begin.line < b.first->source().begin.line;
      });
      for (const auto& [hk, hv] : ordered) {
        const toml::table* ht = hv->as_table();
        if (!ht) return Bad(path, hv->source(), StrCat("host.\"", hk->str(), "\" must be a table"));
        HostEndpoint m;
        auto url = EndpointUrl(path, hk->source(), std::string(hk->str()));
        if (!url.ok()) return url.status();
        m.url = *url;
        m.capabilities = kAllCapabilities;
        for (const auto& [mk, mv] : *ht)
          if (auto s = ReadEndpointKey(path, dir, mk.str(), mv, m); !s.ok()) return s;
        c.mirrors.push_back(std::move(m));
      }
    } else {
      if (auto s = ReadEndpointKey(path, dir, key, v, c.server); !s.ok()) return s;
    }
  }
  return c;
}

absl::StatusOr<HostConfig> LoadHostConfig(const std::string& host, const std::string& dir) {
  std::error_code ec;
  for (const std::string& name : {host, std::string("_default")}) {
    if (dir.empty()) break;
    const std::string hdir = (fs::path(dir) / name).string();
    if (!fs::is_directory(hdir, ec)) continue;
    const std::string toml_path = hdir + "/hosts.toml";
    if (fs::exists(toml_path, ec)) {
      std::ifstream in(toml_path, std::ios::binary);
      std::stringstream text;
      text << in.rdbuf();
      if (!in) return absl::PermissionDeniedError(StrCat(toml_path, ": cannot read"));
      return ParseHostsToml(host, text.str(), toml_path);
    }
    HostConfig c;
    c.host = host;
    c.source = hdir;
    c.server.url = DefaultServerUrl(host);
    c.server.capabilities = kAllCapabilities;
    if (auto s = ReadDockerCerts(hdir, c.server); !s.ok()) return s;
    return c;
  }
  HostConfig c;
  c.host = host;
  c.server.url = DefaultServerUrl(host);
  c.server.capabilities = kAllCapabilities;
  return c;
}

}  // namespace d4c::registry
