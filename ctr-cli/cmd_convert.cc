#include <filesystem>
#include <thread>

#include "cli_util.h"
#include "commands.h"
#include "d4c/convert.h"
#include "d4c/registry/reference.h"
#include "d4c/snap/containerd_client.h"

namespace d4c::cli {
namespace {

struct ConvertArgs {
  std::string image;
  std::string output;
  bool cdimg = false;
  int threads = 0;
  int level = 19;
  std::string address = "/run/containerd/containerd.sock";  // plain NAME refs: containerd's store
  std::string ns = "default";
};

int RunConvert(const ConvertArgs& a) {
  if (!a.cdimg) {
    std::fprintf(stderr, "ctr-cli: convert: only --cdimg output is supported; pass --cdimg\n");
    return 1;
  }
  std::error_code ec;
  // The output directory appears only if the conversion gets going; one this
  // call created is removed again when it failed and stayed empty.
  const bool output_existed = std::filesystem::exists(a.output, ec);
  auto make_output = [&]() -> absl::Status {
    std::filesystem::create_directories(a.output, ec);
    if (ec) return absl::InternalError(StrCat(a.output, ": ", ec.message()));
    return absl::OkStatus();
  };
  auto fail = [&](const absl::Status& s) {
    if (!output_existed && std::filesystem::is_empty(a.output, ec)) std::filesystem::remove(a.output, ec);
    return Fail(StrCat("convert ", a.image), s);
  };
  std::string out = (std::filesystem::path(a.output) / "image.cdimg").string();
  Progress progress("compressing");
  ConvertOptions opt;
  opt.threads = a.threads;
  opt.zstd_level = a.level;
  opt.progress = [&](uint64_t done, uint64_t total) { progress.Update(done, total); };
  // A plain reference names an image in containerd's store: its layers are
  // streamed through the Content API straight into the converter.
  absl::StatusOr<ConvertStats> stats;
  if (!a.image.starts_with("oci:") && !a.image.starts_with("docker-archive:")) {
    // Pulls (ctr, CRI) store normalized names (app:1 is docker.io/library/app:1);
    // `ctr image import/tag` keep a name as typed. The name as typed first.
    auto name = registry::NormalizeImageName(a.image);
    if (!name.ok()) return Fail("convert --image", name.status());
    auto client = snap::ContainerdClient::Connect(a.address, a.ns);
    if (!client.ok()) return Fail(StrCat("convert ", a.image), client.status());
    auto source = snap::OpenContainerdImage(client->get(), a.image);
    if (absl::IsNotFound(source.status()) && *name != a.image) {
      source = snap::OpenContainerdImage(client->get(), *name);
      if (absl::IsNotFound(source.status()))
        source = absl::NotFoundError(StrCat("image ", a.image, " not found in containerd at ", a.address,
                                            " (namespace ", a.ns, "), nor as ", *name));
    }
    if (!source.ok()) return Fail(StrCat("convert ", a.image), source.status());
    if (auto s = make_output(); !s.ok()) return fail(s);
    stats = ConvertImage(**source, out, opt);
  } else {
    if (auto s = make_output(); !s.ok()) return fail(s);
    stats = ConvertImage(a.image, out, opt);
  }
  if (!stats.ok()) return fail(stats.status());
  std::printf("%s: %zu entries, rootfs %s, cdimg %s (layers %s), image id %s\n", out.c_str(), stats->entries,
              HumanBytes(stats->rootfs_bytes).c_str(), HumanBytes(stats->header.file_size).c_str(),
              HumanBytes(stats->layer_bytes).c_str(), DigestString(stats->header.image_id).c_str());
  return 0;
}

}  // namespace

void RegisterConvert(CLI::App& app) {
  auto args = std::make_shared<ConvertArgs>();
  CLI::App* c = app.add_subcommand("convert", "Convert an OCI image into a full cdimg (DIR/image.cdimg)");
  c->add_option("--image", args->image, "oci:DIR[:TAG], docker-archive:TAR, or NAME in containerd")->required();
  c->add_option("--address", args->address, "containerd socket (for a NAME in containerd)")->capture_default_str();
  c->add_option("--namespace,-n", args->ns, "containerd namespace (for a NAME in containerd)")->capture_default_str();
  c->add_option("--output", args->output, "Output directory (image.cdimg is written there)")->required();
  c->add_flag("--cdimg", args->cdimg, "Write a cdimg (the only output format)");
  c->add_option("--threadNum,--threads", args->threads, "Compression threads (default: all CPUs)")
      ->check(CLI::Range(0, 1024));
  c->add_option("--level", args->level, "zstd level of file blobs (1-22, default 19)")->check(CLI::Range(1, 22));
  c->callback([args] { ExitCode() = RunConvert(*args); });
}

}  // namespace d4c::cli
