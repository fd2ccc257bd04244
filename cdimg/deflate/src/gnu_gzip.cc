#include "d4c/deflate.h"

namespace d4c::deflate {

absl::StatusOr<std::string> GnuGzip(std::string_view, int) {
  return absl::UnimplementedError("GNU gzip deflate: not built yet");
}

}  // namespace d4c::deflate
