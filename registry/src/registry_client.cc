#include "d4c/registry/registry_client.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "d4c/registry/catalog.h"
#include "d4c/base/sha256.h"
#include "d4c/base/strcat.h"
#include "nlohmann/json.hpp"

namespace d4c::registry {
namespace {

using json = nlohmann::json;

std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string Trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

std::string Base64(const std::string& in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::optional<std::string> Unbase64(const std::string& in) {
  if (in.empty() || in.size() % 4 != 0) return std::nullopt;
  std::string out(in.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  if (n < 0) return std::nullopt;
  size_t pad = in.ends_with("==") ? 2 : in.ends_with("=") ? 1 : 0;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

std::string ShortDigest(const std::string& d) { return d.size() > 19 ? d.substr(0, 19) + "…" : d; }

void CurlGlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// One HTTP exchange. Bodies come from a string or a file range; response
// bodies go to a string (bounded) or, for 2xx answers, to a file.
struct Request {
  std::string method = "GET";
  std::string url;
  std::vector<std::string> headers;
  const std::string* body = nullptr;
  FILE* body_file = nullptr;
  uint64_t body_length = 0;
  FILE* sink = nullptr;  // 2xx bodies; 200 after a Range request rewinds it
  bool ranged = false;
  uint64_t max_body = 1u << 20;
  bool follow = false;
  ProgressFn progress;
  uint64_t progress_base = 0, progress_total = 0;
  bool progress_upload = false;
};

struct Response {
  long status = 0;
  std::map<std::string, std::string> headers;  // lower-case names, last value wins
  std::string body;
  uint64_t written = 0;  // bytes put into the sink
  bool body_overflow = false;
  CURLcode curl = CURLE_OK;
  std::string curl_error;
  bool ok() const { return curl == CURLE_OK && status >= 200 && status < 300; }
  bool transient() const { return curl != CURLE_OK || status == 429 || status >= 500; }
};

struct Transfer {
  Request* req;
  Response* res;
  CURL* curl;
  uint64_t body_pos = 0;
  bool sink_reset = false;
};

size_t OnHeader(char* data, size_t size, size_t n, void* p) {
  auto* t = static_cast<Transfer*>(p);
  std::string line(data, size * n);
  if (line.rfind("HTTP/", 0) == 0) {
    t->res->headers.clear();  // a new response (after 100-continue or a redirect)
  } else if (auto colon = line.find(':'); colon != std::string::npos) {
    t->res->headers[Lower(Trim(line.substr(0, colon)))] = Trim(line.substr(colon + 1));
  }
  return size * n;
}

size_t OnBody(char* data, size_t size, size_t n, void* p) {
  auto* t = static_cast<Transfer*>(p);
  size_t len = size * n;
  long status = 0;
  curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
  if (t->req->sink && status >= 200 && status < 300) {
    if (status == 200 && t->req->ranged && !t->sink_reset) {
      // the server ignored our Range: start the file over
      t->sink_reset = true;
      if (ftruncate(fileno(t->req->sink), 0) != 0 || std::fseek(t->req->sink, 0, SEEK_SET) != 0) return 0;
    }
    if (std::fwrite(data, 1, len, t->req->sink) != len) return 0;
    t->res->written += len;
    return len;
  }
  if (t->res->body.size() + len > t->req->max_body) {
    t->res->body_overflow = true;
    return 0;
  }
  t->res->body.append(data, len);
  return len;
}

size_t OnRead(char* buf, size_t size, size_t n, void* p) {
  auto* t = static_cast<Transfer*>(p);
  size_t want = std::min<uint64_t>(size * n, t->req->body_length - t->body_pos);
  if (want == 0) return 0;
  if (t->req->body) {
    std::copy_n(t->req->body->data() + t->body_pos, want, buf);
  } else if (std::fread(buf, 1, want, t->req->body_file) != want) {
    return CURL_READFUNC_ABORT;
  }
  t->body_pos += want;
  return want;
}

int OnProgress(void* p, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
  auto* t = static_cast<Transfer*>(p);
  (void)dltotal;
  (void)ultotal;
  if (t->req->progress) {
    uint64_t now = static_cast<uint64_t>(t->req->progress_upload ? ulnow : dlnow);
    t->req->progress(t->req->progress_base + now, t->req->progress_total);
  }
  return 0;
}

// The registry's error text: {"errors":[{"code":..,"message":..}]} or the raw body.
std::string ErrorText(const Response& r) {
  if (r.curl != CURLE_OK) return r.curl_error.empty() ? curl_easy_strerror(r.curl) : r.curl_error;
  std::string text = StrCat("HTTP ", r.status);
  json j = json::parse(r.body, nullptr, false);
  if (!j.is_discarded() && j.is_object() && j.contains("errors") && j["errors"].is_array()) {
    for (const auto& e : j["errors"]) {
      if (!e.is_object()) continue;
      std::string code = e.value("code", std::string()), msg = e.value("message", std::string());
      text += StrCat(" ", code, code.empty() ? "" : ": ", msg);
    }
  } else if (!r.body.empty()) {
    text += ": " + r.body.substr(0, 200);
  }
  return text;
}

absl::Status StatusFor(const Response& r, const std::string& what) {
  std::string msg = StrCat(what, ": ", ErrorText(r));
  if (r.curl != CURLE_OK) return absl::UnavailableError(msg);
  switch (r.status) {
    case 401: return absl::UnauthenticatedError(msg);
    case 403: return absl::PermissionDeniedError(msg);
    case 404: return absl::NotFoundError(msg);
    case 429: return absl::ResourceExhaustedError(msg);
    default: return r.status >= 500 ? absl::UnavailableError(msg) : absl::FailedPreconditionError(msg);
  }
}

}  // namespace

std::string Sha256Digest(const std::string& bytes) { return DigestString(Sha256(bytes)); }

absl::StatusOr<std::string> Sha256DigestOfFile(const std::string& path) {
  absl::StatusOr<Digest> d = Sha256OfFile(path);
  if (!d.ok()) return d.status();
  return DigestString(*d);
}

std::optional<AuthChallenge> ParseAuthChallenge(const std::string& header) {
  std::string h = Trim(header);
  size_t sp = h.find(' ');
  AuthChallenge c;
  c.scheme = Lower(h.substr(0, sp));
  if (c.scheme != "basic" && c.scheme != "bearer") return std::nullopt;
  if (sp == std::string::npos) return c;
  // key="value" pairs separated by commas; values may contain commas (scope)
  size_t i = sp + 1;
  while (i < h.size()) {
    while (i < h.size() && (h[i] == ' ' || h[i] == ',')) ++i;
    size_t eq = h.find('=', i);
    if (eq == std::string::npos) break;
    std::string key = Lower(Trim(h.substr(i, eq - i)));
    std::string value;
    i = eq + 1;
    if (i < h.size() && h[i] == '"') {
      ++i;
      while (i < h.size() && h[i] != '"') {
        if (h[i] == '\\' && i + 1 < h.size()) ++i;
        value.push_back(h[i++]);
      }
      ++i;  // closing quote
    } else {
      size_t end = h.find(',', i);
      value = Trim(h.substr(i, end == std::string::npos ? std::string::npos : end - i));
      i = end == std::string::npos ? h.size() : end;
    }
    if (key == "realm") c.realm = value;
    else if (key == "service") c.service = value;
    else if (key == "scope") c.scope = value;
  }
  return c;
}

std::optional<Credentials> DockerConfigCredentials(const std::string& host) {
  std::string dir;
  if (const char* d = std::getenv("DOCKER_CONFIG"); d && *d) dir = d;
  else if (const char* home = std::getenv("HOME"); home && *home) dir = std::string(home) + "/.docker";
  else return std::nullopt;
  std::ifstream in(dir + "/config.json");
  if (!in) return std::nullopt;
  json j = json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("auths") || !j["auths"].is_object()) return std::nullopt;
  for (const auto& [key, v] : j["auths"].items()) {
    std::string k = key;
    for (const char* prefix : {"https://", "http://"})
      if (k.rfind(prefix, 0) == 0) k = k.substr(std::char_traits<char>::length(prefix));
    if (auto slash = k.find('/'); slash != std::string::npos) k.resize(slash);
    if (k != host || !v.is_object() || !v.contains("auth") || !v["auth"].is_string()) continue;
    auto decoded = Unbase64(v["auth"].get<std::string>());
    if (!decoded) return std::nullopt;
    auto colon = decoded->find(':');
    if (colon == std::string::npos) return std::nullopt;
    return Credentials{decoded->substr(0, colon), decoded->substr(colon + 1)};
  }
  return std::nullopt;
}

struct RegistryClient::Impl {
  RegistryOptions o;
  CURL* curl = nullptr;
  std::string authorization;  // the header line in use, never printed
  uint64_t received = 0;

  std::string Url(const std::string& path_or_url) const {
    if (path_or_url.rfind("http://", 0) == 0 || path_or_url.rfind("https://", 0) == 0) return path_or_url;
    return StrCat(o.plain_http ? "http://" : "https://", o.host, path_or_url);
  }

  Response Perform(Request& req) {
    Response res;
    curl_easy_reset(curl);
    Transfer t{&req, &res, curl};
    curl_easy_setopt(curl, CURLOPT_URL, req.url.c_str());
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnBody);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 15L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);  // a stalled transfer fails after 60 s
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "d4c-ctr-cli/1");
    char errbuf[CURL_ERROR_SIZE] = {0};
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    if (req.follow) {
      curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
      curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 5L);
    }
    if (o.max_bytes_per_second) curl_easy_setopt(curl, CURLOPT_MAX_RECV_SPEED_LARGE, static_cast<curl_off_t>(o.max_bytes_per_second));
    struct curl_slist* hdrs = nullptr;
    for (const auto& h : req.headers) hdrs = curl_slist_append(hdrs, h.c_str());
    if (!authorization.empty()) hdrs = curl_slist_append(hdrs, authorization.c_str());
    hdrs = curl_slist_append(hdrs, "Expect:");
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    if (req.method == "HEAD") {
      curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (req.body || req.body_file) {
      curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req.method.c_str());
      curl_easy_setopt(curl, CURLOPT_READFUNCTION, OnRead);
      curl_easy_setopt(curl, CURLOPT_READDATA, &t);
      curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(req.body_length));
    } else if (req.method != "GET") {
      curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req.method.c_str());
      curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
      curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, 0L);
    }
    if (req.progress) {
      curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
      curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, OnProgress);
      curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &t);
    }
    res.curl = curl_easy_perform(curl);
    if (res.curl != CURLE_OK) res.curl_error = StrCat(errbuf[0] ? errbuf : curl_easy_strerror(res.curl), " (", o.host, ")");
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &res.status);
    curl_slist_free_all(hdrs);
    received += res.body.size() + res.written;
    return res;
  }

  // On a 401: take the challenge, get a token (Bearer) or use the
  // credentials (Basic). False if there is nothing new to try.
  absl::StatusOr<bool> Authenticate(const Response& res) {
    auto it = res.headers.find("www-authenticate");
    if (it == res.headers.end()) return false;
    auto ch = ParseAuthChallenge(it->second);
    if (!ch) return absl::UnauthenticatedError(StrCat(o.host, ": unsupported authentication scheme"));
    if (ch->scheme == "basic") {
      if (o.credentials.empty())
        return absl::UnauthenticatedError(StrCat(o.host, " asks for a user name and password: pass --user USER[:PASSWORD] or log in (~/.docker/config.json)"));
      std::string line = "Authorization: Basic " + Base64(o.credentials.user + ":" + o.credentials.password);
      if (line == authorization) return false;  // already sent: wrong credentials
      authorization = line;
      return true;
    }
    if (ch->realm.empty()) return absl::UnauthenticatedError(StrCat(o.host, ": Bearer challenge without realm"));
    char* svc = curl_easy_escape(curl, ch->service.c_str(), 0);
    char* scope = curl_easy_escape(curl, ch->scope.c_str(), 0);
    std::string url = StrCat(ch->realm, ch->realm.find('?') == std::string::npos ? "?" : "&", "service=", svc,
                             ch->scope.empty() ? "" : "&scope=", ch->scope.empty() ? "" : scope);
    curl_free(svc);
    curl_free(scope);
    Request tok;
    tok.url = url;
    tok.follow = true;
    if (!o.credentials.empty())
      tok.headers.push_back("Authorization: Basic " + Base64(o.credentials.user + ":" + o.credentials.password));
    std::string saved = std::move(authorization);
    authorization.clear();
    Response tr = Perform(tok);
    if (!tr.ok()) {
      authorization = saved;
      return StatusFor(tr, StrCat("token from ", ch->realm.substr(0, ch->realm.find('?'))));
    }
    json j = json::parse(tr.body, nullptr, false);
    std::string token;
    if (!j.is_discarded() && j.is_object()) token = j.value("token", j.value("access_token", std::string()));
    if (token.empty()) return absl::UnauthenticatedError(StrCat("token server of ", o.host, " sent no token"));
    std::string line = "Authorization: Bearer " + token;
    if (line == saved) return false;
    authorization = line;
    return true;
  }

  void Backoff(int attempt) const {
    double s = std::min(8.0, o.first_backoff_seconds * static_cast<double>(1 << std::min(attempt, 10)));
    std::this_thread::sleep_for(std::chrono::duration<double>(s));
  }

  // Perform with auth and retries. `rewind` is called before each retry so
  // that file bodies and sinks restart.
  absl::StatusOr<Response> Do(Request& req, const std::string& what, int attempts,
                              const std::function<void()>& rewind = {}) {
    Response res;
    for (int attempt = 0; attempt < std::max(1, attempts); ++attempt) {
      if (attempt > 0) {
        Backoff(attempt - 1);
        if (rewind) rewind();
      }
      res = Perform(req);
      if (res.status == 401) {
        auto again = Authenticate(res);
        if (!again.ok()) return again.status();
        if (*again) {
          if (rewind) rewind();
          res = Perform(req);
        }
      }
      if (!res.transient()) break;
    }
    if (res.curl == CURLE_OK && res.status != 401) return res;
    std::string tail = attempts > 1 ? StrCat(" (after ", attempts, " attempts)") : "";
    if (res.status == 401) return absl::UnauthenticatedError(StrCat(what, ": ", ErrorText(res), ": credentials refused"));
    return absl::UnavailableError(StrCat(what, ": ", ErrorText(res), tail));
  }
};

