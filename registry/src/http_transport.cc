#include "d4c/registry/http_transport.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "d4c/base/strcat.h"

namespace d4c::registry {

absl::StatusOr<size_t> StringBodySource::ReadAt(uint64_t offset, char* buf, size_t n) const {
  if (offset >= bytes_.size()) return absl::OutOfRangeError(StrCat("request body: read at ", offset, " of ", bytes_.size()));
  size_t want = static_cast<size_t>(std::min<uint64_t>(n, bytes_.size() - offset));
  std::copy_n(bytes_.data() + offset, want, buf);
  return want;
}

absl::StatusOr<size_t> FileBodySource::ReadAt(uint64_t offset, char* buf, size_t n) const {
  if (offset >= length_) return absl::OutOfRangeError(StrCat(name_, ": read at ", offset, " of ", length_));
  size_t want = static_cast<size_t>(std::min<uint64_t>(n, length_ - offset));
  for (;;) {
    ssize_t got = ::pread(fd_, buf, want, static_cast<off_t>(offset_ + offset));
    if (got > 0) return static_cast<size_t>(got);
    if (got < 0 && errno == EINTR) continue;
    if (got == 0) return absl::DataLossError(StrCat(name_, ": file shrank while being uploaded (ends before byte ", offset_ + offset, ")"));
    return absl::DataLossError(StrCat(name_, ": read failed: ", std::strerror(errno)));
  }
}

bool HttpTransport::BodyReceiver::Deliver(int status, const HttpHeaders& headers, std::string_view bytes) {
  if (stopped_) return false;
  if (req_.sink && status >= 200 && status < 300) {
    absl::Status s;
    if (!begun_) {
      begun_ = true;
      s = req_.sink->Begin(status, headers);
    }
    if (s.ok() && !bytes.empty()) s = req_.sink->Write(bytes);
    if (!s.ok()) {
      res_.sink_error = std::move(s);
      stopped_ = true;
      return false;
    }
    res_.sink_bytes += bytes.size();
    return true;
  }
  if (res_.body.size() + bytes.size() > req_.max_body) {
    res_.body_overflow = true;
    stopped_ = true;
    return false;
  }
  res_.body.append(bytes);
  return true;
}

HttpResponse HttpTransport::Perform(const HttpRequest& request) {
  HttpResponse res;
  BodyReceiver body(request, res);
  Exchange(request, res, body);
  // The transport saw the transfer abort; it was us stopping it on purpose.
  if (body.stopped_) res.transport_error.clear();
  return res;
}

}  // namespace d4c::registry
