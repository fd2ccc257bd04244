// libFuzzer: registry answers (catalog index, artifact manifest, auth
// challenge, tag list and its Link header) are untrusted. Parsers must never
// crash or loop; errors are fine.
#include <cstddef>
#include <cstdint>
#include <string>

#include "d4c/registry/catalog.h"
#include "d4c/registry/pull_plan.h"
#include "d4c/registry/registry_client.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string s(reinterpret_cast<const char*>(data), size);
  auto c = d4c::registry::ParseCatalog(s);
  if (c.ok() && !c->artifacts.empty()) {
    // whatever a catalog says, planning terminates
    (void)d4c::registry::PlanPull(*c, {c->artifacts.front().parent_id}, c->artifacts.back().image_id);
    (void)d4c::registry::SerializeCatalog(*c);
  }
  (void)d4c::registry::ParseArtifactManifest(s, "sha256:" + std::string(64, '0'));
  (void)d4c::registry::ParseAuthChallenge(s);
  auto tags = d4c::registry::ParseTagList(s);
  if (tags.ok() && c.ok()) (void)d4c::registry::UncataloguedArtifactTags(*c, *tags);
  (void)d4c::registry::NextPageFromLink(s);
  return 0;
}
