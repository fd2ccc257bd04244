#include "d4c/snap/metastore.h"

#include <sqlite3.h>

#include <chrono>

#include "d4c/base/strcat.h"

namespace d4c::snap {
namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::Status DbError(sqlite3* db, const std::string& what) {
  return absl::InternalError(StrCat("metadata db: ", what, ": ", sqlite3_errmsg(db)));
}

// One prepared statement, finalized on scope exit.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &st_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(st_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  bool ok() const { return rc_ == SQLITE_OK; }
  Stmt& Bind(int i, const std::string& s) {
    sqlite3_bind_text(st_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(st_, i, v);
    return *this;
  }
  Stmt& BindNull(int i) {
    sqlite3_bind_null(st_, i);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(st_); }
  int64_t Int(int c) const { return sqlite3_column_int64(st_, c); }
  bool IsNull(int c) const { return sqlite3_column_type(st_, c) == SQLITE_NULL; }
  std::string Text(int c) const {
    const unsigned char* p = sqlite3_column_text(st_, c);
    int n = sqlite3_column_bytes(st_, c);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
  }
  absl::Status Done(const std::string& what) {
    int rc = Step();
    if (rc != SQLITE_DONE) return DbError(db_, what);
    return absl::OkStatus();
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* st_ = nullptr;
  int rc_;
};

absl::Status Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = err ? err : "unknown error";
    sqlite3_free(err);
    return absl::InternalError(StrCat("metadata db: ", sql, ": ", m));
  }
  return absl::OkStatus();
}

// BEGIN IMMEDIATE ... COMMIT; rolls back unless Commit() succeeded.
class Tx {
 public:
  explicit Tx(sqlite3* db) : db_(db) { begin_ = Exec(db, "BEGIN IMMEDIATE"); }
  ~Tx() {
    if (begin_.ok() && !done_) (void)Exec(db_, "ROLLBACK");
  }
  const absl::Status& begin_status() const { return begin_; }
  absl::Status Commit() {
    auto s = Exec(db_, "COMMIT");
    if (s.ok()) done_ = true;
    return s;
  }

 private:
  sqlite3* db_;
  absl::Status begin_;
  bool done_ = false;
};

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS snapshots(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  key TEXT NOT NULL UNIQUE,
  parent_id INTEGER REFERENCES snapshots(id),
  kind INTEGER NOT NULL,
  created_ns INTEGER NOT NULL,
  updated_ns INTEGER NOT NULL,
  size INTEGER NOT NULL DEFAULT 0,
  inodes INTEGER NOT NULL DEFAULT 0,
  image_id TEXT);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent_id);
CREATE TABLE IF NOT EXISTS labels(
  snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY(snapshot_id, name)) WITHOUT ROWID;
)sql";

constexpr const char* kSelect =
    "SELECT s.id, s.key, s.parent_id, s.kind, s.created_ns, s.updated_ns, s.size, s.inodes, s.image_id,"
    " p.key FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id";

Record RowToRecord(const Stmt& st) {
  Record r;
  r.id = st.Int(0);
  r.info.name = st.Text(1);
  r.info.kind = static_cast<Kind>(st.Int(3));
  r.info.created_ns = st.Int(4);
  r.info.updated_ns = st.Int(5);
  r.usage.size = st.Int(6);
  r.usage.inodes = st.Int(7);
  r.image_id = st.IsNull(8) ? "" : st.Text(8);
  r.info.parent = st.IsNull(9) ? "" : st.Text(9);
  if (!st.IsNull(2)) r.parent_ids.push_back(st.Int(2));
  return r;
}

absl::Status LoadLabels(sqlite3* db, Record* r) {
  Stmt st(db, "SELECT name, value FROM labels WHERE snapshot_id = ?");
  if (!st.ok()) return DbError(db, "select labels");
  st.Bind(1, r->id);
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) r->info.labels[st.Text(0)] = st.Text(1);
  if (rc != SQLITE_DONE) return DbError(db, "select labels");
  return absl::OkStatus();
}

