// The CRI keychain and image proxy (cri_keychain.h): credentials of a CRI
// PullImage kept by registry host + repository for a TTL, `auth` parsing, and
// the proxy forwarding each ImageService call to an upstream (a fake CRI
// server on a temporary unix socket) with its answer and status unchanged.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <sstream>

#include "absl/strings/escaping.h"
#include "d4c/base/strcat.h"
#include "d4c/snap/cri_keychain.h"
#include "k8s/runtime/v1/api.grpc.pb.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"

using namespace d4c;
using namespace d4c::snap;
namespace fs = std::filesystem;
namespace v1 = runtime::v1;

namespace {

registry::ImageReference Ref(const std::string& s) {
  auto r = registry::ParseImageReference(s);
  REQUIRE(r.ok());
  return *r;
}

}  // namespace

TEST_CASE("CriAuthCredentials: username/password, else base64 auth, else none") {
  auto c = CriAuthCredentials("alice", "pw:with:colons", "");
  REQUIRE(c.ok());
  REQUIRE(c->has_value());
  CHECK((*c)->user == "alice");
  CHECK((*c)->password == "pw:with:colons");

  c = CriAuthCredentials("", "", absl::Base64Escape("bob:s3cr:et"));
  REQUIRE(c.ok());
  REQUIRE(c->has_value());
  CHECK((*c)->user == "bob");
  CHECK((*c)->password == "s3cr:et");

  c = CriAuthCredentials("", "", "");
  REQUIRE(c.ok());
  CHECK(!c->has_value());

  c = CriAuthCredentials("", "", "!!not base64!!");
  CHECK(c.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(c.status().message()).find("not base64") != std::string::npos);

  c = CriAuthCredentials("", "", absl::Base64Escape("no-colon"));
  CHECK(c.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(c.status().message()).find("user:password") != std::string::npos);
}

TEST_CASE("CriKeychain: by host and repository, until the TTL runs out") {
  absl::Time now = absl::FromUnixSeconds(1000);
  CriKeychain k(absl::Minutes(10), [&] { return now; });
  k.Put(Ref("reg.example:5000/team/app:v1"), {"u1", "p1"});
  auto got = k.Get(Ref("reg.example:5000/team/app@sha256:" + std::string(64, 'a')));  // tag/digest do not matter
  REQUIRE(got);
  CHECK(got->user == "u1");
  CHECK(got->password == "p1");
  CHECK(!k.Get(Ref("reg.example:5000/team/other:v1")));  // another repository
  CHECK(!k.Get(Ref("reg.example/team/app:v1")));          // another host (no port)
  CHECK(!k.Get(Ref("team/app:v1")));                      // docker.io

  k.Put(Ref("reg.example:5000/team/app:v2"), {"u2", "p2"});  // replaces, TTL from now
  now += absl::Minutes(9);
  got = k.Get(Ref("reg.example:5000/team/app:v1"));
  REQUIRE(got);
  CHECK(got->user == "u2");
  now += absl::Minutes(1);  // exactly the TTL: expired
  CHECK(!k.Get(Ref("reg.example:5000/team/app:v1")));
  CHECK(k.size() == 0);
}

namespace {

// A CRI upstream: answers PullImage with "pulled:" + image, records what the
// keychain held when the pull arrived; ImageStatus fails with NOT_FOUND.
class FakeUpstream final : public v1::ImageService::Service {
 public:
  explicit FakeUpstream(CriKeychain* k) : keychain_(k) {}
  grpc::Status PullImage(grpc::ServerContext*, const v1::PullImageRequest* req,
                         v1::PullImageResponse* resp) override {
    auto ref = registry::ParseImageReference(req->image().image());
    held = ref.ok() ? keychain_->Get(*ref) : std::nullopt;
    got_auth = req->auth().SerializeAsString();
    resp->set_image_ref("pulled:" + req->image().image());
    return grpc::Status::OK;
  }
  grpc::Status ImageStatus(grpc::ServerContext*, const v1::ImageStatusRequest* req,
                           v1::ImageStatusResponse*) override {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "no image " + req->image().image());
  }
  grpc::Status ListImages(grpc::ServerContext*, const v1::ListImagesRequest*, v1::ListImagesResponse* resp) override {
    resp->add_images()->set_id("sha256:one");
    resp->add_images()->set_id("sha256:two");
    return grpc::Status::OK;
  }
  std::optional<registry::Credentials> held;
  std::string got_auth;

 private:
  CriKeychain* keychain_;
};

}  // namespace

