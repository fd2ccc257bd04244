#include "d4c/snap/containerd_client.h"

#include <grpcpp/grpcpp.h>

#include <chrono>

#include "containerd/services/content/v1/content.grpc.pb.h"
#include "containerd/services/images/v1/images.grpc.pb.h"
#include "containerd/services/leases/v1/leases.grpc.pb.h"
#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"
#include "d4c/base/strcat.h"
#include "d4c/metadata_keys.h"

namespace d4c::snap {
namespace content = containerd::services::content::v1;
namespace images = containerd::services::images::v1;
namespace leases = containerd::services::leases::v1;
namespace snapshots = containerd::services::snapshots::v1;

namespace {

absl::Status FromGrpc(const grpc::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(static_cast<int>(s.error_code())),
                      StrCat(what, ": ", s.error_message()));
}

// Streams a blob from Content.Read.
class BlobStream final : public ByteStream {
 public:
  BlobStream(std::unique_ptr<grpc::ClientContext> ctx, std::unique_ptr<grpc::ClientReader<content::ReadContentResponse>> r,
             std::string digest)
      : ctx_(std::move(ctx)), reader_(std::move(r)), digest_(std::move(digest)) {}
  ~BlobStream() override {
    if (!done_) {
      ctx_->TryCancel();
      reader_->Finish();
    }
  }
  absl::StatusOr<size_t> Read(char* buf, size_t n) override {
    while (pos_ >= chunk_.data().size()) {
      if (done_) return 0;
      if (!reader_->Read(&chunk_)) {
        done_ = true;
        grpc::Status s = reader_->Finish();
        if (!s.ok()) return FromGrpc(s, StrCat("read content ", digest_));
        chunk_.Clear();
        pos_ = 0;
        return 0;
      }
      pos_ = 0;
    }
    size_t k = std::min(n, chunk_.data().size() - pos_);
    std::memcpy(buf, chunk_.data().data() + pos_, k);
    pos_ += k;
    return k;
  }

 private:
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::ClientReader<content::ReadContentResponse>> reader_;
  std::string digest_;
  content::ReadContentResponse chunk_;
  size_t pos_ = 0;
  bool done_ = false;
};

}  // namespace

struct ContainerdClient::State {
  std::string address;
  std::string ns;
  std::string lease;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<content::Content::Stub> content;
  std::unique_ptr<images::Images::Stub> images;
  std::unique_ptr<leases::Leases::Stub> leases;
  std::unique_ptr<snapshots::Snapshots::Stub> snapshots;

  std::unique_ptr<grpc::ClientContext> Ctx(int timeout_sec = 120) const {
    auto c = std::make_unique<grpc::ClientContext>();
    c->AddMetadata("containerd-namespace", ns);
    if (!lease.empty()) c->AddMetadata("containerd-lease", lease);
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_sec));
    return c;
  }
};

ContainerdClient::~ContainerdClient() = default;
const std::string& ContainerdClient::address() const { return s_->address; }
const std::string& ContainerdClient::ns() const { return s_->ns; }
void ContainerdClient::set_lease(std::string id) { s_->lease = std::move(id); }

absl::StatusOr<std::unique_ptr<ContainerdClient>> ContainerdClient::Connect(const std::string& address,
                                                                            const std::string& ns, int timeout_sec) {
  std::unique_ptr<ContainerdClient> c(new ContainerdClient());
  c->s_ = std::make_unique<State>();
  c->s_->address = address;
  c->s_->ns = ns;
  std::string target = address.starts_with("unix:") ? address : "unix:" + address;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  c->s_->channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  if (!c->s_->channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(timeout_sec)))
    return absl::UnavailableError(StrCat("containerd at ", address, " does not answer (is it running?)"));
  c->s_->content = content::Content::NewStub(c->s_->channel);
  c->s_->images = images::Images::NewStub(c->s_->channel);
  c->s_->leases = leases::Leases::NewStub(c->s_->channel);
  c->s_->snapshots = snapshots::Snapshots::NewStub(c->s_->channel);
  return c;
}

