// Pull: the cheapest chain to NAME:TAG from what the caller holds, downloaded,
// checked, then handed to the caller's ImageSink.
#include <unistd.h>

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
absl::StatusOr<Artifact> ResolveTag(RegistryApi& r, const NameTag& nt, const Catalog& catalog) {
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
  return ParseArtifactManifest((*m)->body, (*m)->digest);
}

// Downloads step `s` into `dir`; checks that the file is the image it claims to be.
absl::StatusOr<std::string> DownloadStep(RegistryApi& r, const std::string& repo, const Artifact& s,
                                         const std::string& dir, const PullOptions& o, uint64_t* fetched) {
  if (!IsDigestString(s.blob_digest))
    return absl::DataLossError(StrCat(r.host(), "/", repo, ": the catalog names blob '", s.blob_digest, "' for image ",
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
                                      "', but the registry's catalog says ", s.image_id, " from '", s.parent_id, "'"));
  return path;
}

}  // namespace

absl::StatusOr<PullResult> Pull(const PullOptions& o, RegistryApi& r, LocalImages& local, ImageSink& sink) {
  auto nt = ParseNameTag(o.image);
  if (!nt.ok()) return nt.status();
  PullResult out;
  out.repository = nt->name;
  out.tag = nt->tag;
  auto catalog = FetchCatalog(r, nt->name);
  if (!catalog.ok()) return catalog.status();
  auto want = ResolveTag(r, *nt, *catalog);
  if (!want.ok()) return want.status();
  out.wanted = *want;
  catalog->Add(*want);
  auto held = local.ImageIds();
  if (!held.ok()) return held.status();
  out.local_images = held->size();
  auto plan = PlanPull(*catalog, *held, want->image_id);
  if (!plan.ok()) return plan.status();
  out.plan = std::move(*plan);
  for (const auto& x : catalog->artifacts)
    if (!x.is_delta() && x.image_id == want->image_id && (!out.full_image_size || x.size < out.full_image_size))
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
  }
  for (const auto& s : out.plan.steps) {
    auto path = DownloadStep(r, nt->name, s, o.download_dir, o, &out.bytes_downloaded);
    if (!path.ok()) return path.status();
    files.push_back(std::move(*path));
  }
  // Everything is here and checked: hand over in apply order.
  if (files.empty()) {
    if (auto s = sink.AcceptHeld(want->image_id); !s.ok()) return s;
  }
  for (size_t i = 0; i < files.size(); ++i) {
    if (auto s = sink.Accept(files[i], out.plan.steps[i], i + 1 == files.size()); !s.ok()) return s;
    ::unlink(files[i].c_str());  // the sink has its copy (or moved it away)
  }
  out.handed_over = true;
  return out;
}

}  // namespace d4c::registry
