#include "d4c/registry/registry_client.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>
#include <vector>

#include "d4c/registry/catalog.h"
#include "d4c/base/sha256.h"
#include "d4c/base/strcat.h"
#include "absl/strings/escaping.h"
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

std::string Base64(const std::string& in) { return absl::Base64Escape(in); }

std::optional<std::string> Unbase64(const std::string& in) {
  std::string out;
  if (in.empty() || in.size() % 4 != 0 || !absl::Base64Unescape(in, &out)) return std::nullopt;
  return out;
}

std::string ShortDigest(const std::string& d) { return d.size() > 19 ? d.substr(0, 19) + "…" : d; }

// Percent-encodes all but RFC 3986 unreserved characters (as curl_easy_escape).
std::string UrlEscape(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

using Response = HttpResponse;

bool Ok(const Response& r) { return !r.transport_failed() && r.status >= 200 && r.status < 300; }
// Worth another attempt: no complete answer, 429 or 5xx.
// A certificate or TLS protocol failure is not: the same handshake fails again.
bool Transient(const Response& r) { return (r.transport_failed() && !r.tls_error) || r.status == 429 || r.status >= 500; }

// The registry's error text: {"errors":[{"code":..,"message":..}]} or the raw body.
std::string ErrorText(const Response& r) {
  if (r.transport_failed()) return r.transport_error;
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
  if (r.tls_error) return absl::FailedPreconditionError(msg);
  if (r.transport_failed()) return absl::UnavailableError(msg);
  switch (r.status) {
    case 401: return absl::UnauthenticatedError(msg);
    case 403: return absl::PermissionDeniedError(msg);
    case 404: return absl::NotFoundError(msg);
    case 429: return absl::ResourceExhaustedError(msg);
    default: return r.status >= 500 ? absl::UnavailableError(msg) : absl::FailedPreconditionError(msg);
  }
}

std::string Attempts(int n) { return n == 1 ? "1 attempt" : StrCat(n, " attempts"); }

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
    bool match = k == host || (host == "docker.io" && (k == "index.docker.io" || k == "registry-1.docker.io"));
    if (!match || !v.is_object() || !v.contains("auth") || !v["auth"].is_string()) continue;
    auto decoded = Unbase64(v["auth"].get<std::string>());
    if (!decoded) return std::nullopt;
    auto colon = decoded->find(':');
    if (colon == std::string::npos) return std::nullopt;
    return Credentials{decoded->substr(0, colon), decoded->substr(colon + 1)};
  }
  return std::nullopt;
}

void ApplyHostConfig(const HostConfig& config, bool push, RegistryOptions& options) {
  ApplyHostEndpoint(config.EndpointFor(push), options);
}

void ApplyHostEndpoint(const HostEndpoint& e, RegistryOptions& options) {
  options.endpoint = e.url;
  if (e.plain_http()) options.plain_http = true;
  options.ca_files.insert(options.ca_files.end(), e.ca_files.begin(), e.ca_files.end());
  if (!e.client.empty() && options.client_cert.empty()) {
    options.client_cert = e.client.front().cert;
    options.client_key = e.client.front().key;
  }
  if (e.skip_verify) options.skip_verify = true;
}

// Not thread-safe (one transport, the Authorization in use): the client is
// used by one thread at a time.
struct RegistryClient::Impl {
  RegistryOptions o;
  std::unique_ptr<HttpTransport> transport;
  std::string authorization;  // the header line in use, never printed
  uint64_t received = 0;

  std::string Url(const std::string& path_or_url) const {
    if (path_or_url.rfind("http://", 0) == 0 || path_or_url.rfind("https://", 0) == 0) return path_or_url;
    std::string base = o.endpoint.empty() ? "https://" + o.host : o.endpoint;
    if (o.plain_http && base.starts_with("https://")) base = "http://" + base.substr(8);
    return base + path_or_url;
  }

  // What fixes a TLS failure, said with the failure.
  std::string TlsAdvice(const std::string& error) const {
    const std::string toml = StrCat(o.hosts_dir, "/", o.host, "/hosts.toml");
    if (error.find("wrong version number") != std::string::npos || error.find("packet length too long") != std::string::npos)
      return StrCat("; ", o.host, " does not speak TLS here (a plain HTTP registry?): pass --plain-http, or set server = \"http://",
                    o.host, "\" in ", toml);
    return StrCat("; TLS with ", o.host, " failed and another attempt cannot fix it: if the registry's certificate is signed by "
                  "your own CA, name the CA as ca = \"/path/ca.crt\" in ", toml, " (or put it in ", o.hosts_dir, "/", o.host,
                  "/ca.crt, or pass --ca-file); a client certificate goes in client = [[\"client.cert\", \"client.key\"]]; "
                  "skip_verify = true turns verification off (test registries only); a plain HTTP registry needs --plain-http");
  }