absl::Status LoadParentChain(sqlite3* db, Record* r) {
  if (r->parent_ids.empty()) return absl::OkStatus();
  int64_t cur = r->parent_ids.back();
  for (int guard = 0; guard < 100000; ++guard) {
    Stmt q(db, "SELECT parent_id, image_id FROM snapshots WHERE id = ?");
    if (!q.ok()) return DbError(db, "select parent");
    q.Bind(1, cur);
    int rc = q.Step();
    if (rc != SQLITE_ROW) return absl::NotFoundError(StrCat("missing parent snapshot id ", cur));
    r->parent_image_ids.push_back(q.IsNull(1) ? "" : q.Text(1));
    if (q.IsNull(0)) return absl::OkStatus();
    cur = q.Int(0);
    r->parent_ids.push_back(cur);
  }
  return absl::InternalError("parent chain too long or cyclic");
}

// Full record by key; NotFound when absent.
absl::StatusOr<Record> GetLocked(sqlite3* db, const std::string& key) {
  Stmt st(db, (std::string(kSelect) + " WHERE s.key = ?").c_str());
  if (!st.ok()) return DbError(db, "select snapshot");
  st.Bind(1, key);
  int rc = st.Step();
  if (rc == SQLITE_DONE) return absl::NotFoundError(StrCat("snapshot ", key, " does not exist"));
  if (rc != SQLITE_ROW) return DbError(db, "select snapshot");
  Record r = RowToRecord(st);
  if (auto s = LoadLabels(db, &r); !s.ok()) return s;
  if (auto s = LoadParentChain(db, &r); !s.ok()) return s;
  return r;
}

absl::Status WriteLabels(sqlite3* db, int64_t id, const Labels& labels) {
  Stmt del(db, "DELETE FROM labels WHERE snapshot_id = ?");
  if (!del.ok()) return DbError(db, "delete labels");
  del.Bind(1, id);
  if (auto s = del.Done("delete labels"); !s.ok()) return s;
  for (const auto& [k, v] : labels) {
    if (v.empty()) continue;  // an empty value removes the label (as containerd)
    Stmt ins(db, "INSERT INTO labels(snapshot_id, name, value) VALUES(?, ?, ?)");
    if (!ins.ok()) return DbError(db, "insert label");
    ins.Bind(1, id).Bind(2, k).Bind(3, v);
    if (auto s = ins.Done("insert label"); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status KeyFree(sqlite3* db, const std::string& key) {
  Stmt st(db, "SELECT 1 FROM snapshots WHERE key = ?");
  if (!st.ok()) return DbError(db, "select key");
  st.Bind(1, key);
  int rc = st.Step();
  if (rc == SQLITE_ROW) return absl::AlreadyExistsError(StrCat("snapshot ", key, " already exists"));
  if (rc != SQLITE_DONE) return DbError(db, "select key");
  return absl::OkStatus();
}

absl::StatusOr<Record> Insert(sqlite3* db, Kind kind, const std::string& key, std::optional<int64_t> parent_id,
                              const Labels& labels, const std::string& image_id, Usage usage) {
  int64_t now = NowNs();
  Stmt st(db,
          "INSERT INTO snapshots(key, parent_id, kind, created_ns, updated_ns, size, inodes, image_id)"
          " VALUES(?, ?, ?, ?, ?, ?, ?, ?)");
  if (!st.ok()) return DbError(db, "insert snapshot");
  st.Bind(1, key);
  if (parent_id) st.Bind(2, *parent_id); else st.BindNull(2);
  st.Bind(3, static_cast<int64_t>(kind)).Bind(4, now).Bind(5, now).Bind(6, usage.size).Bind(7, usage.inodes);
  if (image_id.empty()) st.BindNull(8); else st.Bind(8, image_id);
  if (auto s = st.Done("insert snapshot"); !s.ok()) return s;
  int64_t id = sqlite3_last_insert_rowid(db);
  if (auto s = WriteLabels(db, id, labels); !s.ok()) return s;
  return GetLocked(db, key);
}

}  // namespace

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kView: return "view";
    case Kind::kActive: return "active";
    case Kind::kCommitted: return "committed";
    default: return "unknown";
  }
}

