// ctr-cli push / pull: cdimgs through an OCI distribution registry
// (docs/registry.md). The work is registry::Push / registry::Pull
// (d4c/registry/transfer.h); this file parses flags, wires pull to the
// snapshotter through one snap::Handover (the images it holds; intermediate
// images are imported, the wanted one is loaded like `ctr-cli load`) and prints.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <set>
#include <cstring>

#include "cli_util.h"
#include "commands.h"
#include "d4c/oci.h"
#include "d4c/registry/failover.h"
#include "d4c/registry/hosts.h"
#include "d4c/registry/reference.h"
#include "d4c/registry/registry_client.h"
#include "d4c/registry/transfer.h"
#include "d4c/snap/layout.h"
#include "d4c/snap/load.h"

namespace d4c::cli {
namespace {

using registry::Artifact;
using registry::RegistryClient;

struct RegistryArgs {
  std::string host;
  bool host_given = false;  // --host was on the command line
  bool plain_http = false;
  std::string user;  // USER[:PASSWORD]; the password may also come from D4C_REGISTRY_PASSWORD
  int attempts = 5;
  std::string hosts_dir = registry::kDefaultHostsDir;
  std::string ca_file;
};

void AddRegistryOptions(CLI::App* c, RegistryArgs* r) {
  c->add_flag("--plain-http", r->plain_http, "Talk HTTP, not HTTPS (a registry on loopback)");
  c->add_option("--hosts-dir", r->hosts_dir,
                "containerd's registry configuration: DIR/HOST/hosts.toml (server, ca, client, skip_verify, "
                "[host.\"URL\"]) or docker's DIR/HOST/ca.crt, client.cert, client.key")
      ->capture_default_str();
  c->add_option("--ca-file", r->ca_file, "A CA certificate (PEM) to trust for the registry, besides the system's")
      ->check(CLI::ExistingFile);
  c->add_option("--user,-u", r->user,
                "USER[:PASSWORD] for the registry (password also from $D4C_REGISTRY_PASSWORD); "
                "default: ~/.docker/config.json");
  c->add_option("--retries", r->attempts, "Attempts per request on network errors and 5xx")
      ->capture_default_str()->check(CLI::Range(1, 100));
}

// NAME:TAG or HOST[:PORT]/NAME:TAG, as ctr users write references: the
// registry part (registry::SplitRegistryHost) becomes the host; --host must
// agree with it or be absent ($D4C_REGISTRY is only a default).
absl::StatusOr<std::string> TakeRegistryFromReference(const char* flag, const std::string& ref, RegistryArgs* reg) {
  auto [host, rest] = registry::SplitRegistryHost(ref);
  if (host.empty()) return ref;
  if (reg->host_given && reg->host != host)
    return absl::InvalidArgumentError(StrCat(flag, " ", ref,  " names registry ", host, " but --host is ",
                                             reg->host, ": give one of them, or make them agree"));
  reg->host = host;
  return rest;
}

// A client for `a.host` as configured in --hosts-dir, then the flags: the
// endpoint that can push (`push`) or pull, its certificates, and --plain-http
// and --ca-file on top.
// The options of the flags (registry host, --plain-http, --ca-file, --user or
// docker's config.json, --retries) before any hosts.toml endpoint is applied.
registry::RegistryOptions FlagOptions(const RegistryArgs& a, uint64_t chunk_size, uint64_t max_rate) {
  registry::RegistryOptions o;
  o.host = a.host;
  o.hosts_dir = a.hosts_dir;
  if (a.plain_http) o.plain_http = true;
  if (!a.ca_file.empty()) o.ca_files.push_back(a.ca_file);
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
  return o;
}

// A push client: the endpoint hosts.toml gives for pushes (HostConfig::EndpointFor).
absl::StatusOr<std::unique_ptr<RegistryClient>> ConnectPush(const RegistryArgs& a, uint64_t chunk_size) {
  auto config = registry::LoadHostConfig(a.host, a.hosts_dir);
  if (!config.ok()) return config.status();
  registry::RegistryOptions o = FlagOptions(a, chunk_size, 0);
  registry::ApplyHostConfig(*config, /*push=*/true, o);
  return RegistryClient::Create(std::move(o));
}

// A pull: every pull endpoint of hosts.toml (mirrors first, then the server),
// tried in order as containerd does (registry/failover.h).
absl::StatusOr<std::shared_ptr<registry::RegistryApi>> ConnectPull(const RegistryArgs& a, uint64_t max_rate) {
  auto config = registry::LoadHostConfig(a.host, a.hosts_dir);
  if (!config.ok()) return config.status();
  return registry::OpenPullRegistry(*config, FlagOptions(a, 0, max_rate));
}

std::string Short(const std::string& id) { return id.substr(0, 19); }

// ---- push ----------------------------------------------------------------

struct PushArgs {
  RegistryArgs reg;
  std::string cdimg, image_tag, repository, image;
  uint64_t chunk_size = 8ull << 20;
};

// An OCI layout / docker archive (d4c/oci.h) as the runnable image Push publishes.
class OciSourceImage : public registry::SourceImage {
 public:
  explicit OciSourceImage(std::unique_ptr<ImageSource> src) : src_(std::move(src)) {
    for (const auto& l : src_->layers()) layers_.push_back({l.media_type, l.digest, l.size});
  }
  std::string Describe() const override { return src_->Describe(); }
  const std::string& config_json() const override { return src_->config_json(); }
  const std::vector<registry::Descriptor>& layers() const override { return layers_; }
  absl::Status WriteLayer(size_t i, const std::string& path) const override {
    auto in = src_->OpenLayer(i);
    if (!in.ok()) return in.status();
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> out(std::fopen(path.c_str(), "wb"), &std::fclose);
    if (!out) return absl::PermissionDeniedError(StrCat(path, ": cannot create (", std::strerror(errno), ")"));
    std::string buf(1 << 20, '\0');
    for (;;) {
      auto n = (*in)->Read(buf.data(), buf.size());
      if (!n.ok()) return n.status();
      if (*n == 0) break;
      if (std::fwrite(buf.data(), 1, *n, out.get()) != *n)
        return absl::DataLossError(StrCat(path, ": write failed (disk full?): ", std::strerror(errno)));
    }
    if (std::fflush(out.get()) != 0) return absl::DataLossError(StrCat(path, ": write failed (disk full?)"));
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<ImageSource> src_;
  std::vector<registry::Descriptor> layers_;
};

int RunPush(PushArgs a) {
  registry::PushOptions o;
  o.cdimg = a.cdimg;
  o.repository = a.repository;
  if (!a.image_tag.empty()) {
    auto name_tag = TakeRegistryFromReference("push --imageTag", a.image_tag, &a.reg);
    if (!name_tag.ok()) return Fail("push", name_tag.status());
    auto nt = registry::ParseNameTag(*name_tag);
    if (!nt.ok()) return Fail("push --imageTag", nt.status());
    if (!o.repository.empty() && o.repository != nt->name)
      return Fail("push", absl::InvalidArgumentError(StrCat("--repository ", o.repository, " and --imageTag ",
                                                             a.image_tag, " disagree")));
    o.repository = nt->name;
    o.tag = nt->tag;
  }
  if (o.repository.empty()) return Fail("push", absl::InvalidArgumentError("say where: --imageTag NAME:TAG or --repository NAME"));
  std::unique_ptr<OciSourceImage> image;
  if (!a.image.empty()) {
    auto src = OpenImageSource(a.image);
    if (!src.ok()) return Fail("push --image", src.status());
    image = std::make_unique<OciSourceImage>(std::move(*src));
    o.image = image.get();
  }
  auto client = ConnectPush(a.reg, a.chunk_size);
  if (!client.ok()) return Fail("push", client.status());
  registry::ClientRegistry reg(**client);
  auto progress = std::make_unique<Progress>("push " + a.cdimg);
  o.progress = [&](uint64_t d, uint64_t t) { progress->Update(d, t); };
  auto r = registry::Push(o, reg);
  progress.reset();
  if (!r.ok()) return Fail("push " + a.cdimg, r.status());
  const Artifact& art = r->artifact;
  std::string what = StrCat(art.is_delta() ? "delta " : "full ", art.is_delta() ? Short(art.parent_id) + ".. -> " : "",
                            art.image_id, " (", art.size, " bytes)");
  if (r->referrers_layout) {
    std::printf("pushed %s: %s to %s/%s, manifest %s; blob %s; attached to image %s%s (%s)%s%s\n", a.cdimg.c_str(),
                what.c_str(), a.reg.host.c_str(), o.repository.c_str(), art.manifest_digest.c_str(),
                r->blob_uploaded ? "uploaded" : "already present", r->subject.digest.c_str(),
                r->image_published ? StrCat(", image published (", r->layers_uploaded, " layers uploaded)").c_str() : "",
                r->referrers_api ? "referrers API"
                                 : StrCat("referrers tag ", registry::ReferrersTag(r->subject.digest), " ",
                                          r->referrers_changed ? "updated" : "unchanged", ", ", r->referrers, " cdimgs").c_str(),
                o.tag.empty() ? "" : ", tag ", o.tag.c_str());
    if (r->migrated)
      std::printf("migrated: attached %zu cdimg(s) of this image that were pushed in the catalog layout\n", r->migrated);
    return 0;
  }
  std::printf("pushed %s: %s to %s/%s, manifest %s; blob %s; catalog %s (%zu cdimgs)%s%s\n", a.cdimg.c_str(),
              what.c_str(), a.reg.host.c_str(), o.repository.c_str(), art.manifest_digest.c_str(),
              r->blob_uploaded ? "uploaded" : "already present", r->catalog_changed ? "updated" : "unchanged",
              r->catalog_entries, o.tag.empty() ? "" : ", tag ", o.tag.c_str());
  if (r->catalog_adopted)
    std::printf("catalog: re-listed %zu pushed cdimg(s) that a concurrent push had dropped\n", r->catalog_adopted);
  std::printf("note: catalog layout: %s is a cdimg artifact that plain clients cannot run; %s\n",
              o.tag.empty() ? "the cdimg" : StrCat(o.repository, ":", o.tag).c_str(),
              art.is_delta() ? StrCat("push the full cdimg of ", Short(art.image_id), ".. with --image first to attach deltas to a runnable image").c_str()
                             : "pass --image (the OCI layout or docker archive it was converted from) to publish a runnable image");
  return 0;
}

// ---- pull ----------------------------------------------------------------

struct PullArgs {
  RegistryArgs reg;
  std::string image, name, download_dir;
  snap::LoadOptions load;
  uint64_t max_rate = 0;
  bool dry_run = false;
};

std::string StepText(const Artifact& s) {
  return s.is_delta() ? StrCat("delta ", Short(s.parent_id), ".. -> ", Short(s.image_id), ".. ", s.size, " bytes")
                      : StrCat("full ", Short(s.image_id), ".. ", s.size, " bytes");
}

// The images the snapshotter holds (its store, read at the root it reports).
class HeldImages : public registry::LocalImages {
 public:
  explicit HeldImages(const snap::Handover& h) : h_(h) {}
  absl::StatusOr<std::set<std::string>> ImageIds() override { return h_.HeldImages(); }

