// The public API is consistent across its sources: the Rust core (error codes, event types), the
// generated binding, the hand-written index.js / index.d.ts, and the docs. These checks fail with
// a message saying what to add where, e.g. after a new `#[napi]` type or event type.
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')
const read = (f) => fs.readFileSync(path.join(root, f), 'utf8')
const bindingDts = read('binding.d.ts')
const indexDts = read('index.d.ts')

/** Names a .d.ts declares at top level with `export`. */
function declared(dts) {
  return [...dts.matchAll(/^export (?:declare )?(?:interface|type|class|function|const) (\w+)/gm)].map((m) => m[1])
}

/** The names re-exported by index.d.ts from './binding'. */
function reexported() {
  const names = []
  for (const m of indexDts.matchAll(/^export (?:type )?\{([^}]*)\} from '\.\/binding'/gm)) {
    names.push(...m[1].split(',').map((s) => s.trim()).filter(Boolean))
  }
  return names
}

/** The string literals of a TypeScript union type alias in index.d.ts. */
function union(name) {
  const m = indexDts.match(new RegExp(`export type ${name} =([^]*?)\\n\\n`))
  return [...m[1].matchAll(/'([^']+)'/g)].map((x) => x[1])
}

test('every type and function of the generated binding is exported by index.d.ts (add new ones to its export list)', () => {
  const internal = new Set(['__napiBindingTarget', 'Client']) // Client is re-declared in index.d.ts
  const missing = declared(bindingDts).filter((n) => !internal.has(n) && !reexported().includes(n))
  expect(missing).toEqual([])
})

test('index.d.ts has no generator leftovers and no unused types', () => {
  expect(indexDts).not.toMatch(/__napiBindingTarget/)
  for (const dts of [bindingDts, indexDts]) expect(dts).not.toMatch(/\| null \| null|null \| null/)
  const all = bindingDts + indexDts
  for (const name of [...declared(bindingDts), ...declared(indexDts)]) {
    if (['__napiBindingTarget', 'Client', 'LinkvaultError', 'signWebhook', 'verifyWebhook'].includes(name)) continue
    const uses = all.match(new RegExp(`\\b${name}\\b`, 'g')).length
    // Declared once in binding.d.ts and listed once in index.d.ts's export list: a type used by
    // nothing else is a leftover.
    const bookkeeping = reexported().includes(name) ? 2 : 1
    expect([name, uses > bookkeeping ? 'used' : 'unused']).toEqual([name, 'used'])
  }
})

test('every runtime function of the binding is exported by index.js and typed in index.d.ts', () => {
  const binding = require('../binding.js')
  const index = require('..')
  const functions = Object.keys(binding).filter((k) => typeof binding[k] === 'function' && k !== 'Client')
  expect(functions.length).toBeGreaterThan(0)
  for (const name of functions) {
    expect([name, typeof index[name]]).toEqual([name, 'function'])
    expect([name, reexported().includes(name)]).toEqual([name, true])
  }
  expect(Object.keys(index).sort()).toEqual(['Client', 'LinkvaultError', ...functions].sort())
  // Named ESM imports need the explicit `module.exports.X =` lines.
  for (const name of Object.keys(index)) expect(read('index.js')).toContain(`module.exports.${name} =`)
})

test('ErrorCode lists every code of src/error.rs (and the loader\'s BINARY_NOT_FOUND), as do lib/errors.js and the README table', () => {
  const rust = [...read('src/error.rs').matchAll(/=> "([A-Z_]+)"/g)].map((m) => m[1])
  expect(rust.length).toBeGreaterThanOrEqual(13)
  const expected = [...rust, 'BINARY_NOT_FOUND'].sort()
  expect(union('ErrorCode').sort()).toEqual(expected)
  expect([...require('../lib/errors').CODES].sort()).toEqual(expected)
  const readme = read('README.md')
  for (const code of expected) expect([code, readme.includes(`| \`${code}\` |`)]).toEqual([code, true])
})

test('LinkvaultEventData has every event type of src/domain/events.rs, and the docs table lists each', () => {
  const rust = [...read('src/domain/events.rs').matchAll(/pub const \w+: &str = "([a-z_.]+)";/g)].map((m) => m[1])
  expect(rust.length).toBeGreaterThanOrEqual(15)
  const data = indexDts.slice(indexDts.indexOf('export interface LinkvaultEventData'))
  const typed = [...data.slice(0, data.indexOf('\n}\n')).matchAll(/^ {2}'([a-z_.]+)':/gm)].map((m) => m[1])
  expect(typed.sort()).toEqual([...rust].sort())
  const docs = read('docs/consents.md')
  for (const t of rust) expect([t, docs.includes(`| \`${t}\` |`)]).toEqual([t, true])
})
