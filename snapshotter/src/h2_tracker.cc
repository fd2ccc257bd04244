// HTTP/2 frame tracking for the graceful connection hand-over (h2_tracker.h).
#include "h2_tracker.h"

#include <algorithm>
#include <cstring>

namespace d4c::snap {
namespace {

constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
// Frame types and flags, RFC 9113 section 6.
constexpr uint8_t kData = 0x0, kHeaders = 0x1, kRstStream = 0x3, kGoaway = 0x7, kContinuation = 0x9;
constexpr uint8_t kEndStream = 0x1, kEndHeaders = 0x4;

}  // namespace

std::string H2Tracker::Goaway(uint32_t last_stream) {
  last_stream &= 0x7fffffffu;
  const unsigned char f[17] = {0, 0, 8, kGoaway, 0, 0, 0, 0, 0,  // length 8, stream 0
                               static_cast<unsigned char>(last_stream >> 24),
                               static_cast<unsigned char>(last_stream >> 16),
                               static_cast<unsigned char>(last_stream >> 8), static_cast<unsigned char>(last_stream),
                               0, 0, 0, 0};  // NO_ERROR
  return std::string(reinterpret_cast<const char*>(f), sizeof f);
}

void H2Tracker::SendGoaway(std::string* to_client) {
  last_stream_ = max_stream_;
  to_client->append(Goaway(last_stream_));
  goaway_sent_ = true;
}

void H2Tracker::Drain(std::string* to_client) {
  if (drain_) return;
  drain_ = true;
  // The server's first frame is its SETTINGS (the connection preface); a
  // GOAWAY may only follow it.
  if (server_.started && server_.Between()) SendGoaway(to_client);
}

// A frame header is complete in d.header: decide whether the frame goes on
// and what it does to the streams.
void H2Tracker::OnHeader(Direction& d, bool from_client) {
  const unsigned char* h = d.header;
  d.payload_left = (uint32_t{h[0]} << 16) | (uint32_t{h[1]} << 8) | h[2];
  const uint8_t type = h[3], flags = h[4];
  const uint32_t sid =
      ((uint32_t{h[5]} << 24) | (uint32_t{h[6]} << 16) | (uint32_t{h[7]} << 8) | h[8]) & 0x7fffffffu;
  d.forward = true;
  d.ends = 0;
  if (from_client) {
    // After the GOAWAY the server never hears of a newer stream: the client
    // takes it as not processed and sends it again on a new connection.
    if (goaway_sent_ && sid > last_stream_) {
      d.forward = false;
      return;
    }
    if (type == kHeaders && sid > max_stream_ && (sid & 1) == 1) {
      max_stream_ = sid;
      open_.insert(sid);
    } else if (type == kRstStream && sid != 0) {
      d.ends = sid;  // the client gave up the stream; the server drops it
    }
    return;
  }
  // Server frames: a stream ends with END_STREAM on DATA or on a header block
  // (after its CONTINUATION frames), or with RST_STREAM.
  if (type == kRstStream && sid != 0) {
    d.ends = sid;
  } else if (type == kData && (flags & kEndStream) != 0) {
    d.ends = sid;
  } else if (type == kHeaders && (flags & kEndStream) != 0) {
    if ((flags & kEndHeaders) != 0) {
      d.ends = sid;
    } else {
      continued_ = sid;
    }
  } else if (type == kContinuation && (flags & kEndHeaders) != 0 && sid == continued_ && sid != 0) {
    d.ends = sid;
    continued_ = 0;
  }
}

void H2Tracker::Parse(Direction& d, bool from_client, std::string_view in, std::string* out) {
  while (!in.empty()) {
    if (d.payload_left > 0) {
      size_t k = std::min<size_t>(in.size(), d.payload_left);
      if (d.forward) out->append(in.substr(0, k));
      in.remove_prefix(k);
      d.payload_left -= static_cast<uint32_t>(k);
    } else {
      size_t k = std::min(in.size(), sizeof d.header - d.header_have);
      std::memcpy(d.header + d.header_have, in.data(), k);
      d.header_have += k;
      in.remove_prefix(k);
      if (d.header_have < sizeof d.header) break;
      d.header_have = 0;
      OnHeader(d, from_client);
      if (d.forward) out->append(reinterpret_cast<const char*>(d.header), sizeof d.header);
    }
    if (d.Between()) {  // a frame is whole
      d.started = true;
      if (d.ends != 0 && d.forward) open_.erase(d.ends);
      d.ends = 0;
      if (!from_client && drain_ && !goaway_sent_) SendGoaway(out);
    }
  }
}

absl::Status H2Tracker::FromClient(std::string_view in, std::string* to_server) {
  if (client_.preface_left > 0) {
    size_t done = kPreface.size() - client_.preface_left;
    size_t k = std::min(in.size(), client_.preface_left);
    if (in.substr(0, k) != kPreface.substr(done, k)) {
      return absl::InvalidArgumentError(
          "the client did not start with the HTTP/2 connection preface (the Snapshots socket speaks gRPC: point "
          "containerd's [proxy_plugins] address, not another client, at it)");
    }
    to_server->append(in.substr(0, k));
    client_.preface_left -= k;
    in.remove_prefix(k);
  }
  Parse(client_, true, in, to_server);
  return absl::OkStatus();
}

void H2Tracker::FromServer(std::string_view in, std::string* to_client) { Parse(server_, false, in, to_client); }

}  // namespace d4c::snap

