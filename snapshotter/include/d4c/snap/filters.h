// containerd filter expressions (github.com/containerd/containerd/filters):
//   selectors := selector ("," selector)*        all must match
//   selector  := fieldpath [op value]            no op: the field is present
//   fieldpath := field ("." field)*              field: [A-Za-z_][A-Za-z0-9_]* or "quoted"
//   op        := "==" | "!=" | "~="             ~= is a regular expression
//   value     := quoted | [^\s,]+                ~= also takes /re/ and |re|
// A list of filters matches when any of them matches (empty list: always).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace d4c::snap {

// Looks a field path up on the object: nullopt when absent.
using FieldLookup = std::function<std::optional<std::string>(const std::vector<std::string>& path)>;

class Filter {
 public:
  struct Selector {
    std::vector<std::string> path;
    enum class Op { kPresent, kEqual, kNotEqual, kMatches } op = Op::kPresent;
    std::string value;
  };
  // Parses each expression; InvalidArgument names the expression and position.
  static absl::StatusOr<Filter> ParseAll(const std::vector<std::string>& exprs);
  bool Match(const FieldLookup& lookup) const;
  bool always() const { return any_.empty(); }

 private:
  std::vector<std::vector<Selector>> any_;  // or of ands
};

}  // namespace d4c::snap
