#include "util.h"

#include "absl/strings/escaping.h"
#include "d4c/base/strcat.h"

namespace d4c::oci_internal {

std::string Quote(std::string_view s) {
  return StrCat("\"", absl::CHexEscape(absl::string_view(s.data(), s.size())), "\"");
}

ScopedCLocale::ScopedCLocale() {
  c_locale_ = newlocale(LC_ALL_MASK, "C", static_cast<locale_t>(0));
  if (c_locale_ != static_cast<locale_t>(0)) previous_ = uselocale(c_locale_);
}

ScopedCLocale::~ScopedCLocale() {
  if (c_locale_ == static_cast<locale_t>(0)) return;
  uselocale(previous_);
  freelocale(c_locale_);
}

absl::StatusOr<nlohmann::json> ParseJson(std::string_view text, std::string_view what) {
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(StrCat(what, ": not valid JSON"));
  return j;
}

const nlohmann::json* JsonField(const nlohmann::json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

std::optional<std::string> JsonString(const nlohmann::json& obj, const char* key) {
  const nlohmann::json* f = JsonField(obj, key);
  if (f == nullptr || !f->is_string()) return std::nullopt;
  return f->get_ref<const std::string&>();
}

std::optional<uint64_t> JsonUint(const nlohmann::json& obj, const char* key) {
  const nlohmann::json* f = JsonField(obj, key);
  if (f == nullptr || !f->is_number_unsigned()) return std::nullopt;
  return f->get<uint64_t>();
}

bool IsLayerMediaType(std::string_view t) {
  return t == "application/vnd.oci.image.layer.v1.tar" || t == "application/vnd.oci.image.layer.v1.tar+gzip" ||
         t == "application/vnd.oci.image.layer.v1.tar+zstd" ||
         t == "application/vnd.oci.image.layer.nondistributable.v1.tar" ||
         t == "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" ||
         t == "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" ||
         t == "application/vnd.docker.image.rootfs.diff.tar.gzip" ||
         t == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" ||
         t == "application/vnd.docker.image.rootfs.diff.tar";
}

bool IsConfigMediaType(std::string_view t) {
  return t == "application/vnd.oci.image.config.v1+json" || t == "application/vnd.docker.container.image.v1+json";
}

bool IsManifestMediaType(std::string_view t) {
  return t == "application/vnd.oci.image.manifest.v1+json" ||
         t == "application/vnd.docker.distribution.manifest.v2+json";
}

bool IsIndexMediaType(std::string_view t) {
  return t == "application/vnd.oci.image.index.v1+json" ||
         t == "application/vnd.docker.distribution.manifest.list.v2+json";
}

}  // namespace d4c::oci_internal
