// The libcurl HttpTransport (the code that was RegistryClient's own until the
// transport seam). One CURL handle, reset and reused for every exchange so
// that connections stay open: not thread-safe. libcurl's functions come from
// Curl() (curl_api.h: loaded on first use, not linked).

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

#include "curl_api.h"
#include "d4c/registry/http_transport.h"
#include "d4c/base/strcat.h"

namespace d4c::registry {
namespace {

std::string LowerTrimmed(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string Trimmed(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  return std::string(s);
}

// A handshake failure another attempt cannot fix (see HttpResponse::tls_error).
// CURLE_SSL_CONNECT_ERROR also covers resets during the handshake, which are
// worth retrying; it counts only with the texts of a protocol or trust failure.
bool PermanentTlsError(CURLcode rc, const std::string& text) {
  switch (rc) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
      return true;
    case CURLE_SSL_CONNECT_ERROR:
      for (const char* t : {"wrong version number", "certificate", "unknown ca", "handshake failure", "alert", "packet length too long"})
        if (text.find(t) != std::string::npos) return true;
      return false;
    default:
      return false;
  }
}

// The PEM text curl trusts: the system bundle and the extra CA files.
absl::StatusOr<std::string> CaBundle(const internal::CurlApi& api, const std::vector<std::string>& files) {
  std::string pem;
  std::vector<std::string> all;
  curl_version_info_data* v = api.version_info(CURLVERSION_NOW);
  if (v && v->cainfo) all.push_back(v->cainfo);  // the system bundle, when libcurl names one
  for (const auto& f : files) all.push_back(f);
  for (size_t i = 0; i < all.size(); ++i) {
    std::ifstream in(all[i], std::ios::binary);
    if (!in) {
      if (i + files.size() < all.size()) continue;  // no system bundle: the CA directory still applies
      return absl::NotFoundError(StrCat(all[i], ": CA certificate file cannot be read"));
    }
    std::stringstream text;
    text << in.rdbuf();
    pem += text.str();
    pem += "\n";
  }
  return pem;
}

class CurlTransport final : public HttpTransport {
 public:
  CurlTransport(const internal::CurlApi& api, CURL* curl, CurlTransportOptions o, std::string ca_pem)
      : api_(api), curl_(curl), o_(std::move(o)), ca_pem_(std::move(ca_pem)) {}
  ~CurlTransport() override { api_.easy_cleanup(curl_); }

 protected:
  void Exchange(const HttpRequest& req, HttpResponse& res, BodyReceiver& body) override;

 private:
  struct Transfer {
    const HttpRequest* req;
    HttpResponse* res;
    BodyReceiver* body;
    const internal::CurlApi* api;
    CURL* curl;
    uint64_t body_pos = 0;
    std::string read_error;
  };
  static size_t OnHeader(char* data, size_t size, size_t n, void* p);
  static size_t OnBody(char* data, size_t size, size_t n, void* p);
  static size_t OnRead(char* buf, size_t size, size_t n, void* p);
  static int OnProgress(void* p, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow);

