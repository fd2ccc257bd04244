// HTTP/2 frame tracking for the graceful hand-over of a gRPC connection to
// the next snapshotter process (the relay itself: h2_relay.h).
//
// Why: gRPC C++ (1.51) cancels every call that reaches a server after
// Server::Shutdown() began and before the client has read the server's GOAWAY
// (server.cc zombies them; the client sees CANCELLED, and containerd does not
// retry snapshotter calls). So a restart used to fail the odd call that
// containerd sent in that window (CI's restart_test: 1 probe of 73 across 6
// restarts on a busy machine).
//
// How: FdAcceptor does not give an accepted connection to gRPC directly but
// relays it through a socketpair, following the HTTP/2 frames on the way (frame
// headers only; no header decoding). To stop, the relay itself sends the client
// a GOAWAY naming the last stream the server got, drops the frames of any
// stream the client opened after that (the client retries those on a new
// connection, which waits in the listening socket for the next process:
// RFC 9113 6.8, "streams ... not processed"), and closes the connection once
// the server has answered every stream it got and the client has closed its
// side (2 s at most). Only then does the server shut down, with no connection
// left on which a call could arrive.
// Why by hand: only the 9-byte frame headers (RFC 9113 4.1) are read and the
// bytes pass unchanged; an HTTP/2 library (nghttp2) would terminate the
// connection on both sides and encode it again.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace d4c::snap {

// Follows the two byte streams of one HTTP/2 connection (client to server,
// server to client) frame by frame and decides what is passed on. Not
// thread-safe: one relay thread owns it.
class H2Tracker {
 public:
  // Bytes from the client. Appends to *to_server what the server must get (all
  // of it, except frames of streams refused by a drain). Error: the bytes do
  // not start with the HTTP/2 client preface (not a gRPC client).
  absl::Status FromClient(std::string_view in, std::string* to_server);
  // Bytes from the server, appended to *to_client, followed by the GOAWAY
  // once a drain asked for it and a frame has ended.
  void FromServer(std::string_view in, std::string* to_client);
  // Starts the drain: a GOAWAY (NO_ERROR) naming the last stream passed to the
  // server goes to the client at once when the server's side is between frames
  // (and the server has sent its first frame, SETTINGS), else right after the
  // frame in progress. From then on, frames of newer streams are dropped.
  void Drain(std::string* to_client);
  // The GOAWAY was sent and the server has ended every stream it got.
  bool Drained() const { return goaway_sent_ && open_.empty() && server_.Between(); }
  bool goaway_sent() const { return goaway_sent_; }
  uint32_t last_stream() const { return last_stream_; }
  size_t open_streams() const { return open_.size(); }

  // The 9-byte header and 8-byte payload of GOAWAY(last_stream, NO_ERROR).
  static std::string Goaway(uint32_t last_stream);

 private:
  // Where one direction's parser is.
  struct Direction {
    size_t preface_left = 0;  // client side: bytes of the preface still to come
    unsigned char header[9] = {};
    size_t header_have = 0;
    uint32_t payload_left = 0;
    bool forward = true;  // the current frame is passed on
    bool started = false;  // a whole frame went by
    uint32_t ends = 0;  // the stream the current frame ends, once it is whole (0: none)
    bool Between() const { return header_have == 0 && payload_left == 0; }
  };
  void SendGoaway(std::string* to_client);
  static Direction Client() {
    Direction d;
    d.preface_left = 24;  // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    return d;
  }

  Direction client_ = Client();
  Direction server_;
  void Parse(Direction& d, bool from_client, std::string_view in, std::string* out);
  void OnHeader(Direction& d, bool from_client);

  std::set<uint32_t> open_;  // client streams the server got and has not ended
  uint32_t continued_ = 0;  // server: a stream whose last header block still has CONTINUATION frames to come
  uint32_t max_stream_ = 0;  // the newest client stream seen
  uint32_t last_stream_ = 0;  // named by the GOAWAY
  bool drain_ = false;
  bool goaway_sent_ = false;
};

}  // namespace d4c::snap
