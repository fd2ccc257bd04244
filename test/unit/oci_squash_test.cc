// SquashLayers on synthetic layers: OCI whiteout/opaque semantics, hardlink
// groups across layers, full metadata, hostile paths and size limits.
#include <catch2/catch.hpp>

#include "d4c/entry.h"
#include "d4c/oci.h"
#include "oci_fixture.h"

using namespace d4c;
using namespace d4c::oci_test;

namespace {

struct Result {
  absl::StatusOr<std::vector<Entry>> entries;
  RecordingSink sink;
  std::vector<std::string> layer_digests;
};

Result Run(const std::vector<LayerBuilder>& layers, Compression c = Compression::kGzip,
           const SquashOptions& options = {}) {
  Result r;
  MemoryImageSource image = MemoryImage(layers, c);
  for (const LayerDescriptor& d : image.layers()) r.layer_digests.push_back(d.digest);
  r.entries = SquashLayers(image, r.sink, options);
  return r;
}

std::vector<Entry> Squash(const std::vector<LayerBuilder>& layers, Compression c = Compression::kGzip) {
  Result r = Run(layers, c);
  INFO(r.entries.status().ToString());
  REQUIRE(r.entries.ok());
  REQUIRE(ValidateTree(*r.entries).ok());
  return *r.entries;
}

std::string SquashError(const std::vector<LayerBuilder>& layers, const SquashOptions& options = {},
                        std::vector<std::string>* digests = nullptr) {
  Result r = Run(layers, Compression::kGzip, options);
  if (digests) *digests = r.layer_digests;
  REQUIRE_FALSE(r.entries.ok());
  return std::string(r.entries.status().message());
}

void ExpectTree(const std::vector<Entry>& got, const std::vector<Entry>& want) {
  REQUIRE(Describe(got) == Describe(want));
  REQUIRE(got == want);
}

Entry With(Entry e, uint32_t uid, uint32_t gid) {
  e.uid = uid;
  e.gid = gid;
  return e;
}

}  // namespace

TEST_CASE("plain layer: files, dirs, symlinks, implied root and parents", "[oci][squash]") {
  LayerBuilder l;
  l.Dir("etc").File("etc/hosts", "127.0.0.1 localhost\n").Symlink("etc/alias", "hosts");
  l.File("usr/bin/tool", "#!/bin/sh\n", 0755);  // usr, usr/bin implied
  auto got = Squash({l});
  Entry usr = DirEntry("usr", 0755, 0), usr_bin = DirEntry("usr/bin", 0755, 0);
  ExpectTree(got, {ImpliedRoot(), DirEntry("etc"), SymlinkEntry("etc/alias", "hosts"),
                   FileEntry("etc/hosts", "127.0.0.1 localhost\n"), usr, usr_bin,
                   FileEntry("usr/bin/tool", "#!/bin/sh\n", 0755)});
}

TEST_CASE("root metadata comes from the ./ entry, ./ prefixes and // are normalized", "[oci][squash]") {
  LayerBuilder l;
  l.Dir("./", 0700).Owner(1, 2).Mtime(5000, 7);
  l.Dir("./a/").File(".//a//f", "x");
  auto got = Squash({l});
  Entry root = With(DirEntry("", 0700, 5000), 1, 2);
  root.mtime_nsec = 7;
  ExpectTree(got, {root, DirEntry("a"), FileEntry("a/f", "x")});
}

TEST_CASE("a layer without ./ keeps the root of the layer below", "[oci][squash]") {
  LayerBuilder l1, l2;
  l1.Dir(".", 0751).Mtime(3000);
  l2.File("f", "y");
  ExpectTree(Squash({l1, l2}), {DirEntry("", 0751, 3000), FileEntry("f", "y")});
}

TEST_CASE("entries come out in ComparePaths order", "[oci][squash]") {
  LayerBuilder l;
  l.File("a-b", "1").Dir("a").File("a/x", "2").File("a.c", "3");
  auto got = Squash({l});
  ExpectTree(got,
             {ImpliedRoot(), DirEntry("a"), FileEntry("a/x", "2"), FileEntry("a-b", "1"), FileEntry("a.c", "3")});
}

