// OpenImageSource: OCI image layouts (tags, nested indexes, verification) and
// docker-archives (skopeo layout, legacy links, RepoTags, diff_id checks).
#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>

#include "d4c/oci.h"
#include "nlohmann/json.hpp"
#include "oci_fixture.h"

using namespace d4c;
using namespace d4c::oci_test;
using nlohmann::json;

namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string BlobPath(const std::string& dir, const std::string& digest) {
  return dir + "/blobs/sha256/" + digest.substr(7);
}

std::string OpenError(const std::string& ref) {
  auto src = OpenImageSource(ref);
  REQUIRE_FALSE(src.ok());
  return std::string(src.status().message());
}

absl::StatusOr<std::vector<Entry>> SquashRef(const std::string& ref) {
  auto src = OpenImageSource(ref);
  if (!src.ok()) return src.status();
  RecordingSink sink;
  return SquashLayers(**src, sink);
}

// Two layers: v=1 then v=2 plus a whiteout of "old".
struct Layers {
  std::string base, top;
  Layers() {
    LayerBuilder b, t;
    b.File("v", "1").File("old", "o");
    t.File("v", "2").Whiteout("old");
    base = b.Tar();
    top = t.Tar();
  }
};

const std::vector<Entry> kTwoLayerTree = {ImpliedRoot(), FileEntry("v", "2")};

}  // namespace

TEST_CASE("oci layout: select by tag", "[oci][layout]") {
  ScratchDir tmp;
  Layers l;
  auto written = WriteOciLayout(tmp.path(), {{"1.0", {l.base}}, {"2.0", {l.base, l.top}}});
  REQUIRE(written.ok());
  auto src = OpenImageSource("oci:" + tmp.path() + ":2.0");
  REQUIRE(src.ok());
  REQUIRE((*src)->layers().size() == 2);
  CHECK((*src)->layers()[1].digest == (*written)[1].layer_digests[1]);
  CHECK((*src)->layers()[1].media_type == "application/vnd.oci.image.layer.v1.tar+gzip");
  CHECK((*src)->config_json() == DefaultConfig({l.base, l.top}));
  CHECK((*src)->Describe() == "oci:" + tmp.path() + ":2.0");
  RecordingSink sink;
  auto tree = SquashLayers(**src, sink);
  REQUIRE(tree.ok());
  CHECK(*tree == kTwoLayerTree);
}

TEST_CASE("oci layout: missing or ambiguous tag lists the tags", "[oci][layout]") {
  ScratchDir tmp;
  Layers l;
  REQUIRE(WriteOciLayout(tmp.path(), {{"1.0", {l.base}}, {"2.0", {l.base, l.top}}}).ok());
  CHECK_THAT(OpenError("oci:" + tmp.path() + ":3.0"),
             Catch::Contains("no image tagged \"3.0\"; available tags: 1.0, 2.0"));
  CHECK_THAT(OpenError("oci:" + tmp.path()),
             Catch::Contains("the layout holds 2 images; pick one with oci:DIR:TAG; available tags: 1.0, 2.0"));
  CHECK_THAT(OpenError("oci:" + tmp.path() + "/nope:1.0"), Catch::Contains("not an OCI image layout"));
}

TEST_CASE("oci layout: without a tag, the only image or the one tagged latest", "[oci][layout]") {
  Layers l;
  {
    ScratchDir tmp;
    REQUIRE(WriteOciLayout(tmp.path(), {{"only", {l.base, l.top}}}).ok());
    auto tree = SquashRef("oci:" + tmp.path());
    REQUIRE(tree.ok());
    CHECK(*tree == kTwoLayerTree);
  }
  {
    ScratchDir tmp;
    REQUIRE(WriteOciLayout(tmp.path(), {{"old", {l.base}}, {"latest", {l.base, l.top}}}).ok());
    auto tree = SquashRef("oci:" + tmp.path());
    REQUIRE(tree.ok());
    CHECK(*tree == kTwoLayerTree);
  }
}

TEST_CASE("oci layout: zstd and uncompressed layers", "[oci][layout]") {
  Layers l;
  for (Compression c : {Compression::kZstd, Compression::kNone}) {
    ScratchDir tmp;
    ImageSpec spec{"t", {l.base, l.top}, c, ""};
    REQUIRE(WriteOciLayout(tmp.path(), {spec}).ok());
    auto tree = SquashRef("oci:" + tmp.path() + ":t");
    INFO(tree.status().ToString());
    REQUIRE(tree.ok());
    CHECK(*tree == kTwoLayerTree);
  }
}

