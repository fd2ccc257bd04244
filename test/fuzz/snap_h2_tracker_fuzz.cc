// libFuzzer: the bytes a client (containerd, kubelet, anything that can open
// the socket) and the server send through a drained connection's relay
// (snapshotter/src/h2_tracker.h). The input is cut into chunks, each for the
// client's or the server's side, with a drain somewhere. Properties: no crash
// or overread; before the drain every client byte reaches the server
// unchanged (but for the start of a frame header still incomplete: held until
// it is whole); after it the server gets a subsequence of what the client sent
// (frames dropped, never changed or added); the client gets the server's bytes
// (the same holding) plus exactly one 17-byte GOAWAY.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "h2_tracker.h"

namespace {
bool IsSubsequenceOfFrames(std::string_view sub, std::string_view all) {
  size_t j = 0;
  for (char c : all) {
    if (j < sub.size() && sub[j] == c) ++j;
  }
  return j == sub.size();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  d4c::snap::H2Tracker t;
  std::string from_client, from_server, to_server, to_client, to_server_after;
  bool drained = false, refused = false;
  size_t i = 0;
  // The client's preface first, so that most inputs get past it.
  std::string preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  if (size > 0 && (data[0] & 1) == 0) {
    from_client = preface;
    if (!t.FromClient(preface, &to_server).ok()) abort();
  }
  while (i < size) {
    uint8_t op = data[i++];
    size_t n = std::min<size_t>(op >> 2, size - i);
    std::string_view chunk(reinterpret_cast<const char*>(data) + i, n);
    i += n;
    switch (op & 3) {
      case 0:
      case 1:
        if (refused) break;
        if (!drained) {
          if (!t.FromClient(chunk, &to_server).ok()) {
            refused = true;
            break;
          }
          from_client.append(chunk);
          // nothing dropped or changed before a drain; at most a header's start held
          if (from_client.compare(0, to_server.size(), to_server) != 0) abort();
          if (from_client.size() - to_server.size() >= 9) abort();
          break;
        } else {
          if (!t.FromClient(chunk, &to_server_after).ok()) {
            refused = true;  // still in the preface
            break;
          }
          from_client.append(chunk);
        }
        break;
      case 2:
        from_server.append(chunk);
        t.FromServer(chunk, &to_client);
        break;
      case 3:
        if (!drained && !refused) {
          drained = true;
          t.Drain(&to_client);
        }
        break;
    }
  }
  if (!IsSubsequenceOfFrames(to_server + to_server_after, from_client)) abort();
  // The client got the server's bytes (but for a header start held), with the
  // GOAWAY at some frame boundary: one place where it can be cut out must work.
  auto matches = [&](const std::string& passed) {
    return from_server.compare(0, passed.size(), passed) == 0 && from_server.size() - passed.size() < 9;
  };
  if (t.goaway_sent()) {
    const std::string g = d4c::snap::H2Tracker::Goaway(t.last_stream());
    bool found = false;
    for (size_t at = to_client.find(g); !found && at != std::string::npos; at = to_client.find(g, at + 1)) {
      found = matches(to_client.substr(0, at) + to_client.substr(at + g.size()));
    }
    if (!found) abort();
  } else if (!matches(to_client)) {
    abort();
  }
  (void)t.Drained();
  return 0;
}