 private:
  const snap::Handover& h_;
};

// Each pulled image goes to the snapshotter through one hand-over:
// intermediate images are imported, the wanted one is loaded into containerd
// like `ctr-cli load`.
class HandOver : public registry::ImageSink {
 public:
  explicit HandOver(snap::Handover& h) : h_(h) {}
  absl::Status Accept(const std::string& path, const Artifact&, bool wanted) override {
    if (!wanted) return h_.Import(path).status();
    return Keep(h_.Load(path));
  }
  absl::Status AcceptHeld(const std::string& image_id) override { return Keep(h_.Load("", image_id)); }
  const std::optional<snap::LoadResult>& loaded() const { return loaded_; }

 private:
  absl::Status Keep(absl::StatusOr<snap::LoadResult> r) {
    if (!r.ok()) return r.status();
    loaded_ = *r;
    h_.Commit();
    return absl::OkStatus();
  }
  snap::Handover& h_;
  std::optional<snap::LoadResult> loaded_;
};

int RunPull(PullArgs a) {
  // HOST/NAME:TAG pulls NAME:TAG from HOST and names the image HOST/NAME:TAG.
  std::string asked = a.image;
  auto name_tag = TakeRegistryFromReference("pull --image", a.image, &a.reg);
  if (!name_tag.ok()) return Fail("pull", name_tag.status());
  a.image = *name_tag;
  std::string what = StrCat("pull ", a.reg.host, "/", a.image);
  auto reg = ConnectPull(a.reg, a.max_rate);
  if (!reg.ok()) return Fail("pull", reg.status());
  // Named in containerd as asked (--name, else --image), normalized as ctr does.
  auto local_name = registry::NormalizeImageName(a.name.empty() ? asked : a.name);
  if (!local_name.ok()) return Fail(a.name.empty() ? "pull --image" : "pull --name", local_name.status());
  a.load.image = *local_name;
  // What the snapshotter holds is asked of it, through containerd.
  auto handover = snap::Handover::Begin(a.load);
  if (!handover.ok()) return Fail(what, handover.status());
  HeldImages local(**handover);
  HandOver sink(**handover);

  registry::PullOptions o;
  o.image = a.image;
  o.download_dir = a.download_dir.empty() ? kDefaultDownloadDir : a.download_dir;
  // The snapshotter copies each image into its store: the plan must fit there too.
  o.store_dir = snap::layout::StoreDir((*handover)->root().root);
  o.dry_run = a.dry_run;
  o.planned = [&](const registry::PullResult& p) {
    std::printf("plan: %s is image %s; %zu images here%s; planned from %s (%llu bytes read)\n", a.image.c_str(),
                p.wanted.image_id.c_str(), p.local_images,
                p.plan.from.empty() ? "" : StrCat(", starting from ", Short(p.plan.from), "..").c_str(),
                p.referrers_layout ? StrCat("the referrers of ", Short(p.subject), "..").c_str() : "the catalog",
                static_cast<unsigned long long>(p.plan_document_bytes));
    for (const auto& s : p.plan.steps) std::printf("plan:   %s\n", StepText(s).c_str());
    std::printf("plan total %llu bytes in %zu downloads%s\n", static_cast<unsigned long long>(p.plan.bytes),
                p.plan.steps.size(), p.full_image_size ? StrCat(" (the full image is ", p.full_image_size, " bytes)").c_str() : "");
    std::fflush(stdout);  // the plan shows before a long download
  };
  std::unique_ptr<Progress> progress;
  const Artifact* shown = nullptr;
  o.progress = [&](const Artifact& s, uint64_t d, uint64_t t) {
    if (shown != &s) {
      progress.reset();  // ends the previous meter's line
      progress = std::make_unique<Progress>(StrCat("pull ", s.is_delta() ? "delta " : "full ", Short(s.image_id)));
      shown = &s;
    }
    progress->Update(d, t);
  };
  auto r = registry::Pull(o, **reg, local, sink);
  progress.reset();
  if (!r.ok()) return Fail(what, r.status());
  if (a.dry_run) return 0;
  if (!sink.loaded()) return Fail(what, absl::InternalError("the pull handed nothing over to load"));
  std::printf("downloaded %llu bytes of blobs (plan %llu bytes)\n", static_cast<unsigned long long>(r->bytes_downloaded),
              static_cast<unsigned long long>(r->plan.bytes));
  std::printf("pulled %s -> image %s (chain of %zu), loaded as %s\n", a.image.c_str(), sink.loaded()->image_id.c_str(),
              sink.loaded()->chain_depth, a.load.image.c_str());
  return 0;
}

}  // namespace

namespace {
// The default registry of push and pull, when --host is not given.
constexpr const char* kRegistryEnv = "D4C_REGISTRY";
bool EnvSet(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0';
}
}  // namespace

void RegisterRegistry(CLI::App& app) {
  auto p = std::make_shared<PushArgs>();
  p->reg.host = "localhost:5000";
  CLI::App* push = app.add_subcommand(
      "push", "Publish a runnable image with a full or delta cdimg attached (OCI referrers), or without --image a cdimg "
              "artifact listed in the repository's catalog");
  push->add_option("--cdimg", p->cdimg, "The cdimg to upload")->required()->check(CLI::ExistingFile);
  push->add_option("--imageTag", p->image_tag, "NAME:TAG: the repository, and a tag to point at this image");
  push->add_option("--repository", p->repository, "The repository (when no --imageTag)");
  push->add_option("--image", p->image,
                   "oci:DIR[:TAG] or docker-archive:TAR the full cdimg was converted from: published under TAG for "
                   "any client, the cdimg attached to it (a delta is attached to the published image it leads to)");
  push->add_option("--serverHost,--host", p->reg.host,
                   "Registry HOST:PORT (--host and --serverHost are one option; default $D4C_REGISTRY, else "
                   "localhost:5000; --imageTag HOST/NAME:TAG names it too)")
      ->capture_default_str();
  push->add_option("--chunk-size", p->chunk_size, "Upload chunk size in bytes")->capture_default_str()->check(CLI::Range(uint64_t{4096}, uint64_t{1} << 32));
  AddRegistryOptions(push, &p->reg);
  push->callback([p, push] {
    // --host, else a registry named in the reference, else $D4C_REGISTRY, else localhost:5000.
    p->reg.host_given = push->count("--host") > 0;
    if (!p->reg.host_given && EnvSet(kRegistryEnv)) p->reg.host = std::getenv(kRegistryEnv);
    ExitCode() = RunPush(*p);
  });

  auto q = std::make_shared<PullArgs>();
  q->reg.host = "localhost:5000";
  CLI::App* pull = app.add_subcommand("pull", "Download the cheapest chain to NAME:TAG from what is here and load it for the di3fs snapshotter");
  pull->add_option("--image", q->image, "NAME:TAG in the registry, or HOST[:PORT]/NAME:TAG")->required();
  pull->add_option("--host,--serverHost", q->reg.host,
                   "Registry HOST:PORT (--host and --serverHost are one option; default $D4C_REGISTRY, else "
                   "localhost:5000)")
      ->capture_default_str();
  pull->add_option("--name", q->name,
                   "Image name in containerd (default: --image; normalized as ctr does: app:1 is docker.io/library/app:1)");
  pull->add_option("--address", q->load.address, "containerd socket")->capture_default_str();
  pull->add_option("--namespace,-n", q->load.ns, "containerd namespace")->capture_default_str();
  pull->add_option("--snapshotter-root", q->load.snapshotter_root,
                   "Not needed: the snapshotter reports its root through containerd. If given, checked against it");
  pull->add_option("--snapshotter", q->load.snapshotter, "Name of the proxy plugin in containerd's config")->capture_default_str();
  pull->add_option("--download-dir", q->download_dir,
                   StrCat("Where blobs download to (resumable .partial files; a finished file is removed once "
                          "the snapshotter has its copy); default ", kDefaultDownloadDir));
  pull->add_option("--max-rate", q->max_rate, "Average download rate limit in bytes per second (libcurl; the first second may burst); 0 = no limit");
  pull->add_flag("--dry-run", q->dry_run, "Print the plan and stop");
  AddRegistryOptions(pull, &q->reg);
  pull->callback([q, pull] {
    // --host, else a registry named in the reference, else $D4C_REGISTRY, else localhost:5000.
    q->reg.host_given = pull->count("--host") > 0;
    if (!q->reg.host_given && EnvSet(kRegistryEnv)) q->reg.host = std::getenv(kRegistryEnv);
    ExitCode() = RunPull(*q);
  });
}

}  // namespace d4c::cli