TEST_CASE("oci layout: a nested image index resolves to linux/amd64", "[oci][layout]") {
  ScratchDir tmp;
  Layers l;
  LayerBuilder arm;
  arm.File("arch", "arm64");
  REQUIRE(WriteOciLayout(tmp.path(), {{"arm", {arm.Tar()}}, {"amd", {l.base, l.top}}}).ok());
  json top = json::parse(ReadFile(tmp.path() + "/index.json"));
  json nested = {{"schemaVersion", 2},
                 {"mediaType", "application/vnd.oci.image.index.v1+json"},
                 {"manifests", top["manifests"]}};
  nested["manifests"][0]["platform"] = {{"os", "linux"}, {"architecture", "arm64"}, {"variant", "v8"}};
  nested["manifests"][1]["platform"] = {{"os", "linux"}, {"architecture", "amd64"}};
  std::string ntext = nested.dump();
  WriteFile(BlobPath(tmp.path(), Sha256String(ntext)), ntext);
  json index = {{"schemaVersion", 2},
                {"manifests",
                 {{{"mediaType", "application/vnd.oci.image.index.v1+json"},
                   {"digest", Sha256String(ntext)},
                   {"size", ntext.size()},
                   {"annotations", {{"org.opencontainers.image.ref.name", "multi"}}}}}}};
  WriteFile(tmp.path() + "/index.json", index.dump());
  auto tree = SquashRef("oci:" + tmp.path() + ":multi");
  INFO(tree.status().ToString());
  REQUIRE(tree.ok());
  CHECK(*tree == kTwoLayerTree);

  SECTION("no amd64 entry: error lists the platforms") {
    nested["manifests"].erase(1);
    ntext = nested.dump();
    WriteFile(BlobPath(tmp.path(), Sha256String(ntext)), ntext);
    index["manifests"][0]["digest"] = Sha256String(ntext);
    index["manifests"][0]["size"] = ntext.size();
    WriteFile(tmp.path() + "/index.json", index.dump());
    CHECK_THAT(OpenError("oci:" + tmp.path() + ":multi"),
               Catch::Contains("no linux/amd64 image; platforms: linux/arm64/v8"));
  }
}

TEST_CASE("oci layout: a tampered layer fails with the layer's digest", "[oci][layout][integrity]") {
  ScratchDir tmp;
  LayerBuilder b;
  b.File("f", "the original content of the file");
  ImageSpec spec{"t", {b.Tar()}, Compression::kNone, ""};
  auto written = WriteOciLayout(tmp.path(), {spec});
  REQUIRE(written.ok());
  std::string digest = (*written)[0].layer_digests[0];
  std::string path = BlobPath(tmp.path(), digest);
  std::string blob = ReadFile(path);

  SECTION("same size, one byte changed inside file data") {
    size_t at = blob.find("original");
    REQUIRE(at != std::string::npos);
    blob[at] = 'O';
    WriteFile(path, blob);
    auto tree = SquashRef("oci:" + tmp.path() + ":t");
    REQUIRE_FALSE(tree.ok());
    CHECK_THAT(std::string(tree.status().message()),
               Catch::StartsWith("layer " + digest + " : digest mismatch: expected " + digest +
                                 ", content hashes to sha256:"));
  }
  SECTION("truncated blob") {
    WriteFile(path, blob.substr(0, 700));
    auto tree = SquashRef("oci:" + tmp.path() + ":t");
    REQUIRE_FALSE(tree.ok());
    CHECK_THAT(std::string(tree.status().message()),
               Catch::Contains("layer " + digest + " : size mismatch: manifest says " +
                               std::to_string(blob.size()) + " bytes, blob has 700"));
  }
  SECTION("missing blob") {
    std::remove(path.c_str());
    auto tree = SquashRef("oci:" + tmp.path() + ":t");
    REQUIRE_FALSE(tree.ok());
    CHECK_THAT(std::string(tree.status().message()), Catch::Contains("layer " + digest + " : blob missing"));
  }
}

TEST_CASE("oci layout: a tampered gzip layer fails with the layer's digest", "[oci][layout][integrity]") {
  ScratchDir tmp;
  LayerBuilder b;
  std::string text;
  for (int i = 0; i < 3000; ++i) text += "line " + std::to_string(i) + "\n";
  b.File("f", text);
  auto written = WriteOciLayout(tmp.path(), {{"t", {b.Tar()}}});
  REQUIRE(written.ok());
  std::string digest = (*written)[0].layer_digests[0];
  std::string path = BlobPath(tmp.path(), digest);
  std::string blob = ReadFile(path);
  blob[blob.size() / 2] ^= 0x55;
  WriteFile(path, blob);
  auto tree = SquashRef("oci:" + tmp.path() + ":t");
  REQUIRE_FALSE(tree.ok());
  // Either the inflater or the digest check notices first; both name the layer.
  CHECK_THAT(std::string(tree.status().message()), Catch::StartsWith("layer " + digest));
}

