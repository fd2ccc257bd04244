#include "d4c/snap/layout.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "d4c/base/strcat.h"
#include "nlohmann/json.hpp"

namespace d4c::snap {

absl::StatusOr<RootMarker> ReadRootMarker(const std::string& root) {
  std::string path = layout::MarkerPath(root);
  std::ifstream f(path);
  if (!f) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
      return absl::NotFoundError(StrCat(path, " does not exist: ", root,
                                        " is not the --root of a di3fs snapshotter that has started"));
    return absl::PermissionDeniedError(StrCat(path, ": cannot read"));
  }
  std::stringstream ss;
  ss << f.rdbuf();
  auto j = nlohmann::json::parse(ss.str(), nullptr, false);
  RootMarker m;
  if (j.is_object() && j.contains("root_id") && j["root_id"].is_string()) {
    m.root_id = j["root_id"].get<std::string>();
    if (j.contains("root") && j["root"].is_string()) m.root = j["root"].get<std::string>();
    if (j.contains("address") && j["address"].is_string()) m.address = j["address"].get<std::string>();
    if (j.contains("pid") && j["pid"].is_number_integer()) m.pid = j["pid"].get<int64_t>();
  }
  if (m.root_id.size() != 32 || m.root_id.find_first_not_of("0123456789abcdef") != std::string::npos)
    return absl::DataLossError(StrCat(path, ": no valid root_id (32 hex digits); restart the snapshotter to rewrite it"));
  return m;
}

absl::StatusOr<RootMarker> WriteRootMarker(const std::string& root, const std::string& address) {
  RootMarker m;
  auto old = ReadRootMarker(root);
  if (old.ok()) {
    m.root_id = old->root_id;
  } else {
    std::random_device rd;
    static const char* hex = "0123456789abcdef";
    for (int i = 0; i < 32; ++i) m.root_id.push_back(hex[rd() % 16]);
  }
  m.root = root;
  m.address = address;
  m.pid = getpid();
  nlohmann::json j = {{"root_id", m.root_id}, {"root", m.root}, {"address", m.address}, {"pid", m.pid}};
  std::string path = layout::MarkerPath(root);
  std::string tmp = StrCat(path, ".tmp-", getpid());
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << j.dump(2) << "\n";
    f.close();
    if (!f) return absl::InternalError(StrCat("write ", tmp, ": cannot write the snapshotter's identity marker"));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    return absl::InternalError(StrCat("rename ", tmp, " to ", path, ": ", ec.message()));
  }
  return m;
}

std::string RootProbeAnswer(const RootMarker& m) {
  return StrCat("di3fs-root-probe root-id=", m.root_id, " root=\"", m.root, "\" pid=", m.pid);
}

bool ParseRootProbeAnswer(const std::string& message, std::string* root, std::string* root_id) {
  static const std::string kHead = "di3fs-root-probe root-id=";
  size_t p = message.find(kHead);
  if (p == std::string::npos) return false;
  p += kHead.size();
  if (p + 32 > message.size()) return false;
  *root_id = message.substr(p, 32);
  size_t r = message.find(" root=\"", p + 32);
  if (r != p + 32) return false;
  r += 7;
  size_t e = message.find('"', r);
  if (e == std::string::npos) return false;
  *root = message.substr(r, e - r);
  return true;
}

}  // namespace d4c::snap
