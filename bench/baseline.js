// The JavaScript baseline: the linked-account operations with the same schema and the same
// semantics as linkvault (UDF rows with their own ids and timestamps, __v that grows only on a
// real change, credentials sealed with AES-256-GCM bound to their row, an event row per
// mutation), written the way a good Node developer would: better-sqlite3 in WAL mode with
// prepared statements and one transaction per call.
const crypto = require('node:crypto')
const Database = require('better-sqlite3')

const SCHEMA = `
CREATE TABLE IF NOT EXISTS accounts (
  pk INTEGER PRIMARY KEY AUTOINCREMENT, scope_id INTEGER NOT NULL, account_id TEXT NOT NULL, oid TEXT NOT NULL,
  name TEXT, has_app INTEGER NOT NULL DEFAULT 0, app_id TEXT, credentials BLOB,
  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, version INTEGER NOT NULL DEFAULT 0,
  UNIQUE (scope_id, account_id));
CREATE TABLE IF NOT EXISTS udf (
  account_pk INTEGER NOT NULL REFERENCES accounts(pk) ON DELETE CASCADE, key TEXT NOT NULL, pos INTEGER NOT NULL,
  value TEXT NOT NULL, oid TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
  PRIMARY KEY (account_pk, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, scope_id INTEGER NOT NULL, type TEXT NOT NULL, linked_account_id TEXT,
  data TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS events_scope ON events (scope_id, id);
CREATE INDEX IF NOT EXISTS accounts_scope_pk ON accounts (scope_id, pk);
CREATE TABLE IF NOT EXISTS identities (
  pk INTEGER PRIMARY KEY AUTOINCREMENT, scope_id INTEGER NOT NULL, account_pk INTEGER NOT NULL REFERENCES accounts(pk) ON DELETE CASCADE,
  provider TEXT NOT NULL, user_id TEXT NOT NULL, connection TEXT, is_social INTEGER NOT NULL DEFAULT 0, email TEXT, email_norm TEXT,
  email_verified INTEGER NOT NULL DEFAULT 0, profile_data TEXT, linked_at INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS identities_provider_user ON identities (scope_id, provider, user_id);
CREATE INDEX IF NOT EXISTS identities_account ON identities (account_pk);
CREATE TABLE IF NOT EXISTS token_families (
  pk INTEGER PRIMARY KEY AUTOINCREMENT, scope_id INTEGER NOT NULL, account_pk INTEGER NOT NULL REFERENCES accounts(pk) ON DELETE CASCADE,
  jti TEXT NOT NULL, scopes TEXT, iat INTEGER NOT NULL, exp INTEGER NOT NULL, revoked_at INTEGER);
CREATE TABLE IF NOT EXISTS refresh_tokens (
  hash BLOB PRIMARY KEY, family_pk INTEGER NOT NULL REFERENCES token_families(pk) ON DELETE CASCADE,
  expires_at INTEGER NOT NULL, used_at INTEGER) WITHOUT ROWID;`

const SCOPE = 1
const jwt = require('jsonwebtoken')

function objectId(now) {
  const b = Buffer.alloc(12)
  b.writeUInt32BE(Math.floor(now / 1000), 0)
  crypto.randomFillSync(b, 4)
  return b.toString('hex')
}

