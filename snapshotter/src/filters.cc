#include "d4c/snap/filters.h"

#include <cctype>
#include <regex>

#include "d4c/base/strcat.h"

namespace d4c::snap {
namespace {

class Parser {
 public:
  explicit Parser(const std::string& s) : s_(s) {}

  absl::StatusOr<std::vector<Filter::Selector>> Parse() {
    std::vector<Filter::Selector> out;
    while (true) {
      auto sel = ParseSelector();
      if (!sel.ok()) return sel.status();
      out.push_back(std::move(*sel));
      SkipSpace();
      if (pos_ == s_.size()) return out;
      if (s_[pos_] != ',') return Err("expected ',' or end of input");
      ++pos_;
    }
  }

 private:
  absl::Status Err(const std::string& what) const {
    return absl::InvalidArgumentError(
        StrCat("filter \"", s_, "\" at offset ", pos_, ": ", what));
  }
  void SkipSpace() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  static bool FieldStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
  static bool FieldChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

  // Go-style quoted string: "..." or '...' (and /../, |..| for regexps).
  absl::StatusOr<std::string> Quoted(bool alt) {
    char q = s_[pos_];
    if (!(q == '"' || q == '\'' || (alt && (q == '/' || q == '|')))) return Err("expected a quote");
    ++pos_;
    std::string out;
    while (pos_ < s_.size()) {
      char c = s_[pos_++];
      if (c == q) return out;
      if (c == '\\' && pos_ < s_.size()) {
        char e = s_[pos_++];
        switch (e) {
          case 'n': out.push_back('\n'); break;
          case 't': out.push_back('\t'); break;
          case 'r': out.push_back('\r'); break;
          case '\\': out.push_back('\\'); break;
          case '"': out.push_back('"'); break;
          case '\'': out.push_back('\''); break;
          default:
            if (e == q) {
              out.push_back(e);
            } else {  // keep unknown escapes (regexps use them)
              out.push_back('\\');
              out.push_back(e);
            }
        }
        continue;
      }
      out.push_back(c);
    }
    return Err("unterminated quoted string");
  }

  absl::StatusOr<std::string> Field() {
    SkipSpace();
    if (pos_ >= s_.size()) return Err("expected a field");
    if (s_[pos_] == '"' || s_[pos_] == '\'') return Quoted(false);
    if (!FieldStart(s_[pos_])) return Err("expected a field name or quoted field");
    size_t b = pos_;
    while (pos_ < s_.size() && FieldChar(s_[pos_])) ++pos_;
    return s_.substr(b, pos_ - b);
  }

  absl::StatusOr<Filter::Selector> ParseSelector() {
    Filter::Selector sel;
    while (true) {
      auto f = Field();
      if (!f.ok()) return f.status();
      sel.path.push_back(std::move(*f));
      SkipSpace();
      if (pos_ < s_.size() && s_[pos_] == '.') {
        ++pos_;
        continue;
      }
      break;
    }
    SkipSpace();
    if (pos_ == s_.size() || s_[pos_] == ',') return sel;
    if (pos_ + 1 >= s_.size()) return Err("expected an operator (==, !=, ~=)");
    std::string op = s_.substr(pos_, 2);
    if (op == "==") sel.op = Filter::Selector::Op::kEqual;
    else if (op == "!=") sel.op = Filter::Selector::Op::kNotEqual;
    else if (op == "~=") sel.op = Filter::Selector::Op::kMatches;
    else return Err("expected an operator (==, !=, ~=)");
    pos_ += 2;
    SkipSpace();
    if (pos_ == s_.size()) return Err("expected a value");
    char c = s_[pos_];
    bool alt = sel.op == Filter::Selector::Op::kMatches;
    if (c == '"' || c == '\'' || (alt && (c == '/' || c == '|'))) {
      auto v = Quoted(alt);
      if (!v.ok()) return v.status();
      sel.value = std::move(*v);
    } else {
      size_t b = pos_;
      while (pos_ < s_.size() && s_[pos_] != ',' && !std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
      sel.value = s_.substr(b, pos_ - b);
    }
    if (sel.op == Filter::Selector::Op::kMatches) {
      try {
        std::regex re(sel.value);
      } catch (const std::regex_error& e) {
        return Err(StrCat("bad regular expression \"", sel.value, "\": ", e.what()));
      }
    }
    return sel;
  }

  const std::string& s_;
  size_t pos_ = 0;
};

}  // namespace

absl::StatusOr<Filter> Filter::ParseAll(const std::vector<std::string>& exprs) {
  Filter f;
  for (const auto& e : exprs) {
    if (e.empty()) {  // containerd: the empty filter matches everything
      return Filter{};
    }
    auto sels = Parser(e).Parse();
    if (!sels.ok()) return sels.status();
    f.any_.push_back(std::move(*sels));
  }
  return f;
}

bool Filter::Match(const FieldLookup& lookup) const {
  if (any_.empty()) return true;
  for (const auto& all : any_) {
    bool ok = true;
    for (const auto& sel : all) {
      std::optional<std::string> v = lookup(sel.path);
      switch (sel.op) {
        case Selector::Op::kPresent: ok = v.has_value(); break;
        case Selector::Op::kEqual: ok = v.has_value() && *v == sel.value; break;
        case Selector::Op::kNotEqual: ok = v.value_or("") != sel.value; break;
        case Selector::Op::kMatches:
          try {
            ok = std::regex_search(v.value_or(""), std::regex(sel.value));
          } catch (const std::regex_error&) {
            ok = false;
          }
          break;
      }
      if (!ok) break;
    }
    if (ok) return true;
  }
  return false;
}

}  // namespace d4c::snap