TEST_CASE("whiteouts remove files and whole directories of lower layers", "[oci][squash][whiteout]") {
  LayerBuilder l1, l2;
  l1.Dir("a").File("a/b", "b").File("a/c", "c").Dir("d").Dir("d/e").File("d/e/f", "f").File("g", "g");
  l2.Whiteout("a/b").Whiteout("d").Whiteout("nonexistent").Whiteout("a/missing/deeper");
  ExpectTree(Squash({l1, l2}), {ImpliedRoot(), DirEntry("a"), FileEntry("a/c", "c"), FileEntry("g", "g")});
}

TEST_CASE("whiteout then re-create in the same layer", "[oci][squash][whiteout]") {
  LayerBuilder l1, l2;
  l1.Dir("d").File("d/old", "o");
  l2.Whiteout("d").Dir("d", 0700).File("d/new", "n");
  ExpectTree(Squash({l1, l2}), {ImpliedRoot(), DirEntry("d", 0700), FileEntry("d/new", "n")});
}

TEST_CASE("a whiteout never removes what its own layer wrote", "[oci][squash][whiteout]") {
  LayerBuilder l1, l2;
  l1.Dir("d").File("d/lower", "l").File("x", "lower x");
  // Out-of-spec order: the entries come before their whiteouts.
  l2.File("d/upper", "u").File("x", "upper x").Whiteout("d").Whiteout("x");
  ExpectTree(Squash({l1, l2}),
             {ImpliedRoot(), DirEntry("d"), FileEntry("d/upper", "u"), FileEntry("x", "upper x")});
}

TEST_CASE("opaque directories hide lower content but keep their own layer's", "[oci][squash][whiteout]") {
  LayerBuilder l1, l2;
  l1.Dir("x", 0750).File("x/1", "1").Dir("x/sub").File("x/sub/2", "2").File("y", "y");
  SECTION("marker first") { l2.Opaque("x").File("x/new", "n"); }
  SECTION("marker last") { l2.File("x/new", "n").Opaque("x"); }
  // x keeps its own (lower) metadata: the marker is not an entry for x.
  ExpectTree(Squash({l1, l2}), {ImpliedRoot(), DirEntry("x", 0750), FileEntry("x/new", "n"), FileEntry("y", "y")});
}

TEST_CASE("opaque root and opaque marker for a missing dir", "[oci][squash][whiteout]") {
  LayerBuilder l1, l2;
  l1.File("a", "a").Dir("b").File("b/c", "c");
  l2.File("z", "z").Opaque("").Opaque("nope");
  ExpectTree(Squash({l1, l2}), {ImpliedRoot(), FileEntry("z", "z")});
}

TEST_CASE("whiteout files never appear in the result, AUFS metadata is skipped", "[oci][squash][whiteout]") {
  LayerBuilder l;
  l.Dir("d").Whiteout("d/gone").Opaque("d").File(".wh..wh.plnk", "aufs").File("d/f", "f");
  ExpectTree(Squash({l}), {ImpliedRoot(), DirEntry("d"), FileEntry("d/f", "f")});
}

TEST_CASE("a file replaced by a directory and a directory by a file", "[oci][squash]") {
  LayerBuilder l1, l2;
  l1.File("p", "file p").Dir("q").File("q/x", "x").Dir("q/deep").File("q/deep/y", "y");
  l2.Dir("p", 0711).File("p/inner", "i").File("q", "file q");
  ExpectTree(Squash({l1, l2}),
             {ImpliedRoot(), DirEntry("p", 0711), FileEntry("p/inner", "i"), FileEntry("q", "file q")});
}

