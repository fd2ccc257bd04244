// libcurl is not linked into our processes: the first transport loads it
// (registry/src/curl_api.h; docs/architecture.md "Start-up"). Each test case
// runs in its own process (catch_discover_tests), so the first case sees the
// process before and after that load.
#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>
#include <string>

#include "curl_api.h"
#include "d4c/registry/http_transport.h"

using namespace d4c::registry;

namespace {

bool CurlMapped() {
  std::ifstream maps("/proc/self/maps");
  std::stringstream text;
  text << maps.rdbuf();
  return text.str().find("/libcurl.so") != std::string::npos;
}

}  // namespace

TEST_CASE("libcurl is mapped only once a transport is made") {
  REQUIRE_FALSE(CurlMapped());
  auto t = NewCurlTransport();
  REQUIRE(t.ok());
  CHECK(CurlMapped());
}

TEST_CASE("every libcurl function the transport calls is bound and curl works") {
  auto api = internal::Curl();
  REQUIRE(api.ok());
  const internal::CurlApi& c = **api;
  for (const void* f : {reinterpret_cast<const void*>(c.global_init), reinterpret_cast<const void*>(c.version_info),
                        reinterpret_cast<const void*>(c.easy_init), reinterpret_cast<const void*>(c.easy_cleanup),
                        reinterpret_cast<const void*>(c.easy_reset), reinterpret_cast<const void*>(c.easy_setopt),
                        reinterpret_cast<const void*>(c.easy_getinfo), reinterpret_cast<const void*>(c.easy_perform),
                        reinterpret_cast<const void*>(c.easy_strerror), reinterpret_cast<const void*>(c.slist_append),
                        reinterpret_cast<const void*>(c.slist_free_all)})
    CHECK(f != nullptr);
  // The same table every time.
  CHECK(*internal::Curl() == &c);
  // A call through each kind of signature: a version record, a handle with
  // an option set, a header list, an error text.
  curl_version_info_data* v = c.version_info(CURLVERSION_NOW);
  REQUIRE(v != nullptr);
  CHECK(v->version_num >= 0x074400);  // 7.68, the oldest the transport's options need
  CURL* h = c.easy_init();
  REQUIRE(h != nullptr);
  CHECK(c.easy_setopt(h, CURLOPT_URL, "http://127.0.0.1:1/") == CURLE_OK);
  curl_slist* hdrs = c.slist_append(nullptr, "Expect:");
  CHECK(hdrs != nullptr);
  c.slist_free_all(hdrs);
  c.easy_cleanup(h);
  CHECK(std::string(c.easy_strerror(CURLE_COULDNT_CONNECT)).find("onnect") != std::string::npos);
}
