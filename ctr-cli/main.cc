// ctr-cli: convert OCI images to cdimg, diff/patch/merge/show/extract cdimgs.
#include <clocale>

#include "commands.h"

namespace d4c::cli {
int& ExitCode() {
  static int code = 0;
  return code;
}
}  // namespace d4c::cli

int main(int argc, char** argv) {
  std::setlocale(LC_ALL, "C");  // byte-exact paths: never let a library transcode names
  CLI::App app{"ctr-cli: delta-updated container images (cdimg) for containerd"};
  app.require_subcommand(1);
  d4c::cli::RegisterConvert(app);
  d4c::cli::RegisterCdimg(app);
  d4c::cli::RegisterLoad(app);
  d4c::cli::RegisterRegistry(app);
  d4c::cli::RegisterStore(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 prints the message (help for --help, exit 0); every flag error
    // exits 1 as README promises, not CLI11's own codes (105, 106, 109, ...).
    return app.exit(e) == 0 ? 0 : 1;
  }
  return d4c::cli::ExitCode();
}
