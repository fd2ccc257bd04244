// FakeHttpTransport: an HttpTransport that answers from a script, in order,
// and records every request, for unit tests of RegistryClient and of code
// built on it. Bodies go through the real BodyReceiver, so sinks, caps and
// "stopped on purpose" behave exactly as over libcurl.
#pragma once

#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "d4c/registry/http_transport.h"

namespace d4c::registry_test {

struct FakeReply {
  int status = 200;
  registry::HttpHeaders headers;       // lower-case names
  std::string body;                    // not sent for HEAD
  bool content_length = true;          // add content-length: body size (unless in headers)
  std::optional<size_t> drop_after;    // send this many body bytes, then fail as a reset connection
  std::string transport_error;         // no answer at all (status 0): connection refused etc.
  bool tls_error = false;              // with transport_error: a TLS handshake failure (HttpResponse::tls_error)
  size_t chunk = 4096;                 // the body arrives in pieces of this size
  // The body is sent again and again until the receiver stops the transfer
  // (a server that never ends its answer); a safety stop at 1 GiB ends it as
  // a reset connection. No content-length is added.
  bool endless = false;
};

FakeReply Reply(int status, std::string body = "", registry::HttpHeaders headers = {});
FakeReply NoAnswer(std::string error = "Connection refused");

struct RecordedRequest {
  std::string method, url;
  std::vector<std::string> headers;
  std::optional<uint64_t> range_from;
  std::string body;  // what the body source gave
  // The value of header `name` (any case); nullopt if not sent.
  std::optional<std::string> Header(std::string_view name) const;
};

class FakeHttpTransport final : public registry::HttpTransport {
 public:
  // The next request must be `method` on a URL containing `url_part`.
  FakeHttpTransport& Expect(std::string method, std::string url_part, FakeReply reply);

  const std::vector<RecordedRequest>& requests() const { return requests_; }
  size_t pending() const { return script_.size(); }
  // The first request that did not match the script ("" if none). Such a
  // request gets no answer (a transport error).
  const std::string& mismatch() const { return mismatch_; }
  // Body bytes offered to the client over all exchanges (taken or refused).
  uint64_t body_bytes_sent() const { return body_bytes_sent_; }

 protected:
  void Exchange(const registry::HttpRequest& req, registry::HttpResponse& res, BodyReceiver& body) override;

 private:
  struct Step {
    std::string method, url_part;
    FakeReply reply;
  };
  std::deque<Step> script_;
  std::vector<RecordedRequest> requests_;
  std::string mismatch_;
  uint64_t body_bytes_sent_ = 0;
};

}  // namespace d4c::registry_test
