#include <filesystem>
#include <thread>

#include "cli_util.h"
#include "commands.h"
#include "d4c/convert.h"

namespace d4c::cli {
namespace {

struct ConvertArgs {
  std::string image;
  std::string output;
  bool cdimg = false;
  int threads = 0;
  int level = 19;
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
  auto stats = ConvertImage(a.image, out, opt);
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
  c->add_option("--image", args->image, "oci:DIR[:TAG] or docker-archive:TAR")->required();
  c->add_option("--output", args->output, "Output directory (image.cdimg is written there)")->required();
  c->add_flag("--cdimg", args->cdimg, "Write a cdimg (the only output format)");
  c->add_option("--threadNum,--threads", args->threads, "Compression threads (default: all CPUs)")
      ->check(CLI::Range(0, 1024));
  c->add_option("--level", args->level, "zstd level of file blobs (1-22, default 19)")->check(CLI::Range(1, 22));
  c->callback([args] { ExitCode() = RunConvert(*args); });
}

}  // namespace d4c::cli
