// Push: one cdimg into a repository. Referrers layout: the runnable image it
// belongs to under the tag, the cdimg attached to that image's manifest.
// Catalog layout (no runnable image): the artifact under the tag, in the catalog.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "d4c/cdimg.h"
#include "d4c/registry/reference.h"
#include "d4c/registry/transfer.h"
#include "d4c/base/digest.h"
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

// ---- referrers layout -----------------------------------------------------

// An OCI media type for a layer a Docker source describes (plain clients and
// the OCI manifest want OCI types; the bytes are the same).
std::string OciLayerType(const std::string& t) {
  if (t == "application/vnd.docker.image.rootfs.diff.tar.gzip") return "application/vnd.oci.image.layer.v1.tar+gzip";
  if (t == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip")
    return "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
  if (t == "application/vnd.docker.image.rootfs.diff.tar" || t.empty()) return "application/vnd.oci.image.layer.v1.tar";
  return t;
}

// Uploads `bytes` as a blob unless the registry has it; true if uploaded.
absl::StatusOr<bool> PutSmallBlob(RegistryApi& r, const std::string& repo, const std::string& digest,
                                  const std::string& bytes) {
  auto has = r.HasBlob(repo, digest);
  if (!has.ok()) return has.status();
  if (*has) return false;
  if (auto s = r.UploadBlobBytes(repo, digest, bytes); !s.ok()) return s;
  return true;
}

// The sha256 of the OCI config a full cdimg stores (the config of the image it
// was converted from, byte for byte).
absl::StatusOr<std::string> CdimgConfigDigest(const std::string& path) {
  auto img = CdimgImage::Open(path);
  if (!img.ok()) return img.status();
  return Sha256Digest(std::string((*img)->config()));
}

// Publishes `o.image` (config, layers, manifest tagged ImageTag) after
// checking that the full cdimg `o.cdimg` was converted from it.
absl::StatusOr<Descriptor> PublishImage(RegistryApi& r, const PushOptions& o, const Artifact& art, PushResult* out) {
  const SourceImage& src = *o.image;
  auto cdimg_config = CdimgConfigDigest(o.cdimg);
  if (!cdimg_config.ok()) return cdimg_config.status();
  std::string config_digest = Sha256Digest(src.config_json());
  if (*cdimg_config != config_digest)
    return absl::InvalidArgumentError(StrCat(o.cdimg, " (image ", art.image_id, ") was not converted from ", src.Describe(),
                                             ": the cdimg holds image config ", *cdimg_config, ", the image has config ",
                                             config_digest, "; pass the image the cdimg was converted from, or convert it "
                                             "again (ctr-cli convert --image ", src.Describe(), ")"));
  auto cu = PutSmallBlob(r, o.repository, config_digest, src.config_json());
  if (!cu.ok()) return With("image config blob", cu.status());
  if (*cu) out->bytes_uploaded += src.config_json().size();
  std::vector<Descriptor> layers;
  std::string scratch = o.scratch_dir.empty() ? std::filesystem::temp_directory_path().string() : o.scratch_dir;
  for (size_t i = 0; i < src.layers().size(); ++i) {
    const Descriptor& l = src.layers()[i];
    std::string what = StrCat(src.Describe(), ": layer ", i, " (", l.digest, ")");
    if (!IsDigestString(l.digest)) return absl::InvalidArgumentError(StrCat(what, ": not a sha256 digest"));
    layers.push_back({OciLayerType(l.media_type), l.digest, l.size});
    auto has = r.HasBlob(o.repository, l.digest);
    if (!has.ok()) return With(what, has.status());
    if (*has) continue;
    std::string staged = StrCat(scratch, "/d4c-push-", ::getpid(), "-", l.digest.substr(7), ".layer");
    auto s = src.WriteLayer(i, staged);
    if (s.ok()) {
      auto got = Sha256DigestOfFile(staged);
      if (!got.ok()) s = got.status();
      else if (*got != l.digest)
        s = absl::DataLossError(StrCat(what, ": the bytes read have ", *got, "; the image is damaged"));
      else s = r.UploadBlobFile(o.repository, l.digest, staged, {});
    }
    std::error_code ec;
    std::filesystem::remove(staged, ec);
    if (!s.ok()) return With(what, s);
    ++out->layers_uploaded;
    out->bytes_uploaded += l.size;
  }
  std::string manifest = ImageManifest({kOciConfigType, config_digest, src.config_json().size()}, layers);
  auto md = r.PutManifest(o.repository, ImageTag(art.image_id), kOciManifestType, manifest);
  if (!md.ok()) return With("image manifest", md.status());
  out->image_published = true;
  return Descriptor{kOciManifestType, *md, manifest.size()};
}

// The image published for `image_id` (tag ImageTag); nullopt if none. Its
// manifest body goes to `body`.
absl::StatusOr<std::optional<Descriptor>> PublishedImage(RegistryApi& r, const std::string& repo,
                                                         const std::string& image_id, std::string* body) {
  auto m = r.GetManifest(repo, ImageTag(image_id));
  if (!m.ok()) return m.status();
  if (!m->has_value()) return std::optional<Descriptor>();
  *body = (*m)->body;
  return std::optional<Descriptor>(Descriptor{kOciManifestType, (*m)->digest, (*m)->body.size()});
}

struct ReferrersUpdate {
  bool changed = false;
  size_t entries = 0;
};

// The referrers tag schema (distribution spec, "Pushing Manifests with
// Subject"): pull the index tagged ReferrersTag(subject) (none: start empty),
// append the artifact's descriptor unless listed, push it back. Like the
// catalog, read back until the entry is there: a concurrent push may have
// written an index without it.
absl::StatusOr<ReferrersUpdate> RecordInReferrersTag(RegistryApi& r, const std::string& repo, const Descriptor& subject,
                                                     const Artifact& art) {
  constexpr int kAttempts = 6;
  std::string tag = ReferrersTag(subject.digest);
  ReferrersUpdate out;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    auto m = r.GetManifest(repo, tag);
    if (!m.ok()) return m.status();
    std::string body = m->has_value() ? (*m)->body : std::string();
    auto updated = AddToReferrersIndex(body, art);
    if (!updated.ok())
      return absl::FailedPreconditionError(StrCat(r.host(), "/", repo, ":", tag, ": ", Msg(updated.status().message()),
                                                  "; it is the referrers tag of ", subject.digest, ", remove or fix it"));
    if (!updated->has_value()) {  // listed (by us, or the push before)
      auto c = ParseReferrers(body);
      out.entries = c.ok() ? c->artifacts.size() : 0;
      return out;
    }
    if (auto put = r.PutManifest(repo, tag, kOciIndexType, **updated); !put.ok()) return put.status();
    out.changed = true;
    auto back = r.GetManifest(repo, tag);
    if (!back.ok()) return back.status();
    if (back->has_value()) {
      auto again = AddToReferrersIndex((*back)->body, art);
      if (again.ok() && !again->has_value()) {
        auto c = ParseReferrers((*back)->body);
        out.entries = c.ok() ? c->artifacts.size() : 0;
        return out;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100 << attempt));
  }
  return absl::AbortedError(StrCat(r.host(), "/", repo, ":", tag, ": the referrers index kept losing this entry to ",
                                   "concurrent pushes (", kAttempts, " attempts); push again"));
}