absl::StatusOr<std::unique_ptr<RegistryClient>> RegistryClient::Create(RegistryOptions options) {
  if (options.host.empty() || options.host.find('/') != std::string::npos)
    return absl::InvalidArgumentError(StrCat("registry host '", options.host, "' must be HOST[:PORT]"));
  CurlGlobalInit();
  std::unique_ptr<RegistryClient> c(new RegistryClient());
  c->impl_ = std::make_unique<Impl>();
  c->impl_->o = std::move(options);
  c->impl_->curl = curl_easy_init();
  if (!c->impl_->curl) return absl::InternalError("curl_easy_init failed");
  return c;
}

RegistryClient::~RegistryClient() {
  if (impl_ && impl_->curl) curl_easy_cleanup(impl_->curl);
}

const RegistryOptions& RegistryClient::options() const { return impl_->o; }
uint64_t RegistryClient::bytes_received() const { return impl_->received; }

absl::StatusOr<bool> RegistryClient::HasBlob(const std::string& repo, const std::string& digest) {
  Request req;
  req.method = "HEAD";
  req.url = impl_->Url(StrCat("/v2/", repo, "/blobs/", digest));
  req.follow = true;
  auto res = impl_->Do(req, StrCat(impl_->o.host, ": HEAD blob ", ShortDigest(digest)), impl_->o.attempts);
  if (!res.ok()) return res.status();
  if (res->status == 404) return false;
  if (res->ok()) return true;
  return StatusFor(*res, StrCat(impl_->o.host, "/", repo, ": HEAD blob ", ShortDigest(digest)));
}

