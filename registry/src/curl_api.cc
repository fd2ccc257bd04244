#include "curl_api.h"

#include <dlfcn.h>

#include <string>

#include "d4c/base/strcat.h"

#ifndef D4C_LIBCURL_SONAME
#error "D4C_LIBCURL_SONAME (libcurl's shared object name) is set by registry/CMakeLists.txt"
#endif

namespace d4c::registry::internal {
namespace {

// Looks up one function; false (with `missing` set) if the library lacks it.
template <typename F>
bool Bind(void* lib, const char* name, F& out, std::string& missing) {
  out = reinterpret_cast<F>(dlsym(lib, name));
  if (!out && missing.empty()) missing = name;
  return out != nullptr;
}

absl::StatusOr<const CurlApi*> Load() {
  void* lib = dlopen(D4C_LIBCURL_SONAME, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* why = dlerror();
    return absl::FailedPreconditionError(
        StrCat(D4C_LIBCURL_SONAME, " cannot be loaded (", why ? why : "unknown dlopen error",
               "): talking to a registry needs libcurl; install Debian's libcurl4 package "
               "(scripts/setup.sh does)"));
  }
  static CurlApi api;
  std::string missing;
  Bind(lib, "curl_global_init", api.global_init, missing);
  Bind(lib, "curl_version_info", api.version_info, missing);
  Bind(lib, "curl_easy_init", api.easy_init, missing);
  Bind(lib, "curl_easy_cleanup", api.easy_cleanup, missing);
  Bind(lib, "curl_easy_reset", api.easy_reset, missing);
  Bind(lib, "curl_easy_setopt", api.easy_setopt, missing);
  Bind(lib, "curl_easy_getinfo", api.easy_getinfo, missing);
  Bind(lib, "curl_easy_perform", api.easy_perform, missing);
  Bind(lib, "curl_easy_strerror", api.easy_strerror, missing);
  Bind(lib, "curl_slist_append", api.slist_append, missing);
  Bind(lib, "curl_slist_free_all", api.slist_free_all, missing);
  if (!missing.empty())
    return absl::FailedPreconditionError(StrCat(D4C_LIBCURL_SONAME, " has no ", missing,
                                                ": the libcurl installed is too old or not libcurl; "
                                                "install Debian's libcurl4 package"));
  if (CURLcode rc = api.global_init(CURL_GLOBAL_DEFAULT); rc != CURLE_OK)
    return absl::InternalError(StrCat("curl_global_init failed: ", api.easy_strerror(rc)));
  return &api;
}

}  // namespace

absl::StatusOr<const CurlApi*> Curl() {
  static const absl::StatusOr<const CurlApi*> api = Load();  // once, thread-safe
  return api;
}

}  // namespace d4c::registry::internal
