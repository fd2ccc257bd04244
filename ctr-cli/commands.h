// ctr-cli subcommands: each Register* adds its CLI11 subcommand to the app.
#pragma once

#include <CLI/CLI.hpp>

namespace d4c::cli {

// Result slot: a subcommand callback stores its exit code here.
int& ExitCode();

void RegisterConvert(CLI::App& app);
void RegisterCdimg(CLI::App& app);  // cdimg show / extract, plus RegisterDelta's
void RegisterDelta(CLI::App& cdimg);  // cdimg diff / patch / merge
void RegisterLoad(CLI::App& app);  // load (containerd + di3fs snapshotter)
void RegisterRegistry(CLI::App& app);  // push / pull (OCI registry)
void RegisterStore(CLI::App& app);  // images / rm / prune (the snapshotter's store)

}  // namespace d4c::cli