absl::StatusOr<std::string> ContainerdClient::CreateLease(int expire_sec,
                                                          const std::map<std::string, std::string>& labels) {
  leases::CreateRequest req;
  for (const auto& [k, v] : labels) (*req.mutable_labels())[k] = v;
  auto t = std::chrono::system_clock::now() + std::chrono::seconds(expire_sec);
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&tt));
  (*req.mutable_labels())[keys::kGcExpireLabel] = buf;
  req.set_id(StrCat("ctr-cli-load-", std::chrono::steady_clock::now().time_since_epoch().count()));
  leases::CreateResponse resp;
  auto ctx = s_->Ctx();
  auto s = s_->leases->Create(ctx.get(), req, &resp);
  if (!s.ok()) return FromGrpc(s, "create lease");
  return resp.lease().id();
}

absl::Status ContainerdClient::DeleteLease(const std::string& id) {
  leases::DeleteRequest req;
  req.set_id(id);
  google::protobuf::Empty resp;
  auto ctx = s_->Ctx();
  return FromGrpc(s_->leases->Delete(ctx.get(), req, &resp), StrCat("delete lease ", id));
}

absl::StatusOr<std::map<std::string, std::map<std::string, std::string>>> ContainerdClient::LeasesWithLabel(
    const std::string& key) {
  leases::ListRequest req;
  req.add_filters(StrCat("labels.\"", key, "\""));
  leases::ListResponse resp;
  auto ctx = s_->Ctx();
  if (auto s = FromGrpc(s_->leases->List(ctx.get(), req, &resp), "list leases"); !s.ok()) return s;
  std::map<std::string, std::map<std::string, std::string>> out;
  for (const auto& l : resp.leases()) out[l.id()] = {l.labels().begin(), l.labels().end()};
  return out;
}

absl::StatusOr<std::map<std::string, std::string>> ContainerdClient::ContentLabels(const std::string& digest) {
  content::InfoRequest req;
  req.set_digest(digest);
  content::InfoResponse resp;
  auto ctx = s_->Ctx();
  auto s = s_->content->Info(ctx.get(), req, &resp);
  if (!s.ok()) return FromGrpc(s, StrCat("content ", digest));
  return std::map<std::string, std::string>(resp.info().labels().begin(), resp.info().labels().end());
}

absl::StatusOr<std::unique_ptr<ByteStream>> ContainerdClient::OpenBlob(const std::string& digest) {
  content::ReadContentRequest req;
  req.set_digest(digest);
  auto ctx = s_->Ctx(3600);
  auto reader = s_->content->Read(ctx.get(), req);
  return std::unique_ptr<ByteStream>(new BlobStream(std::move(ctx), std::move(reader), digest));
}

absl::StatusOr<std::string> ContainerdClient::ReadBlob(const std::string& digest, int64_t max_size) {
  auto st = OpenBlob(digest);
  if (!st.ok()) return st.status();
  std::string out;
  char buf[1 << 16];
  while (true) {
    auto n = (*st)->Read(buf, sizeof buf);
    if (!n.ok()) return n.status();
    if (*n == 0) break;
    out.append(buf, *n);
    if (static_cast<int64_t>(out.size()) > max_size)
      return absl::OutOfRangeError(StrCat("content ", digest, " is larger than ", max_size, " bytes"));
  }
  return out;
}

