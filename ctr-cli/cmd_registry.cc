// ctr-cli push / pull: cdimgs through an OCI distribution registry
// (docs/registry.md). push uploads one cdimg as an artifact and records it in
// the repository's catalog; pull plans the cheapest chain from the images the
// snapshotter store already has, downloads it (resumable, digest-checked) and
// loads the result like `ctr-cli load`.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "cli_util.h"
#include "commands.h"
#include "d4c/cdimg.h"
#include "d4c/registry/catalog.h"
#include "d4c/registry/pull_plan.h"
#include "d4c/registry/reference.h"
#include "d4c/registry/registry_client.h"
#include "d4c/snap/image_store.h"
#include "d4c/snap/load.h"

namespace d4c::cli {
namespace {

using registry::Artifact;
using registry::RegistryClient;

struct RegistryArgs {
  std::string host;
  bool plain_http = false;
  std::string user;  // USER[:PASSWORD]; the password may also come from D4C_REGISTRY_PASSWORD
  int attempts = 5;
};

void AddRegistryOptions(CLI::App* c, RegistryArgs* r) {
  c->add_flag("--plain-http", r->plain_http, "Talk HTTP, not HTTPS (a registry on loopback)");
  c->add_option("--user,-u", r->user,
                "USER[:PASSWORD] for the registry (password also from $D4C_REGISTRY_PASSWORD); "
                "default: ~/.docker/config.json");
  c->add_option("--retries", r->attempts, "Attempts per request on network errors and 5xx")
      ->capture_default_str()->check(CLI::Range(1, 100));
}

absl::StatusOr<std::unique_ptr<RegistryClient>> Connect(const RegistryArgs& a, uint64_t chunk_size = 0,
                                                        uint64_t max_rate = 0) {
  registry::RegistryOptions o;
  o.host = a.host;
  o.plain_http = a.plain_http;
  o.attempts = a.attempts;
  o.max_bytes_per_second = max_rate;
  if (chunk_size) o.chunk_size = chunk_size;
  if (!a.user.empty()) {
    auto colon = a.user.find(':');
    o.credentials.user = a.user.substr(0, colon);
    if (colon != std::string::npos) o.credentials.password = a.user.substr(colon + 1);
    else if (const char* p = std::getenv("D4C_REGISTRY_PASSWORD")) o.credentials.password = p;
  } else if (auto c = registry::DockerConfigCredentials(a.host)) {
    o.credentials = *c;
  }
  return RegistryClient::Create(std::move(o));
}

std::string Short(const std::string& id) { return id.substr(0, 19); }

// The repository's catalog; empty if the tag does not exist yet.
absl::StatusOr<registry::Catalog> FetchCatalog(RegistryClient& client, const std::string& repo) {
  auto m = client.GetManifest(repo, registry::kCatalogTag);
  if (!m.ok()) return m.status();
  if (!m->has_value()) return registry::Catalog{};
  auto c = registry::ParseCatalog((*m)->body);
  if (!c.ok()) return absl::DataLossError(StrCat(client.options().host, "/", repo, ":", registry::kCatalogTag, ": ", Msg(c.status().message())));
  return c;
}

struct CatalogMerge {
  bool changed = false;
  size_t entries = 0;
  size_t adopted = 0;  // artifacts found by tag that the catalog had lost
};

// Adds to `c` the artifacts behind `tags` (their manifests say what they are).
absl::StatusOr<size_t> AdoptTagged(RegistryClient& client, const std::string& repo,
                                   const std::vector<std::string>& tags, registry::Catalog* c) {
  size_t n = 0;
  for (const std::string& t : tags) {
    auto m = client.GetManifest(repo, t);
    if (!m.ok()) return m.status();
    if (!m->has_value()) continue;  // deleted meanwhile
    auto a = registry::ParseArtifactManifest((*m)->body, (*m)->digest);
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
absl::StatusOr<CatalogMerge> RecordInCatalog(RegistryClient& client, const std::string& repo, const Artifact& art) {
  constexpr int kAttempts = 6;
  CatalogMerge out;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    auto catalog = FetchCatalog(client, repo);
    if (!catalog.ok()) return catalog.status();
    bool added = catalog->Add(art);
    auto tags = client.ListTags(repo);
    if (!tags.ok()) return tags.status();
    auto adopted = AdoptTagged(client, repo, registry::UncataloguedArtifactTags(*catalog, *tags), &*catalog);
    if (!adopted.ok()) return adopted.status();
    out.changed |= added || *adopted > 0;
    out.adopted += *adopted;
    out.entries = catalog->artifacts.size();
    if (!added && *adopted == 0) return out;  // nothing to write: our entry is there
    auto put = client.PutManifest(repo, registry::kCatalogTag, registry::kOciIndexType, registry::SerializeCatalog(*catalog));
    if (!put.ok()) return put.status();
    auto back = FetchCatalog(client, repo);
    if (!back.ok()) return back.status();
    registry::Catalog check = *back;
    if (!check.Add(art)) return out;  // ours is listed: done (another writer may add more)
    std::this_thread::sleep_for(std::chrono::milliseconds(100 << attempt));
  }
  return absl::AbortedError(StrCat(client.options().host, "/", repo, ": the catalog kept losing this entry to concurrent pushes (",
                                   kAttempts, " attempts); the artifact is pushed and tagged ", registry::ArtifactTag(art),
                                   ", push again to list it"));
}

// ---- push ----------------------------------------------------------------

struct PushArgs {
  RegistryArgs reg;
  std::string cdimg, image_tag, repository;
  uint64_t chunk_size = 8ull << 20;
};

absl::Status UploadIfMissing(RegistryClient& client, const std::string& repo, const std::string& digest,
                             const std::string& path, bool* uploaded) {
  auto has = client.HasBlob(repo, digest);
  if (!has.ok()) return has.status();
  *uploaded = !*has;
  if (*has) return absl::OkStatus();
  Progress progress("push " + path);
  return client.UploadBlobFile(repo, digest, path, [&](uint64_t d, uint64_t t) { progress.Update(d, t); });
}

int RunPush(const PushArgs& a) {
  std::string repo = a.repository, tag;
  if (!a.image_tag.empty()) {
    auto nt = registry::ParseNameTag(a.image_tag);
    if (!nt.ok()) return Fail("push --imageTag", nt.status());
    if (!repo.empty() && repo != nt->name)
      return Fail("push", absl::InvalidArgumentError(StrCat("--repository ", repo, " and --imageTag ", a.image_tag, " disagree")));
    repo = nt->name;
    tag = nt->tag;
  }
  if (repo.empty()) return Fail("push", absl::InvalidArgumentError("say where: --imageTag NAME:TAG or --repository NAME"));
  if (!registry::IsValidRepository(repo))
    return Fail("push", absl::InvalidArgumentError(StrCat("'", repo, "' is not a repository name")));
  auto header = CdimgImage::ReadHeader(a.cdimg);
  if (!header.ok()) return Fail("push " + a.cdimg, header.status());
  auto digest = registry::Sha256DigestOfFile(a.cdimg);
  if (!digest.ok()) return Fail("push " + a.cdimg, digest.status());
  Artifact art;
  art.image_id = "sha256:" + DigestHex(header->image_id);
  if (header->is_delta) art.parent_id = "sha256:" + DigestHex(header->parent_id);
  art.size = header->file_size;
  art.blob_digest = *digest;

  auto client = Connect(a.reg, a.chunk_size);
  if (!client.ok()) return Fail("push", client.status());
  RegistryClient& c = **client;
  bool uploaded = false;
  if (auto s = UploadIfMissing(c, repo, art.blob_digest, a.cdimg, &uploaded); !s.ok()) return Fail("push " + a.cdimg, s);
  std::string config = registry::ArtifactConfig(art);
  std::string config_digest = registry::Sha256Digest(config);
  auto has_config = c.HasBlob(repo, config_digest);
  if (!has_config.ok()) return Fail("push", has_config.status());
  if (!*has_config) {
    if (auto s = c.UploadBlobBytes(repo, config_digest, config); !s.ok()) return Fail("push config", s);
  }
  std::string manifest = registry::ArtifactManifest(art, config_digest, config.size());
  auto md = c.PutManifest(repo, registry::ArtifactTag(art), registry::kOciManifestType, manifest);
  if (!md.ok()) return Fail("push manifest", md.status());
  art.manifest_digest = *md;
  art.manifest_size = manifest.size();
  if (!tag.empty()) {
    if (auto t = c.PutManifest(repo, tag, registry::kOciManifestType, manifest); !t.ok()) return Fail("push tag " + tag, t.status());
  }
  auto merged = RecordInCatalog(c, repo, art);
  if (!merged.ok()) return Fail("push catalog", merged.status());
  std::printf("pushed %s: %s %s%s (%llu bytes) to %s/%s, manifest %s; blob %s; catalog %s (%zu cdimgs)%s%s\n",
              a.cdimg.c_str(), art.is_delta() ? "delta" : "full", art.is_delta() ? (Short(art.parent_id) + ".. -> ").c_str() : "",
              art.image_id.c_str(), static_cast<unsigned long long>(art.size), a.reg.host.c_str(), repo.c_str(),
              art.manifest_digest.c_str(), uploaded ? "uploaded" : "already present", merged->changed ? "updated" : "unchanged",
              merged->entries, tag.empty() ? "" : ", tag ", tag.c_str());
  if (merged->adopted)
    std::printf("catalog: re-listed %zu pushed cdimg(s) that a concurrent push had dropped\n", merged->adopted);
  return 0;
}

// ---- pull ----------------------------------------------------------------

struct PullArgs {
  RegistryArgs reg;
  std::string image, name;
  snap::LoadOptions load;
  uint64_t max_rate = 0;
  bool dry_run = false;
};

std::string StepText(const Artifact& s) {
  return s.is_delta() ? StrCat("delta ", Short(s.parent_id), ".. -> ", Short(s.image_id), ".. ", s.size, " bytes")
                      : StrCat("full ", Short(s.image_id), ".. ", s.size, " bytes");
}

// The artifact a tag points at. A HEAD gives the manifest digest; the
// catalog usually describes that manifest already, so its body is fetched
// only when it does not (a tag set by another tool, an older catalog).
absl::StatusOr<Artifact> ResolveTag(RegistryClient& c, const registry::NameTag& nt, const registry::Catalog& catalog) {
  auto not_found = [&] {
    return absl::NotFoundError(StrCat("tag ", nt.name, ":", nt.tag, " does not exist on ", c.options().host));
  };
  auto digest = c.ManifestDigest(nt.name, nt.tag);
  if (digest.ok() && !digest->has_value()) return not_found();
  if (digest.ok()) {
    for (const auto& a : catalog.artifacts)
      if (a.manifest_digest == **digest) return a;
  }
  auto m = c.GetManifest(nt.name, nt.tag);
  if (!m.ok()) return m.status();
  if (!m->has_value()) return not_found();
  return registry::ParseArtifactManifest((*m)->body, (*m)->digest);
}

// Downloads every step, checking that each file is the image it claims to be.
absl::StatusOr<std::vector<std::string>> Download(RegistryClient& c, const std::string& repo,
                                                  const registry::PullPlan& plan, const std::string& dir,
                                                  uint64_t* fetched) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(StrCat(dir, ": cannot create (", ec.message(), ")"));
  std::vector<std::string> files;
  for (const auto& s : plan.steps) {
    std::string path = StrCat(dir, "/", s.blob_digest.substr(7), ".cdimg");
    Progress progress(StrCat("pull ", s.is_delta() ? "delta " : "full ", Short(s.image_id)));
    auto n = c.DownloadBlob(repo, s.blob_digest, s.size, path, [&](uint64_t d, uint64_t t) { progress.Update(d, t); });
    if (!n.ok()) return n.status();
    *fetched += *n;
    auto h = CdimgImage::ReadHeader(path);
    if (!h.ok()) return h.status();
    std::string id = "sha256:" + DigestHex(h->image_id);
    std::string parent = h->is_delta ? "sha256:" + DigestHex(h->parent_id) : "";
    if (id != s.image_id || parent != s.parent_id)
      return absl::DataLossError(StrCat(path, " (", s.blob_digest, ") is image ", id, " from '", parent,
                                        "', but the registry's catalog says ", s.image_id, " from '", s.parent_id, "'"));
    files.push_back(path);
  }
  return files;
}

int RunPull(PullArgs a) {
  auto nt = registry::ParseNameTag(a.image);
  if (!nt.ok()) return Fail("pull --image", nt.status());
  auto client = Connect(a.reg, 0, a.max_rate);
  if (!client.ok()) return Fail("pull", client.status());
  RegistryClient& c = **client;
  std::string what = StrCat("pull ", a.reg.host, "/", a.image);
  auto catalog = FetchCatalog(c, nt->name);
  if (!catalog.ok()) return Fail(what, catalog.status());
  auto want = ResolveTag(c, *nt, *catalog);
  if (!want.ok()) return Fail(what, want.status());
  catalog->Add(*want);
  // The store read and written below must be the one the snapshotter reads.
  if (auto v = snap::VerifySnapshotterRoot(a.load); !v.ok()) return Fail(what, v.status());
  snap::ImageStore store(snap::layout::StoreDir(a.load.snapshotter_root));
  std::set<std::string> local;
  for (const auto& hex : store.List()) local.insert("sha256:" + hex);
  auto plan = registry::PlanPull(*catalog, local, want->image_id);
  if (!plan.ok()) return Fail(what, plan.status());
  uint64_t full_size = 0;
  for (const auto& x : catalog->artifacts)
    if (!x.is_delta() && x.image_id == want->image_id && (!full_size || x.size < full_size)) full_size = x.size;
  std::printf("plan: %s is image %s; %zu images here%s\n", a.image.c_str(), want->image_id.c_str(), local.size(),
              plan->from.empty() ? "" : StrCat(", starting from ", Short(plan->from), "..").c_str());
  for (const auto& s : plan->steps) std::printf("plan:   %s\n", StepText(s).c_str());
  std::printf("plan total %llu bytes in %zu downloads%s\n", static_cast<unsigned long long>(plan->bytes), plan->steps.size(),
              full_size ? StrCat(" (the full image is ", full_size, " bytes)").c_str() : "");
  std::fflush(stdout);  // the plan shows before a long download
  if (a.dry_run) return 0;

  std::string downloads = snap::layout::DownloadsDir(a.load.snapshotter_root);
  uint64_t fetched = 0;
  auto files = Download(c, nt->name, *plan, downloads, &fetched);
  if (!files.ok()) return Fail(what, files.status());
  // Intermediate images go to the store (each complete and checked); the
  // last one is loaded into containerd.
  for (size_t i = 0; i + 1 < files->size(); ++i) {
    auto added = store.Add((*files)[i]);
    if (!added.ok()) return Fail(what, added.status());
  }
  a.load.image = a.name.empty() ? StrCat(a.reg.host, "/", nt->name, ":", nt->tag) : a.name;
  a.load.cdimg = files->empty() ? store.PathFor(want->image_id.substr(7)) : files->back();
  auto loaded = snap::LoadImage(a.load);
  if (!loaded.ok()) return Fail(what, loaded.status());
  for (const auto& f : *files) ::unlink(f.c_str());
  std::printf("downloaded %llu bytes of blobs (plan %llu bytes)\n", static_cast<unsigned long long>(fetched),
              static_cast<unsigned long long>(plan->bytes));
  std::printf("pulled %s -> image %s (chain of %zu), loaded as %s\n", a.image.c_str(), loaded->image_id.c_str(),
              loaded->chain_depth, a.load.image.c_str());
  return 0;
}

}  // namespace

void RegisterRegistry(CLI::App& app) {
  auto p = std::make_shared<PushArgs>();
  p->reg.host = "localhost:5000";
  CLI::App* push = app.add_subcommand("push", "Upload a full or delta cdimg to an OCI registry and record it in the repository's catalog");
  push->add_option("--cdimg", p->cdimg, "The cdimg to upload")->required()->check(CLI::ExistingFile);
  push->add_option("--imageTag", p->image_tag, "NAME:TAG: the repository, and a tag to point at this image");
  push->add_option("--repository", p->repository, "The repository (when no --imageTag)");
  push->add_option("--serverHost", p->reg.host, "Registry HOST:PORT")->capture_default_str();
  push->add_option("--chunk-size", p->chunk_size, "Upload chunk size in bytes")->capture_default_str()->check(CLI::Range(uint64_t{4096}, uint64_t{1} << 32));
  AddRegistryOptions(push, &p->reg);
  push->callback([p] { ExitCode() = RunPush(*p); });

  auto q = std::make_shared<PullArgs>();
  q->reg.host = "localhost:5000";
  CLI::App* pull = app.add_subcommand("pull", "Download the cheapest chain to NAME:TAG from what is here and load it for the di3fs snapshotter");
  pull->add_option("--image", q->image, "NAME:TAG in the registry")->required();
  pull->add_option("--host", q->reg.host, "Registry HOST:PORT")->capture_default_str();
  pull->add_option("--name", q->name, "Image name in containerd (default HOST:PORT/NAME:TAG)");
  pull->add_option("--address", q->load.address, "containerd socket")->capture_default_str();
  pull->add_option("--namespace,-n", q->load.ns, "containerd namespace")->capture_default_str();
  pull->add_option("--snapshotter-root", q->load.snapshotter_root, "The di3fs snapshotter's --root")->capture_default_str();
  pull->add_option("--snapshotter", q->load.snapshotter, "Name of the proxy plugin in containerd's config")->capture_default_str();
  pull->add_option("--max-rate", q->max_rate, "Average download rate limit in bytes per second (libcurl; the first second may burst); 0 = no limit");
  pull->add_flag("--dry-run", q->dry_run, "Print the plan and stop");
  AddRegistryOptions(pull, &q->reg);
  pull->callback([q] { ExitCode() = RunPull(*q); });
}

}  // namespace d4c::cli
