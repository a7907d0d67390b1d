// The minimal JavaScript baseline (issue 14): only what Cobalt's linked-account response shape
// needs — accounts and their UDF rows with their timestamps and `__v` (grown only on a real
// change), one transaction per call — and nothing else: no sealed credentials, no event row, no
// identities. better-sqlite3 in WAL mode, synchronous=NORMAL, prepared statements. It is the
// floor a hand-written store could reach; linkvault does more per call (sealing, the event log).
const Database = require('better-sqlite3')
const { canonical, iso, objectId } = require('./baseline')

const SCHEMA = `
CREATE TABLE IF NOT EXISTS accounts (
  pk INTEGER PRIMARY KEY, account_id TEXT NOT NULL UNIQUE, oid TEXT NOT NULL, name TEXT,
  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, version INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS udf (
  account_pk INTEGER NOT NULL, key TEXT NOT NULL, pos INTEGER NOT NULL, value TEXT NOT NULL, oid TEXT NOT NULL,
  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY (account_pk, key)) WITHOUT ROWID;`

class MinimalBaseline {
  constructor(file, { orgId = 'org_bench', environment = 'test' } = {}) {
    const db = (this.db = new Database(file))
    db.pragma('journal_mode = WAL')
    db.pragma('synchronous = NORMAL')
    db.exec(SCHEMA)
    this.org = orgId
    this.env = environment
    this.q = {
      find: db.prepare('SELECT * FROM accounts WHERE account_id = ?'),
      udf: db.prepare('SELECT key, value, oid, created_at, updated_at FROM udf WHERE account_pk = ? ORDER BY pos'),
      insert: db.prepare('INSERT INTO accounts (account_id, oid, name, created_at, updated_at) VALUES (?, ?, ?, ?, ?)'),
      update: db.prepare('UPDATE accounts SET name = ?, updated_at = ?, version = ? WHERE pk = ?'),
      insertUdf: db.prepare('INSERT INTO udf (account_pk, key, pos, value, oid, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)'),
      updateUdf: db.prepare('UPDATE udf SET value = ?, updated_at = ? WHERE account_pk = ? AND key = ?'),
      deleteUdf: db.prepare('DELETE FROM udf WHERE account_pk = ? AND key = ?'),
    }
    this.upsertTx = db.transaction((p) => this._upsert(p))
    this.readTx = db.transaction((fn) => fn())
  }

  upsertLinkedAccount(payload) {
    return this.upsertTx(payload)
  }

  _upsert(p) {
    const id = p.linked_account_id
    const now = Date.now()
    const row = this.q.find.get(id)
    const sent = Object.entries(p.udf ?? {})
    if (!row) {
      const oid = objectId(now)
      const pk = Number(this.q.insert.run(id, oid, p.name ?? null, now, now).lastInsertRowid)
      const udf = []
      sent.forEach(([k, v], i) => {
        if (v === null) return
        const u = { key: k, value: canonical(v), oid: objectId(now), created_at: now, updated_at: now }
        this.q.insertUdf.run(pk, k, i, u.value, u.oid, now, now)
        udf.push(u)
      })
      return this.shape({ pk, account_id: id, oid, name: p.name ?? null, created_at: now, updated_at: now, version: 0 }, udf, true)
    }
    let changed = false
    let name = row.name
    if (p.name !== undefined && p.name !== row.name) {
      name = p.name
      changed = true
    }
    const udf = this.q.udf.all(row.pk)
    let nextPos = udf.length
    for (const [k, v] of sent) {
      const at = udf.findIndex((u) => u.key === k)
      if (v === null) {
        if (at >= 0) {
          udf.splice(at, 1)
          this.q.deleteUdf.run(row.pk, k)
          changed = true
        }
      } else if (at >= 0) {
        const value = canonical(v)
        if (udf[at].value !== value) {
          udf[at] = { ...udf[at], value, updated_at: now }
          this.q.updateUdf.run(value, now, row.pk, k)
          changed = true
        }
      } else {
        const u = { key: k, value: canonical(v), oid: objectId(now), created_at: now, updated_at: now }
        udf.push(u)
        this.q.insertUdf.run(row.pk, k, nextPos++, u.value, u.oid, now, now)
        changed = true
      }
    }
    if (!changed) return this.shape(row, udf, false)
    const version = row.version + 1
    this.q.update.run(name, now, version, row.pk)
    return this.shape({ ...row, name, updated_at: now, version }, udf, false)
  }

  getLinkedAccountById(id) {
    return this.readTx(() => {
      const row = this.q.find.get(id)
      if (!row) throw Object.assign(new Error(`Linked Account with account id ${id} not found`), { code: 'NOT_FOUND' })
      return this.shape(row, this.q.udf.all(row.pk))
    })
  }

  shape(row, udf, isNew) {
    const a = {
      _id: row.oid,
      associated_org: this.org,
      account_id: row.account_id,
      environment: this.env,
      udf: udf.map((u) => ({ key_name: u.key, key_value: JSON.parse(u.value), _id: u.oid, createdAt: iso(u.created_at), updatedAt: iso(u.updated_at) })),
      createdAt: iso(row.created_at),
      updatedAt: iso(row.updated_at),
      __v: row.version,
      identities: [],
    }
    if (row.name !== null) a.name = row.name
    if (isNew !== undefined) a.new_account = isNew
    return a
  }

  close() {
    this.db.close()
  }
}

module.exports = { MinimalBaseline }