TEST_CASE("a directory over a directory updates metadata and keeps children", "[oci][squash]") {
  LayerBuilder l1, l2;
  l1.Dir("d").WithXattr("user.old", "1").File("d/k", "keep");
  l2.Dir("d", 0700).Owner(7, 8).Mtime(2000, 5).WithXattr("user.new", "2");
  Entry d = With(DirEntry("d", 0700, 2000), 7, 8);
  d.mtime_nsec = 5;
  d.xattrs = {{"user.new", "2"}};
  ExpectTree(Squash({l1, l2}), {ImpliedRoot(), d, FileEntry("d/k", "keep")});
}

TEST_CASE("symlink replaced by directory and directory by symlink", "[oci][squash]") {
  LayerBuilder l1, l2;
  l1.Symlink("s", "/etc").Dir("t").File("t/f", "f");
  l2.Dir("s").File("s/in", "i").Symlink("t", "s");
  ExpectTree(Squash({l1, l2}), {ImpliedRoot(), DirEntry("s"), FileEntry("s/in", "i"), SymlinkEntry("t", "s")});
}

TEST_CASE("hardlinks in one layer: the smallest path becomes the primary", "[oci][squash][hardlink]") {
  LayerBuilder l;
  l.File("z", "shared", 0640).Owner(3, 4).Hardlink("a", "z").Hardlink("./m", "./z");
  auto got = Squash({l});
  ExpectTree(got, {ImpliedRoot(), With(FileEntry("a", "shared", 0640), 3, 4), HardlinkEntry("m", "a"),
                   HardlinkEntry("z", "a")});
}

TEST_CASE("hardlink in layer 2 to a file of layer 1, then the primary is deleted", "[oci][squash][hardlink]") {
  LayerBuilder l1, l2, l3;
  l1.Dir("data").File("data/f", "v1", 0600).Owner(5, 5);
  l2.Hardlink("link", "data/f");
  Entry f = With(FileEntry("data/f", "v1", 0600), 5, 5);
  SECTION("two names") {
    ExpectTree(Squash({l1, l2}), {ImpliedRoot(), DirEntry("data"), f, HardlinkEntry("link", "data/f")});
  }
  SECTION("primary whited out: the remaining name keeps content and metadata") {
    l3.Whiteout("data/f");
    Entry link = f;
    link.path = "link";
    ExpectTree(Squash({l1, l2, l3}), {ImpliedRoot(), DirEntry("data"), link});
  }
  SECTION("primary's directory deleted") {
    l3.Whiteout("data");
    Entry link = f;
    link.path = "link";
    ExpectTree(Squash({l1, l2, l3}), {ImpliedRoot(), link});
  }
}

TEST_CASE("replacing the primary leaves the other names as a group", "[oci][squash][hardlink]") {
  LayerBuilder l1, l2;
  l1.File("a", "old", 0644).Hardlink("b", "a").Hardlink("c", "a");
  l2.File("a", "new", 0600);
  ExpectTree(Squash({l1, l2}),
             {ImpliedRoot(), FileEntry("a", "new", 0600), FileEntry("b", "old"), HardlinkEntry("c", "b")});
}

TEST_CASE("a hardlink joins an existing group of a lower layer", "[oci][squash][hardlink]") {
  LayerBuilder l1, l2;
  l1.File("m", "g").Hardlink("n", "m");
  l2.Hardlink("b", "n").Whiteout("m");
  ExpectTree(Squash({l1, l2}), {ImpliedRoot(), FileEntry("b", "g"), HardlinkEntry("n", "b")});
}

TEST_CASE("hardlink to a symlink, a device and a fifo", "[oci][squash][hardlink]") {
  LayerBuilder l;
  l.Symlink("s", "target").Hardlink("s2", "s").Fifo("p").Hardlink("p2", "p");
  ExpectTree(Squash({l}), {ImpliedRoot(),
                           [] {
                             Entry e;
                             e.path = "p";
                             e.type = EntryType::kFifo;
                             e.mode = 0644;
                             e.mtime_sec = 1000;
                             return e;
                           }(),
                           HardlinkEntry("p2", "p"), SymlinkEntry("s", "target"), HardlinkEntry("s2", "s")});
}

