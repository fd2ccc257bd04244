// HttpTransport: the seam between RegistryClient and the network. A transport
// performs one HTTP exchange: no retries, no authentication, no registry
// knowledge (RegistryClient does all of that on top). The production
// transport is libcurl (NewCurlTransport); tests script answers with a fake.
//
// Where a response body goes:
//  - a 2xx body goes to `HttpRequest::sink` if the request has one: the sink
//    sees Begin(status, headers) once, then Write() per piece; a sink error
//    stops the transfer and is returned in `HttpResponse::sink_error`;
//  - every other body (error answers, or 2xx without a sink) is kept in
//    `HttpResponse::body`, at most `max_body` bytes: past that the transfer
//    stops and `body_overflow` is set.
// A transfer stopped that way is not a transport error. Implementations get
// this behaviour by feeding the body through the BodyReceiver they are given.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace d4c::registry {

// Response header fields: lower-case names, the last value of a repeated field.
using HttpHeaders = std::map<std::string, std::string>;

// A request body, read by offset so that a repeated exchange starts over.
class BodySource {
 public:
  virtual ~BodySource() = default;
  virtual uint64_t size() const = 0;
  // Copies up to `n` bytes from `offset` (< size()) into `buf`; returns how
  // many (> 0) or the read error.
  virtual absl::StatusOr<size_t> ReadAt(uint64_t offset, char* buf, size_t n) const = 0;
};

// The bytes of a string that outlives the request.
class StringBodySource final : public BodySource {
 public:
  explicit StringBodySource(std::string_view bytes) : bytes_(bytes) {}
  uint64_t size() const override { return bytes_.size(); }
  absl::StatusOr<size_t> ReadAt(uint64_t offset, char* buf, size_t n) const override;

 private:
  std::string_view bytes_;
};

// `length` bytes of an open file from `offset` (pread; the descriptor stays
// the caller's). `name` is for messages.
class FileBodySource final : public BodySource {
 public:
  FileBodySource(int fd, uint64_t offset, uint64_t length, std::string name)
      : fd_(fd), offset_(offset), length_(length), name_(std::move(name)) {}
  uint64_t size() const override { return length_; }
  absl::StatusOr<size_t> ReadAt(uint64_t offset, char* buf, size_t n) const override;

 private:
  int fd_;
  uint64_t offset_, length_;
  std::string name_;
};

// Receives a 2xx response body (blob downloads to a file).
class BodySink {
 public:
  virtual ~BodySink() = default;
  // Once per exchange, before the first byte: the answer whose body follows.
  virtual absl::Status Begin(int status, const HttpHeaders& headers) = 0;
  // The next piece, all of it or an error (which stops the transfer).
  virtual absl::Status Write(std::string_view bytes) = 0;
};

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  std::vector<std::string> headers;      // "Name: value" lines, sent as given
  const BodySource* body = nullptr;      // PUT/PATCH content; none: an empty body
  std::optional<uint64_t> range_from;    // sends "Range: bytes=N-"
  BodySink* sink = nullptr;              // 2xx bodies (see above)
  uint64_t max_body = 1u << 20;          // cap of HttpResponse::body
  bool follow_redirects = false;
  // Called while bytes move: sent and received so far in this exchange.
  std::function<void(uint64_t sent, uint64_t received)> progress;
};

struct HttpResponse {
  int status = 0;                // the final answer's status; 0 if none arrived
  HttpHeaders headers;           // the final answer's header fields
  std::string body;              // see above; at most max_body bytes
  bool body_overflow = false;    // the body passed max_body: transfer stopped
  uint64_t sink_bytes = 0;       // bytes the sink accepted
  absl::Status sink_error;       // the sink refused the body: transfer stopped
  std::string transport_error;   // no complete answer (connect, TLS, reset, timeout); empty otherwise
  // The TLS handshake failed for a reason another attempt cannot change: the
  // certificate is not trusted or wrong, a client certificate is bad, or the
  // server does not speak TLS at all. Set together with transport_error.
  bool tls_error = false;
  bool transport_failed() const { return !transport_error.empty(); }
};

class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  // One exchange. Thread-safety is the implementation's: the curl transport
  // is not thread-safe (one CURL handle); use one transport per thread.
  HttpResponse Perform(const HttpRequest& request);

 protected:
  // Puts body bytes where the contract above says.
  class BodyReceiver {
   public:
    // One piece of the final answer's body. False: stop reading and end the
    // exchange (the reason is already in the response).
    bool Deliver(int status, const HttpHeaders& headers, std::string_view bytes);

   private:
    friend class HttpTransport;
    BodyReceiver(const HttpRequest& req, HttpResponse& res) : req_(req), res_(res) {}
    const HttpRequest& req_;
    HttpResponse& res_;
    bool begun_ = false, stopped_ = false;
  };
  // Sends `request` and sets `response.status`, `.headers` and, when no
  // complete answer arrived, `.transport_error`; body bytes go to `body`.
  virtual void Exchange(const HttpRequest& request, HttpResponse& response, BodyReceiver& body) = 0;
};

struct CurlTransportOptions {
  uint64_t max_bytes_per_second = 0;  // receive rate limit; 0 = unlimited
  std::string user_agent = "d4c-ctr-cli/1";
  // CA certificates (PEM files) trusted in addition to the system's.
  std::vector<std::string> ca_files;
  // A client certificate (PEM); the key is in `client_cert` when `client_key` is empty.
  std::string client_cert, client_key;
  bool skip_verify = false;  // no peer or host name verification (test registries only)
};

// The libcurl transport: one reused CURL handle (keeps connections alive),
// 15 s connect timeout, fails a transfer stalled for 60 s. Not thread-safe.
// Fails when a CA or client certificate file cannot be read.
absl::StatusOr<std::unique_ptr<HttpTransport>> NewCurlTransport(CurlTransportOptions options = {});

}  // namespace d4c::registry
