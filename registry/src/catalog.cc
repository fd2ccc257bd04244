#include "d4c/registry/catalog.h"

#include <algorithm>
#include <set>

#include "d4c/base/digest.h"
#include "d4c/base/strcat.h"
#include "nlohmann/json.hpp"

namespace d4c::registry {
namespace {

using json = nlohmann::json;

std::string Hex32(const std::string& digest) { return digest.substr(7, 32); }

json Annotations(const Artifact& a) {
  json an = {{kAnnotImageId, a.image_id},
             {kAnnotKind, a.is_delta() ? "delta" : "full"},
             {kAnnotSize, std::to_string(a.size)},
             {kAnnotBlob, a.blob_digest}};
  if (a.is_delta()) an[kAnnotParentId] = a.parent_id;
  return an;
}

// Reads a string member; empty if missing or not a string.
std::string Str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool ParseU64(const std::string& s, uint64_t* out) {
  if (s.empty() || s.size() > 19) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  *out = v;
  return true;
}

// The annotations every catalog entry and artifact manifest carries.
// `image_id`: the id for annotations that do not name one (a descriptor of a
// referrers index we wrote names it once, at the index level). The kind may
// be left out (a parent id makes a delta); if present it must agree.
absl::StatusOr<Artifact> FromAnnotations(const json& an, const std::string& where, const std::string& image_id = "") {
  if (!an.is_object()) return absl::InvalidArgumentError(StrCat(where, ": no annotations"));
  Artifact a;
  a.image_id = Str(an, kAnnotImageId);
  if (a.image_id.empty()) a.image_id = image_id;
  a.parent_id = Str(an, kAnnotParentId);
  a.blob_digest = Str(an, kAnnotBlob);
  std::string kind = an.contains(kAnnotKind) ? Str(an, kAnnotKind) : (a.parent_id.empty() ? "full" : "delta");
  if (!IsDigestString(a.image_id))
    return absl::InvalidArgumentError(StrCat(where, ": annotation ", kAnnotImageId, " is not a sha256 digest"));
  if (kind != "full" && kind != "delta")
    return absl::InvalidArgumentError(StrCat(where, ": annotation ", kAnnotKind, " must be full or delta"));
  if ((kind == "delta") != IsDigestString(a.parent_id))
    return absl::InvalidArgumentError(StrCat(where, ": a delta needs a sha256 ", kAnnotParentId, ", a full image none"));
  if (!a.blob_digest.empty() && !IsDigestString(a.blob_digest))
    return absl::InvalidArgumentError(StrCat(where, ": annotation ", kAnnotBlob, " is not a sha256 digest"));
  if (!ParseU64(Str(an, kAnnotSize), &a.size))
    return absl::InvalidArgumentError(StrCat(where, ": annotation ", kAnnotSize, " is not a byte count"));
  if (a.parent_id == a.image_id) return absl::InvalidArgumentError(StrCat(where, ": a delta from an image to itself"));
  return a;
}

absl::StatusOr<json> ParseObject(std::string_view body, const char* what) {
  if (body.size() > kMaxManifestBytes)
    return absl::InvalidArgumentError(StrCat(what, " is ", body.size(), " bytes, more than the limit ", kMaxManifestBytes));
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(StrCat(what, " is not a JSON object"));
  return j;
}

}  // namespace

std::string ArtifactTag(const Artifact& a) {
  std::string t = "d4c-" + Hex32(a.image_id);
  if (a.is_delta()) t += "-from-" + Hex32(a.parent_id);
  return t;
}

std::string ArtifactConfig(const Artifact& a) {
  json c = {{"imageId", a.image_id}, {"kind", a.is_delta() ? "delta" : "full"}, {"size", a.size}};
  if (a.is_delta()) c["parentId"] = a.parent_id;
  return c.dump();
}

std::string ArtifactManifest(const Artifact& a, const std::string& config_digest, uint64_t config_size,
                             const Descriptor* subject) {
  json layer = {{"mediaType", kCdimgLayerType},
                {"digest", a.blob_digest},
                {"size", a.size},
                {"annotations", {{"org.opencontainers.image.title", a.image_id.substr(7) + ".cdimg"}}}};
  json m = {{"schemaVersion", 2},
            {"mediaType", kOciManifestType},
            {"artifactType", kCdimgArtifactType},
            {"config", {{"mediaType", kCdimgConfigType}, {"digest", config_digest}, {"size", config_size}}},
            {"layers", json::array({layer})},
            {"annotations", Annotations(a)}};
  if (subject)
    m["subject"] = {{"mediaType", subject->media_type}, {"digest", subject->digest}, {"size", subject->size}};
  return m.dump();
}

absl::StatusOr<Artifact> ParseArtifactManifest(std::string_view body, const std::string& digest) {
  std::string where = StrCat("manifest ", digest);
  auto j = ParseObject(body, where.c_str());
  if (!j.ok()) return j.status();
  if (Str(*j, "artifactType") != kCdimgArtifactType) {
    auto cfg = j->find("config");
    if (cfg == j->end() || !cfg->is_object() || Str(*cfg, "mediaType") != kCdimgConfigType)
      return absl::InvalidArgumentError(StrCat(where, " is not a d4c cdimg artifact (a plain container image? pull it with ctr image pull)"));
  }
  auto an = j->find("annotations");
  auto a = FromAnnotations(an == j->end() ? json() : *an, where);
  if (!a.ok()) return a.status();
  auto layers = j->find("layers");
  if (layers == j->end() || !layers->is_array() || layers->size() != 1 || !(*layers)[0].is_object())
    return absl::InvalidArgumentError(StrCat(where, ": needs exactly one layer (the cdimg)"));
  const json& l = (*layers)[0];
  std::string ld = Str(l, "digest");
  auto sz = l.find("size");
  if (!IsDigestString(ld) || sz == l.end() || !sz->is_number_unsigned())
    return absl::InvalidArgumentError(StrCat(where, ": its layer has no sha256 digest or size"));
  if ((!a->blob_digest.empty() && a->blob_digest != ld) || sz->get<uint64_t>() != a->size)
    return absl::InvalidArgumentError(StrCat(where, ": annotations and layer disagree on the cdimg digest or size"));
  a->blob_digest = ld;
  a->manifest_digest = digest;
  a->manifest_size = body.size();
  return a;
}

namespace {

// One descriptor of a referrers list or the catalog: the cdimg it describes.
absl::StatusOr<Artifact> FromDescriptor(const json& m, const std::string& where, const std::string& image_id = "") {
  if (!m.is_object()) return absl::InvalidArgumentError(StrCat(where, ": not an object"));
  auto an = m.find("annotations");
  auto a = FromAnnotations(an == m.end() ? json() : *an, where, image_id);
  if (!a.ok()) return a.status();
  a->manifest_digest = Str(m, "digest");
  auto sz = m.find("size");
  if (!IsDigestString(a->manifest_digest) || sz == m.end() || !sz->is_number_unsigned() || !IsDigestString(a->blob_digest))
    return absl::InvalidArgumentError(StrCat(where, ": needs a manifest digest, a size and the cdimg digest"));
  a->manifest_size = sz->get<uint64_t>();
  return a;
}

// The image id a referrers index we wrote names once for its descriptors
// ("" for an index without one: older pushes, or a registry's answer).
std::string IndexImageId(const json& idx) {
  auto an = idx.find("annotations");
  return an != idx.end() && an->is_object() ? Str(*an, kAnnotImageId) : std::string();
}

// A descriptor in the tag-schema referrers index: the manifest's annotations
// but the kind (a parent id says it) and the image id when the index names it
// (every cdimg attached to one image leads to that image): what a pull reads
// to plan stays under 1 KB for an image with a full cdimg and a delta.
json ReferrerDescriptorOf(const Artifact& a, const std::string& index_image_id) {
  json an = Annotations(a);
  an.erase(kAnnotKind);
  if (a.image_id == index_image_id) an.erase(kAnnotImageId);
  return {{"mediaType", kOciManifestType},
          {"digest", a.manifest_digest},
          {"size", a.manifest_size},
          {"artifactType", kCdimgArtifactType},
          {"annotations", an}};
}

json DescriptorOf(const Artifact& a) {
  return {{"mediaType", kOciManifestType},
          {"digest", a.manifest_digest},
          {"size", a.manifest_size},
          {"artifactType", kCdimgArtifactType},
          {"annotations", Annotations(a)}};
}

}  // namespace

bool Catalog::Add(const Artifact& a) {
  for (auto& x : artifacts) {
    if (x.manifest_digest == a.manifest_digest) {
      bool same = x == a;
      x = a;
      return !same;
    }
  }
  artifacts.push_back(a);
  return true;
}

std::string SerializeCatalog(const Catalog& c) {
  json ms = json::array();
  for (const auto& a : c.artifacts) ms.push_back(DescriptorOf(a));
  json idx = {{"schemaVersion", 2},
              {"mediaType", kOciIndexType},
              {"artifactType", kCatalogArtifactType},
              {"manifests", ms},
              {"annotations", {{"org.opencontainers.image.description", "d4c catalog: cdimg images and deltas"}}}};
  return idx.dump();
}

absl::StatusOr<Catalog> ParseCatalog(std::string_view body) {
  auto j = ParseObject(body, "catalog");
  if (!j.ok()) return j.status();
  if (Str(*j, "artifactType") != kCatalogArtifactType)
    return absl::InvalidArgumentError(StrCat("tag ", kCatalogTag, " is not a d4c catalog (artifactType)"));
  auto ms = j->find("manifests");
  if (ms == j->end() || !ms->is_array()) return absl::InvalidArgumentError("catalog: no manifests array");
  Catalog c;
  for (size_t i = 0; i < ms->size(); ++i) {
    auto a = FromDescriptor((*ms)[i], StrCat("catalog entry ", i));
    if (!a.ok()) return a.status();
    c.artifacts.push_back(*a);
  }
  return c;
}

absl::StatusOr<std::vector<std::string>> ParseTagList(std::string_view body) {
  auto j = ParseObject(body, "tag list");
  if (!j.ok()) return j.status();
  std::vector<std::string> tags;
  auto t = j->find("tags");
  if (t == j->end() || t->is_null()) return tags;  // a repository without tags
  if (!t->is_array()) return absl::InvalidArgumentError("tag list: \"tags\" is not an array");
  for (const json& x : *t) {
    if (!x.is_string()) return absl::InvalidArgumentError("tag list: a tag is not a string");
    tags.push_back(x.get<std::string>());
  }
  return tags;
}

std::optional<std::string> NextPageFromLink(std::string_view link) {
  size_t open = link.find('<'), close = link.find('>');
  if (open == std::string_view::npos || close == std::string_view::npos || close < open) return std::nullopt;
  if (link.find("rel=\"next\"", close) == std::string_view::npos && link.find("rel=next", close) == std::string_view::npos)
    return std::nullopt;
  std::string_view target = link.substr(open + 1, close - open - 1);
  if (target.rfind("/v2/", 0) != 0 || target.find("://") != std::string_view::npos) return std::nullopt;
  for (char ch : target)
    if (static_cast<unsigned char>(ch) <= ' ' || ch == 0x7f) return std::nullopt;
  return std::string(target);
}

namespace {

bool IsHex32(std::string_view s) {
  return s.size() == 32 && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// "d4c-<32 hex>" or "d4c-<32 hex>-from-<32 hex>"
bool IsArtifactTag(std::string_view t) {
  if (t.rfind("d4c-", 0) != 0) return false;
  t.remove_prefix(4);
  if (t.size() == 32) return IsHex32(t);
  return t.size() == 32 + 6 + 32 && IsHex32(t.substr(0, 32)) && t.substr(32, 6) == "-from-" && IsHex32(t.substr(38));
}

}  // namespace

std::vector<std::string> UncataloguedArtifactTags(const Catalog& c, const std::vector<std::string>& tags) {
  std::set<std::string> known;
  for (const Artifact& a : c.artifacts) known.insert(ArtifactTag(a));
  std::vector<std::string> out;
  for (const std::string& t : tags)
    if (IsArtifactTag(t) && !known.count(t)) out.push_back(t);
  return out;
}

// ---- referrers layout ---------------------------------------------------------

std::string ImageTag(const std::string& image_id) { return "d4c-image-" + Hex32(image_id); }

std::string ReferrersTag(const std::string& digest) {
  // sha256 digests only: "sha256-" + the 64 hex digits (all tag characters).
  auto colon = digest.find(':');
  return digest.substr(0, colon) + "-" + digest.substr(colon + 1, 64);
}

std::string ImageManifest(const Descriptor& config, const std::vector<Descriptor>& layers) {
  json ls = json::array();
  for (const Descriptor& l : layers) ls.push_back({{"mediaType", l.media_type}, {"digest", l.digest}, {"size", l.size}});
  json m = {{"schemaVersion", 2},
            {"mediaType", kOciManifestType},
            {"config", {{"mediaType", config.media_type}, {"digest", config.digest}, {"size", config.size}}},
            {"layers", ls}};
  return m.dump();
}

absl::StatusOr<std::string> ManifestConfigDigest(std::string_view body) {
  auto j = ParseObject(body, "image manifest");
  if (!j.ok()) return j.status();
  auto cfg = j->find("config");
  std::string d = cfg != j->end() && cfg->is_object() ? Str(*cfg, "digest") : "";
  if (!IsDigestString(d)) return absl::InvalidArgumentError("image manifest: no sha256 config digest");
  return d;
}

bool IsCdimgArtifactManifest(std::string_view body) {
  auto j = ParseObject(body, "manifest");
  if (!j.ok()) return false;
  if (Str(*j, "artifactType") == kCdimgArtifactType) return true;
  auto cfg = j->find("config");
  return cfg != j->end() && cfg->is_object() && Str(*cfg, "mediaType") == kCdimgConfigType;
}

absl::StatusOr<Catalog> ParseReferrers(std::string_view body) {
  auto j = ParseObject(body, "referrers list");
  if (!j.ok()) return j.status();
  auto ms = j->find("manifests");
  if (ms == j->end() || !ms->is_array()) return absl::InvalidArgumentError("referrers list: no manifests array (not an image index)");
  Catalog c;
  std::string index_image_id = IndexImageId(*j);
  for (size_t i = 0; i < ms->size(); ++i) {
    const json& m = (*ms)[i];
    if (!m.is_object() || Str(m, "artifactType") != kCdimgArtifactType) continue;  // a signature, an SBOM, ...
    auto a = FromDescriptor(m, StrCat("referrer ", i, " (", Str(m, "digest"), ")"), index_image_id);
    if (!a.ok()) return absl::InvalidArgumentError(StrCat("referrers list: ", Msg(a.status().message())));
    c.Add(*a);
  }
  return c;
}

absl::StatusOr<std::optional<std::string>> AddToReferrersIndex(std::string_view index, const Artifact& a) {
  json idx = {{"schemaVersion", 2}, {"mediaType", kOciIndexType}, {"manifests", json::array()}};
  if (!index.empty()) {
    auto j = ParseObject(index, "referrers index");
    if (!j.ok()) return j.status();
    auto ms = j->find("manifests");
    if (ms == j->end() || !ms->is_array())
      return absl::InvalidArgumentError("the referrers tag holds something other than an image index");
    for (const json& m : *ms)
      if (m.is_object() && Str(m, "digest") == a.manifest_digest) return std::optional<std::string>();
    idx = std::move(*j);
  }
  // The image id, once for the index. An index written before that (every
  // descriptor naming its id and kind) is rewritten in the short form.
  std::string index_image_id = IndexImageId(idx);
  if (index_image_id.empty()) {
    index_image_id = a.image_id;
    if (!idx.contains("annotations") || !idx["annotations"].is_object()) idx["annotations"] = json::object();
    idx["annotations"][kAnnotImageId] = index_image_id;
    for (json& m : idx["manifests"]) {
      if (!m.is_object() || Str(m, "artifactType") != kCdimgArtifactType) continue;
      auto old = FromDescriptor(m, "referrer");
      if (old.ok()) m = ReferrerDescriptorOf(*old, index_image_id);
    }
  }
  idx["manifests"].push_back(ReferrerDescriptorOf(a, index_image_id));
  return std::optional<std::string>(idx.dump());
}

}  // namespace d4c::registry