TEST_CASE("bad hardlinks are refused", "[oci][squash][hardlink]") {
  std::vector<std::string> d;
  SECTION("missing target") {
    LayerBuilder l;
    l.Hardlink("x", "nowhere");
    std::string err = SquashError({l}, {}, &d);
    CHECK_THAT(err, Catch::Contains("layer " + d[0] +
                                    " : entry \"x\" is a hardlink to \"nowhere\", which does not exist"));
  }
  SECTION("directory target") {
    LayerBuilder l;
    l.Dir("dir").Hardlink("x", "dir");
    CHECK_THAT(SquashError({l}), Catch::Contains("entry \"x\" is a hardlink to directory \"dir\""));
  }
  SECTION("target escapes") {
    LayerBuilder l;
    l.Hardlink("x", "../../etc/shadow");
    std::string err = SquashError({l}, {}, &d);
    CHECK_THAT(err, Catch::Contains("layer " + d[0] +
                                    " : entry \"x\" is a hardlink whose target "
                                    "\"../../etc/shadow\" escapes the image root"));
  }
  SECTION("absolute target") {
    LayerBuilder l;
    l.File("etc", "e").Hardlink("x", "/etc");
    CHECK_THAT(SquashError({l}), Catch::Contains("hardlink whose target \"/etc\" escapes the image root"));
  }
  SECTION("target through a symlink") {
    LayerBuilder l;
    l.Dir("real").File("real/f", "f").Symlink("s", "real").Hardlink("x", "s/f");
    CHECK_THAT(SquashError({l}),
               Catch::Contains("entry \"x\" is a hardlink whose target \"s/f\" escapes the image "
                               "root: its parent \"s\" is a symlink"));
  }
}

