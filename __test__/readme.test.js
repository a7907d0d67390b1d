// Every JavaScript/TypeScript code block of README.md compiles under `tsc --strict` against the
// published typings: each block becomes the body of its own async function, after a preamble
// that imports the package and declares the few names blocks use without defining them.
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const root = path.join(__dirname, '..')
// Under the checkout, so that `linkvault` and @types/node resolve as for a user's project.
const out = path.join(root, 'target', 'readme-check')

const PREAMBLE = `import { Client, LinkvaultError, signWebhook, verifyWebhook, type ErrorCode, type LinkvaultEvent } from 'linkvault'
void [Client, LinkvaultError, signWebhook, verifyWebhook]
export type { ErrorCode, LinkvaultEvent }
// Names the README's blocks use as if defined earlier in the reader's code.
declare const client: Client
declare const lastId: number
declare const body: string
declare const secret: string
declare const redirect_uri: string
declare const cancel_uri: string
declare const tokenOfUser77: string
declare const oldKid: string
declare const newKeyHex: string
declare const sessionToken: string
declare const clientId: string
declare const clientSecret: string
// The webhook receiver example's Express app, typed as far as the block uses it.
declare const express: { raw(options: { type: string }): unknown }
declare const app: {
  post(
    path: string,
    middleware: unknown,
    handler: (req: { body: Buffer; headers: Record<string, string | string[] | undefined> }, res: { sendStatus(status: number): void }) => void,
  ): void
}
void [client, lastId, body, secret, redirect_uri, cancel_uri, tokenOfUser77, oldKid, newKeyHex, sessionToken, clientId, clientSecret, express, app]
`

/** The README's js/ts blocks with their line numbers. */
function blocks() {
  const lines = fs.readFileSync(path.join(root, 'README.md'), 'utf8').split('\n')
  const found = []
  for (let i = 0; i < lines.length; i++) {
    const open = lines[i].match(/^```(js|ts|javascript|typescript)\s*$/)
    if (!open) continue
    const start = i + 1
    while (!lines[++i].startsWith('```'));
    found.push({ line: start + 1, code: lines.slice(start, i) })
  }
  return found
}

test('every README code block compiles under tsc --strict', () => {
  const all = blocks()
  expect(all.length).toBeGreaterThanOrEqual(12)
  let source = PREAMBLE
  const map = [] // generated line → README line
  for (const [n, b] of all.entries()) {
    source += `\nexport async function readmeBlockAtLine${b.line}(): Promise<void> {\n`
    for (const [k, line] of b.code.entries()) {
      // The package's names come from the preamble's typed import (a CommonJS `require` would
      // make them `any`, and an `import` cannot sit inside a function).
      const kept = /^(const \{[^}]*\} = require\('linkvault'\)|import .* from 'linkvault')/.test(line) ? '' : line
      source += `${kept}\n`
      map[source.split('\n').length - 1] = b.line + k
    }
    source += `}\n`
    void n
  }
  fs.mkdirSync(out, { recursive: true })
  fs.writeFileSync(path.join(out, 'readme-blocks.ts'), source)
  fs.writeFileSync(
    path.join(out, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'node16', moduleResolution: 'node16', strict: true, noEmit: true, skipLibCheck: false, types: ['node'] },
      files: ['readme-blocks.ts'],
    }),
  )
  const tsc = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', out], { encoding: 'utf8' })
  const errors = tsc.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => l.replace(/readme-blocks\.ts\((\d+),(\d+)\)/, (_, line) => `README.md line ${map[Number(line)] ?? `? (generated line ${line})`}`))
  expect(errors).toEqual([])
  expect(tsc.status).toBe(0)
})
