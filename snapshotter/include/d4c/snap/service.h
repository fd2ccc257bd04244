// gRPC Snapshots service (containerd.services.snapshots.v1) over a Snapshotter:
// one method per RPC, absl::Status mapped to gRPC codes (NotFound,
// AlreadyExists, FailedPrecondition, InvalidArgument, ...), every exception
// caught at the boundary (INTERNAL), one structured log line per RPC.
#pragma once

#include <memory>

#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"
#include "d4c/snap/snapshotter.h"

namespace d4c::snap {

std::unique_ptr<containerd::services::snapshots::v1::Snapshots::Service> MakeSnapshotsService(Snapshotter* sn);

grpc::Status ToGrpc(const absl::Status& s);

}  // namespace d4c::snap
