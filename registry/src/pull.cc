// Pull: the cheapest chain to NAME:TAG from what the caller holds, downloaded,
// checked, then handed to the caller's ImageSink. Planning reads the image's
// referrers list (referrers layout) or the repository catalog (catalog layout).
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "d4c/cdimg.h"
#include "d4c/registry/download_dir.h"
#include "d4c/registry/reference.h"
#include "d4c/registry/transfer.h"
#include "d4c/base/digest.h"
#include "d4c/base/strcat.h"

namespace d4c::registry {
namespace {

// The artifact a tag points at. A HEAD gives the manifest digest; the
// catalog usually describes that manifest already, so its body is fetched
// only when it does not (a tag set by another tool, an older catalog).
absl::StatusOr<Artifact> ResolveTag(RegistryApi& r, const NameTag& nt, const Catalog& catalog, uint64_t* bytes) {
  auto not_found = [&] {
    return absl::NotFoundError(StrCat("tag ", nt.name, ":", nt.tag, " does not exist on ", r.host()));
  };
  auto digest = r.ManifestDigest(nt.name, nt.tag);
  if (digest.ok() && !digest->has_value()) return not_found();
  if (digest.ok()) {
    for (const auto& a : catalog.artifacts)
      if (a.manifest_digest == **digest) return a;
  }
  auto m = r.GetManifest(nt.name, nt.tag);
  if (!m.ok()) return m.status();
  if (!m->has_value()) return not_found();
  *bytes += (*m)->body.size();
  if (!IsCdimgArtifactManifest((*m)->body))
    return absl::NotFoundError(StrCat(r.host(), "/", nt.name, ":", nt.tag, " (", (*m)->digest, ") is an image with no cdimgs "
                                      "attached (no d4c referrers): pull it with a plain client (ctr image pull), or push "
                                      "its cdimg with ctr-cli push --image"));
  return ParseArtifactManifest((*m)->body, (*m)->digest);
}

// The referrers list of manifest `digest`: the referrers API, else (404) the
// index under the referrers tag schema, else none (an empty list).
absl::StatusOr<Catalog> FetchReferrers(RegistryApi& r, const std::string& repo, const std::string& digest,
                                       uint64_t* bytes) {
  auto api = r.GetReferrers(repo, digest, kCdimgArtifactType);
  if (!api.ok()) return api.status();
  std::string body;
  std::string where = StrCat(r.host(), "/", repo, ": referrers of ", digest);
  if (api->has_value()) {
    body = **api;
  } else {
    auto m = r.GetManifest(repo, ReferrersTag(digest));
    if (!m.ok()) return m.status();
    if (!m->has_value()) return Catalog{};
    body = (*m)->body;
    where = StrCat(r.host(), "/", repo, ":", ReferrersTag(digest));
  }
  *bytes += body.size();
  auto c = ParseReferrers(body);
  if (!c.ok()) {
    if (!api->has_value()) return Catalog{};  // the spec: a tag that is no valid index means no referrers
    return absl::DataLossError(StrCat(where, ": ", Msg(c.status().message())));
  }
  return c;
}

// Downloads step `s` into `dir`; checks that the file is the image it claims to be.
// `source` names the document that described the step ("the registry's catalog", ...).
absl::StatusOr<std::string> DownloadStep(RegistryApi& r, const std::string& repo, const Artifact& s,
                                         const std::string& dir, const PullOptions& o, const std::string& source,
                                         uint64_t* fetched) {
  if (!IsDigestString(s.blob_digest))
    return absl::DataLossError(StrCat(r.host(), "/", repo, ": ", source, " names blob '", s.blob_digest, "' for image ",
                                      s.image_id, "; not a sha256 digest"));
  std::string path = StrCat(dir, "/", s.blob_digest.substr(7), ".cdimg");
  ProgressFn progress;
  if (o.progress) progress = [&](uint64_t d, uint64_t t) { o.progress(s, d, t); };
  auto n = r.DownloadBlob(repo, s.blob_digest, s.size, path, progress);
  if (!n.ok()) return n.status();
  *fetched += *n;
  auto h = CdimgImage::ReadHeader(path);
  if (!h.ok()) return h.status();
  std::string id = "sha256:" + DigestHex(h->image_id);
  std::string parent = h->is_delta ? "sha256:" + DigestHex(h->parent_id) : "";
  if (id != s.image_id || parent != s.parent_id)
    return absl::DataLossError(StrCat(path, " (", s.blob_digest, ") is image ", id, " from '", parent,
                                      "', but ", source, " says ", s.image_id, " from '", s.parent_id, "'"));
  return path;
}

std::string Mb(uint64_t b) { return StrCat((b + (1 << 20) - 1) >> 20, " MB"); }

// The disk check (PullOptions::store_dir): before any download.
absl::Status CheckPlanFits(const PullOptions& o, const PullPlan& plan) {
  uint64_t download = 0, store = 0, largest = 0;
  for (const auto& s : plan.steps) {
    std::string base = StrCat(o.download_dir, "/", s.blob_digest.substr(s.blob_digest.find(':') + 1), ".cdimg");
    std::error_code ec;
    uint64_t have = 0;  // what an earlier pull left: counted as there already
    if (std::filesystem::exists(base, ec)) have = s.size;
    else if (auto n = std::filesystem::file_size(base + ".partial", ec); !ec) have = n;
    download += s.size > have ? s.size - have : 0;
    store += s.size;
    largest = std::max(largest, s.size);
  }
  auto space = [&](const std::string& p) { return o.fs_space ? o.fs_space(p) : StatFsSpace(p); };
  auto dl = space(o.download_dir);
  if (!dl.ok()) return dl.status();
  const char* fix = "; free space with `ctr-cli prune` (unused images and old downloads), or pull into another --download-dir";
  if (o.store_dir.empty()) {
    if (dl->free_bytes < download + o.space_margin)
      return absl::ResourceExhaustedError(StrCat("not enough disk space: the plan needs ", Mb(download), " in ", o.download_dir,
                                                 " (download, plus ", Mb(o.space_margin), " margin), ", Mb(dl->free_bytes),
                                                 " free there", fix));
    return absl::OkStatus();
  }
  auto st = space(o.store_dir);
  if (!st.ok()) return st.status();
  if (dl->device == st->device) {
    uint64_t peak = download + largest;
    if (dl->free_bytes < peak + o.space_margin)
      return absl::ResourceExhaustedError(StrCat("not enough disk space: the plan needs ", Mb(download), " in ", o.download_dir,
                                                 " (download) and ", Mb(store), " in ", o.store_dir, " (store), one filesystem (",
                                                 Mb(peak), " at the peak, plus ", Mb(o.space_margin), " margin), ",
                                                 Mb(dl->free_bytes), " free", fix));
    return absl::OkStatus();
  }
  if (dl->free_bytes < download + o.space_margin || st->free_bytes < store + o.space_margin)
    return absl::ResourceExhaustedError(StrCat("not enough disk space: the plan needs ", Mb(download), " in ", o.download_dir,
                                               " (download), ", Mb(dl->free_bytes), " free there, and ", Mb(store), " in ",
                                               o.store_dir, " (store), ", Mb(st->free_bytes), " free there (each plus ",
                                               Mb(o.space_margin), " margin)", fix));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<FsSpace> StatFsSpace(const std::string& path) {
  std::filesystem::path p(path);
  for (;;) {
    struct statvfs v;
    struct stat s;
    if (::statvfs(p.c_str(), &v) == 0 && ::stat(p.c_str(), &s) == 0)
      return FsSpace{static_cast<uint64_t>(v.f_bavail) * v.f_frsize, static_cast<uint64_t>(s.st_dev)};
    int err = errno;
    if (err != ENOENT || !p.has_parent_path() || p.parent_path() == p)
      return absl::FailedPreconditionError(StrCat(path, ": cannot read its filesystem's free space (statvfs: ",
                                                  std::strerror(err), ")"));
    p = p.parent_path();
  }
}

absl::StatusOr<PullResult> Pull(const PullOptions& o, RegistryApi& r, LocalImages& local, ImageSink& sink) {
  absl::StatusOr<NameTag> nt;
  if (o.digest.empty()) {
    nt = ParseNameTag(o.image);
  } else if (!IsValidRepository(o.image)) {
    nt = absl::InvalidArgumentError(StrCat("'", o.image, "' is not a repository name"));
  } else if (!IsDigestString(o.digest)) {
    nt = absl::InvalidArgumentError(StrCat("'", o.digest, "' is not a sha256 manifest digest"));
  } else {
    nt = NameTag{o.image, ""};
  }
  if (!nt.ok()) return nt.status();
  PullResult out;
  out.repository = nt->name;
  out.tag = nt->tag;
  Catalog catalog;
  auto not_found = [&] {
    return absl::NotFoundError(StrCat("tag ", nt->name, ":", nt->tag, " does not exist on ", r.host()));
  };
  // The manifest digest TAG names: a HEAD, or (a registry whose HEAD gives no
  // Docker-Content-Digest) the manifest itself.
  std::optional<std::string> digest;
  if (!o.digest.empty()) {
    digest = o.digest;
  } else if (auto head = r.ManifestDigest(nt->name, nt->tag); head.ok()) {
    if (!head->has_value()) return not_found();
    digest = **head;
  } else {
    auto m = r.GetManifest(nt->name, nt->tag);
    if (!m.ok()) return head.status();
    if (!m->has_value()) return not_found();
    out.plan_document_bytes += (*m)->body.size();
    digest = (*m)->digest;
  }
  auto refs = FetchReferrers(r, nt->name, *digest, &out.plan_document_bytes);
  if (!refs.ok()) return refs.status();
  if (!refs->artifacts.empty()) {
    // Referrers layout: every cdimg listed leads to the image TAG names.
    out.referrers_layout = true;
    out.subject = *digest;
    const Artifact* full = nullptr;
    for (const auto& a : refs->artifacts)
      if (!a.is_delta() && (!full || a.size < full->size)) full = &a;
    const Artifact& first = full ? *full : refs->artifacts.front();
    for (const auto& a : refs->artifacts)
      if (a.image_id != first.image_id)
        return absl::DataLossError(StrCat(r.host(), "/", nt->name, ":", nt->tag, " (", *digest, ") has cdimgs of two images "
                                          "attached: ", first.image_id, " and ", a.image_id, " (manifest ", a.manifest_digest,
                                          "); remove the wrong one from its referrers"));
    out.wanted = first;
    catalog = std::move(*refs);
  } else if (!o.digest.empty()) {
    return absl::NotFoundError(StrCat(r.host(), "/", nt->name, "@", o.digest, " has no cdimgs attached (no d4c referrers)"));
  } else {
    // Catalog layout: TAG names a cdimg artifact and the catalog lists them all.
    auto m = r.GetManifest(nt->name, kCatalogTag);
    if (!m.ok()) return m.status();
    if (m->has_value()) {
      out.plan_document_bytes += (*m)->body.size();
      auto c = ParseCatalog((*m)->body);
      if (!c.ok())
        return absl::DataLossError(StrCat(r.host(), "/", nt->name, ":", kCatalogTag, ": ", Msg(c.status().message())));
      catalog = std::move(*c);
    }
    auto want = ResolveTag(r, *nt, catalog, &out.plan_document_bytes);
    if (!want.ok()) return want.status();
    out.wanted = *want;
    catalog.Add(*want);
  }
  auto held = local.ImageIds();
  if (!held.ok()) return held.status();
  out.local_images = held->size();
  auto plan = PlanPull(catalog, *held, out.wanted.image_id);
  if (!plan.ok()) return plan.status();
  out.plan = std::move(*plan);
  for (const auto& x : catalog.artifacts)
    if (!x.is_delta() && x.image_id == out.wanted.image_id && (!out.full_image_size || x.size < out.full_image_size))
      out.full_image_size = x.size;
  if (o.planned) o.planned(out);
  if (o.dry_run) return out;

  std::vector<std::string> files;
  if (!out.plan.steps.empty()) {
    if (o.download_dir.empty()) return absl::InvalidArgumentError("pull: no download directory given");
    std::error_code ec;
    std::filesystem::create_directories(o.download_dir, ec);
    if (ec) return absl::PermissionDeniedError(StrCat(o.download_dir, ": cannot create (", ec.message(), ")"));
    // What earlier pulls left is bounded; the files this plan resumes stay.
    std::set<std::string> resume;
    for (const auto& s : out.plan.steps) {
      std::string f = StrCat(s.blob_digest.substr(s.blob_digest.find(':') + 1), ".cdimg");
      resume.insert(f);
      resume.insert(f + ".partial");
    }
    PruneDownloadDir(o.download_dir, o.download_limits, resume);
    if (auto s = CheckPlanFits(o, out.plan); !s.ok()) return s;
  }
  for (const auto& s : out.plan.steps) {
    auto path = DownloadStep(r, nt->name, s, o.download_dir, o,
                             out.referrers_layout ? "the image's referrers list" : "the registry's catalog",
                             &out.bytes_downloaded);
    if (!path.ok()) return path.status();
    files.push_back(std::move(*path));
  }
  // Everything is here and checked: hand over in apply order.
  if (files.empty()) {
    if (auto s = sink.AcceptHeld(out.wanted.image_id); !s.ok()) return s;
  }
  for (size_t i = 0; i < files.size(); ++i) {
    if (auto s = sink.Accept(files[i], out.plan.steps[i], i + 1 == files.size()); !s.ok()) return s;
    ::unlink(files[i].c_str());  // the sink has its copy (or moved it away)
  }
  out.handed_over = true;
  return out;
}

}  // namespace d4c::registry