// Uploads the cdimg blob and its config blob (each unless present).
absl::Status UploadCdimg(RegistryApi& r, const PushOptions& o, const Artifact& art, const std::string& config,
                         PushResult* out) {
  auto has = r.HasBlob(o.repository, art.blob_digest);
  if (!has.ok()) return has.status();
  if (!*has) {
    if (auto s = r.UploadBlobFile(o.repository, art.blob_digest, o.cdimg, o.progress); !s.ok()) return s;
    out->blob_uploaded = true;
    out->bytes_uploaded += art.size;
  }
  auto cu = PutSmallBlob(r, o.repository, Sha256Digest(config), config);
  if (!cu.ok()) return With("config blob", cu.status());
  out->config_uploaded = *cu;
  if (*cu) out->bytes_uploaded += config.size();
  return absl::OkStatus();
}

struct Attached {
  std::string manifest_digest;
  uint64_t manifest_size = 0;
  bool api = false;      // the registry processed the subject (OCI-Subject)
  bool changed = false;  // the referrers tag was written
  size_t entries = 0;    // cdimgs the referrers tag lists afterwards
};

// PUTs the artifact manifest of `a` with `subject` (tag ArtifactTag) and,
// unless the registry keeps referrers itself, lists it in the referrers tag.
// The cdimg and config blobs must be in place.
absl::StatusOr<Attached> Attach(RegistryApi& r, const std::string& repo, const Descriptor& subject, const Artifact& a) {
  std::string config = ArtifactConfig(a);
  std::string manifest = ArtifactManifest(a, Sha256Digest(config), config.size(), &subject);
  auto put = r.PutManifestWithSubject(repo, ArtifactTag(a), kOciManifestType, manifest);
  if (!put.ok()) return With("manifest", put.status());
  Attached out;
  out.manifest_digest = put->digest;
  out.manifest_size = manifest.size();
  out.api = !put->oci_subject.empty();
  if (out.api) return out;
  Artifact listed = a;
  listed.manifest_digest = out.manifest_digest;
  listed.manifest_size = out.manifest_size;
  auto rec = RecordInReferrersTag(r, repo, subject, listed);
  if (!rec.ok()) return With("referrers", rec.status());
  out.changed = rec->changed;
  out.entries = rec->entries;
  return out;
}

