// cri_pull: the image half of a kubelet, for the end-to-end tests. Speaks the
// Kubernetes CRI ImageService (runtime.v1, proto/k8s/runtime/v1/api.proto)
// over containerd's socket, as kubelet does:
//   cri_pull SOCKET pull IMAGE    PullImage; prints the image ref containerd answers
//   cri_pull SOCKET status IMAGE  ImageStatus; prints "id size" or "absent" (exit 3)
// With CRI_PULL_USERNAME and CRI_PULL_PASSWORD in the environment, PullImage
// sends them in its `auth` field (AuthConfig), as kubelet does with an image
// pull secret; containerd then uses them for the registry of IMAGE.
// Exit 0 on success, 1 with the gRPC error on stderr otherwise.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "k8s/runtime/v1/api.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: cri_pull SOCKET pull|status IMAGE\n");
    return 2;
  }
  std::string socket = argv[1], op = argv[2], image = argv[3];
  auto channel = grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials());
  auto stub = runtime::v1::ImageService::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
  if (op == "pull") {
    runtime::v1::PullImageRequest req;
    req.mutable_image()->set_image(image);
    const char* user = std::getenv("CRI_PULL_USERNAME");
    const char* password = std::getenv("CRI_PULL_PASSWORD");
    if (user && *user) {
      req.mutable_auth()->set_username(user);
      req.mutable_auth()->set_password(password ? password : "");
    }
    runtime::v1::PullImageResponse resp;
    grpc::Status s = stub->PullImage(&ctx, req, &resp);
    if (!s.ok()) {
      std::fprintf(stderr, "cri_pull: PullImage %s: %s (code %d)\n", image.c_str(), s.error_message().c_str(),
                   static_cast<int>(s.error_code()));
      return 1;
    }
    std::printf("%s\n", resp.image_ref().c_str());
    return 0;
  }
  if (op == "status") {
    runtime::v1::ImageStatusRequest req;
    req.mutable_image()->set_image(image);
    runtime::v1::ImageStatusResponse resp;
    grpc::Status s = stub->ImageStatus(&ctx, req, &resp);
    if (!s.ok()) {
      std::fprintf(stderr, "cri_pull: ImageStatus %s: %s (code %d)\n", image.c_str(), s.error_message().c_str(),
                   static_cast<int>(s.error_code()));
      return 1;
    }
    if (!resp.has_image()) {
      std::printf("absent\n");
      return 3;
    }
    std::printf("%s %llu\n", resp.image().id().c_str(), static_cast<unsigned long long>(resp.image().size()));
    return 0;
  }
  std::fprintf(stderr, "cri_pull: unknown operation %s (pull or status)\n", op.c_str());
  return 2;
}