FieldLookup SnapshotFields(const Info& info) {
  return [&info](const std::vector<std::string>& path) -> std::optional<std::string> {
    if (path.empty()) return std::nullopt;
    const std::string& f = path[0];
    if (f == "kind") return std::string(KindName(info.kind));
    if (f == "name") return info.name;
    if (f == "parent") return info.parent;
    if (f == "labels") {
      if (info.labels.empty() || path.size() < 2) return std::nullopt;
      std::string k = path[1];
      for (size_t i = 2; i < path.size(); ++i) k += "." + path[i];
      auto it = info.labels.find(k);
      if (it == info.labels.end()) return std::nullopt;
      return it->second;
    }
    return std::nullopt;
  };
}

absl::Status ValidateLabels(const Labels& labels) {
  for (const auto& [k, v] : labels) {
    if (k.size() + v.size() > 4096)
      return absl::InvalidArgumentError(
          StrCat("label key and value length (", k.size() + v.size(), " bytes) greater than maximum size (4096 bytes), key: ",
                 k.substr(0, 64)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<MetaStore>> MetaStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    std::string m = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::InternalError(StrCat("metadata db ", path, ": cannot open: ", m));
  }
  std::unique_ptr<MetaStore> store(new MetaStore(db));
  sqlite3_busy_timeout(db, 10000);
  for (const char* p : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON"}) {
    if (auto s = Exec(db, p); !s.ok()) return s;
  }
  if (auto s = Exec(db, kSchema); !s.ok()) return s;
  return store;
}

MetaStore::~MetaStore() { sqlite3_close(db_); }

absl::StatusOr<Record> MetaStore::Create(Kind kind, const std::string& key, const std::string& parent,
                                         const Labels& labels, const Hook& hook) {
  if (kind != Kind::kActive && kind != Kind::kView)
    return absl::InvalidArgumentError(StrCat("snapshot type ", KindName(kind),
                                             " invalid; only snapshots of type Active or View can be created"));
  if (key.empty()) return absl::InvalidArgumentError("snapshot key must not be empty");
  if (auto s = ValidateLabels(labels); !s.ok()) return s;
  Tx tx(db_);
  if (!tx.begin_status().ok()) return tx.begin_status();
  std::optional<int64_t> parent_id;
  if (!parent.empty()) {
    auto p = GetLocked(db_, parent);
    if (!p.ok()) {
      if (absl::IsNotFound(p.status())) return absl::NotFoundError(StrCat("missing parent \"", parent, "\""));
      return p.status();
    }
    if (p->info.kind != Kind::kCommitted)
      return absl::InvalidArgumentError(StrCat("parent \"", parent, "\" is not a committed snapshot"));
    parent_id = p->id;
  }
  if (auto s = KeyFree(db_, key); !s.ok()) return s;
  auto r = Insert(db_, kind, key, parent_id, labels, "", {});
  if (!r.ok()) return r.status();
  if (hook) {
    if (auto s = hook(*r); !s.ok()) return s;
  }
  if (auto s = tx.Commit(); !s.ok()) return s;
  return r;
}

absl::StatusOr<Record> MetaStore::CreateImage(const std::string& name, const std::string& image_id,
                                              const Labels& labels, Usage usage, const Hook& hook,
                                              const std::string& parent) {
  if (name.empty()) return absl::InvalidArgumentError("snapshot name must not be empty");
  if (auto s = ValidateLabels(labels); !s.ok()) return s;
  Tx tx(db_);
  if (!tx.begin_status().ok()) return tx.begin_status();
  if (auto s = KeyFree(db_, name); !s.ok()) return s;
  std::optional<int64_t> parent_id;
  if (!parent.empty()) {
    auto p = GetLocked(db_, parent);
    if (!p.ok()) {
      if (absl::IsNotFound(p.status())) return absl::NotFoundError(StrCat("missing parent \"", parent, "\""));
      return p.status();
    }
    if (p->info.kind != Kind::kCommitted)
      return absl::InvalidArgumentError(StrCat("parent \"", parent, "\" is not a committed snapshot"));
    parent_id = p->id;
  }
  auto r = Insert(db_, Kind::kCommitted, name, parent_id, labels, image_id, usage);
  if (!r.ok()) return r.status();
  if (hook) {
    if (auto s = hook(*r); !s.ok()) return s;
  }
  if (auto s = tx.Commit(); !s.ok()) return s;
  return r;
}

absl::StatusOr<Record> MetaStore::Get(const std::string& key) { return GetLocked(db_, key); }

absl::StatusOr<Record> MetaStore::Commit(const std::string& key, const std::string& name, Usage usage,
                                         const Labels& labels, const Hook& hook) {
  if (name.empty()) return absl::InvalidArgumentError("committed snapshot name must not be empty");
  if (auto s = ValidateLabels(labels); !s.ok()) return s;
  Tx tx(db_);
  if (!tx.begin_status().ok()) return tx.begin_status();
  if (auto s = KeyFree(db_, name); !s.ok())
    return absl::IsAlreadyExists(s) ? absl::AlreadyExistsError(StrCat("committed snapshot ", name, " already exists"))
                                    : s;
  auto r = GetLocked(db_, key);
  if (!r.ok()) {
    if (absl::IsNotFound(r.status())) return absl::NotFoundError(StrCat("failed to get active snapshot \"", key, "\""));
    return r.status();
  }
  if (r->info.kind != Kind::kActive)
    return absl::FailedPreconditionError(StrCat("snapshot \"", key, "\" is not active (", KindName(r->info.kind), ")"));
  int64_t now = NowNs();
  Stmt st(db_,
          "UPDATE snapshots SET key = ?, kind = ?, created_ns = ?, updated_ns = ?, size = ?, inodes = ? WHERE id = ?");
  if (!st.ok()) return DbError(db_, "commit snapshot");
  st.Bind(1, name).Bind(2, static_cast<int64_t>(Kind::kCommitted)).Bind(3, now).Bind(4, now);
  st.Bind(5, usage.size).Bind(6, usage.inodes).Bind(7, r->id);
  if (auto s = st.Done("commit snapshot"); !s.ok()) return s;
  if (auto s = WriteLabels(db_, r->id, labels); !s.ok()) return s;  // replaced, not inherited
  auto out = GetLocked(db_, name);
  if (!out.ok()) return out.status();
  if (hook) {
    if (auto s = hook(*out); !s.ok()) return s;
  }
  if (auto s = tx.Commit(); !s.ok()) return s;
  return out;
}

absl::StatusOr<Record> MetaStore::Remove(const std::string& key, const Hook& hook) {
  Tx tx(db_);
  if (!tx.begin_status().ok()) return tx.begin_status();
  auto r = GetLocked(db_, key);
  if (!r.ok()) return r.status();
  auto children = CountChildren(r->id);
  if (!children.ok()) return children.status();
  if (*children > 0)
    return absl::FailedPreconditionError(
        StrCat("cannot remove snapshot \"", key, "\" with ", *children, " child snapshot(s)"));
  Stmt st(db_, "DELETE FROM snapshots WHERE id = ?");
  if (!st.ok()) return DbError(db_, "delete snapshot");
  st.Bind(1, r->id);
  if (auto s = st.Done("delete snapshot"); !s.ok()) return s;
  if (hook) {
    if (auto s = hook(*r); !s.ok()) return s;
  }
  if (auto s = tx.Commit(); !s.ok()) return s;
  return r;
}

absl::StatusOr<Info> MetaStore::Update(const Info& info, const std::vector<std::string>& fieldpaths) {
  Tx tx(db_);
  if (!tx.begin_status().ok()) return tx.begin_status();
  auto r = GetLocked(db_, info.name);
  if (!r.ok()) return r.status();
  Labels labels = r->info.labels;
  if (fieldpaths.empty()) {
    labels = info.labels;
  } else {
    for (const auto& p : fieldpaths) {
      if (p.starts_with("labels.")) {
        std::string k = p.substr(7);
        auto it = info.labels.find(k);
        if (it == info.labels.end() || it->second.empty()) labels.erase(k);
        else labels[k] = it->second;
      } else if (p == "labels") {
        labels = info.labels;
      } else {
        return absl::InvalidArgumentError(
            StrCat("cannot update \"", p, "\" field on snapshot \"", info.name, "\""));
      }
    }
  }
  if (auto s = ValidateLabels(labels); !s.ok()) return s;
  if (auto s = WriteLabels(db_, r->id, labels); !s.ok()) return s;
  Stmt st(db_, "UPDATE snapshots SET updated_ns = ? WHERE id = ?");
  if (!st.ok()) return DbError(db_, "update snapshot");
  st.Bind(1, NowNs()).Bind(2, r->id);
  if (auto s = st.Done("update snapshot"); !s.ok()) return s;
  auto out = GetLocked(db_, info.name);
  if (!out.ok()) return out.status();
  if (auto s = tx.Commit(); !s.ok()) return s;
  return out->info;
}

absl::Status MetaStore::Walk(const Filter& filter, const std::function<absl::Status(const Record&)>& fn) {
  std::vector<Record> all;
  {
    Tx tx(db_);  // a consistent snapshot of rows and labels
    if (!tx.begin_status().ok()) return tx.begin_status();
    Stmt st(db_, (std::string(kSelect) + " ORDER BY s.id").c_str());
    if (!st.ok()) return DbError(db_, "list snapshots");
    int rc;
    while ((rc = st.Step()) == SQLITE_ROW) all.push_back(RowToRecord(st));
    if (rc != SQLITE_DONE) return DbError(db_, "list snapshots");
    for (auto& r : all) {
      if (auto s = LoadLabels(db_, &r); !s.ok()) return s;
    }
    if (auto s = tx.Commit(); !s.ok()) return s;
  }
  for (const auto& r : all) {
    if (!filter.Match(SnapshotFields(r.info))) continue;
    if (auto s = fn(r); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> MetaStore::CountChildren(int64_t id) {
  Stmt st(db_, "SELECT COUNT(*) FROM snapshots WHERE parent_id = ?");
  if (!st.ok()) return DbError(db_, "count children");
  st.Bind(1, id);
  if (st.Step() != SQLITE_ROW) return DbError(db_, "count children");
  return st.Int(0);
}

absl::StatusOr<std::vector<int64_t>> MetaStore::AllIds() {
  Stmt st(db_, "SELECT id FROM snapshots");
  if (!st.ok()) return DbError(db_, "list ids");
  std::vector<int64_t> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) out.push_back(st.Int(0));
  if (rc != SQLITE_DONE) return DbError(db_, "list ids");
  return out;
}

absl::StatusOr<std::vector<std::string>> MetaStore::ImageIds(bool with_children_only) {
  const char* sql = with_children_only
                        ? "SELECT DISTINCT s.image_id FROM snapshots s WHERE s.image_id IS NOT NULL AND EXISTS"
                          " (SELECT 1 FROM snapshots c WHERE c.parent_id = s.id)"
                        : "SELECT DISTINCT image_id FROM snapshots WHERE image_id IS NOT NULL";
  Stmt st(db_, sql);
  if (!st.ok()) return DbError(db_, "list images");
  std::vector<std::string> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) out.push_back(st.Text(0));
  if (rc != SQLITE_DONE) return DbError(db_, "list images");
  return out;
}

}  // namespace d4c::snap
