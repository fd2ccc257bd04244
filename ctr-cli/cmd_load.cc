// ctr-cli load --image NAME:TAG --cdimg F: make a cdimg runnable by containerd
// with the di3fs snapshotter (`ctr run --snapshotter=di3fs NAME:TAG ...`).
#include "cli_util.h"
#include "commands.h"
#include "d4c/registry/reference.h"
#include "d4c/snap/load.h"

namespace d4c::cli {
namespace {

int RunLoad(snap::LoadOptions o) {
  // A name containerd would refuse (or store under another spelling) is
  // refused here, before anything is written; the name is the normalized one.
  auto name = registry::NormalizeImageName(o.image);
  if (!name.ok()) return Fail("load --image", name.status());
  o.image = *name;
  auto r = snap::LoadImage(o);
  if (!r.ok()) return Fail(StrCat("load ", o.cdimg), r.status());
  std::printf("%s: image %s (chain of %zu) -> %s, snapshot %s%s, manifest %s%s\n", o.cdimg.c_str(),
              r->image_id.c_str(), r->chain_depth, o.image.c_str(), r->chain_id.c_str(),
              r->snapshot_created ? "" : " (existed)", r->manifest_digest.c_str(),
              r->stored ? "" : " (already held by the snapshotter)");
  return 0;
}

}  // namespace

void RegisterLoad(CLI::App& app) {
  auto o = std::make_shared<snap::LoadOptions>();
  CLI::App* c = app.add_subcommand("load", "Load a cdimg into containerd for the di3fs snapshotter");
  c->add_option("--image", o->image, "Image name in containerd (NAME:TAG; normalized as ctr does: app:1 is docker.io/library/app:1)")
      ->required();
  c->add_option("--cdimg", o->cdimg, "The cdimg (full, or delta whose parent is loaded)")->required()
      ->check(CLI::ExistingFile);
  c->add_option("--address", o->address, "containerd socket")->capture_default_str();
  c->add_option("--namespace,-n", o->ns, "containerd namespace")->capture_default_str();
  c->add_option("--snapshotter-root", o->snapshotter_root,
                "Not needed: the snapshotter reports its root through containerd. If given, checked against it");
  c->add_option("--snapshotter", o->snapshotter, "Name of the proxy plugin in containerd's config")
      ->capture_default_str();
  c->callback([o] { ExitCode() = RunLoad(*o); });
}

}  // namespace d4c::cli
