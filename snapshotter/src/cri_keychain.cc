#include "d4c/snap/cri_keychain.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/escaping.h"
#include "d4c/base/strcat.h"
#include "k8s/runtime/v1/api.grpc.pb.h"
#include "spdlog/spdlog.h"

namespace d4c::snap {

absl::StatusOr<std::optional<registry::Credentials>> CriAuthCredentials(std::string_view username,
                                                                         std::string_view password,
                                                                         std::string_view auth) {
  if (!username.empty() || !password.empty())
    return std::optional<registry::Credentials>(registry::Credentials{std::string(username), std::string(password)});
  if (auth.empty()) return std::optional<registry::Credentials>();
  std::string decoded;
  if (!absl::Base64Unescape(absl::string_view(auth.data(), auth.size()), &decoded))
    return absl::InvalidArgumentError("CRI auth field is not base64 (want base64 of user:password)");
  auto colon = decoded.find(':');
  if (colon == std::string::npos || colon == 0)
    return absl::InvalidArgumentError("CRI auth field does not decode to user:password");
  return std::optional<registry::Credentials>(registry::Credentials{decoded.substr(0, colon), decoded.substr(colon + 1)});
}

CriKeychain::CriKeychain(absl::Duration ttl, Clock now) : ttl_(ttl), now_(std::move(now)) {}

void CriKeychain::Put(const registry::ImageReference& ref, registry::Credentials c) {
  absl::Time expires = now_() + ttl_;
  absl::MutexLock l(&mu_);
  entries_[{ref.domain, ref.path}] = Entry{std::move(c), expires};
}

std::optional<registry::Credentials> CriKeychain::Get(const registry::ImageReference& ref) {
  absl::Time now = now_();
  absl::MutexLock l(&mu_);
  // drop every expired entry (the map stays as small as the pulls of one TTL)
  for (auto it = entries_.begin(); it != entries_.end();) {
    it = it->second.expires <= now ? entries_.erase(it) : std::next(it);
  }
  auto it = entries_.find({ref.domain, ref.path});
  if (it == entries_.end()) return std::nullopt;
  return it->second.credentials;
}

size_t CriKeychain::size() {
  absl::MutexLock l(&mu_);
  return entries_.size();
}

namespace {

namespace v1 = runtime::v1;

class CriImageProxy final : public v1::ImageService::Service {
 public:
  CriImageProxy(std::shared_ptr<grpc::Channel> upstream, CriKeychain* keychain)
      : stub_(v1::ImageService::NewStub(upstream)), keychain_(keychain) {}

  grpc::Status PullImage(grpc::ServerContext* ctx, const v1::PullImageRequest* req,
                         v1::PullImageResponse* resp) override {
    Remember(*req);
    return Forward(ctx, [&](grpc::ClientContext* c) { return stub_->PullImage(c, *req, resp); });
  }
  grpc::Status ImageStatus(grpc::ServerContext* ctx, const v1::ImageStatusRequest* req,
                           v1::ImageStatusResponse* resp) override {
    return Forward(ctx, [&](grpc::ClientContext* c) { return stub_->ImageStatus(c, *req, resp); });
  }
  grpc::Status ListImages(grpc::ServerContext* ctx, const v1::ListImagesRequest* req,
                          v1::ListImagesResponse* resp) override {
    return Forward(ctx, [&](grpc::ClientContext* c) { return stub_->ListImages(c, *req, resp); });
  }
  grpc::Status RemoveImage(grpc::ServerContext* ctx, const v1::RemoveImageRequest* req,
                           v1::RemoveImageResponse* resp) override {
    return Forward(ctx, [&](grpc::ClientContext* c) { return stub_->RemoveImage(c, *req, resp); });
  }
  grpc::Status ImageFsInfo(grpc::ServerContext* ctx, const v1::ImageFsInfoRequest* req,
                           v1::ImageFsInfoResponse* resp) override {
    return Forward(ctx, [&](grpc::ClientContext* c) { return stub_->ImageFsInfo(c, *req, resp); });
  }

 private:
  // The caller's deadline and cancellation carry over to the upstream call.
  template <typename Call>
  static grpc::Status Forward(grpc::ServerContext* ctx, Call call) {
    std::unique_ptr<grpc::ClientContext> c = grpc::ClientContext::FromServerContext(*ctx);
    return call(c.get());
  }

  void Remember(const v1::PullImageRequest& req) {
    if (!req.has_auth()) return;
    const std::string& image = req.image().image();
    const v1::AuthConfig& a = req.auth();
    auto ref = registry::ParseImageReference(image);
    if (!ref.ok()) {
      spdlog::warn("cri proxy: PullImage {}: not an image reference ({}); its auth is not kept", image,
                   Msg(ref.status().message()));
      return;
    }
    auto c = CriAuthCredentials(a.username(), a.password(), a.auth());
    if (!c.ok()) {
      spdlog::warn("cri proxy: PullImage {}: {}; the snapshotter uses docker's config.json for {} (fix the image "
                   "pull secret)",
                   image, Msg(c.status().message()), ref->domain);
      return;
    }
    if (!c->has_value()) {
      if (!a.identity_token().empty() || !a.registry_token().empty())
        spdlog::warn("cri proxy: PullImage {}: identity/registry tokens are not supported, only user and password; "
                     "the snapshotter uses docker's config.json for {}",
                     image, ref->domain);
      return;
    }
    keychain_->Put(*ref, std::move(**c));
    spdlog::info("cri proxy: PullImage {}: credentials kept for {}", image, ref->Name());
  }

  std::unique_ptr<v1::ImageService::Stub> stub_;
  CriKeychain* keychain_;
};

}  // namespace

std::unique_ptr<grpc::Service> MakeCriImageProxy(std::shared_ptr<grpc::Channel> upstream, CriKeychain* keychain) {
  return std::make_unique<CriImageProxy>(std::move(upstream), keychain);
}

}  // namespace d4c::snap