TEST_CASE("CriImageProxy forwards to the upstream and keeps PullImage auth first") {
  auto dir = fs::temp_directory_path() / StrCat("d4c-crikeychain-test-", getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string up_sock = (dir / "up.sock").string(), proxy_sock = (dir / "proxy.sock").string();

  CriKeychain keychain;
  FakeUpstream upstream(&keychain);
  grpc::ServerBuilder ub;
  ub.AddListeningPort("unix:" + up_sock, grpc::InsecureServerCredentials());
  ub.RegisterService(&upstream);
  auto up_server = ub.BuildAndStart();
  REQUIRE(up_server);

  auto proxy = MakeCriImageProxy(grpc::CreateChannel("unix:" + up_sock, grpc::InsecureChannelCredentials()), &keychain);
  grpc::ServerBuilder pb;
  pb.AddListeningPort("unix:" + proxy_sock, grpc::InsecureServerCredentials());
  pb.RegisterService(proxy.get());
  auto proxy_server = pb.BuildAndStart();
  REQUIRE(proxy_server);

  auto stub = v1::ImageService::NewStub(grpc::CreateChannel("unix:" + proxy_sock, grpc::InsecureChannelCredentials()));

  {  // PullImage with user/password: stored before the upstream sees the pull
    grpc::ClientContext ctx;
    v1::PullImageRequest req;
    req.mutable_image()->set_image("reg.example:5000/tsr:v1");
    req.mutable_auth()->set_username("d4c");
    req.mutable_auth()->set_password("pw");
    v1::PullImageResponse resp;
    auto s = stub->PullImage(&ctx, req, &resp);
    REQUIRE(s.ok());
    CHECK(resp.image_ref() == "pulled:reg.example:5000/tsr:v1");
    CHECK(upstream.got_auth == req.auth().SerializeAsString());  // forwarded unchanged
    REQUIRE(upstream.held);
    CHECK(upstream.held->user == "d4c");
    CHECK(upstream.held->password == "pw");
  }
  {  // `auth` only, another repository
    grpc::ClientContext ctx;
    v1::PullImageRequest req;
    req.mutable_image()->set_image("reg.example:5000/other:v1");
    req.mutable_auth()->set_auth(absl::Base64Escape("u:p"));
    v1::PullImageResponse resp;
    REQUIRE(stub->PullImage(&ctx, req, &resp).ok());
    REQUIRE(upstream.held);
    CHECK(upstream.held->user == "u");
  }
  {  // bad base64: nothing stored, a log line naming the image, still forwarded
    std::ostringstream log;
    auto logger = std::make_shared<spdlog::logger>("t", std::make_shared<spdlog::sinks::ostream_sink_mt>(log));
    auto old = spdlog::default_logger();
    spdlog::set_default_logger(logger);
    grpc::ClientContext ctx;
    v1::PullImageRequest req;
    req.mutable_image()->set_image("reg.example:5000/bad:v1");
    req.mutable_auth()->set_auth("%%%");
    v1::PullImageResponse resp;
    auto s = stub->PullImage(&ctx, req, &resp);
    spdlog::set_default_logger(old);
    REQUIRE(s.ok());
    CHECK(resp.image_ref() == "pulled:reg.example:5000/bad:v1");
    CHECK(!upstream.held);
    CHECK(!keychain.Get(Ref("reg.example:5000/bad:v1")));
    CHECK(log.str().find("reg.example:5000/bad:v1") != std::string::npos);
    CHECK(log.str().find("not base64") != std::string::npos);
    CHECK(log.str().find("%%%") == std::string::npos);
  }
  CHECK(keychain.size() == 2);
  {  // an upstream error comes back with its code and message
    grpc::ClientContext ctx;
    v1::ImageStatusRequest req;
    req.mutable_image()->set_image("reg.example:5000/none:x");
    v1::ImageStatusResponse resp;
    auto s = stub->ImageStatus(&ctx, req, &resp);
    CHECK(s.error_code() == grpc::StatusCode::NOT_FOUND);
    CHECK(s.error_message() == "no image reg.example:5000/none:x");
  }
  {
    grpc::ClientContext ctx;
    v1::ListImagesResponse resp;
    REQUIRE(stub->ListImages(&ctx, v1::ListImagesRequest(), &resp).ok());
    REQUIRE(resp.images_size() == 2);
    CHECK(resp.images(1).id() == "sha256:two");
  }
  {  // unimplemented upstream method: UNIMPLEMENTED passes through
    grpc::ClientContext ctx;
    v1::ImageFsInfoResponse resp;
    CHECK(stub->ImageFsInfo(&ctx, v1::ImageFsInfoRequest(), &resp).error_code() == grpc::StatusCode::UNIMPLEMENTED);
  }
  proxy_server->Shutdown();
  up_server->Shutdown();
  fs::remove_all(dir);
}
