#include <filesystem>
#include <thread>

#include "cli_util.h"
#include "commands.h"
#include "d4c/convert.h"
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
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(a.output, ec);
  if (ec) return Fail("convert", absl::InternalError(StrCat(a.output, ": ", ec.message())));
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
    auto client = snap::ContainerdClient::Connect(a.address, a.ns);
    if (!client.ok()) return Fail(StrCat("convert ", a.image), client.status());
    auto source = snap::OpenContainerdImage(client->get(), a.image);
    if (!source.ok()) return Fail(StrCat("convert ", a.image), source.status());
    stats = ConvertImage(**source, out, opt);
  } else {
    stats = ConvertImage(a.image, out, opt);
  }
  if (!stats.ok()) return Fail(StrCat("convert ", a.image), stats.status());
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