static absl::StatusOr<std::string> UploadLocation(const std::map<std::string, std::string>& headers, const std::string& what) {
  auto it = headers.find("location");
  if (it == headers.end() || it->second.empty()) return absl::UnavailableError(StrCat(what, ": the registry sent no upload Location"));
  return it->second;
}

absl::Status RegistryClient::UploadBlobFile(const std::string& repo, const std::string& digest, const std::string& path,
                                            const ProgressFn& progress) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return absl::NotFoundError(StrCat(path, ": cannot stat"));
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  std::string what = StrCat(impl_->o.host, "/", repo, ": upload of ", path, " (", ShortDigest(digest), ")");
  absl::Status last;
  for (int attempt = 0; attempt < std::max(1, impl_->o.attempts); ++attempt) {
    if (attempt > 0) impl_->Backoff(attempt - 1);
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return absl::NotFoundError(StrCat(path, ": cannot open"));
    last = [&]() -> absl::Status {
      Request post;
      post.method = "POST";
      post.url = impl_->Url(StrCat("/v2/", repo, "/blobs/uploads/"));
      auto r = impl_->Do(post, what, 1);
      if (!r.ok()) return r.status();
      if (r->status != 202) return StatusFor(*r, what + ": start");
      auto loc = UploadLocation(r->headers, what);
      if (!loc.ok()) return loc.status();
      std::string location = *loc;
      for (uint64_t off = 0; off < size; off += impl_->o.chunk_size) {
        uint64_t len = std::min(impl_->o.chunk_size, size - off);
        if (std::fseek(f, static_cast<long>(off), SEEK_SET) != 0) return absl::DataLossError(StrCat(path, ": seek failed"));
        Request patch;
        patch.method = "PATCH";
        patch.url = impl_->Url(location);
        patch.body_file = f;
        patch.body_length = len;
        patch.headers = {"Content-Type: application/octet-stream", StrCat("Content-Range: ", off, "-", off + len - 1)};
        patch.progress = progress;
        patch.progress_upload = true;
        patch.progress_base = off;
        patch.progress_total = size;
        auto pr = impl_->Do(patch, what, 1, [&] { std::fseek(f, static_cast<long>(off), SEEK_SET); });
        if (!pr.ok()) return pr.status();
        if (pr->status != 202) return StatusFor(*pr, StrCat(what, ": chunk at ", off));
        loc = UploadLocation(pr->headers, what);
        if (!loc.ok()) return loc.status();
        location = *loc;
      }
      Request put;
      put.method = "PUT";
      put.url = impl_->Url(StrCat(location, location.find('?') == std::string::npos ? "?" : "&", "digest=", digest));
      auto fr = impl_->Do(put, what, 1);
      if (!fr.ok()) return fr.status();
      if (fr->status != 201) return StatusFor(*fr, what + ": finish");
      return absl::OkStatus();
    }();
    std::fclose(f);
    if (last.ok() || !absl::IsUnavailable(last)) return last;
  }
  return last;
}

