// Push: one cdimg into a repository, then into its catalog.
#include <chrono>
#include <thread>

#include "d4c/cdimg.h"
#include "d4c/registry/reference.h"
#include "d4c/registry/transfer.h"
#include "d4c/base/strcat.h"

namespace d4c::registry {
namespace {

// `s` with "what: " in front of its message, code kept.
absl::Status With(const std::string& what, const absl::Status& s) {
  return absl::Status(s.code(), StrCat(what, ": ", Msg(s.message())));
}

struct CatalogMerge {
  bool changed = false;
  size_t entries = 0;
  size_t adopted = 0;  // artifacts found by tag that the catalog had lost
};

// Adds to `c` the artifacts behind `tags` (their manifests say what they are).
absl::StatusOr<size_t> AdoptTagged(RegistryApi& r, const std::string& repo, const std::vector<std::string>& tags,
                                   Catalog* c) {
  size_t n = 0;
  for (const std::string& t : tags) {
    auto m = r.GetManifest(repo, t);
    if (!m.ok()) return m.status();
    if (!m->has_value()) continue;  // deleted meanwhile
    auto a = ParseArtifactManifest((*m)->body, (*m)->digest);
    if (!a.ok()) continue;  // a tag of our form on something else: not ours to list
    a->manifest_size = (*m)->body.size();
    n += c->Add(*a) ? 1 : 0;
  }
  return n;
}

// The registry has no compare-and-swap for tags, so two pushes to one
// repository can each write a catalog without the other's entry. Every push
// therefore re-lists artifacts that are tagged but missing (repairing an
// earlier race), writes, and reads the catalog back until its entry is there.
absl::StatusOr<CatalogMerge> RecordInCatalog(RegistryApi& r, const std::string& repo, const Artifact& art) {
  constexpr int kAttempts = 6;
  CatalogMerge out;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    auto catalog = FetchCatalog(r, repo);
    if (!catalog.ok()) return catalog.status();
    bool added = catalog->Add(art);
    auto tags = r.ListTags(repo);
    if (!tags.ok()) return tags.status();
    auto adopted = AdoptTagged(r, repo, UncataloguedArtifactTags(*catalog, *tags), &*catalog);
    if (!adopted.ok()) return adopted.status();
    out.changed |= added || *adopted > 0;
    out.adopted += *adopted;
    out.entries = catalog->artifacts.size();
    if (!added && *adopted == 0) return out;  // nothing to write: our entry is there
    auto put = r.PutManifest(repo, kCatalogTag, kOciIndexType, SerializeCatalog(*catalog));
    if (!put.ok()) return put.status();
    auto back = FetchCatalog(r, repo);
    if (!back.ok()) return back.status();
    Catalog check = *back;
    if (!check.Add(art)) return out;  // ours is listed: done (another writer may add more)
    std::this_thread::sleep_for(std::chrono::milliseconds(100 << attempt));
  }
  return absl::AbortedError(StrCat(r.host(), "/", repo, ": the catalog kept losing this entry to concurrent pushes (",
                                   kAttempts, " attempts); the artifact is pushed and tagged ", ArtifactTag(art),
                                   ", push again to list it"));
}

}  // namespace

absl::StatusOr<Catalog> FetchCatalog(RegistryApi& r, const std::string& repo) {
  auto m = r.GetManifest(repo, kCatalogTag);
  if (!m.ok()) return m.status();
  if (!m->has_value()) return Catalog{};
  auto c = ParseCatalog((*m)->body);
  if (!c.ok()) return absl::DataLossError(StrCat(r.host(), "/", repo, ":", kCatalogTag, ": ", Msg(c.status().message())));
  return c;
}

absl::StatusOr<PushResult> Push(const PushOptions& o, RegistryApi& r) {
  if (o.repository.empty()) return absl::InvalidArgumentError("push: no repository given (NAME or NAME:TAG)");
  if (!IsValidRepository(o.repository))
    return absl::InvalidArgumentError(StrCat("'", o.repository, "' is not a repository name"));
  if (!o.tag.empty() && !IsValidTag(o.tag)) return absl::InvalidArgumentError(StrCat("'", o.tag, "' is not a tag"));
  auto header = CdimgImage::ReadHeader(o.cdimg);
  if (!header.ok()) return header.status();
  auto digest = Sha256DigestOfFile(o.cdimg);
  if (!digest.ok()) return digest.status();
  PushResult out;
  Artifact& art = out.artifact;
  art.image_id = "sha256:" + DigestHex(header->image_id);
  if (header->is_delta) art.parent_id = "sha256:" + DigestHex(header->parent_id);
  art.size = header->file_size;
  art.blob_digest = *digest;

  auto has = r.HasBlob(o.repository, art.blob_digest);
  if (!has.ok()) return has.status();
  if (!*has) {
    if (auto s = r.UploadBlobFile(o.repository, art.blob_digest, o.cdimg, o.progress); !s.ok()) return s;
    out.blob_uploaded = true;
    out.bytes_uploaded += art.size;
  }
  std::string config = ArtifactConfig(art);
  std::string config_digest = Sha256Digest(config);
  auto has_config = r.HasBlob(o.repository, config_digest);
  if (!has_config.ok()) return With("config blob", has_config.status());
  if (!*has_config) {
    if (auto s = r.UploadBlobBytes(o.repository, config_digest, config); !s.ok()) return With("config blob", s);
    out.config_uploaded = true;
    out.bytes_uploaded += config.size();
  }
  std::string manifest = ArtifactManifest(art, config_digest, config.size());
  auto md = r.PutManifest(o.repository, ArtifactTag(art), kOciManifestType, manifest);
  if (!md.ok()) return With("manifest", md.status());
  art.manifest_digest = *md;
  art.manifest_size = manifest.size();
  if (!o.tag.empty()) {
    if (auto t = r.PutManifest(o.repository, o.tag, kOciManifestType, manifest); !t.ok())
      return With("tag " + o.tag, t.status());
  }
  auto merged = RecordInCatalog(r, o.repository, art);
  if (!merged.ok()) return With("catalog", merged.status());
  out.catalog_changed = merged->changed;
  out.catalog_entries = merged->entries;
  out.catalog_adopted = merged->adopted;
  return out;
}

}  // namespace d4c::registry
