// libcurl's functions, looked up the first time a registry is contacted.
//
// ctr-cli and the snapshotter do not link libcurl: libcurl.so.4 and the ~35
// libraries it needs (TLS, LDAP, Kerberos, SSH, IDN, ...) would be mapped
// and their symbols resolved at every process start, 4 ms of the 6 ms that
// `ctr-cli --help` took (docs/architecture.md "Start-up"). Only commands
// that talk to a registry load it, through Curl() below.
#ifndef D4C_REGISTRY_SRC_CURL_API_H_
#define D4C_REGISTRY_SRC_CURL_API_H_

#include <curl/curl.h>

#include "absl/status/statusor.h"

namespace d4c::registry::internal {

// The functions curl_transport.cc calls; each member has the type of the
// libcurl function of the same name (curl_easy_init → easy_init).
struct CurlApi {
  decltype(&curl_global_init) global_init;
  decltype(&curl_version_info) version_info;
  decltype(&curl_easy_init) easy_init;
  decltype(&curl_easy_cleanup) easy_cleanup;
  decltype(&curl_easy_reset) easy_reset;
  decltype(&curl_easy_setopt) easy_setopt;
  decltype(&curl_easy_getinfo) easy_getinfo;
  decltype(&curl_easy_perform) easy_perform;
  decltype(&curl_easy_strerror) easy_strerror;
  decltype(&curl_slist_append) slist_append;
  decltype(&curl_slist_free_all) slist_free_all;
};

// libcurl, loaded once per process (later calls return the same table or
// the same error) and never unloaded; curl_global_init has run. Thread-safe.
// Error: FailedPrecondition naming the library, dlopen's reason and the
// package to install.
absl::StatusOr<const CurlApi*> Curl();

}  // namespace d4c::registry::internal

#endif  // D4C_REGISTRY_SRC_CURL_API_H_
