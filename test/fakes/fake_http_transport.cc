#include "fake_http_transport.h"

#include <algorithm>
#include <cctype>

#include "d4c/base/strcat.h"

namespace d4c::registry_test {

using registry::HttpRequest;
using registry::HttpResponse;

FakeReply Reply(int status, std::string body, registry::HttpHeaders headers) {
  FakeReply r;
  r.status = status;
  r.body = std::move(body);
  r.headers = std::move(headers);
  return r;
}

FakeReply NoAnswer(std::string error) {
  FakeReply r;
  r.status = 0;
  r.transport_error = std::move(error);
  return r;
}

namespace {
std::string Lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}
}  // namespace

std::optional<std::string> RecordedRequest::Header(std::string_view name) const {
  std::string want = Lower(name) + ":";
  for (const auto& h : headers) {
    if (Lower(h.substr(0, want.size())) != want) continue;
    std::string v = h.substr(want.size());
    v.erase(0, v.find_first_not_of(' '));
    return v;
  }
  return std::nullopt;
}

FakeHttpTransport& FakeHttpTransport::Expect(std::string method, std::string url_part, FakeReply reply) {
  script_.push_back({std::move(method), std::move(url_part), std::move(reply)});
  return *this;
}

void FakeHttpTransport::Exchange(const HttpRequest& req, HttpResponse& res, BodyReceiver& body) {
  RecordedRequest rec{req.method, req.url, req.headers, req.range_from, {}};
  if (req.body) {
    std::string buf(1000, '\0');
    for (uint64_t off = 0; off < req.body->size();) {
      auto got = req.body->ReadAt(off, buf.data(), buf.size());
      if (!got.ok()) {
        res.transport_error = Msg(got.status().message());
        requests_.push_back(std::move(rec));
        return;
      }
      rec.body.append(buf.data(), *got);
      off += *got;
    }
    if (req.progress) req.progress(rec.body.size(), 0);
  }
  requests_.push_back(rec);
  if (script_.empty() || script_.front().method != req.method || req.url.find(script_.front().url_part) == std::string::npos) {
    std::string expected = script_.empty() ? "nothing" : StrCat(script_.front().method, " *", script_.front().url_part, "*");
    if (mismatch_.empty()) mismatch_ = StrCat("unexpected ", req.method, " ", req.url, " (expected ", expected, ")");
    res.transport_error = "fake: " + mismatch_;
    return;
  }
  FakeReply reply = std::move(script_.front().reply);
  script_.pop_front();
  if (!reply.transport_error.empty()) {
    res.transport_error = reply.transport_error;
    res.tls_error = reply.tls_error;
    return;
  }
  res.status = reply.status;
  res.headers = reply.headers;
  const bool head = req.method == "HEAD";
  if (reply.content_length && !reply.endless && !res.headers.count("content-length"))
    res.headers["content-length"] = std::to_string(reply.body.size());
  if (head) return;
  if (reply.endless) {
    constexpr uint64_t kSafetyStop = 1ull << 30;
    if (reply.body.empty()) reply.body = "x";
    for (uint64_t total = 0; total < kSafetyStop;) {
      size_t n = std::min(std::max<size_t>(reply.chunk, 1), reply.body.size());
      body_bytes_sent_ += n;
      if (!body.Deliver(res.status, res.headers, std::string_view(reply.body).substr(0, n))) return;
      total += n;
      if (req.progress) req.progress(rec.body.size(), total);
    }
    res.transport_error = "Connection reset by peer (fake: endless body reached the 1 GiB safety stop)";
    return;
  }
  size_t end = std::min(reply.body.size(), reply.drop_after.value_or(reply.body.size()));
  for (size_t off = 0; off < end;) {
    size_t n = std::min(std::max<size_t>(reply.chunk, 1), end - off);
    body_bytes_sent_ += n;
    if (!body.Deliver(res.status, res.headers, std::string_view(reply.body).substr(off, n))) return;
    off += n;
    if (req.progress) req.progress(rec.body.size(), off);
  }
  if (end < reply.body.size()) res.transport_error = "Connection reset by peer (fake)";
}

}  // namespace d4c::registry_test