function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`
  if (v && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`)
      .join(',')}}`
  }
  return JSON.stringify(v)
}

const iso = (ms) => new Date(ms).toISOString()

/** Credentials sealed with AES-256-GCM under `key`, bound to their account (iv | tag | data). */
function sealCredentials(key, obj, id) {
  const iv = crypto.randomBytes(12)
  const c = crypto.createCipheriv('aes-256-gcm', key, iv)
  c.setAAD(Buffer.from(`creds/${SCOPE}/${id}`))
  const ct = Buffer.concat([c.update(JSON.stringify(obj)), c.final()])
  return Buffer.concat([iv, c.getAuthTag(), ct])
}

function openCredentials(key, buf, id) {
  const d = crypto.createDecipheriv('aes-256-gcm', key, buf.subarray(0, 12))
  d.setAAD(Buffer.from(`creds/${SCOPE}/${id}`))
  d.setAuthTag(buf.subarray(12, 28))
  return JSON.parse(Buffer.concat([d.update(buf.subarray(28)), d.final()]).toString())
}

class Baseline {
  constructor(file, key, { orgId = 'org_bench', environment = 'test' } = {}) {
    this.db = new Database(file)
    this.db.pragma('journal_mode = WAL')
    this.db.pragma('synchronous = NORMAL')
    this.db.pragma('foreign_keys = ON')
    this.db.exec(SCHEMA)
    this.key = key
    this.org = orgId
    this.env = environment
    const db = this.db
    this.q = {
      find: db.prepare('SELECT * FROM accounts WHERE scope_id = ? AND account_id = ?'),
      udf: db.prepare('SELECT key, value, oid, created_at, updated_at FROM udf WHERE account_pk = ? ORDER BY pos'),
      identities: db.prepare('SELECT * FROM identities WHERE account_pk = ? ORDER BY pk'),
      insertIdentity: db.prepare(
        'INSERT INTO identities (scope_id, account_pk, provider, user_id, connection, is_social, email, email_norm, email_verified, profile_data, linked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      insert: db.prepare(
        'INSERT INTO accounts (scope_id, account_id, oid, name, has_app, app_id, credentials, created_at, updated_at, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)',
      ),
      update: db.prepare('UPDATE accounts SET name = ?, has_app = ?, app_id = ?, credentials = ?, updated_at = ?, version = ? WHERE pk = ?'),
      insertUdf: db.prepare('INSERT INTO udf (account_pk, key, pos, value, oid, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)'),
      updateUdf: db.prepare('UPDATE udf SET value = ?, updated_at = ? WHERE account_pk = ? AND key = ?'),
      deleteUdf: db.prepare('DELETE FROM udf WHERE account_pk = ? AND key = ?'),
      nextPos: db.prepare('SELECT coalesce(max(pos) + 1, 0) AS p FROM udf WHERE account_pk = ?'),
      event: db.prepare('INSERT INTO events (scope_id, type, linked_account_id, data, created_at) VALUES (?, ?, ?, ?, ?)'),
      count: db.prepare('SELECT count(*) AS n FROM accounts WHERE scope_id = ?'),
      page: db.prepare('SELECT * FROM accounts WHERE scope_id = ? ORDER BY pk LIMIT ? OFFSET ?'),
      keyset: db.prepare('SELECT * FROM accounts WHERE scope_id = ? AND pk > ? ORDER BY pk LIMIT ?'),
    }
    this.q.insertFamily = db.prepare('INSERT INTO token_families (scope_id, account_pk, jti, scopes, iat, exp) VALUES (?, ?, ?, ?, ?, ?)')
    this.q.insertRefresh = db.prepare('INSERT INTO refresh_tokens (hash, family_pk, expires_at) VALUES (?, ?, ?)')
    this.q.findIdentity = db.prepare('SELECT pk, account_pk FROM identities WHERE scope_id = ? AND provider = ? AND user_id = ?')
    this.q.updateIdentity = db.prepare('UPDATE identities SET email = ?, email_norm = ?, email_verified = ?, is_social = ? WHERE pk = ?')
    this.q.bumpVersion = db.prepare('UPDATE accounts SET version = version + 1, updated_at = ? WHERE pk = ?')
    this.upsertTx = db.transaction((payload) => this._upsert(payload))
    this.mintTx = db.transaction((id) => this._mint(id))
    this.linkTx = db.transaction((id, identity) => this._link(id, identity))
    // Session tokens as a careful Node developer would do them: jsonwebtoken with a KeyObject
    // secret (a string secret is ~60x slower there), revocations kept in an in-memory set.
    this.signingKey = crypto.createSecretKey(Buffer.from('bench-signing-secret-with-at-least-32-bytes'))
    this.kid = 'k1'
    this.revoked = new Set()
    this.readTx = db.transaction((fn) => fn())
  }

  seal(obj, id) {
    return sealCredentials(this.key, obj, id)
  }

  open(buf, id) {
    return openCredentials(this.key, buf, id)
  }

  upsertLinkedAccount(payload) {
    return this.upsertTx(payload)
  }

  _upsert(p) {
    const id = p.linked_account_id
    const now = Date.now()
    const row = this.q.find.get(SCOPE, id)
    const sent = Object.entries(p.udf ?? {})
    if (!row) {
      const app = p.your_app
      const sealed = app?.auth_credentials ? this.seal(app.auth_credentials, id) : null
      const info = this.q.insert.run(SCOPE, id, objectId(now), p.name ?? null, app ? 1 : 0, app?.app_id ?? null, sealed, now, now)
      const pk = Number(info.lastInsertRowid)
      const udf = []
      sent.forEach(([k, v], i) => {
        if (v === null) return
        const u = { key: k, value: canonical(v), oid: objectId(now), created_at: now, updated_at: now }
        this.q.insertUdf.run(pk, k, i, u.value, u.oid, now, now)
        udf.push(u)
      })
      this.q.event.run(SCOPE, 'linked_account.created', id, JSON.stringify({ __v: 0 }), now)
      return this.shape({ ...this.q.find.get(SCOPE, id) }, udf, true)
    }
    const changed = []
    let name = row.name
    if (p.name !== undefined && p.name !== row.name) {
      name = p.name
      changed.push('name')
    }
    let { has_app: hasApp, app_id: appId, credentials } = row
    if (p.your_app !== undefined) {
      const app = p.your_app
      if (app === null) {
        if (hasApp) {
          hasApp = 0
          appId = null
          credentials = null
          changed.push('your_app')
        }
      } else {
        const old = row.credentials ? this.open(row.credentials, id) : null
        const same = hasApp && appId === (app.app_id ?? null) && canonical(old) === canonical(app.auth_credentials ?? null)
        if (!same) {
          hasApp = 1
          appId = app.app_id ?? null
          credentials = app.auth_credentials ? this.seal(app.auth_credentials, id) : null
          changed.push('your_app')
        }
      }
    }
    const udf = this.q.udf.all(row.pk)
    const ops = []
    for (const [k, v] of sent) {
      const at = udf.findIndex((u) => u.key === k)
      if (v === null) {
        if (at >= 0) {
          udf.splice(at, 1)
          ops.push(() => this.q.deleteUdf.run(row.pk, k))
        }
      } else if (at >= 0) {
        const value = canonical(v)
        if (udf[at].value !== value) {
          udf[at] = { ...udf[at], value, updated_at: now }
          ops.push(() => this.q.updateUdf.run(value, now, row.pk, k))
        }
      } else {
        const u = { key: k, value: canonical(v), oid: objectId(now), created_at: now, updated_at: now }
        udf.push(u)
        ops.push(() => this.q.insertUdf.run(row.pk, k, this.q.nextPos.get(row.pk).p, u.value, u.oid, now, now))
      }
    }
    if (ops.length) changed.push('udf')
    if (!changed.length) return this.shape(row, udf, false)
    const version = row.version + 1
    this.q.update.run(name, hasApp, appId, credentials, now, version, row.pk)
    for (const op of ops) op()
    this.q.event.run(SCOPE, 'linked_account.updated', id, JSON.stringify({ __v: version, changed }), now)
    return this.shape({ ...row, name, has_app: hasApp, app_id: appId, updated_at: now, version }, udf, false)
  }

  shape(row, udf, isNew) {
    const a = {
      _id: row.oid,
      associated_org: this.org,
      account_id: row.account_id,
      environment: this.env,
      udf: udf.map((u) => ({
        key_name: u.key,
        key_value: JSON.parse(u.value),
        _id: u.oid,
        createdAt: iso(u.created_at),
        updatedAt: iso(u.updated_at),
      })),
      createdAt: iso(row.created_at),
      updatedAt: iso(row.updated_at),
      __v: row.version,
      identities: this.q.identities.all(row.pk).map((i) => {
        // Every identity carries `connection`: the one sent, else the provider's name.
        const out = { provider: i.provider, user_id: i.user_id, connection: i.connection ?? i.provider, isSocial: !!i.is_social, email_verified: !!i.email_verified, linkedAt: iso(i.linked_at) }
        if (i.email !== null) out.email = i.email
        if (i.profile_data !== null) out.profileData = JSON.parse(i.profile_data)
        return out
      }),
    }
    if (row.name !== null) a.name = row.name
    if (row.has_app) a.your_app = row.app_id === null ? {} : { app_id: row.app_id }
    if (isNew !== undefined) a.new_account = isNew
    return a
  }

  getLinkedAccountById(id) {
    return this.readTx(() => {
      const row = this.q.find.get(SCOPE, id)
      if (!row) throw Object.assign(new Error(`Linked Account with account id ${id} not found`), { code: 'NOT_FOUND' })
      return this.shape(row, this.q.udf.all(row.pk))
    })
  }

  getAllLinkedAccounts({ page = 1, limit = 10 } = {}) {
    return this.readTx(() => {
      const total = this.q.count.get(SCOPE).n
      const docs = this.q.page.all(SCOPE, limit, (page - 1) * limit).map((r) => this.shape(r, this.q.udf.all(r.pk)))
      const totalPages = Math.max(1, Math.ceil(total / limit))
      return {
        docs,
        totalDocs: total,
        limit,
        totalPages,
        page,
        pagingCounter: (page - 1) * limit + 1,
        hasPrevPage: page > 1,
        hasNextPage: page < totalPages,
        prevPage: page > 1 ? page - 1 : null,
        nextPage: page < totalPages ? page + 1 : null,
      }
    })
  }

  listLinkedAccounts({ after = 0, limit = 50 } = {}) {
    return this.readTx(() => {
      const rows = this.q.keyset.all(SCOPE, after, limit + 1)
      const more = rows.length > limit
      const page = rows.slice(0, limit)
      return { docs: page.map((r) => this.shape(r, this.q.udf.all(r.pk))), next: more ? page[page.length - 1].pk : null }
    })
  }

  getTokenForLinkedAccount({ linked_account_id }) {
    return this.mintTx(linked_account_id)
  }

  _mint(id) {
    const row = this.q.find.get(SCOPE, id)
    if (!row) throw Object.assign(new Error(`No linked account found for account id : ${id}`), { code: 'NOT_FOUND' })
    const now = Math.floor(Date.now() / 1000)
    const jti = crypto.randomUUID()
    const exp = now + 86400
    const family = Number(this.q.insertFamily.run(SCOPE, row.pk, jti, null, now, exp).lastInsertRowid)
    const refresh = crypto.randomBytes(32).toString('base64url')
    this.q.insertRefresh.run(crypto.createHash('sha256').update(refresh).digest(), family, now + 30 * 86400)
    const token = jwt.sign({ org_id: this.org, linked_account_id: id, environment: this.env, iat: now, exp, jti }, this.signingKey, {
      algorithm: 'HS256',
      keyid: this.kid,
    })
    return { token, expires_in: 86400, refresh_token: refresh, refresh_expires_in: 30 * 86400 }
  }

  verifySessionToken(token) {
    const claims = jwt.verify(token, this.signingKey, { algorithms: ['HS256'], clockTolerance: 30 })
    if (claims.org_id !== this.org || claims.environment !== this.env || this.revoked.has(claims.jti)) {
      throw Object.assign(new Error('Invalid token'), { code: 'INVALID_TOKEN' })
    }
    return claims
  }

  async verifySessionTokenJose(token) {
    const jose = require('jose')
    const { payload } = await jose.jwtVerify(token, this.signingKey, { algorithms: ['HS256'], clockTolerance: 30 })
    if (payload.org_id !== this.org || payload.environment !== this.env || this.revoked.has(payload.jti)) {
      throw Object.assign(new Error('Invalid token'), { code: 'INVALID_TOKEN' })
    }
    return payload
  }

  linkIdentity(id, identity) {
    return this.linkTx(id, identity)
  }

  _link(id, i) {
    const row = this.q.find.get(SCOPE, id)
    if (!row) throw Object.assign(new Error(`Linked account ${id} not found`), { code: 'NOT_FOUND' })
    const userId = String(i.user_id)
    const now = Date.now()
    const existing = this.q.findIdentity.get(SCOPE, i.provider, userId)
    const email = i.email ?? null
    const norm = email === null ? null : email.trim().toLowerCase()
    if (existing && existing.account_pk !== row.pk) {
      throw Object.assign(new Error('identity is linked to another account'), { code: 'IDENTITY_ALREADY_LINKED' })
    }
    if (existing) this.q.updateIdentity.run(email, norm, i.email_verified ? 1 : 0, i.isSocial ? 1 : 0, existing.pk)
    else this.q.insertIdentity.run(SCOPE, row.pk, i.provider, userId, i.connection ?? null, i.isSocial ? 1 : 0, email, norm, i.email_verified ? 1 : 0, null, now)
    this.q.bumpVersion.run(now, row.pk)
    this.q.event.run(SCOPE, 'identity.linked', id, JSON.stringify({ provider: i.provider, user_id: userId }), now)
    return this.shape(this.q.find.get(SCOPE, id), []).identities
  }

  close() {
    this.db.close()
  }
}

// The helpers the other baselines share (pg-baseline.js, minimal-baseline.js).
module.exports = { Baseline, canonical, iso, objectId, sealCredentials, openCredentials }
