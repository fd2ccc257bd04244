#include "d4c/snap/service.h"

#include <chrono>
#include <exception>

#include "d4c/base/strcat.h"
#include "spdlog/spdlog.h"

namespace d4c::snap {
namespace api = containerd::services::snapshots::v1;
namespace {

void ToTimestamp(int64_t ns, google::protobuf::Timestamp* ts) {
  ts->set_seconds(ns / 1000000000);
  ts->set_nanos(static_cast<int32_t>(ns % 1000000000));
}

api::Kind ToKind(Kind k) {
  switch (k) {
    case Kind::kView: return api::VIEW;
    case Kind::kActive: return api::ACTIVE;
    case Kind::kCommitted: return api::COMMITTED;
    default: return api::UNKNOWN;
  }
}

void ToInfo(const Info& in, api::Info* out) {
  out->set_name(in.name);
  out->set_parent(in.parent);
  out->set_kind(ToKind(in.kind));
  ToTimestamp(in.created_ns, out->mutable_created_at());
  ToTimestamp(in.updated_ns, out->mutable_updated_at());
  for (const auto& [k, v] : in.labels) (*out->mutable_labels())[k] = v;
}

Labels ToLabels(const google::protobuf::Map<std::string, std::string>& m) {
  Labels out;
  for (const auto& [k, v] : m) out[k] = v;
  return out;
}

void ToMounts(const std::vector<Mount>& in, google::protobuf::RepeatedPtrField<containerd::types::Mount>* out) {
  for (const auto& m : in) {
    auto* pm = out->Add();
    pm->set_type(m.type);
    pm->set_source(m.source);
    for (const auto& o : m.options) pm->add_options(o);
  }
}

class Service final : public api::Snapshots::Service {
 public:
  explicit Service(Snapshotter* sn) : sn_(sn) {}

  grpc::Status Prepare(grpc::ServerContext*, const api::PrepareSnapshotRequest* req,
                       api::PrepareSnapshotResponse* resp) override {
    return Handle("Prepare", req->key(), req->parent(), [&] {
      auto m = sn_->Prepare(req->key(), req->parent(), ToLabels(req->labels()));
      if (!m.ok()) return m.status();
      ToMounts(*m, resp->mutable_mounts());
      return absl::OkStatus();
    });
  }

  grpc::Status View(grpc::ServerContext*, const api::ViewSnapshotRequest* req,
                    api::ViewSnapshotResponse* resp) override {
    return Handle("View", req->key(), req->parent(), [&] {
      auto m = sn_->View(req->key(), req->parent(), ToLabels(req->labels()));
      if (!m.ok()) return m.status();
      ToMounts(*m, resp->mutable_mounts());
      return absl::OkStatus();
    });
  }

  grpc::Status Mounts(grpc::ServerContext*, const api::MountsRequest* req, api::MountsResponse* resp) override {
    return Handle("Mounts", req->key(), "", [&] {
      auto m = sn_->Mounts(req->key());
      if (!m.ok()) return m.status();
      ToMounts(*m, resp->mutable_mounts());
      return absl::OkStatus();
    });
  }

  grpc::Status Commit(grpc::ServerContext*, const api::CommitSnapshotRequest* req,
                      google::protobuf::Empty*) override {
    return Handle("Commit", req->key(), req->name(),
                  [&] { return sn_->Commit(req->name(), req->key(), ToLabels(req->labels())); });
  }

  grpc::Status Remove(grpc::ServerContext*, const api::RemoveSnapshotRequest* req,
                      google::protobuf::Empty*) override {
    return Handle("Remove", req->key(), "", [&] { return sn_->Remove(req->key()); });
  }

  grpc::Status Stat(grpc::ServerContext*, const api::StatSnapshotRequest* req,
                    api::StatSnapshotResponse* resp) override {
    return Handle("Stat", req->key(), "", [&] {
      auto i = sn_->Stat(req->key());
      if (!i.ok()) return i.status();
      ToInfo(*i, resp->mutable_info());
      return absl::OkStatus();
    });
  }

  grpc::Status Update(grpc::ServerContext*, const api::UpdateSnapshotRequest* req,
                      api::UpdateSnapshotResponse* resp) override {
    return Handle("Update", req->info().name(), "", [&] {
      Info in;
      in.name = req->info().name();
      in.labels = ToLabels(req->info().labels());
      std::vector<std::string> paths(req->update_mask().paths().begin(), req->update_mask().paths().end());
      auto i = sn_->Update(in, paths);
      if (!i.ok()) return i.status();
      ToInfo(*i, resp->mutable_info());
      return absl::OkStatus();
    });
  }

  grpc::Status List(grpc::ServerContext*, const api::ListSnapshotsRequest* req,
                    grpc::ServerWriter<api::ListSnapshotsResponse>* writer) override {
    std::string filters;
    for (const auto& f : req->filters()) filters += (filters.empty() ? "" : " | ") + f;
    return Handle("List", filters, "", [&]() -> absl::Status {
      std::vector<std::string> fs(req->filters().begin(), req->filters().end());
      api::ListSnapshotsResponse batch;
      auto flush = [&]() -> absl::Status {
        if (batch.info_size() == 0) return absl::OkStatus();
        if (!writer->Write(batch)) return absl::CancelledError("client went away during List");
        batch.Clear();
        return absl::OkStatus();
      };
      auto s = sn_->List(fs, [&](const Info& i) -> absl::Status {
        ToInfo(i, batch.add_info());
        if (batch.info_size() >= 100) return flush();
        return absl::OkStatus();
      });
      if (!s.ok()) return s;
      return flush();
    });
  }

  grpc::Status Usage(grpc::ServerContext*, const api::UsageRequest* req, api::UsageResponse* resp) override {
    return Handle("Usage", req->key(), "", [&] {
      auto u = sn_->GetUsage(req->key());
      if (!u.ok()) return u.status();
      resp->set_size(u->size);
      resp->set_inodes(u->inodes);
      return absl::OkStatus();
    });
  }

  grpc::Status Cleanup(grpc::ServerContext*, const api::CleanupRequest*, google::protobuf::Empty*) override {
    return Handle("Cleanup", "", "", [&] { return sn_->Cleanup(); });
  }

 private:
  template <typename F>
  grpc::Status Handle(const char* rpc, const std::string& key, const std::string& arg, F&& fn) {
    auto t0 = std::chrono::steady_clock::now();
    absl::Status s;
    try {
      s = fn();
    } catch (const std::exception& e) {
      s = absl::InternalError(StrCat(rpc, ": unexpected error: ", e.what()));
    } catch (...) {
      s = absl::InternalError(StrCat(rpc, ": unexpected non-standard exception"));
    }
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    // The root probe (load.h) always "fails": its answer is the error.
    bool probe = absl::IsFailedPrecondition(s) && Msg(s.message()).starts_with("di3fs-root-probe ");
    auto lvl = s.ok() || absl::IsAlreadyExists(s) || absl::IsNotFound(s) || probe ? spdlog::level::info
                                                                               : spdlog::level::warn;
    spdlog::log(lvl, "rpc={} key=\"{}\" arg=\"{}\" code={} ms={:.2f}{}{}", rpc, key, arg,
                absl::StatusCodeToString(s.code()), ms, s.ok() ? "" : " error=", Msg(s.message()));
    return ToGrpc(s);
  }

  Snapshotter* sn_;
};

}  // namespace

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(static_cast<int>(s.code())), Msg(s.message()));
}

std::unique_ptr<api::Snapshots::Service> MakeSnapshotsService(Snapshotter* sn) {
  return std::make_unique<Service>(sn);
}

}  // namespace d4c::snap
