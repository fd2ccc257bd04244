#include "oci/util.h"

#include "absl/strings/escaping.h"
#include "d4c/strcat.h"

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

Sha256Hasher::Sha256Hasher() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
Sha256Hasher::~Sha256Hasher() { EVP_MD_CTX_free(ctx_); }
void Sha256Hasher::Update(const void* data, size_t n) { EVP_DigestUpdate(ctx_, data, n); }
Digest Sha256Hasher::Final() {
  Digest d;
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_, d.data(), &len);
  return d;
}

absl::StatusOr<Digest> ParseSha256Digest(std::string_view digest, std::string_view what) {
  constexpr std::string_view kPrefix = "sha256:";
  Digest d;
  bool lower_hex = digest.size() == kPrefix.size() + 64 && digest.substr(0, kPrefix.size()) == kPrefix;
  for (size_t i = kPrefix.size(); lower_hex && i < digest.size(); ++i) {
    char c = digest[i];
    lower_hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  }
  if (!lower_hex || !ParseDigestHex(digest.substr(kPrefix.size()), &d))
    return absl::InvalidArgumentError(
        StrCat(what, ": unsupported or malformed digest ", Quote(digest), " (want sha256:<64 hex>)"));
  return d;
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