  const internal::CurlApi& api_;
  CURL* curl_;
  CurlTransportOptions o_;
  std::string ca_pem_;  // empty: curl's default trust
};

size_t CurlTransport::OnHeader(char* data, size_t size, size_t n, void* p) {
  auto* t = static_cast<Transfer*>(p);
  std::string_view line(data, size * n);
  if (line.starts_with("HTTP/")) {
    t->res->headers.clear();  // a new response (after 100-continue or a redirect)
  } else if (auto colon = line.find(':'); colon != std::string_view::npos) {
    t->res->headers[LowerTrimmed(line.substr(0, colon))] = Trimmed(line.substr(colon + 1));
  }
  return size * n;
}

size_t CurlTransport::OnBody(char* data, size_t size, size_t n, void* p) {
  auto* t = static_cast<Transfer*>(p);
  long status = 0;
  t->api->easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
  size_t len = size * n;
  return t->body->Deliver(static_cast<int>(status), t->res->headers, std::string_view(data, len)) ? len : 0;
}

size_t CurlTransport::OnRead(char* buf, size_t size, size_t n, void* p) {
  auto* t = static_cast<Transfer*>(p);
  const BodySource* src = t->req->body;
  uint64_t left = src->size() - t->body_pos;
  if (left == 0) return 0;
  auto got = src->ReadAt(t->body_pos, buf, static_cast<size_t>(std::min<uint64_t>(size * n, left)));
  if (!got.ok()) {
    t->read_error = Msg(got.status().message());
    return CURL_READFUNC_ABORT;
  }
  t->body_pos += *got;
  return *got;
}

int CurlTransport::OnProgress(void* p, curl_off_t, curl_off_t dlnow, curl_off_t, curl_off_t ulnow) {
  auto* t = static_cast<Transfer*>(p);
  t->req->progress(static_cast<uint64_t>(ulnow), static_cast<uint64_t>(dlnow));
  return 0;
}

void CurlTransport::Exchange(const HttpRequest& req, HttpResponse& res, BodyReceiver& body) {
  CURL* curl = curl_;
  const internal::CurlApi& api = api_;
  api.easy_reset(curl);
  Transfer t{&req, &res, &body, &api, curl, 0, {}};
  api.easy_setopt(curl, CURLOPT_URL, req.url.c_str());
  api.easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
  api.easy_setopt(curl, CURLOPT_HEADERDATA, &t);
  api.easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnBody);
  api.easy_setopt(curl, CURLOPT_WRITEDATA, &t);
  api.easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 15L);
  api.easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);  // a stalled transfer fails after 60 s
  api.easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 60L);
  api.easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  api.easy_setopt(curl, CURLOPT_USERAGENT, o_.user_agent.c_str());
  char errbuf[CURL_ERROR_SIZE] = {0};
  api.easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  if (req.follow_redirects) {
    api.easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
    api.easy_setopt(curl, CURLOPT_MAXREDIRS, 5L);
  }
  if (!ca_pem_.empty()) {
    curl_blob blob{ca_pem_.data(), ca_pem_.size(), CURL_BLOB_NOCOPY};
    api.easy_setopt(curl, CURLOPT_CAINFO_BLOB, &blob);  // not copied: ca_pem_ lives as long as the handle
  }
  if (!o_.client_cert.empty()) {
    api.easy_setopt(curl, CURLOPT_SSLCERT, o_.client_cert.c_str());
    api.easy_setopt(curl, CURLOPT_SSLKEY, (o_.client_key.empty() ? o_.client_cert : o_.client_key).c_str());
  }
  if (o_.skip_verify) {
    api.easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
    api.easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (o_.max_bytes_per_second)
    api.easy_setopt(curl, CURLOPT_MAX_RECV_SPEED_LARGE, static_cast<curl_off_t>(o_.max_bytes_per_second));
  struct curl_slist* hdrs = nullptr;
  for (const auto& h : req.headers) hdrs = api.slist_append(hdrs, h.c_str());
  std::string range;
  if (req.range_from) {
    range = StrCat("Range: bytes=", *req.range_from, "-");
    hdrs = api.slist_append(hdrs, range.c_str());
  }
  hdrs = api.slist_append(hdrs, "Expect:");
  api.easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
  if (req.method == "HEAD") {
    api.easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (req.body) {
    api.easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    api.easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req.method.c_str());
    api.easy_setopt(curl, CURLOPT_READFUNCTION, OnRead);
    api.easy_setopt(curl, CURLOPT_READDATA, &t);
    api.easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(req.body->size()));
  } else if (req.method != "GET") {
    api.easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req.method.c_str());
    api.easy_setopt(curl, CURLOPT_POSTFIELDS, "");
    api.easy_setopt(curl, CURLOPT_POSTFIELDSIZE, 0L);
  }
  if (req.progress) {
    api.easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    api.easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, OnProgress);
    api.easy_setopt(curl, CURLOPT_XFERINFODATA, &t);
  }
  CURLcode rc = api.easy_perform(curl);
  if (rc != CURLE_OK) {
    if (!t.read_error.empty()) res.transport_error = t.read_error;
    else res.transport_error = errbuf[0] ? errbuf : api.easy_strerror(rc);
    res.tls_error = t.read_error.empty() && PermanentTlsError(rc, res.transport_error);
  }
  long status = 0;
  api.easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  res.status = static_cast<int>(status);
  api.slist_free_all(hdrs);
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpTransport>> NewCurlTransport(CurlTransportOptions options) {
  auto api = internal::Curl();
  if (!api.ok()) return api.status();
  std::string ca_pem;
  if (!options.ca_files.empty()) {
    auto pem = CaBundle(**api, options.ca_files);
    if (!pem.ok()) return pem.status();
    ca_pem = std::move(*pem);
  }
  for (const std::string* f : {&options.client_cert, &options.client_key}) {
    if (!f->empty() && !std::ifstream(*f)) return absl::NotFoundError(StrCat(*f, ": client certificate file cannot be read"));
  }
  CURL* curl = (*api)->easy_init();
  if (!curl) return absl::InternalError("curl_easy_init failed");
  return std::unique_ptr<HttpTransport>(new CurlTransport(**api, curl, std::move(options), std::move(ca_pem)));
}

}  // namespace d4c::registry