absl::Status ContainerdClient::WriteBlob(const std::string& ref, const std::string& data, const std::string& digest,
                                         const std::map<std::string, std::string>& labels) {
  auto update_labels = [&]() -> absl::Status {
    if (labels.empty()) return absl::OkStatus();
    content::UpdateRequest req;
    req.mutable_info()->set_digest(digest);
    for (const auto& [k, v] : labels) {
      (*req.mutable_info()->mutable_labels())[k] = v;
      req.mutable_update_mask()->add_paths("labels." + k);
    }
    content::UpdateResponse resp;
    auto ctx = s_->Ctx();
    return FromGrpc(s_->content->Update(ctx.get(), req, &resp), StrCat("update labels of ", digest));
  };
  if (ContentLabels(digest).ok()) return update_labels();

  auto ctx = s_->Ctx();
  auto stream = s_->content->Write(ctx.get());
  content::WriteContentRequest req;
  content::WriteContentResponse resp;
  req.set_action(content::STAT);
  req.set_ref(ref);
  req.set_total(static_cast<int64_t>(data.size()));
  req.set_expected(digest);
  bool ok = stream->Write(req) && stream->Read(&resp);
  int64_t offset = ok ? resp.offset() : 0;
  if (ok && (offset < 0 || offset > static_cast<int64_t>(data.size()))) offset = 0;
  const size_t kChunk = 1 << 20;
  while (ok && offset < static_cast<int64_t>(data.size())) {
    req.Clear();
    req.set_action(content::WRITE);
    req.set_offset(offset);
    size_t n = std::min(kChunk, data.size() - static_cast<size_t>(offset));
    req.set_data(data.substr(static_cast<size_t>(offset), n));
    ok = stream->Write(req) && stream->Read(&resp);
    if (ok) offset = resp.offset();
  }
  if (ok) {
    req.Clear();
    req.set_action(content::COMMIT);
    req.set_total(static_cast<int64_t>(data.size()));
    req.set_offset(offset);
    req.set_expected(digest);
    for (const auto& [k, v] : labels) (*req.mutable_labels())[k] = v;
    ok = stream->Write(req) && stream->Read(&resp);
  }
  stream->WritesDone();
  // containerd's Write handler sends its last message once more on the way
  // out; Finish only returns once every incoming message was read.
  content::WriteContentResponse extra;
  while (stream->Read(&extra)) {
  }
  grpc::Status s = stream->Finish();
  if (s.error_code() == grpc::StatusCode::ALREADY_EXISTS) return update_labels();
  if (!s.ok()) return FromGrpc(s, StrCat("write content ", digest));
  if (!ok) return absl::UnavailableError(StrCat("write content ", digest, ": stream ended early"));
  if (resp.digest() != digest)
    return absl::DataLossError(StrCat("write content: containerd committed ", resp.digest(), ", expected ", digest));
  return absl::OkStatus();
}

absl::StatusOr<ImageRecord> ContainerdClient::GetImage(const std::string& name) {
  images::GetImageRequest req;
  req.set_name(name);
  images::GetImageResponse resp;
  auto ctx = s_->Ctx();
  auto s = s_->images->Get(ctx.get(), req, &resp);
  if (!s.ok()) return FromGrpc(s, StrCat("image ", name));
  ImageRecord r;
  r.name = resp.image().name();
  r.target.media_type = resp.image().target().media_type();
  r.target.digest = resp.image().target().digest();
  r.target.size = resp.image().target().size();
  r.labels.insert(resp.image().labels().begin(), resp.image().labels().end());
  return r;
}

absl::Status ContainerdClient::PutImage(const ImageRecord& image) {
  images::Image img;
  img.set_name(image.name);
  img.mutable_target()->set_media_type(image.target.media_type);
  img.mutable_target()->set_digest(image.target.digest);
  img.mutable_target()->set_size(image.target.size);
  for (const auto& [k, v] : image.labels) (*img.mutable_labels())[k] = v;
  {
    images::CreateImageRequest req;
    *req.mutable_image() = img;
    images::CreateImageResponse resp;
    auto ctx = s_->Ctx();
    auto s = s_->images->Create(ctx.get(), req, &resp);
    if (s.ok()) return absl::OkStatus();
    if (s.error_code() != grpc::StatusCode::ALREADY_EXISTS) return FromGrpc(s, StrCat("create image ", image.name));
  }
  images::UpdateImageRequest req;
  *req.mutable_image() = img;
  req.mutable_update_mask()->add_paths("target");
  req.mutable_update_mask()->add_paths("labels");
  images::UpdateImageResponse resp;
  auto ctx = s_->Ctx();
  return FromGrpc(s_->images->Update(ctx.get(), req, &resp), StrCat("update image ", image.name));
}

absl::StatusOr<std::vector<ImageRecord>> ContainerdClient::ListImages() {
  images::ListImagesRequest req;
  images::ListImagesResponse resp;
  auto ctx = s_->Ctx();
  auto s = s_->images->List(ctx.get(), req, &resp);
  if (!s.ok()) return FromGrpc(s, StrCat("list images (namespace ", s_->ns, ")"));
  std::vector<ImageRecord> out;
  for (const auto& i : resp.images()) {
    ImageRecord r;
    r.name = i.name();
    r.target.media_type = i.target().media_type();
    r.target.digest = i.target().digest();
    r.target.size = i.target().size();
    r.labels.insert(i.labels().begin(), i.labels().end());
    out.push_back(std::move(r));
  }
  return out;
}

