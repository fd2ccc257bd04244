#include <map>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "commands.h"
#include "d4c/chain.h"
#include "d4c/extract.h"

namespace d4c::cli {
namespace {

struct ShowArgs {
  std::string cdimg;
  std::vector<std::string> bases;
  bool json = false;
  bool entries = false;
};

// Counts by entry type and by recipe kind (bytes of blobs per kind/codec).
nlohmann::json Summarize(const CdimgImage& img) {
  std::map<std::string, uint64_t> types, recipes, recipe_bytes;
  uint64_t rootfs = 0;
  for (size_t i = 0; i < img.size(); ++i) {
    types[EntryTypeName(img.TypeAt(i))]++;
    if (img.TypeAt(i) != EntryType::kRegular) continue;
    rootfs += img.SizeAt(i);
    Recipe r = img.RecipeAt(i);
    std::string k = RecipeKindName(r.kind);
    if (r.kind == Recipe::Kind::kDelta) k += StrCat("/", CodecName(r.codec));
    if (r.packed) k = "packed " + k;  // bytes: the member before the pack's compression
    recipes[k]++;
    recipe_bytes[k] += r.blob.length;
  }
  for (uint32_t p = 0; p < img.pack_count(); ++p) {
    // An inline pack (compact meta) is stored inside the config+index frame.
    std::string k = img.PackBlob(p).length ? "packs" : "inline pack";
    recipes[k]++;
    recipe_bytes[k] += img.PackBlob(p).length ? img.PackBlob(p).length : img.PackRawLength(p);
  }
  return {{"entries", img.size()}, {"types", types}, {"recipes", recipes},
          {"recipe_blob_bytes", recipe_bytes}, {"rootfs_bytes", rootfs}};
}

// One row per file that stores bytes in the top image (full or delta blob,
// or pack member), largest first: what an update pays for, file by file.
// A delta's base is named by the first path carrying its digest, in the top
// image (an in-image base, "twin") or else in the parent chain.
nlohmann::json EntryRows(const ImageChain& chain) {
  const CdimgImage& top = chain.top();
  std::map<Digest, std::string> where;  // digest -> "path" or "parent:path"
  for (size_t level = chain.depth(); level-- > 0;) {
    const CdimgImage& img = chain.image(level);
    bool is_top = level + 1 == chain.depth();
    for (size_t i = 0; i < img.size(); ++i)
      if (img.TypeAt(i) == EntryType::kRegular)
        where.emplace(img.DigestAt(i), StrCat(is_top ? "" : "parent:", img.PathAt(i)));
  }
  nlohmann::json rows = nlohmann::json::array();
  for (size_t i = 0; i < top.size(); ++i) {
    if (top.TypeAt(i) != EntryType::kRegular) continue;
    Recipe r = top.RecipeAt(i);
    if (r.kind != Recipe::Kind::kFull && r.kind != Recipe::Kind::kDelta) continue;
    nlohmann::json row = {{"path", std::string(top.PathAt(i))},
                          {"size", top.SizeAt(i)},
                          {"recipe", RecipeKindName(r.kind)},
                          {"packed", r.packed},
                          {"blob_bytes", r.blob.length}};
    if (r.kind == Recipe::Kind::kDelta) {
      row["codec"] = CodecName(r.codec);
      auto it = where.find(r.base);
      row["base"] = it == where.end() ? DigestString(r.base) : it->second;
    }
    rows.push_back(std::move(row));
  }
  std::stable_sort(rows.begin(), rows.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
    return a["blob_bytes"].get<uint64_t>() > b["blob_bytes"].get<uint64_t>();
  });
  return rows;
}

void PrintEntries(const nlohmann::json& rows) {
  std::printf("files with bytes here (packed: the member before its pack's compression):\n");
  for (const auto& r : rows) {
    std::string how = r["recipe"].get<std::string>();
    if (r.contains("codec")) how += "/" + r["codec"].get<std::string>();
    if (r["packed"].get<bool>()) how = "packed " + how;
    std::printf("  %10llu  %10llu  %-22s %s", r["blob_bytes"].get<unsigned long long>(),
                r["size"].get<unsigned long long>(), how.c_str(), r["path"].get<std::string>().c_str());
    if (r.contains("base") && r["base"].get<std::string>() != r["path"].get<std::string>() &&
        r["base"].get<std::string>() != "parent:" + r["path"].get<std::string>())
      std::printf("  <- %s", r["base"].get<std::string>().c_str());
    std::printf("\n");
  }
}

nlohmann::json HeaderJson(const std::string& path, const ImageHeader& h) {
  nlohmann::json j = {{"file", path},
                      {"format_version", h.version},
                      {"kind", h.is_delta ? "delta" : "full"},
                      {"image_id", DigestString(h.image_id)},
                      {"file_bytes", h.file_size},
                      {"header_bytes", h.header_length},
                      {"blob_bytes", h.blobs_length},
                      {"meta_bytes", h.meta_length},
                      {"compact_meta", h.compact_meta},
                      {"placed_packs", h.placed_packs},
                      {"lzma_meta", h.lzma_meta},
                      {"config_raw_bytes", h.config_length},
                      {"index_raw_bytes", h.index_raw_length}};
  if (h.is_delta) j["parent_id"] = DigestString(h.parent_id);
  return j;
}

void PrintText(const nlohmann::json& j) {
  std::printf("file:         %s\n", j["file"].get<std::string>().c_str());
  std::printf("format:       cdimg v%u, %s image%s\n", j["format_version"].get<unsigned>(),
              j["kind"].get<std::string>().c_str(),
              j["placed_packs"].get<bool>() ? ", placed packs (merge --compose)" : "");
  std::printf("image id:     %s\n", j["image_id"].get<std::string>().c_str());
  if (j.contains("parent_id")) std::printf("parent id:    %s\n", j["parent_id"].get<std::string>().c_str());
  bool compact = j["compact_meta"].get<bool>();
  std::printf("size:         %s (%llu bytes): header %llu, blobs %llu, %s %llu (raw: config %llu%s, index %llu)\n",
              HumanBytes(j["file_bytes"]).c_str(), j["file_bytes"].get<unsigned long long>(),
              j["header_bytes"].get<unsigned long long>(), j["blob_bytes"].get<unsigned long long>(),
              !compact                   ? "config+index"
              : j["lzma_meta"].get<bool>() ? "config+index+inline pack (LZMA)"
                                           : "config+index+inline pack",
              j["meta_bytes"].get<unsigned long long>(),
              j["config_raw_bytes"].get<unsigned long long>(), compact ? " packed" : "",
              j["index_raw_bytes"].get<unsigned long long>());
  if (!j.contains("entries")) {
    std::printf("entries:      (delta index needs the parent chain: pass --base)\n");
    return;
  }
  std::printf("entries:      %llu\n", j["entries"].get<unsigned long long>());
  for (auto& [k, v] : j["types"].items()) std::printf("  %-10s  %llu\n", k.c_str(), v.get<unsigned long long>());
  std::printf("recipes:\n");
  for (auto& [k, v] : j["recipes"].items())
    std::printf("  %-14s  %8llu files  %12llu blob bytes\n", k.c_str(), v.get<unsigned long long>(),
                j["recipe_blob_bytes"][k].get<unsigned long long>());
  std::printf("rootfs bytes: %llu\n", j["rootfs_bytes"].get<unsigned long long>());
}

int RunShow(const ShowArgs& a) {
  auto h = CdimgImage::ReadHeader(a.cdimg);
  if (!h.ok()) return Fail("cdimg show", h.status());
  nlohmann::json j = HeaderJson(a.cdimg, *h);
  if (a.entries && h->is_delta && a.bases.empty())
    return Fail("cdimg show", absl::InvalidArgumentError(StrCat(
        a.cdimg, ": --entries of a delta needs its parent chain to read the index; pass --base PARENT.cdimg")));
  if (!h->is_delta || !a.bases.empty()) {
    auto chain = ImageChain::Open(a.cdimg, a.bases);
    if (!chain.ok()) return Fail("cdimg show", chain.status());
    j.update(Summarize((*chain)->top()));
    if (a.entries) j["files"] = EntryRows(**chain);
  }
  if (a.json) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    PrintText(j);
    if (a.entries) PrintEntries(j["files"]);
  }
  return 0;
}