  // One exchange on the transport, with the Authorization in use.
  Response Send(const HttpRequest& req, bool with_authorization = true) {
    HttpRequest r = req;
    if (with_authorization && !authorization.empty()) r.headers.push_back(authorization);
    Response res = transport->Perform(r);
    if (res.transport_failed()) {
      res.transport_error = StrCat(res.transport_error, " (", o.host, ")");
      if (res.tls_error) res.transport_error += TlsAdvice(res.transport_error);
    }
    received += res.body.size() + res.sink_bytes;
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
    HttpRequest tok;
    tok.url = StrCat(ch->realm, ch->realm.find('?') == std::string::npos ? "?" : "&", "service=", UrlEscape(ch->service),
                     ch->scope.empty() ? "" : "&scope=", UrlEscape(ch->scope));
    tok.follow_redirects = true;
    if (!o.credentials.empty())
      tok.headers.push_back("Authorization: Basic " + Base64(o.credentials.user + ":" + o.credentials.password));
    Response tr = Send(tok, /*with_authorization=*/false);
    if (!Ok(tr)) return StatusFor(tr, StrCat("token from ", ch->realm.substr(0, ch->realm.find('?'))));
    json j = json::parse(tr.body, nullptr, false);
    std::string token;
    if (!j.is_discarded() && j.is_object()) token = j.value("token", j.value("access_token", std::string()));
    if (token.empty()) return absl::UnauthenticatedError(StrCat("token server of ", o.host, " sent no token"));
    std::string line = "Authorization: Bearer " + token;
    if (line == authorization) return false;  // this token was refused already
    authorization = line;
    return true;
  }

  void Backoff(int attempt) const {
    double s = std::min(8.0, o.first_backoff_seconds * static_cast<double>(1 << std::min(attempt, 10)));
    std::this_thread::sleep_for(std::chrono::duration<double>(s));
  }

  // One exchange with the auth dance: on a 401 answer the challenge and send
  // the request once more. Fails only when authentication does.
  absl::StatusOr<Response> Exchange(const HttpRequest& req) {
    Response res = Send(req);
    if (res.status == 401) {
      auto again = Authenticate(res);
      if (!again.ok()) return again.status();
      if (*again) res = Send(req);
    }
    return res;
  }

  // Exchange with up to `attempts` tries while the answer is transient
  // (no answer, 429, 5xx), backing off in between. Returns the answer
  // unless it is a 401 or still transient after the last attempt.
  absl::StatusOr<Response> Do(const HttpRequest& req, const std::string& what, int attempts) {
    Response res;
    int made = 0;
    for (int attempt = 0; attempt < std::max(1, attempts); ++attempt) {
      if (attempt > 0) Backoff(attempt - 1);
      auto r = Exchange(req);
      if (!r.ok()) return r.status();
      res = std::move(*r);
      ++made;
      if (!Transient(res)) break;
    }
    if (res.status == 401) return absl::UnauthenticatedError(StrCat(what, ": ", ErrorText(res), ": credentials refused"));
    if (!Transient(res)) return res;
    absl::Status s = StatusFor(res, what);
    return absl::Status(s.code(), StrCat(Msg(s.message()), made > 1 ? StrCat(" (after ", made, " attempts)") : ""));
  }
};

namespace {

// A blob download's `.partial` file, continued at `have` bytes (or started
// over when the server answers a Range request with the whole blob). Never
// holds more than `size` bytes: a longer body is refused, not written.
class PartialFileSink final : public BodySink {
 public:
  PartialFileSink(int fd, std::string path, uint64_t have, uint64_t size)
      : fd_(fd), path_(std::move(path)), pos_(have), size_(size) {}

