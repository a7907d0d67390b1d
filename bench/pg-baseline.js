// The PostgreSQL baseline: bench/baseline.js's linked-account operations (same semantics: UDF
// rows with their own ids and timestamps, a __v that grows only on a real change, credentials
// sealed with AES-256-GCM bound to their row, one event row per mutation, the Cobalt response
// shape) written with node-postgres the way a good Node developer would: a Pool, named
// (prepared) parameterized statements, one transaction per call, the account row locked with
// SELECT ... FOR UPDATE and created with INSERT ... ON CONFLICT, in a schema of its own.
const pg = require('pg')
const { canonical, iso, objectId, sealCredentials, openCredentials } = require('./baseline')

const SCOPE = 1

const SCHEMA = `
CREATE TABLE IF NOT EXISTS accounts (
  pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, scope_id integer NOT NULL, account_id text NOT NULL,
  oid text NOT NULL, name text, has_app boolean NOT NULL DEFAULT false, app_id text, credentials bytea,
  created_at bigint NOT NULL, updated_at bigint NOT NULL, version integer NOT NULL DEFAULT 0,
  UNIQUE (scope_id, account_id));
CREATE INDEX IF NOT EXISTS accounts_scope_pk ON accounts (scope_id, pk);
CREATE TABLE IF NOT EXISTS udf (
  account_pk bigint NOT NULL REFERENCES accounts (pk) ON DELETE CASCADE, key text NOT NULL, pos integer NOT NULL,
  value text NOT NULL, oid text NOT NULL, created_at bigint NOT NULL, updated_at bigint NOT NULL,
  PRIMARY KEY (account_pk, key));
CREATE TABLE IF NOT EXISTS events (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, scope_id integer NOT NULL, type text NOT NULL,
  linked_account_id text, data jsonb NOT NULL, created_at bigint NOT NULL);
CREATE INDEX IF NOT EXISTS events_scope ON events (scope_id, id);
CREATE TABLE IF NOT EXISTS identities (
  pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, scope_id integer NOT NULL,
  account_pk bigint NOT NULL REFERENCES accounts (pk) ON DELETE CASCADE, provider text NOT NULL, user_id text NOT NULL,
  connection text, is_social boolean NOT NULL DEFAULT false, email text, email_norm text,
  email_verified boolean NOT NULL DEFAULT false, profile_data jsonb, linked_at bigint NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS identities_provider_user ON identities (scope_id, provider, user_id);
CREATE INDEX IF NOT EXISTS identities_account ON identities (account_pk);`

// One round trip reads the account with its UDF rows and identities (one statement, one snapshot).
const SELECT_ACCOUNT = `
SELECT a.pk, a.account_id, a.oid, a.name, a.has_app, a.app_id, a.created_at, a.updated_at, a.version,
  (SELECT coalesce(json_agg(json_build_object('key', u.key, 'value', u.value, 'oid', u.oid,
      'created_at', u.created_at, 'updated_at', u.updated_at, 'pos', u.pos) ORDER BY u.pos), '[]')
     FROM udf u WHERE u.account_pk = a.pk) AS udf,
  (SELECT coalesce(json_agg(i ORDER BY i.pk), '[]') FROM identities i WHERE i.account_pk = a.pk) AS identities`