TEST_CASE("xattrs including security.capability survive, sorted by name", "[oci][squash][xattr]") {
  // VFS_CAP_REVISION_2 with cap_net_bind_service (bit 10) permitted+effective.
  std::string cap("\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
  LayerBuilder l;
  l.File("bin", "elf", 0755)
      .WithXattr("user.zeta", "z")
      .WithXattr("security.capability", cap)
      .WithXattr("trusted.bin", std::string("\0\xff\x01", 3));
  l.Dir("d").WithXattr("user.dir", "");
  Entry bin = FileEntry("bin", "elf", 0755);
  bin.xattrs = {{"security.capability", cap}, {"trusted.bin", std::string("\0\xff\x01", 3)}, {"user.zeta", "z"}};
  Entry d = DirEntry("d");
  d.xattrs = {{"user.dir", ""}};
  ExpectTree(Squash({l}), {ImpliedRoot(), bin, d});
}

TEST_CASE("setuid, setgid and sticky bits, owners, nanosecond mtimes", "[oci][squash]") {
  LayerBuilder l;
  l.File("su", "s", 04755).Owner(0, 0).File("sg", "g", 02711).Owner(1000, 50).Dir("tmp", 01777);
  l.File("ns", "n").Mtime(1700000000, 123456789);
  Entry ns = FileEntry("ns", "n", 0644, 1700000000);
  ns.mtime_nsec = 123456789;
  ExpectTree(Squash({l}), {ImpliedRoot(), ns, With(FileEntry("sg", "g", 02711), 1000, 50),
                           FileEntry("su", "s", 04755), DirEntry("tmp", 01777)});
}

TEST_CASE("empty files are regular files with the empty digest and are stored", "[oci][squash]") {
  LayerBuilder l;
  l.File("empty", "").File("also-empty", "");
  Result r = Run({l});
  REQUIRE(r.entries.ok());
  ExpectTree(*r.entries, {ImpliedRoot(), FileEntry("also-empty", ""), FileEntry("empty", "")});
  CHECK((*r.entries)[1].digest == EmptyDigest());
  CHECK(r.sink.puts == 2);
  CHECK(r.sink.blobs.count(EmptyDigest()) == 1);
}

TEST_CASE("the sink receives every regular file, also ones deleted later", "[oci][squash]") {
  LayerBuilder l1, l2;
  l1.File("a", "first").File("b", "gone");
  l2.File("a", "second").Whiteout("b").Symlink("s", "a");
  Result r = Run({l1, l2});
  REQUIRE(r.entries.ok());
  CHECK(r.sink.puts == 3);
  CHECK(r.sink.blobs.at(Sha256("first")) == "first");
  CHECK(r.sink.blobs.at(Sha256("gone")) == "gone");
  CHECK(r.sink.blobs.at(Sha256("second")) == "second");
}

TEST_CASE("long paths (pax and gnu) and non-UTF-8 names keep their bytes", "[oci][squash]") {
  std::string dir(120, 'd');
  std::string file = dir + "/" + std::string(200, 'f');
  std::string latin1 = "caf\xe9";        // ISO-8859-1, invalid UTF-8
  std::string junk = "bad\xff\xfe\x80";  // never valid UTF-8
  std::string utf8 = "na\xc3\xafve";     // valid UTF-8
  std::string target = std::string(300, 't');
  for (TarFormat f : {TarFormat::kPax, TarFormat::kGnu}) {
    LayerBuilder l(f);
    l.Dir(dir).File(file, "long").File(latin1, "1").File(junk, "2").File(utf8, "3").Symlink("ln", target);
    INFO((f == TarFormat::kPax ? "pax" : "gnu"));
    ExpectTree(Squash({l}), {ImpliedRoot(), FileEntry(junk, "2"), FileEntry(latin1, "1"), DirEntry(dir),
                             FileEntry(file, "long"), SymlinkEntry("ln", target), FileEntry(utf8, "3")});
  }
}

TEST_CASE("ustar layers work", "[oci][squash]") {
  LayerBuilder l(TarFormat::kUstar);
  l.Dir("a").File("a/b", "b").Hardlink("c", "a/b");
  ExpectTree(Squash({l}), {ImpliedRoot(), DirEntry("a"), FileEntry("a/b", "b"), HardlinkEntry("c", "a/b")});
}

TEST_CASE("device nodes and fifos", "[oci][squash]") {
  LayerBuilder l;
  l.Dir("dev")
      .Device("dev/null", EntryType::kCharDevice, 1, 3, 0666)
      .Device("dev/sda", EntryType::kBlockDevice, 8, 0, 0660);
  l.Device("dev/big", EntryType::kCharDevice, 4095, 1048575).Fifo("dev/fifo", 0600);
  auto dev = [](std::string p, EntryType t, uint32_t ma, uint32_t mi, uint32_t mode) {
    Entry e;
    e.path = std::move(p);
    e.type = t;
    e.mode = mode;
    e.mtime_sec = 1000;
    e.dev_major = ma;
    e.dev_minor = mi;
    return e;
  };
  ExpectTree(Squash({l}),
             {ImpliedRoot(), DirEntry("dev"), dev("dev/big", EntryType::kCharDevice, 4095, 1048575, 0600),
              dev("dev/fifo", EntryType::kFifo, 0, 0, 0600), dev("dev/null", EntryType::kCharDevice, 1, 3, 0666),
              dev("dev/sda", EntryType::kBlockDevice, 8, 0, 0660)});
}

TEST_CASE("compression is auto-detected: plain tar and zstd", "[oci][squash]") {
  LayerBuilder l;
  l.File("f", "content");
  for (Compression c : {Compression::kNone, Compression::kZstd, Compression::kGzip})
    ExpectTree(Squash({l}, c), {ImpliedRoot(), FileEntry("f", "content")});
}

TEST_CASE("a zero-byte layer is an empty layer", "[oci][squash]") {
  MemoryImageSource image(std::vector<MemoryImageSource::Layer>{{"application/vnd.oci.image.layer.v1.tar", ""}});
  RecordingSink sink;
  auto r = SquashLayers(image, sink);
  REQUIRE(r.ok());
  ExpectTree(*r, {ImpliedRoot()});
}

TEST_CASE("paths escaping the root are rejected with the layer digest", "[oci][squash][security]") {
  std::vector<std::string> d;
  SECTION("dot-dot") {
    LayerBuilder l;
    l.File("ok", "fine").File("../etc/passwd", "root::0:0");
    std::string err = SquashError({l}, {}, &d);
    CHECK(err == "layer " + d[0] + " : entry \"../etc/passwd\" escapes the image root");
  }
  SECTION("dot-dot in the middle") {
    LayerBuilder l;
    l.Dir("a").File("a/../../b", "x");
    CHECK_THAT(SquashError({l}), Catch::Contains("entry \"a/../../b\" escapes the image root"));
  }
  SECTION("harmless-looking dot-dot is refused too") {
    LayerBuilder l;
    l.Dir("a").File("a/../b", "x");
    CHECK_THAT(SquashError({l}), Catch::Contains("entry \"a/../b\" escapes the image root"));
  }
  SECTION("absolute") {
    LayerBuilder l;
    l.File("/etc/passwd", "x");
    std::string err = SquashError({l}, {}, &d);
    CHECK(err == "layer " + d[0] + " : entry \"/etc/passwd\" escapes the image root");
  }
  SECTION("in the second layer") {
    LayerBuilder l1, l2;
    l1.File("ok", "fine");
    l2.Symlink("../up", "x");
    std::string err = SquashError({l1, l2}, {}, &d);
    CHECK(err == "layer " + d[1] + " : entry \"../up\" escapes the image root");
  }
}

TEST_CASE("writing through a symlinked parent is rejected", "[oci][squash][security]") {
  std::vector<std::string> d;
  SECTION("same layer") {
    LayerBuilder l;
    l.Symlink("a", "/etc").File("a/passwd", "evil");
    std::string err = SquashError({l}, {}, &d);
    CHECK(err == "layer " + d[0] + " : entry \"a/passwd\" escapes the image root: its parent \"a\" is a symlink");
  }
  SECTION("symlink from a lower layer, deeper path") {
    LayerBuilder l1, l2;
    l1.Dir("x").Symlink("x/y", "../../..");
    l2.Dir("x/y/z");
    std::string err = SquashError({l1, l2}, {}, &d);
    CHECK(err == "layer " + d[1] + " : entry \"x/y/z/\" escapes the image root: its parent \"x/y\" is a symlink");
  }
  SECTION("whiteout through a symlink") {
    LayerBuilder l1, l2;
    l1.Symlink("etc", "/etc");
    l2.Whiteout("etc/shadow");
    CHECK_THAT(SquashError({l1, l2}),
               Catch::Contains("entry \"etc/.wh.shadow\" escapes the image root: its parent "
                               "\"etc\" is a symlink"));
  }
  SECTION("a regular file as parent") {
    LayerBuilder l;
    l.File("f", "x").File("f/g", "y");
    CHECK_THAT(SquashError({l}),
               Catch::Contains("entry \"f/g\" cannot be created: its parent \"f\" is not a directory"));
  }
  SECTION("root replaced by a symlink") {
    LayerBuilder l;
    l.Symlink(".", "/");
    CHECK_THAT(SquashError({l}),
               Catch::Contains("entry \".\" would replace the root directory with a non-directory"));
  }
}

TEST_CASE("gzip bomb: a tiny layer inflating past the limit fails", "[oci][squash][limits]") {
  LayerBuilder l;
  l.File("zeros", std::string(16 << 20, '\0'));  // ~16 KiB gzip'd
  SquashOptions small;
  small.layer_floor_bytes = 1 << 20;
  small.layer_ratio_limit = 10;
  std::vector<std::string> d;
  std::string err = SquashError({l}, small, &d);
  CHECK_THAT(err, Catch::StartsWith("layer " + d[0] + " : "));
  CHECK_THAT(err, Catch::Contains("exceeds the limit of 1048576 bytes"));
  CHECK_THAT(err, Catch::Contains("decompression bomb"));
  SquashOptions roomy;
  roomy.layer_floor_bytes = 64 << 20;
  Result r = Run({l}, Compression::kGzip, roomy);
  REQUIRE(r.entries.ok());
  CHECK(r.entries->back().size == (16u << 20));
}

TEST_CASE("the ratio limit scales with the stored size", "[oci][squash][limits]") {
  LayerBuilder l;
  l.File("zeros", std::string(4 << 20, '\0'));
  SquashOptions o;
  o.layer_floor_bytes = 0;
  o.layer_ratio_limit = 2;
  CHECK_THAT(SquashError({l}, o), Catch::Contains("exceeds the limit of"));
  o.layer_ratio_limit = 100000;
  CHECK(Run({l}, Compression::kGzip, o).entries.ok());
}

TEST_CASE("truncated and corrupt layers fail with the layer named", "[oci][squash][corrupt]") {
  LayerBuilder l;
  std::string payload;
  for (int i = 0; i < 20000; ++i) payload += std::to_string(i * 7919) + ",";
  l.File("a", "a").File("big", payload).File("z", "z");
  std::string tar = l.Tar();
  std::string gz = Compress(tar, Compression::kGzip);
  auto fail = [](std::string bytes, std::string media) {
    MemoryImageSource image(std::vector<MemoryImageSource::Layer>{{media, bytes}});
    RecordingSink sink;
    auto r = SquashLayers(image, sink);
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(std::string(r.status().message()), Catch::StartsWith("layer " + image.layers()[0].digest + " : "));
    return std::string(r.status().message());
  };
  SECTION("gzip cut in half") {
    CHECK_THAT(fail(gz.substr(0, gz.size() / 2), LayerMediaType(Compression::kGzip)),
               Catch::Contains("corrupt or truncated tar"));
  }
  SECTION("plain tar cut inside file data") {
    CHECK_THAT(fail(tar.substr(0, 3000), LayerMediaType(Compression::kNone)),
               Catch::Contains("corrupt or truncated tar"));
  }
  SECTION("garbage") {
    CHECK_THAT(fail(std::string(5000, 'x'), LayerMediaType(Compression::kNone)),
               Catch::Contains("corrupt or truncated tar"));
  }
}

TEST_CASE("per-entry sanity limits", "[oci][squash][limits]") {
  SECTION("xattr value over 64 KiB") {
    LayerBuilder l;
    l.File("f", "x").WithXattr("user.big", std::string(65 * 1024, 'v'));
    CHECK_THAT(SquashError({l}), Catch::Contains("entry \"f\" has xattr \"user.big\" larger than 64 KiB"));
  }
  SECTION("too many xattrs") {
    LayerBuilder l;
    l.File("f", "x");
    for (int i = 0; i < 257; ++i) l.WithXattr("user.n" + std::to_string(i), "v");
    CHECK_THAT(SquashError({l}), Catch::Contains("entry \"f\" has more than 256 xattrs"));
  }
  SECTION("path over 4096 bytes") {
    std::string p;
    while (p.size() <= 4096) p += std::string(200, 'p') + "/";
    p += "f";
    LayerBuilder l;
    l.File(p, "x");
    CHECK_THAT(SquashError({l}), Catch::Contains("is longer than 4096 bytes"));
  }
}

TEST_CASE("non-layer media types are refused", "[oci][squash]") {
  MemoryImageSource image(
      std::vector<MemoryImageSource::Layer>{{"application/vnd.oci.image.config.v1+json", "{}"}});
  RecordingSink sink;
  auto r = SquashLayers(image, sink);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(std::string(r.status().message()),
             Catch::Contains("unsupported media type \"application/vnd.oci.image.config.v1+json\""));
}

TEST_CASE("progress is reported after each layer", "[oci][squash]") {
  LayerBuilder l1, l2;
  l1.File("a", "a");
  l2.File("b", "b");
  MemoryImageSource image = MemoryImage({l1, l2});
  RecordingSink sink;
  std::vector<std::pair<size_t, size_t>> calls;
  SquashOptions o;
  o.progress = [&](size_t i, size_t n) { calls.emplace_back(i, n); };
  REQUIRE(SquashLayers(image, sink, o).ok());
  CHECK(calls == std::vector<std::pair<size_t, size_t>>{{0, 2}, {1, 2}});
}