absl::Status RegistryClient::UploadBlobBytes(const std::string& repo, const std::string& digest, const std::string& bytes) {
  std::string what = StrCat(impl_->o.host, "/", repo, ": upload of blob ", ShortDigest(digest));
  Request post;
  post.method = "POST";
  post.url = impl_->Url(StrCat("/v2/", repo, "/blobs/uploads/"));
  auto r = impl_->Do(post, what, impl_->o.attempts);
  if (!r.ok()) return r.status();
  if (r->status != 202) return StatusFor(*r, what + ": start");
  auto loc = UploadLocation(r->headers, what);
  if (!loc.ok()) return loc.status();
  Request put;
  put.method = "PUT";
  put.url = impl_->Url(StrCat(*loc, loc->find('?') == std::string::npos ? "?" : "&", "digest=", digest));
  put.body = &bytes;
  put.body_length = bytes.size();
  put.headers = {"Content-Type: application/octet-stream"};
  auto fr = impl_->Do(put, what, 1);
  if (!fr.ok()) return fr.status();
  if (fr->status != 201) return StatusFor(*fr, what + ": finish");
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> RegistryClient::DownloadBlob(const std::string& repo, const std::string& digest, uint64_t size,
                                                      const std::string& dest, const ProgressFn& progress) {
  const std::string partial = dest + ".partial";
  const std::string what = StrCat("download of blob ", ShortDigest(digest), " from ", impl_->o.host, "/", repo);
  if (auto have = Sha256DigestOfFile(dest); have.ok() && *have == digest) return uint64_t{0};  // an earlier run got it
  uint64_t fetched = 0;
  Response last;
  bool done = false;
  for (int attempt = 0; attempt < std::max(1, impl_->o.attempts) && !done; ++attempt) {
    if (attempt > 0) impl_->Backoff(attempt - 1);
    struct stat st;
    uint64_t have = ::stat(partial.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
    if (have > size) {
      if (::truncate(partial.c_str(), 0) != 0) return absl::InternalError(StrCat(partial, ": cannot truncate"));
      have = 0;
    }
    if (have == size) break;
    FILE* f = std::fopen(partial.c_str(), "ab");
    if (!f) return absl::PermissionDeniedError(StrCat(partial, ": cannot open for writing"));
    Request req;
    req.url = impl_->Url(StrCat("/v2/", repo, "/blobs/", digest));
    req.follow = true;
    req.sink = f;
    req.ranged = have > 0;
    if (have > 0) req.headers.push_back(StrCat("Range: bytes=", have, "-"));
    req.progress = progress;
    req.progress_base = have;
    req.progress_total = size;
    auto r = impl_->Do(req, what, 1);
    bool flushed = std::fflush(f) == 0 && fsync(fileno(f)) == 0;
    std::fclose(f);
    if (!r.ok()) {
      if (!absl::IsUnavailable(r.status())) return r.status();
      std::string m = Msg(r.status().message());
      if (m.rfind(what + ": ", 0) == 0) m = m.substr(what.size() + 2);  // said once, below
      last.curl = CURLE_COULDNT_CONNECT;
      last.curl_error = m;
      continue;
    }
    fetched += r->written;
    last = *r;
    if (!flushed) return absl::DataLossError(StrCat(partial, ": write failed (disk full?)"));
    if (r->status == 416) {  // our partial file does not fit the blob: start over
      ::truncate(partial.c_str(), 0);
      continue;
    }
    if (r->ok()) {
      done = true;
      continue;
    }
    if (!r->transient()) return StatusFor(*r, what);
  }
  struct stat st;
  uint64_t have = ::stat(partial.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  if (have != size) {
    return absl::UnavailableError(StrCat(what, ": ", ErrorText(last), "; have ", have, " of ", size,
                                         " bytes after ", impl_->o.attempts, " attempts (run again to resume)"));
  }
  auto got = Sha256DigestOfFile(partial);
  if (!got.ok()) return got.status();
  if (*got != digest) {
    ::unlink(partial.c_str());
    return absl::DataLossError(StrCat(what, ": the bytes received have ", *got, "; the partial file was removed"));
  }
  if (::rename(partial.c_str(), dest.c_str()) != 0) return absl::InternalError(StrCat("rename ", partial, " -> ", dest, " failed"));
  return fetched;
}

absl::StatusOr<std::string> RegistryClient::GetBlob(const std::string& repo, const std::string& digest, uint64_t max_bytes) {
  Request req;
  req.url = impl_->Url(StrCat("/v2/", repo, "/blobs/", digest));
  req.follow = true;
  req.max_body = max_bytes;
  std::string what = StrCat(impl_->o.host, "/", repo, ": blob ", ShortDigest(digest));
  auto r = impl_->Do(req, what, impl_->o.attempts);
  if (!r.ok()) return r.status();
  if (r->body_overflow) return absl::InvalidArgumentError(StrCat(what, ": larger than ", max_bytes, " bytes"));
  if (!r->ok()) return StatusFor(*r, what);
  if (Sha256Digest(r->body) != digest) return absl::DataLossError(StrCat(what, ": content does not match its digest"));
  return std::move(r->body);
}

absl::StatusOr<std::vector<std::string>> RegistryClient::ListTags(const std::string& repo) {
  constexpr int kMaxPages = 1000;  // 1000 tags a page: a million tags
  std::vector<std::string> tags;
  std::string next = StrCat("/v2/", repo, "/tags/list?n=1000");
  std::string what = StrCat(impl_->o.host, "/", repo, ": tag list");
  for (int page = 0; page < kMaxPages; ++page) {
    Request req;
    req.url = impl_->Url(next);
    req.max_body = kMaxManifestBytes;
    auto r = impl_->Do(req, what, impl_->o.attempts);
    if (!r.ok()) return r.status();
    if (r->status == 404) return tags;  // no such repository yet
    if (r->body_overflow) return absl::InvalidArgumentError(StrCat(what, ": a page is larger than 4 MiB"));
    if (!r->ok()) return StatusFor(*r, what);
    auto got = ParseTagList(r->body);
    if (!got.ok()) return absl::InvalidArgumentError(StrCat(what, ": ", Msg(got.status().message())));
    tags.insert(tags.end(), got->begin(), got->end());
    auto link = r->headers.find("link");
    std::optional<std::string> more = link == r->headers.end() ? std::nullopt : NextPageFromLink(link->second);
    if (!more) return tags;
    next = *more;
  }
  return absl::ResourceExhaustedError(StrCat(what, ": more than ", kMaxPages, " pages"));
}

absl::StatusOr<std::optional<Manifest>> RegistryClient::GetManifest(const std::string& repo, const std::string& reference) {
  Request req;
  req.url = impl_->Url(StrCat("/v2/", repo, "/manifests/", reference));
  req.headers = {StrCat("Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, ",
                        "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json")};
  req.max_body = 4u << 20;
  std::string what = StrCat(impl_->o.host, "/", repo, ":", reference, ": manifest");
  auto r = impl_->Do(req, what, impl_->o.attempts);
  if (!r.ok()) return r.status();
  if (r->status == 404) return std::optional<Manifest>();
  if (r->body_overflow) return absl::InvalidArgumentError(what + ": larger than 4 MiB");
  if (!r->ok()) return StatusFor(*r, what);
  Manifest m;
  m.body = std::move(r->body);
  m.digest = Sha256Digest(m.body);
  if (reference.rfind("sha256:", 0) == 0 && reference != m.digest)
    return absl::DataLossError(StrCat(what, ": content does not match the digest asked for"));
  auto ct = r->headers.find("content-type");
  m.media_type = ct == r->headers.end() ? "" : ct->second;
  return std::optional<Manifest>(std::move(m));
}

absl::StatusOr<std::optional<std::string>> RegistryClient::ManifestDigest(const std::string& repo,
                                                                          const std::string& reference) {
  Request req;
  req.method = "HEAD";
  req.url = impl_->Url(StrCat("/v2/", repo, "/manifests/", reference));
  req.headers = {"Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"};
  std::string what = StrCat(impl_->o.host, "/", repo, ":", reference, ": manifest");
  auto r = impl_->Do(req, what, impl_->o.attempts);
  if (!r.ok()) return r.status();
  if (r->status == 404) return std::optional<std::string>();
  if (!r->ok()) return StatusFor(*r, what);
  auto it = r->headers.find("docker-content-digest");
  if (it == r->headers.end()) return absl::UnimplementedError(what + ": no Docker-Content-Digest header");
  return std::optional<std::string>(it->second);
}

absl::StatusOr<std::string> RegistryClient::PutManifest(const std::string& repo, const std::string& reference,
                                                        const std::string& media_type, const std::string& body) {
  Request req;
  req.method = "PUT";
  req.url = impl_->Url(StrCat("/v2/", repo, "/manifests/", reference));
  req.body = &body;
  req.body_length = body.size();
  req.headers = {"Content-Type: " + media_type};
  std::string what = StrCat(impl_->o.host, "/", repo, ":", reference, ": put manifest");
  auto r = impl_->Do(req, what, impl_->o.attempts);
  if (!r.ok()) return r.status();
  if (r->status != 201 && r->status != 200) return StatusFor(*r, what);
  return Sha256Digest(body);
}

}  // namespace d4c::registry