const Q = {
  get: { name: 'get', text: `${SELECT_ACCOUNT} FROM accounts a WHERE a.scope_id = $1 AND a.account_id = $2` },
  lock: {
    name: 'lock',
    text: `${SELECT_ACCOUNT}, a.credentials FROM accounts a WHERE a.scope_id = $1 AND a.account_id = $2 FOR UPDATE OF a`,
  },
  insert: {
    name: 'insert',
    text: `INSERT INTO accounts (scope_id, account_id, oid, name, has_app, app_id, credentials, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (scope_id, account_id) DO NOTHING RETURNING pk`,
  },
  update: {
    name: 'update',
    text: 'UPDATE accounts SET name = $1, has_app = $2, app_id = $3, credentials = $4, updated_at = $5, version = $6 WHERE pk = $7',
  },
  // New keys are inserted; keys already there keep their id, position and createdAt.
  writeUdf: {
    name: 'writeUdf',
    text: `INSERT INTO udf (account_pk, key, pos, value, oid, created_at, updated_at)
           SELECT $1, k, p, v, o, $6, $6 FROM unnest($2::text[], $3::int[], $4::text[], $5::text[]) AS t (k, p, v, o)
           ON CONFLICT (account_pk, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
  },
  deleteUdf: { name: 'deleteUdf', text: 'DELETE FROM udf WHERE account_pk = $1 AND key = ANY ($2::text[])' },
  event: {
    name: 'event',
    text: 'INSERT INTO events (scope_id, type, linked_account_id, data, created_at) VALUES ($1, $2, $3, $4, $5)',
  },
  credentials: { name: 'credentials', text: 'SELECT credentials FROM accounts WHERE scope_id = $1 AND account_id = $2' },
}

const notFound = (id) => Object.assign(new Error(`Linked Account with account id ${id} not found`), { code: 'NOT_FOUND' })
// bigint columns hold millisecond timestamps and small counters: safe as JS numbers.
const types = { getTypeParser: (oid, format) => (oid === 20 ? Number : pg.types.getTypeParser(oid, format)) }

class PgBaseline {
  /** `url`: a postgres:// connection string; `schema`: created by `init()`; `key`: 32 bytes. */
  constructor({ url, schema, key, poolSize = 10, orgId = 'org_bench', environment = 'test' }) {
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) throw new Error(`bad schema name ${schema}`)
    this.schema = schema
    this.pool = new pg.Pool({ connectionString: url, max: poolSize, options: `-c search_path=${schema}`, types })
    this.key = key
    this.org = orgId
    this.env = environment
  }

  /** Creates the schema and its tables (idempotent; serialized across processes). */
  async init() {
    await this.transaction(async (c) => {
      await c.query("SELECT pg_advisory_xact_lock(hashtext('linkvault-bench-baseline'))")
      await c.query(`CREATE SCHEMA IF NOT EXISTS ${this.schema}`)
      await c.query(SCHEMA)
    })
  }

  async transaction(fn) {
    const c = await this.pool.connect()
    try {
      await c.query('BEGIN')
      const out = await fn(c)
      await c.query('COMMIT')
      c.release()
      return out
    } catch (e) {
      // A connection whose ROLLBACK fails is dropped from the pool rather than reused.
      await c.query('ROLLBACK').then(() => c.release(), (err) => c.release(err))
      throw e
    }
  }

  seal(obj, id) {
    return sealCredentials(this.key, obj, id)
  }

  open(buf, id) {
    return openCredentials(this.key, buf, id)
  }

  upsertLinkedAccount(payload) {
    return this.transaction(async (c) => {
      for (;;) {
        const { rows } = await c.query({ ...Q.lock, values: [SCOPE, payload.linked_account_id] })
        if (rows.length) return this._update(c, rows[0], payload)
        const created = await this._insert(c, payload)
        // null: another call inserted the same id first; its row is visible now, so update it.
        if (created) return created
      }
    })
  }

  async _insert(c, p) {
    const id = p.linked_account_id
    const now = Date.now()
    const app = p.your_app
    const sealed = app?.auth_credentials ? this.seal(app.auth_credentials, id) : null
    const oid = objectId(now)
    const { rows } = await c.query({ ...Q.insert, values: [SCOPE, id, oid, p.name ?? null, !!app, app?.app_id ?? null, sealed, now] })
    if (!rows.length) return null
    const pk = rows[0].pk
    const udf = Object.entries(p.udf ?? {})
      .map(([k, v], pos) => ({ key: k, pos, value: v === null ? null : canonical(v), oid: objectId(now), created_at: now, updated_at: now }))
      .filter((u) => u.value !== null)
    if (udf.length) await this._writeUdf(c, pk, udf, now)
    await c.query({ ...Q.event, values: [SCOPE, 'linked_account.created', id, { __v: 0 }, now] })
    const row = { pk, account_id: id, oid, name: p.name ?? null, has_app: !!app, app_id: app?.app_id ?? null, created_at: now, updated_at: now, version: 0, identities: [] }
    return this.shape(row, udf, true)
  }

  _writeUdf(c, pk, udf, now) {
    return c.query({ ...Q.writeUdf, values: [pk, udf.map((u) => u.key), udf.map((u) => u.pos), udf.map((u) => u.value), udf.map((u) => u.oid), now] })
  }

  async _update(c, row, p) {
    const id = p.linked_account_id
    const now = Date.now()
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
          hasApp = false
          appId = null
          credentials = null
          changed.push('your_app')
        }
      } else {
        const old = row.credentials ? this.open(row.credentials, id) : null
        const same = hasApp && appId === (app.app_id ?? null) && canonical(old) === canonical(app.auth_credentials ?? null)
        if (!same) {
          hasApp = true
          appId = app.app_id ?? null
          credentials = app.auth_credentials ? this.seal(app.auth_credentials, id) : null
          changed.push('your_app')
        }
      }
    }
    const udf = row.udf
    let nextPos = udf.reduce((m, u) => Math.max(m, u.pos + 1), 0)
    const removed = []
    const written = []
    for (const [k, v] of Object.entries(p.udf ?? {})) {
      const at = udf.findIndex((u) => u.key === k)
      if (v === null) {
        if (at >= 0) {
          udf.splice(at, 1)
          removed.push(k)
        }
      } else if (at >= 0) {
        const value = canonical(v)
        if (udf[at].value !== value) {
          udf[at] = { ...udf[at], value, updated_at: now }
          written.push(udf[at])
        }
      } else {
        const u = { key: k, pos: nextPos++, value: canonical(v), oid: objectId(now), created_at: now, updated_at: now }
        udf.push(u)
        written.push(u)
      }
    }
    if (removed.length || written.length) changed.push('udf')
    if (!changed.length) return this.shape(row, udf, false)
    const version = row.version + 1
    await c.query({ ...Q.update, values: [name, hasApp, appId, credentials, now, version, row.pk] })
    if (removed.length) await c.query({ ...Q.deleteUdf, values: [row.pk, removed] })
    if (written.length) await this._writeUdf(c, row.pk, written, now)
    await c.query({ ...Q.event, values: [SCOPE, 'linked_account.updated', id, { __v: version, changed }, now] })
    return this.shape({ ...row, name, has_app: hasApp, app_id: appId, updated_at: now, version }, udf, false)
  }

  async getLinkedAccountById(id) {
    const { rows } = await this.pool.query({ ...Q.get, values: [SCOPE, id] })
    if (!rows.length) throw notFound(id)
    return this.shape(rows[0], rows[0].udf)
  }

  /** The decrypted credentials of an account (for the benchmark's sample check). */
  async credentials(id) {
    const { rows } = await this.pool.query({ ...Q.credentials, values: [SCOPE, id] })
    if (!rows.length) throw notFound(id)
    return rows[0].credentials ? this.open(rows[0].credentials, id) : null
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
      identities: row.identities.map((i) => {
        const out = { provider: i.provider, user_id: i.user_id, isSocial: i.is_social, email_verified: i.email_verified, linkedAt: iso(i.linked_at) }
        if (i.connection !== null) out.connection = i.connection
        if (i.email !== null) out.email = i.email
        if (i.profile_data !== null) out.profileData = i.profile_data
        return out
      }),
    }
    if (row.name !== null) a.name = row.name
    if (row.has_app) a.your_app = row.app_id === null ? {} : { app_id: row.app_id }
    if (isNew !== undefined) a.new_account = isNew
    return a
  }

  /** Drops the schema and everything in it. */
  async drop() {
    await this.pool.query(`DROP SCHEMA IF EXISTS ${this.schema} CASCADE`)
  }

  close() {
    return this.pool.end()
  }
}

module.exports = { PgBaseline }