  absl::Status Begin(int status, const HttpHeaders& headers) override {
    if (status == 200 && pos_ > 0) {  // the server ignored our Range: start the file over
      if (::ftruncate(fd_, 0) != 0) return absl::DataLossError(StrCat(path_, ": cannot truncate: ", std::strerror(errno)));
      pos_ = 0;
      range_ignored_ = true;
    }
    if (auto it = headers.find("accept-ranges"); it != headers.end() && Lower(Trim(it->second)) == "none")
      range_ignored_ = true;
    if (auto it = headers.find("content-length"); it != headers.end()) {
      char* end = nullptr;
      unsigned long long n = std::strtoull(it->second.c_str(), &end, 10);
      if (end && *end == '\0' && !it->second.empty() && pos_ + n > size_) return TooLong(pos_ + n);
    }
    return absl::OkStatus();
  }

  absl::Status Write(std::string_view bytes) override {
    if (pos_ + bytes.size() > size_) return TooLong(pos_ + bytes.size());
    while (!bytes.empty()) {
      ssize_t n = ::pwrite(fd_, bytes.data(), bytes.size(), static_cast<off_t>(pos_));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return absl::DataLossError(StrCat(path_, ": write failed (disk full?): ", std::strerror(errno)));
      pos_ += static_cast<uint64_t>(n);
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return absl::OkStatus();
  }

  uint64_t pos() const { return pos_; }
  bool too_long() const { return too_long_; }
  // The server answered a Range request with the whole blob, or said it
  // takes none: a partial file of it cannot be resumed.
  bool range_ignored() const { return range_ignored_; }

 private:
  absl::Status TooLong(uint64_t at_least) {
    too_long_ = true;
    return absl::OutOfRangeError(StrCat("at least ", at_least, " bytes"));
  }

  int fd_;
  std::string path_;
  uint64_t pos_, size_;
  bool too_long_ = false, range_ignored_ = false;
};

absl::Status CheckHost(const RegistryOptions& options) {
  if (options.host.empty() || options.host.find('/') != std::string::npos)
    return absl::InvalidArgumentError(StrCat("registry host '", options.host, "' must be HOST[:PORT]"));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RegistryClient>> RegistryClient::Create(RegistryOptions options) {
  if (auto s = CheckHost(options); !s.ok()) return s;
  CurlTransportOptions co;
  co.max_bytes_per_second = options.max_bytes_per_second;
  co.ca_files = options.ca_files;
  co.client_cert = options.client_cert;
  co.client_key = options.client_key;
  co.skip_verify = options.skip_verify;
  auto transport = NewCurlTransport(std::move(co));
  if (!transport.ok()) return transport.status();
  return Create(std::move(options), std::move(*transport));
}

absl::StatusOr<std::unique_ptr<RegistryClient>> RegistryClient::Create(RegistryOptions options,
                                                                       std::unique_ptr<HttpTransport> transport) {
  if (auto s = CheckHost(options); !s.ok()) return s;
  if (!transport) return absl::InvalidArgumentError("RegistryClient::Create: no transport");
  std::unique_ptr<RegistryClient> c(new RegistryClient());
  c->impl_ = std::make_unique<Impl>();
  c->impl_->o = std::move(options);
  c->impl_->transport = std::move(transport);
  return c;
}

RegistryClient::~RegistryClient() = default;

const RegistryOptions& RegistryClient::options() const { return impl_->o; }
uint64_t RegistryClient::bytes_received() const { return impl_->received; }

absl::StatusOr<bool> RegistryClient::HasBlob(const std::string& repo, const std::string& digest) {
  HttpRequest req;
  req.method = "HEAD";
  req.url = impl_->Url(StrCat("/v2/", repo, "/blobs/", digest));
  req.follow_redirects = true;
  auto res = impl_->Do(req, StrCat(impl_->o.host, ": HEAD blob ", ShortDigest(digest)), impl_->o.attempts);
  if (!res.ok()) return res.status();
  if (res->status == 404) return false;
  if (Ok(*res)) return true;
  return StatusFor(*res, StrCat(impl_->o.host, "/", repo, ": HEAD blob ", ShortDigest(digest)));
}

static absl::StatusOr<std::string> UploadLocation(const HttpHeaders& headers, const std::string& what) {
  auto it = headers.find("location");
  if (it == headers.end() || it->second.empty()) return absl::UnavailableError(StrCat(what, ": the registry sent no upload Location"));
  return it->second;
}

absl::Status RegistryClient::UploadBlobFile(const std::string& repo, const std::string& digest, const std::string& path,
                                            const ProgressFn& progress) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return absl::NotFoundError(StrCat(path, ": cannot stat"));
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(StrCat(path, ": cannot open"));
  std::string what = StrCat(impl_->o.host, "/", repo, ": upload of ", path, " (", ShortDigest(digest), ")");
  absl::Status last;
  int made = 0;
  for (int attempt = 0; attempt < std::max(1, impl_->o.attempts); ++attempt) {
    if (attempt > 0) impl_->Backoff(attempt - 1);
    ++made;
    last = [&]() -> absl::Status {
      HttpRequest post;
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
        FileBodySource chunk(fd, off, len, path);
        HttpRequest patch;
        patch.method = "PATCH";
        patch.url = impl_->Url(location);
        patch.body = &chunk;
        patch.headers = {"Content-Type: application/octet-stream", StrCat("Content-Range: ", off, "-", off + len - 1)};
        if (progress) patch.progress = [&](uint64_t sent, uint64_t) { progress(off + sent, size); };
        auto pr = impl_->Do(patch, what, 1);
        if (!pr.ok()) return pr.status();
        if (pr->status != 202) return StatusFor(*pr, StrCat(what, ": chunk at ", off));
        loc = UploadLocation(pr->headers, what);
        if (!loc.ok()) return loc.status();
        location = *loc;
      }
      HttpRequest put;
      put.method = "PUT";
      put.url = impl_->Url(StrCat(location, location.find('?') == std::string::npos ? "?" : "&", "digest=", digest));
      auto fr = impl_->Do(put, what, 1);
      if (!fr.ok()) return fr.status();
      if (fr->status != 201) return StatusFor(*fr, what + ": finish");
      return absl::OkStatus();
    }();
    if (last.ok() || !absl::IsUnavailable(last)) break;
  }
  ::close(fd);
  if (!last.ok() && absl::IsUnavailable(last) && made > 1)
    return absl::UnavailableError(StrCat(Msg(last.message()), " (gave up after ", made, " attempts, each a new upload session)"));
  return last;
}

absl::StatusOr<bool> RegistryClient::UploadBlobFileIfMissing(const std::string& repo, const std::string& digest,
                                                            const std::string& path, const ProgressFn& progress) {
  auto has = HasBlob(repo, digest);
  if (!has.ok()) return has.status();
  if (*has) return false;
  if (auto s = UploadBlobFile(repo, digest, path, progress); !s.ok()) return s;
  return true;
}

absl::Status RegistryClient::UploadBlobBytes(const std::string& repo, const std::string& digest, const std::string& bytes) {
  std::string what = StrCat(impl_->o.host, "/", repo, ": upload of blob ", ShortDigest(digest));
  HttpRequest post;
  post.method = "POST";
  post.url = impl_->Url(StrCat("/v2/", repo, "/blobs/uploads/"));
  auto r = impl_->Do(post, what, impl_->o.attempts);
  if (!r.ok()) return r.status();
  if (r->status != 202) return StatusFor(*r, what + ": start");
  auto loc = UploadLocation(r->headers, what);
  if (!loc.ok()) return loc.status();
  StringBodySource body(bytes);
  HttpRequest put;
  put.method = "PUT";
  put.url = impl_->Url(StrCat(*loc, loc->find('?') == std::string::npos ? "?" : "&", "digest=", digest));
  put.body = &body;
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
  std::string last_error = "no attempt made";
  int made = 0;
  bool resumable = true;  // false once the server showed it does not honour Range
  for (int attempt = 0; attempt < std::max(1, impl_->o.attempts); ++attempt) {
    struct stat st;
    uint64_t have = ::stat(partial.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
    if (have > size) {
      if (::truncate(partial.c_str(), 0) != 0) return absl::InternalError(StrCat(partial, ": cannot truncate"));
      have = 0;
    }
    if (have == size) break;
    if (attempt > 0) impl_->Backoff(attempt - 1);
    int fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) return absl::PermissionDeniedError(StrCat(partial, ": cannot open for writing: ", std::strerror(errno)));
    PartialFileSink sink(fd, partial, have, size);
    HttpRequest req;
    req.url = impl_->Url(StrCat("/v2/", repo, "/blobs/", digest));
    req.follow_redirects = true;
    req.sink = &sink;
    if (have > 0) req.range_from = have;
    if (progress) req.progress = [&](uint64_t, uint64_t) { progress(sink.pos(), size); };
    auto r = impl_->Exchange(req);
    ++made;
    bool flushed = ::fsync(fd) == 0;
    ::close(fd);
    if (!r.ok()) return r.status();
    fetched += r->sink_bytes;
    if (sink.range_ignored()) resumable = false;
    if (sink.too_long()) {
      ::unlink(partial.c_str());
      return absl::DataLossError(StrCat(what, ": the registry sent more than the expected ", size,
                                        " bytes; stopped there and removed ", partial,
                                        " (is the size in the catalog wrong, or does the registry serve other bytes under this digest?)"));
    }
    if (!r->sink_error.ok()) return absl::Status(r->sink_error.code(), StrCat(what, ": ", Msg(r->sink_error.message())));
    if (!flushed) return absl::DataLossError(StrCat(partial, ": write failed (disk full?)"));
    if (r->status == 401) return absl::UnauthenticatedError(StrCat(what, ": ", ErrorText(*r), ": credentials refused"));
    if (r->tls_error) {
      struct stat pst;
      if (::stat(partial.c_str(), &pst) == 0 && pst.st_size == 0) ::unlink(partial.c_str());
      return StatusFor(*r, what);
    }
    if (r->status == 416) {  // our partial file does not fit the blob: start over
      last_error = ErrorText(*r);
      ::truncate(partial.c_str(), 0);
      continue;
    }
    if (Ok(*r)) {
      if (sink.pos() == size) break;
      last_error = StrCat("HTTP ", r->status, " ended at byte ", sink.pos());  // short body: resume
      continue;
    }
    if (!Transient(*r)) return StatusFor(*r, what);
    last_error = ErrorText(*r);
  }
  struct stat st;
  uint64_t have = ::stat(partial.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  if (have != size) {
    std::string next;
    if (have == 0) {
      ::unlink(partial.c_str());
      next = "nothing kept; run again to retry";
    } else if (!resumable) {
      ::unlink(partial.c_str());
      next = StrCat("the server does not honour Range requests, so these bytes cannot be resumed: removed ", partial,
                    "; run again to start over");
    } else {
      next = StrCat("kept in ", partial, "; run again to resume at byte ", have);
    }
    return absl::UnavailableError(StrCat(what, ": ", last_error, "; have ", have, " of ", size, " bytes after ",
                                         Attempts(made), " (", next, ")"));
  }
  auto got = Sha256DigestOfFile(partial);
  if (!got.ok()) return got.status();
  if (*got != digest) {
    ::unlink(partial.c_str());
    return absl::DataLossError(StrCat(what, ": the bytes received have ", *got, ", not ", digest,
                                      "; the partial file was removed"));
  }
  if (::rename(partial.c_str(), dest.c_str()) != 0) return absl::InternalError(StrCat("rename ", partial, " -> ", dest, " failed"));
  return fetched;
}

absl::StatusOr<std::string> RegistryClient::GetBlob(const std::string& repo, const std::string& digest, uint64_t max_bytes) {
  HttpRequest req;
  req.url = impl_->Url(StrCat("/v2/", repo, "/blobs/", digest));
  req.follow_redirects = true;
  req.max_body = max_bytes;
  std::string what = StrCat(impl_->o.host, "/", repo, ": blob ", ShortDigest(digest));
  auto r = impl_->Do(req, what, impl_->o.attempts);
  if (!r.ok()) return r.status();
  if (r->body_overflow) return absl::InvalidArgumentError(StrCat(what, ": larger than ", max_bytes, " bytes"));
  if (!Ok(*r)) return StatusFor(*r, what);
  if (Sha256Digest(r->body) != digest) return absl::DataLossError(StrCat(what, ": content does not match its digest"));
  return std::move(r->body);
}

absl::StatusOr<std::vector<std::string>> RegistryClient::ListTags(const std::string& repo) {
  constexpr int kMaxPages = 1000;  // 1000 tags a page: a million tags
  std::vector<std::string> tags;
  std::string next = StrCat("/v2/", repo, "/tags/list?n=1000");
  std::string what = StrCat(impl_->o.host, "/", repo, ": tag list");
  for (int page = 0; page < kMaxPages; ++page) {
    HttpRequest req;
    req.url = impl_->Url(next);
    req.max_body = kMaxManifestBytes;
    auto r = impl_->Do(req, what, impl_->o.attempts);
    if (!r.ok()) return r.status();
    if (r->status == 404) return tags;  // no such repository yet
    if (r->body_overflow) return absl::InvalidArgumentError(StrCat(what, ": a page is larger than 4 MiB"));
    if (!Ok(*r)) return StatusFor(*r, what);
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
  HttpRequest req;
  req.url = impl_->Url(StrCat("/v2/", repo, "/manifests/", reference));
  req.headers = {StrCat("Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, ",
                        "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json")};
  req.max_body = 4u << 20;
  std::string what = StrCat(impl_->o.host, "/", repo, ":", reference, ": manifest");
  auto r = impl_->Do(req, what, impl_->o.attempts);
  if (!r.ok()) return r.status();
  if (r->status == 404) return std::optional<Manifest>();
  if (r->body_overflow) return absl::InvalidArgumentError(what + ": larger than 4 MiB");
  if (!Ok(*r)) return StatusFor(*r, what);
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
  HttpRequest req;
  req.method = "HEAD";
  req.url = impl_->Url(StrCat("/v2/", repo, "/manifests/", reference));
  req.headers = {"Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"};
  std::string what = StrCat(impl_->o.host, "/", repo, ":", reference, ": manifest");
  auto r = impl_->Do(req, what, impl_->o.attempts);
  if (!r.ok()) return r.status();
  if (r->status == 404) return std::optional<std::string>();
  if (!Ok(*r)) return StatusFor(*r, what);
  auto it = r->headers.find("docker-content-digest");
  if (it == r->headers.end()) return absl::UnimplementedError(what + ": no Docker-Content-Digest header");
  return std::optional<std::string>(it->second);
}

absl::StatusOr<std::string> RegistryClient::PutManifest(const std::string& repo, const std::string& reference,
                                                        const std::string& media_type, const std::string& body) {
  auto r = PutManifestWithSubject(repo, reference, media_type, body);
  if (!r.ok()) return r.status();
  return r->digest;
}

absl::StatusOr<PutManifestResult> RegistryClient::PutManifestWithSubject(const std::string& repo,
                                                                         const std::string& reference,
                                                                         const std::string& media_type,
                                                                         const std::string& body) {
  StringBodySource content(body);
  HttpRequest req;
  req.method = "PUT";
  req.url = impl_->Url(StrCat("/v2/", repo, "/manifests/", reference));
  req.body = &content;
  req.headers = {"Content-Type: " + media_type};
  std::string what = StrCat(impl_->o.host, "/", repo, ":", reference, ": put manifest");
  auto r = impl_->Do(req, what, impl_->o.attempts);
  if (!r.ok()) return r.status();
  if (r->status != 201 && r->status != 200) return StatusFor(*r, what);
  PutManifestResult out{Sha256Digest(body), ""};
  if (auto it = r->headers.find("oci-subject"); it != r->headers.end()) out.oci_subject = it->second;
  return out;
}

absl::StatusOr<std::optional<std::string>> RegistryClient::GetReferrers(const std::string& repo,
                                                                       const std::string& digest,
                                                                       const std::string& artifact_type) {
  constexpr int kMaxPages = 100;
  std::string next = StrCat("/v2/", repo, "/referrers/", digest,
                            artifact_type.empty() ? "" : "?artifactType=", UrlEscape(artifact_type));
  std::string what = StrCat(impl_->o.host, "/", repo, ": referrers of ", ShortDigest(digest));
  json merged;
  for (int page = 0; page < kMaxPages; ++page) {
    HttpRequest req;
    req.url = impl_->Url(next);
    req.headers = {"Accept: application/vnd.oci.image.index.v1+json"};
    req.max_body = kMaxManifestBytes;
    auto r = impl_->Do(req, what, impl_->o.attempts);
    if (!r.ok()) return r.status();
    if (r->status == 404 && page == 0) return std::optional<std::string>();  // no referrers API
    if (r->body_overflow) return absl::InvalidArgumentError(StrCat(what, ": a page is larger than 4 MiB"));
    if (!Ok(*r)) return StatusFor(*r, what);
    json j = json::parse(r->body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("manifests") || !j["manifests"].is_array())
      return absl::InvalidArgumentError(StrCat(what, ": the answer is not an image index"));
    if (page == 0) {
      merged = std::move(j);
    } else {
      for (auto& m : j["manifests"]) merged["manifests"].push_back(std::move(m));
    }
    auto link = r->headers.find("link");
    std::optional<std::string> more = link == r->headers.end() ? std::nullopt : NextPageFromLink(link->second);
    if (!more) return std::optional<std::string>(merged.dump());
    next = *more;
  }
  return absl::ResourceExhaustedError(StrCat(what, ": more than ", kMaxPages, " pages"));
}

}  // namespace d4c::registry
