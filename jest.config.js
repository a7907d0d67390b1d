// Two projects run the same suites on the two stores: `sqlite` (every suite) and `postgres`
// (the store-parametric suites listed in POSTGRES_SUITES, plus the PostgreSQL-only suites
// `__test__/postgres*.test.js`). A suite learns its store from __test__/helpers.js
// (LINKVAULT_TEST_STORE, set by the project's setup file) and opens every database through
// `openClient()` / `storeOptions()`, so moving a suite onto PostgreSQL is adding it to
// POSTGRES_SUITES. Every suite must be in exactly one of the three lists below (checked at load):
// nothing is left out of the PostgreSQL run without a stated reason.
//
//   npx jest                                 both projects (what `npm test` runs)
//   npx jest FILE --selectProjects sqlite    one suite on one store (FILE first: the option takes
//                                            several project names)
const fs = require('node:fs')
const path = require('node:path')

/** Store-parametric suites that pass on PostgreSQL: run by both projects. */
const POSTGRES_SUITES = [
  '__test__/accounts.test.js',
  '__test__/admin.test.js',
  '__test__/apikeys.test.js',
  '__test__/auth0.test.js',
  '__test__/cobalt.test.js',
  '__test__/concurrency.test.js',
  '__test__/consents.test.js',
  '__test__/errors.test.js',
  '__test__/events.test.js',
  '__test__/fiskil.test.js',
  '__test__/hostile.test.js',
  '__test__/identities.test.js',
  '__test__/keys.test.js',
  '__test__/point-reads.test.js',
  '__test__/tokens.test.js',
  'server/__test__/auth0.test.js',
  'server/__test__/cli.test.js',
  'server/__test__/cobalt.test.js',
  'server/__test__/consent-page.test.js',
  'server/__test__/fiskil.test.js',
  'server/__test__/webhooks-cli.test.js',
  'server/__test__/webhooks.test.js',
]

/**
 * Store-parametric suites that do not run on PostgreSQL yet, each with the reason; they run on
 * SQLite only until then. Empty: every module is on PostgreSQL.
 */
const NOT_YET_ON_POSTGRES = {}

/** Suites that run once, on SQLite, by nature: why each has nothing to run on PostgreSQL. */
const SQLITE_ONLY = {
  '__test__/api.test.js': 'no database: checks the typings, binding and docs agree',
  '__test__/cli.test.js': 'the admin CLI on SQLite files (key files beside them, --db); its --url side is postgres-cli.test.js',
  '__test__/faults.test.js': 'file faults: crashes mid-write, many writers on one file, disk full, read-only files, :memory:',
  '__test__/install.test.js': 'no database: installs the packed package into a fresh project',
  '__test__/readme.test.js': 'no database: compiles the README code blocks',
  'server/__test__/logger.test.js': 'no database: the server logger redacts secrets',
}

/** PostgreSQL-only suites (the postgres project only): many processes, restarts, races. */
const POSTGRES_ONLY = /^__test__\/postgres(-[\w-]+)?\.test\.js$/

const DIRS = ['__test__', 'server/__test__']

function suitesOnDisk() {
  return DIRS.flatMap((d) => fs.readdirSync(path.join(__dirname, d)).filter((f) => f.endsWith('.test.js')).map((f) => `${d}/${f}`))
}

// Every suite in exactly one list, and no list naming a suite that is gone.
{
  const lists = [['POSTGRES_SUITES', POSTGRES_SUITES], ['NOT_YET_ON_POSTGRES', Object.keys(NOT_YET_ON_POSTGRES)], ['SQLITE_ONLY', Object.keys(SQLITE_ONLY)]]
  const onDisk = suitesOnDisk()
  const problems = []
  for (const suite of onDisk) {
    if (POSTGRES_ONLY.test(suite)) continue
    const where = lists.filter(([, l]) => l.includes(suite)).map(([n]) => n)
    if (where.length !== 1) problems.push(`${suite} is in ${where.length ? where.join(' and ') : 'none'} of POSTGRES_SUITES, NOT_YET_ON_POSTGRES, SQLITE_ONLY`)
  }
  for (const [name, list] of lists) for (const suite of list) if (!onDisk.includes(suite)) problems.push(`${name} names ${suite}, which does not exist`)
  for (const [suite, why] of Object.entries({ ...NOT_YET_ON_POSTGRES, ...SQLITE_ONLY })) if (!why) problems.push(`${suite}: say why it does not run on PostgreSQL`)
  if (problems.length) throw new Error(`jest.config.js: every suite must be classified by store:\n  ${problems.join('\n  ')}`)
}

const common = {
  rootDir: __dirname,
  testEnvironment: 'node',
}

/** @type {import('jest').Config} */
module.exports = {
  testTimeout: 60000,
  // Tests spawn child processes and open files; two workers fit a 2-core machine.
  maxWorkers: 2,
  projects: [
    {
      ...common,
      displayName: 'sqlite',
      testMatch: DIRS.map((d) => `<rootDir>/${d}/**/*.test.js`),
      testPathIgnorePatterns: ['/node_modules/', '<rootDir>/__test__/postgres[^/]*\\.test\\.js$'],
      setupFiles: ['<rootDir>/__test__/store-sqlite.js'],
    },
    {
      ...common,
      displayName: 'postgres',
      testMatch: [...POSTGRES_SUITES.map((s) => `<rootDir>/${s}`), '<rootDir>/__test__/postgres*.test.js'],
      setupFiles: ['<rootDir>/__test__/store-postgres.js'],
      // A throwaway PostgreSQL for the run (__test__/pg-keeper.js), unless LINKVAULT_TEST_PG_URL
      // names one; if none can start, the run fails (never skips).
      globalSetup: '<rootDir>/__test__/pg-setup.js',
      globalTeardown: '<rootDir>/__test__/pg-teardown.js',
    },
  ],
}