absl::Status ContainerdClient::DeleteImage(const std::string& name, bool sync) {
  images::DeleteImageRequest req;
  req.set_name(name);
  req.set_sync(sync);
  google::protobuf::Empty resp;
  auto ctx = s_->Ctx();
  return FromGrpc(s_->images->Delete(ctx.get(), req, &resp), StrCat("delete image ", name));
}

absl::Status ContainerdClient::CollectGarbage() {
  std::string saved = s_->lease;
  s_->lease.clear();
  auto id = CreateLease(60, {});
  s_->lease = saved;
  if (!id.ok()) return id.status();
  leases::DeleteRequest req;
  req.set_id(*id);
  req.set_sync(true);
  google::protobuf::Empty resp;
  auto ctx = s_->Ctx();
  return FromGrpc(s_->leases->Delete(ctx.get(), req, &resp), "garbage collection (delete lease with sync)");
}

absl::StatusOr<std::vector<SnapshotRecord>> ContainerdClient::ListSnapshots(const std::string& snapshotter) {
  snapshots::ListSnapshotsRequest req;
  req.set_snapshotter(snapshotter);
  auto ctx = s_->Ctx();
  auto reader = s_->snapshots->List(ctx.get(), req);
  snapshots::ListSnapshotsResponse resp;
  std::vector<SnapshotRecord> out;
  while (reader->Read(&resp)) {
    for (const auto& i : resp.info()) {
      SnapshotRecord r;
      r.name = i.name();
      r.parent = i.parent();
      switch (i.kind()) {
        case snapshots::VIEW: r.kind = SnapshotRecord::Kind::kView; break;
        case snapshots::ACTIVE: r.kind = SnapshotRecord::Kind::kActive; break;
        case snapshots::COMMITTED: r.kind = SnapshotRecord::Kind::kCommitted; break;
        default: break;
      }
      r.labels.insert(i.labels().begin(), i.labels().end());
      out.push_back(std::move(r));
    }
  }
  auto s = reader->Finish();
  if (!s.ok()) return FromGrpc(s, StrCat("list snapshots of snapshotter ", snapshotter, " (namespace ", s_->ns, ")"));
  return out;
}

absl::StatusOr<bool> ContainerdClient::SnapshotExists(const std::string& snapshotter, const std::string& key) {
  snapshots::StatSnapshotRequest req;
  req.set_snapshotter(snapshotter);
  req.set_key(key);
  snapshots::StatSnapshotResponse resp;
  auto ctx = s_->Ctx();
  auto s = s_->snapshots->Stat(ctx.get(), req, &resp);
  if (s.ok()) return true;
  if (s.error_code() == grpc::StatusCode::NOT_FOUND) return false;
  return FromGrpc(s, StrCat("stat snapshot ", key, " (snapshotter ", snapshotter, ")"));
}

absl::Status ContainerdClient::PrepareSnapshot(const std::string& snapshotter, const std::string& key,
                                               const std::string& parent,
                                               const std::map<std::string, std::string>& labels) {
  snapshots::PrepareSnapshotRequest req;
  req.set_snapshotter(snapshotter);
  req.set_key(key);
  req.set_parent(parent);
  for (const auto& [k, v] : labels) (*req.mutable_labels())[k] = v;
  snapshots::PrepareSnapshotResponse resp;
  auto ctx = s_->Ctx();
  return FromGrpc(s_->snapshots->Prepare(ctx.get(), req, &resp),
                  StrCat("prepare snapshot ", key, " (snapshotter ", snapshotter, ")"));
}

absl::Status ContainerdClient::RemoveSnapshot(const std::string& snapshotter, const std::string& key) {
  snapshots::RemoveSnapshotRequest req;
  req.set_snapshotter(snapshotter);
  req.set_key(key);
  google::protobuf::Empty resp;
  auto ctx = s_->Ctx();
  return FromGrpc(s_->snapshots->Remove(ctx.get(), req, &resp), StrCat("remove snapshot ", key));
}

}  // namespace d4c::snap