struct ExtractArgs {
  std::string cdimg;
  std::vector<std::string> bases;
  std::string output;
  int threads = 0;
};

int RunExtract(const ExtractArgs& a) {
  auto chain = ImageChain::Open(a.cdimg, a.bases);
  if (!chain.ok()) return Fail("cdimg extract", chain.status());
  auto stats = ExtractImage(**chain, a.output, {a.threads});
  if (!stats.ok()) return Fail("cdimg extract", stats.status());
  std::printf("%s: %zu entries, %s of file data\n", a.output.c_str(), stats->entries,
              HumanBytes(stats->bytes).c_str());
  return 0;
}

void RegisterShow(CLI::App& cdimg) {
  auto args = std::make_shared<ShowArgs>();
  CLI::App* c = cdimg.add_subcommand("show", "Print a cdimg's header, entry counts and sizes by recipe");
  c->add_option("--cdimg", args->cdimg, "cdimg file")->required();
  c->add_option("--base", args->bases, "Parent cdimg(s) of a delta, any order (repeatable)");
  c->add_flag("--json", args->json, "Machine-readable output");
  c->add_flag("--entries", args->entries,
              "Also list every file that stores bytes here, largest first: blob bytes, size, recipe, and a delta's base "
              "when it is not the file's own path (a delta needs --base)");
  c->callback([args] { ExitCode() = RunShow(*args); });
}

void RegisterExtract(CLI::App& cdimg) {
  auto args = std::make_shared<ExtractArgs>();
  CLI::App* c = cdimg.add_subcommand("extract", "Materialize the root filesystem of a cdimg (needs root)");
  c->add_option("--cdimg", args->cdimg, "cdimg file (full or delta)")->required();
  c->add_option("--base", args->bases, "Parent cdimg(s) of a delta chain, any order (repeatable)");
  c->add_option("--output", args->output, "Directory to create (must be absent or empty; left as it was if extract fails)")->required();
  c->add_option("--threadNum,--threads", args->threads, "Worker threads (default: all CPUs)");
  c->callback([args] { ExitCode() = RunExtract(*args); });
}

}  // namespace

void RegisterCdimg(CLI::App& app) {
  CLI::App* cdimg = app.add_subcommand("cdimg", "Inspect and transform cdimg files");
  cdimg->require_subcommand(1);
  RegisterShow(*cdimg);
  RegisterExtract(*cdimg);
  RegisterDelta(*cdimg);
}

}  // namespace d4c::cli
