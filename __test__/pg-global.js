// Jest global setup/teardown: a throwaway PostgreSQL for the suites (pg-keeper.js) unless
// LINKVAULT_TEST_PG_URL names a server. Never skips: if none starts, the run fails.
const { spawn } = require('node:child_process')
const path = require('node:path')
const readline = require('node:readline')

/** Starts a keeper (`args`: e.g. ['--ssl']); resolves to { url, port, dir, bin, send(cmd), close() }. */
function startKeeper(args = []) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'pg-keeper.js'), ...args], { stdio: ['pipe', 'pipe', 'inherit'] })
    const lines = readline.createInterface({ input: child.stdout })
    const waiting = []
    let info = null
    lines.on('line', (line) => {
      if (!info) {
        info = JSON.parse(line)
        resolve({
          ...info,
          send(cmd) {
            return new Promise((res, rej) => {
              waiting.push((answer) => (answer === 'ok' ? res() : rej(new Error(answer))))
              child.stdin.write(`${cmd}\n`)
            })
          },
          close() {
            return new Promise((res) => {
              child.once('exit', res)
              child.stdin.end()
            })
          },
        })
      } else {
        const w = waiting.shift()
        if (w) w(line)
      }
    })
    child.once('exit', (code) => {
      if (!info) reject(new Error(`PostgreSQL could not be started for the tests (pg-keeper exited ${code})`))
    })
  })
}

async function setup() {
  if (process.env.LINKVAULT_TEST_PG_URL) return
  const keeper = await startKeeper()
  process.env.LINKVAULT_TEST_PG_URL = keeper.url
  globalThis.__linkvaultPgKeeper = keeper
}

async function teardown() {
  const keeper = globalThis.__linkvaultPgKeeper
  if (keeper) await keeper.close()
}

module.exports = { setup, teardown, startKeeper }