TEST_CASE("oci layout: tampered config and manifest are refused", "[oci][layout][integrity]") {
  ScratchDir tmp;
  Layers l;
  auto written = WriteOciLayout(tmp.path(), {{"t", {l.base}}});
  REQUIRE(written.ok());
  SECTION("config") {
    std::string path = BlobPath(tmp.path(), (*written)[0].config_digest);
    std::string cfg = ReadFile(path);
    cfg[cfg.find("amd64")] = 'A';
    WriteFile(path, cfg);
    CHECK_THAT(OpenError("oci:" + tmp.path() + ":t"),
               Catch::Contains("config " + (*written)[0].config_digest + ": digest mismatch"));
  }
  SECTION("manifest") {
    std::string path = BlobPath(tmp.path(), (*written)[0].manifest_digest);
    std::string m = ReadFile(path);
    m[m.find("schemaVersion")] = 'S';
    WriteFile(path, m);
    CHECK_THAT(OpenError("oci:" + tmp.path() + ":t"),
               Catch::Contains("manifest " + (*written)[0].manifest_digest + ": digest mismatch"));
  }
}

TEST_CASE("oci layout: non-layer media types and bad digests are refused", "[oci][layout]") {
  ScratchDir tmp;
  Layers l;
  auto written = WriteOciLayout(tmp.path(), {{"t", {l.base}}});
  REQUIRE(written.ok());
  std::string mpath = BlobPath(tmp.path(), (*written)[0].manifest_digest);
  json m = json::parse(ReadFile(mpath));
  SECTION("helm chart layer") {
    m["layers"][0]["mediaType"] = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
  }
  SECTION("artifact config") { m["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json"; }
  SECTION("digest with path characters") { m["layers"][0]["digest"] = "sha256:../../../../etc/passwd"; }
  std::string text = m.dump();
  WriteFile(BlobPath(tmp.path(), Sha256String(text)), text);
  json index = json::parse(ReadFile(tmp.path() + "/index.json"));
  index["manifests"][0]["digest"] = Sha256String(text);
  index["manifests"][0]["size"] = text.size();
  WriteFile(tmp.path() + "/index.json", index.dump());
  std::string err = OpenError("oci:" + tmp.path() + ":t");
  bool named = err.find("unsupported media type \"application/vnd.cncf.helm.chart.content.v1.tar+gzip\"") !=
                   std::string::npos ||
               err.find(
                   "config media type \"application/vnd.cncf.helm.config.v1+json\" is not a container image "
                   "config") != std::string::npos ||
               err.find("unsupported or malformed digest \"sha256:../../../../etc/passwd\"") != std::string::npos;
  INFO(err);
  CHECK(named);
}

TEST_CASE("image references", "[oci]") {
  CHECK_THAT(OpenError("docker://alpine"), Catch::Contains("unsupported image reference \"docker://alpine\""));
  CHECK_THAT(OpenError("oci:"), Catch::Contains("empty path or tag"));
  CHECK_THAT(OpenError("oci:/tmp/x:"), Catch::Contains("empty path or tag"));
}

TEST_CASE("docker-archive: skopeo layout, plain and with legacy layer.tar links", "[oci][docker]") {
  Layers l;
  for (bool legacy : {false, true}) {
    ScratchDir tmp;
    std::string path = tmp.path() + "/img.tar";
    REQUIRE(WriteDockerArchive(path, {{"d4c/test:1", {l.base, l.top}, Compression::kNone, ""}}, legacy).ok());
    auto src = OpenImageSource("docker-archive:" + path);
    INFO(src.status().ToString());
    REQUIRE(src.ok());
    REQUIRE((*src)->layers().size() == 2);
    CHECK((*src)->layers()[0].digest == Sha256String(l.base));  // the diff_id
    CHECK((*src)->layers()[0].size == l.base.size());
    CHECK((*src)->config_json() == DefaultConfig({l.base, l.top}));
    RecordingSink sink;
    auto tree = SquashLayers(**src, sink);
    REQUIRE(tree.ok());
    CHECK(*tree == kTwoLayerTree);
  }
}

TEST_CASE("docker-archive: compressed layer members are decompressed and checked", "[oci][docker]") {
  ScratchDir tmp;
  Layers l;
  std::string path = tmp.path() + "/img.tar";
  REQUIRE(WriteDockerArchive(path, {{"x:1", {l.base, l.top}, Compression::kGzip, ""}}).ok());
  auto tree = SquashRef("docker-archive:" + path);
  INFO(tree.status().ToString());
  REQUIRE(tree.ok());
  CHECK(*tree == kTwoLayerTree);
}

TEST_CASE("docker-archive: several images, selected by RepoTags or index", "[oci][docker]") {
  ScratchDir tmp;
  Layers l;
  std::string path = tmp.path() + "/multi.tar";
  REQUIRE(WriteDockerArchive(path, {{"docker.io/d4c/app:1", {l.base}, Compression::kNone, ""},
                                    {"docker.io/d4c/app:2", {l.base, l.top}, Compression::kNone, ""}})
              .ok());
  CHECK_THAT(
      OpenError("docker-archive:" + path),
      Catch::Contains("the archive holds 2 images; pick one with docker-archive:TAR:NAME:TAG or :@N; images: "
                      "docker.io/d4c/app:1, docker.io/d4c/app:2"));
  for (std::string sel : {"d4c/app:2", "docker.io/d4c/app:2", "@1"}) {
    auto tree = SquashRef("docker-archive:" + path + ":" + sel);
    INFO(sel << ": " << tree.status().ToString());
    REQUIRE(tree.ok());
    CHECK(*tree == kTwoLayerTree);
  }
  CHECK_THAT(OpenError("docker-archive:" + path + ":d4c/app:3"),
             Catch::Contains("no image \"d4c/app:3\" in the archive"));
  CHECK_THAT(OpenError("docker-archive:" + path + ":@2"), Catch::Contains("no image \"@2\""));
}

TEST_CASE("docker-archive: a tampered layer fails its diff_id check", "[oci][docker][integrity]") {
  ScratchDir tmp;
  LayerBuilder b;
  b.File("f", "docker layer payload 12345");
  std::string tar = b.Tar();
  std::string path = tmp.path() + "/img.tar";
  REQUIRE(WriteDockerArchive(path, {{"x:1", {tar}, Compression::kNone, ""}}).ok());
  std::string bytes = ReadFile(path);
  size_t at = bytes.find("payload 12345");
  REQUIRE(at != std::string::npos);
  bytes[at] = 'P';
  WriteFile(path, bytes);
  auto tree = SquashRef("docker-archive:" + path);
  REQUIRE_FALSE(tree.ok());
  CHECK_THAT(
      std::string(tree.status().message()),
      Catch::StartsWith("layer " + Sha256String(tar) + " : digest mismatch: expected " + Sha256String(tar)));
}

TEST_CASE("docker-archive: broken archives are refused clearly", "[oci][docker]") {
  ScratchDir tmp;
  std::string path = tmp.path() + "/x.tar";
  SECTION("missing file") { CHECK_THAT(OpenError("docker-archive:" + path), Catch::Contains("cannot open")); }
  SECTION("compressed outer tar") {
    WriteFile(path, Compress("hello", Compression::kGzip));
    CHECK_THAT(OpenError("docker-archive:" + path), Catch::Contains("the archive is compressed"));
  }
  SECTION("no manifest.json") {
    LayerBuilder b;
    b.File("other", "x");
    WriteFile(path, b.Tar());
    CHECK_THAT(OpenError("docker-archive:" + path), Catch::Contains("member \"manifest.json\" is missing"));
  }
  SECTION("layer count differs from diff_ids") {
    Layers l;
    REQUIRE(
        WriteDockerArchive(path, {{"x:1", {l.base}, Compression::kNone, DefaultConfig({l.base, l.top})}}).ok());
    CHECK_THAT(OpenError("docker-archive:" + path),
               Catch::Contains("manifest.json lists 1 layers but the config has 2 diff_ids"));
  }
}

TEST_CASE("docker-archive: member data offsets are right after pax/GNU extension headers", "[oci][docker]") {
  Layers l;
  std::string config = DefaultConfig({l.base, l.top});
  std::string dir = std::string(90, 'd') + "/" + std::string(80, 'e');  // forces extended headers
  json manifest = json::array({{{"Config", dir + "/cfg.json"},
                                {"RepoTags", {"x:1"}},
                                {"Layers", {dir + "/base.tar", "./" + dir + "/top.tar"}}}});
  for (TarFormat f : {TarFormat::kPax, TarFormat::kGnu}) {
    ScratchDir tmp;
    LayerBuilder outer(f);
    outer.File(dir + "/base.tar", l.base).File(dir + "/cfg.json", config).File(dir + "/top.tar", l.top);
    outer.File("manifest.json", manifest.dump());
    WriteFile(tmp.path() + "/a.tar", outer.Tar());
    auto tree = SquashRef("docker-archive:" + tmp.path() + "/a.tar");
    INFO(tree.status().ToString());
    REQUIRE(tree.ok());
    CHECK(*tree == kTwoLayerTree);
  }
}