// Migration: cdimgs of the catalog layout that lead to `image_id` (pushed
// before the image was published) are attached to the image now published
// for it. Their blobs are in the repository already; only manifests are
// written. Returns how many were attached anew.
absl::StatusOr<size_t> AttachCatalogEntries(RegistryApi& r, const std::string& repo, const Descriptor& subject,
                                            const Artifact& pushed) {
  auto m = r.GetManifest(repo, kCatalogTag);
  if (!m.ok()) return m.status();
  if (!m->has_value()) return size_t{0};
  auto c = ParseCatalog((*m)->body);
  if (!c.ok()) return size_t{0};  // not ours to repair here; pulls of catalog tags report it
  size_t n = 0;
  for (const Artifact& a : c->artifacts) {
    if (a.image_id != pushed.image_id || a.blob_digest == pushed.blob_digest) continue;
    auto has = r.HasBlob(repo, a.blob_digest);
    if (!has.ok()) return has.status();
    if (!*has) continue;  // deleted from the registry: nothing to attach
    std::string config = ArtifactConfig(a);
    if (auto cu = PutSmallBlob(r, repo, Sha256Digest(config), config); !cu.ok()) return cu.status();
    auto at = Attach(r, repo, subject, a);
    if (!at.ok()) return at.status();
    n += at->api || at->changed ? 1 : 0;
  }
  return n;
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

  std::string config = ArtifactConfig(art);
  std::string config_digest = Sha256Digest(config);

  // Referrers layout when there is a runnable image to attach to: the one given
  // with a full cdimg, or the published image a delta leads to.
  std::optional<Descriptor> subject;
  if (art.is_delta()) {
    std::string body;
    auto published = PublishedImage(r, o.repository, art.image_id, &body);
    if (!published.ok()) return With("image " + art.image_id, published.status());
    if (published->has_value() && o.image) {
      auto have = ManifestConfigDigest(body);
      if (!have.ok()) return With(StrCat("tag ", ImageTag(art.image_id)), have.status());
      std::string given = Sha256Digest(o.image->config_json());
      if (*have != given)
        return absl::InvalidArgumentError(StrCat(o.cdimg, " leads to image ", art.image_id, ", published in ", r.host(), "/",
                                                 o.repository, " with config ", *have, ", but ", o.image->Describe(),
                                                 " has config ", given, ": it is another image; pass the image the delta "
                                                 "leads to, or none"));
    }
    if (!published->has_value() && o.image)
      return absl::FailedPreconditionError(StrCat(o.cdimg, " is a delta to image ", art.image_id, ", which ", r.host(), "/",
                                                  o.repository, " does not have as a runnable image yet (tag ",
                                                  ImageTag(art.image_id), "); push the full cdimg of that image with --image ",
                                                  o.image->Describe(), " first (a delta cannot be checked against an image)"));
    subject = *published;
  } else if (o.image) {
    auto published = PublishImage(r, o, art, &out);
    if (!published.ok()) return published.status();
    subject = *published;
  }

  if (auto s = UploadCdimg(r, o, art, config, &out); !s.ok()) return s;
  if (subject) {
    out.referrers_layout = true;
    out.subject = *subject;
    auto at = Attach(r, o.repository, *subject, art);
    if (!at.ok()) return at.status();
    art.manifest_digest = at->manifest_digest;
    art.manifest_size = at->manifest_size;
    out.referrers_api = at->api;
    out.referrers_changed = at->changed;
    out.referrers = at->entries;
    if (out.image_published) {
      auto migrated = AttachCatalogEntries(r, o.repository, *subject, art);
      if (!migrated.ok()) return With("attaching the catalog's cdimgs of this image", migrated.status());
      out.migrated = *migrated;
      if (*migrated && !out.referrers_api) out.referrers += *migrated;
    }
    // TAG moves last, once the image has its cdimg attached.
    if (!o.tag.empty()) {
      std::string body;
      auto image = PublishedImage(r, o.repository, art.image_id, &body);
      if (!image.ok()) return With("tag " + o.tag, image.status());
      if (!image->has_value())
        return absl::NotFoundError(StrCat(r.host(), "/", o.repository, ": tag ", ImageTag(art.image_id), " vanished during the push; push again"));
      if (auto t = r.PutManifest(o.repository, o.tag, kOciManifestType, body); !t.ok())
        return With("tag " + o.tag, t.status());
    }
    return out;
  }

  std::string manifest = ArtifactManifest(art, config_digest, config.size());
  art.manifest_size = manifest.size();
  auto md = r.PutManifest(o.repository, ArtifactTag(art), kOciManifestType, manifest);
  if (!md.ok()) return With("manifest", md.status());
  art.manifest_digest = *md;
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
