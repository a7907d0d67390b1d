// Installing linkvault as a user does, from packed tarballs, with no Rust toolchain: the main
// package as the release workflow publishes it (with the optionalDependencies `napi prepublish`
// writes, without the checkout's `prepare`) and this platform's
// binary package (built from the release addon `npm ci`/`prepare` left in this checkout), in one
// `npm install` into an empty folder with `cargo` hidden from PATH. Then `require('linkvault')`
// and the quickstart run there, and the binary that loaded must be the platform package's.
const fs = require('node:fs')
const path = require('node:path')
const crypto = require('node:crypto')
const { execFileSync, spawnSync } = require('node:child_process')
const { platformId } = require('../lib/load')
const { tmpDir } = require('./helpers')

const root = path.join(__dirname, '..')
const pkg = require('../package.json')
const id = platformId()
const binaryName = `${pkg.napi.binaryName}.${id}.node`
const LIMIT = 15 * 1024 * 1024

/** PATH without any directory that holds `cargo` (or `rustc`). */
function pathWithoutRust() {
  return process.env.PATH.split(path.delimiter)
    .filter((dir) => !['cargo', 'rustc', 'cargo.exe'].some((b) => fs.existsSync(path.join(dir, b))))
    .join(path.delimiter)
}

function npm(args, cwd, env = process.env) {
  const out = spawnSync('npm', args, { cwd, env, encoding: 'utf8' })
  if (out.status !== 0) throw new Error(`npm ${args.join(' ')} failed (${out.status}):\n${out.stdout}\n${out.stderr}`)
  return out
}

function sizeOf(p) {
  const st = fs.lstatSync(p)
  if (!st.isDirectory()) return st.size
  return fs.readdirSync(p).reduce((sum, f) => sum + sizeOf(path.join(p, f)), 0)
}

function sha256(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex')
}

const published = { files: null }

test('the published files are the JavaScript entry points, typings, CLI and docs: no Rust, tests, fuzz or bench sources, no binary', () => {
  const [report] = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' }))
  const files = report.files.map((f) => f.path)
  published.files = files
  for (const needed of ['index.js', 'index.d.ts', 'binding.js', 'binding.d.ts', 'lib/errors.js', 'lib/load.js', 'bin/linkvault.js', 'cli/main.js', 'README.md', 'LICENSE', 'package.json']) {
    expect([needed, files.includes(needed)]).toEqual([needed, true])
  }
  const forbidden = files.filter((f) => /(^|\/)(src|__test__|bench|target|fuzz|examples|npm)\/|\.rs$|^Cargo\.|\.node$|^build\.rs$|isolate-.*\.log$/.test(f))
  expect(forbidden).toEqual([])
  expect(pkg.scripts.install).toBeUndefined()
  expect(pkg.scripts.postinstall).toBeUndefined()
  expect(pkg.dependencies ?? {}).toEqual({})
  // The platform packages are napi-rs's, one per target of package.json.
  const dirs = fs.readdirSync(path.join(root, 'npm')).sort()
  expect(dirs).toEqual(pkg.napi.targets.map((t) => require('../lib/load').targetId(t)).sort())
})

test(
  `packed tarballs install without Rust, load this platform's binary package (${id}) and run the quickstart`,
  () => {
    const built = path.join(root, binaryName)
    if (!fs.existsSync(built)) throw new Error(`no ${binaryName} in the checkout: run \`npm ci\` (or \`npm run build\`) first`)
    if (fs.statSync(built).size > LIMIT) {
      throw new Error(`${binaryName} is ${fs.statSync(built).size} bytes: that is a debug build; run \`npm run build\` for the release addon`)
    }
    const platformDir = path.join(root, 'npm', id)
    if (!fs.existsSync(platformDir)) throw new Error(`this platform (${id}) has no package under npm/: add its target to napi.targets`)

    const work = tmpDir('linkvault-install-')
    const tarballs = path.join(work, 'tarballs')
    fs.mkdirSync(tarballs)

    // The main package as `napi prepublish` publishes it: with every platform package in
    // optionalDependencies.
    const [main] = JSON.parse(npm(['pack', '--json', '--ignore-scripts', '--pack-destination', tarballs], root).stdout)
    const stage = path.join(work, 'stage')
    fs.mkdirSync(stage)
    execFileSync('tar', ['xzf', path.join(tarballs, main.filename), '-C', stage])
    const stagedJson = path.join(stage, 'package', 'package.json')
    const manifest = JSON.parse(fs.readFileSync(stagedJson, 'utf8'))
    manifest.optionalDependencies = Object.fromEntries(fs.readdirSync(path.join(root, 'npm')).map((d) => [`${pkg.name}-${d}`, pkg.version]))
    fs.writeFileSync(stagedJson, `${JSON.stringify(manifest, null, 2)}\n`)
    // As the release workflow does before `npm publish`.
    npm(['pkg', 'delete', 'scripts.prepare', 'devDependencies.linkvault'], path.join(stage, 'package'))
    fs.rmSync(path.join(tarballs, main.filename))
    const [mainPacked] = JSON.parse(npm(['pack', '--json', '--ignore-scripts', '--pack-destination', tarballs], path.join(stage, 'package')).stdout)
    expect(mainPacked.files.some((f) => f.path.endsWith('.node'))).toBe(false)

    // This platform's package, with the release binary of this checkout.
    const platformStage = path.join(work, 'platform')
    fs.cpSync(platformDir, platformStage, { recursive: true })
    fs.copyFileSync(built, path.join(platformStage, binaryName))
    const [platformPacked] = JSON.parse(npm(['pack', '--json', '--ignore-scripts', '--pack-destination', tarballs], platformStage).stdout)
    expect(platformPacked.files.map((f) => f.path).sort()).toEqual(['README.md', binaryName, 'package.json'].sort())

    // An empty project, no cargo on PATH.
    const project = path.join(work, 'project')
    fs.mkdirSync(project)
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }))
    const { NAPI_RS_NATIVE_LIBRARY_PATH, LINKVAULT_ENCRYPTION_KEY, ...env } = process.env
    env.PATH = pathWithoutRust()
    expect(spawnSync('cargo', ['--version'], { env }).error?.code).toBe('ENOENT')
    // Both tarballs in one command: the platform package satisfies the main package's optional
    // dependency (it is not on the registry); the other platforms' are skipped.
    const install = npm(
      ['install', '--no-audit', '--no-fund', '--foreground-scripts', path.join(tarballs, mainPacked.filename), path.join(tarballs, platformPacked.filename)],
      project,
      env,
    )
    const output = install.stdout + install.stderr
    expect(output).not.toMatch(/EBADENGINE|install scripts|npm warn/)
    expect(output).not.toMatch(/cargo|napi build/)

    const modules = path.join(project, 'node_modules')
    const installed = fs.readdirSync(modules).filter((d) => d.startsWith(pkg.name)).sort()
    expect(installed).toEqual([pkg.name, `${pkg.name}-${id}`])
    const total = installed.reduce((sum, d) => sum + sizeOf(path.join(modules, d)), 0)
    expect(total).toBeLessThan(LIMIT)
    expect(fs.readdirSync(path.join(modules, pkg.name)).some((f) => f.endsWith('.node') || f === 'target')).toBe(false)
    const shipped = path.join(modules, `${pkg.name}-${id}`, binaryName)
    expect(sha256(shipped)).toBe(sha256(built))

    // require('linkvault') and the quickstart, in the project, with no Rust.
    fs.copyFileSync(path.join(root, 'examples', 'quickstart.js'), path.join(project, 'quickstart.js'))
    const probe = `
      const { Client, LinkvaultError } = require('linkvault')
      const loaded = Object.keys(require.cache).filter((f) => f.endsWith('.node'))
      console.log(JSON.stringify({ loaded, client: typeof Client.open, error: typeof LinkvaultError }))`
    const probed = spawnSync(process.execPath, ['-e', probe], { cwd: project, env, encoding: 'utf8' })
    expect(probed.stderr).toBe('')
    expect(JSON.parse(probed.stdout)).toEqual({ loaded: [fs.realpathSync(shipped)], client: 'function', error: 'function' })
    const quickstart = spawnSync(process.execPath, ['quickstart.js', path.join(project, 'quickstart.db')], { cwd: project, env, encoding: 'utf8' })
    expect(quickstart.stderr).toBe('')
    expect(quickstart.status).toBe(0)
    expect(quickstart.stdout).toMatch(/upserted \(new_account=true, __v=0\)/)
    expect(quickstart.stdout).toMatch(/unknown id rejects with code=NOT_FOUND status=404/)

    // The CLI is installed too.
    const cli = spawnSync(path.join(modules, '.bin', 'linkvault'), ['stats', '--db', path.join(project, 'quickstart.db'), '--json', '--org', 'org_quickstart'], { cwd: project, env, encoding: 'utf8' })
    expect(cli.stderr).toBe('')
    expect(JSON.parse(cli.stdout)).toMatchObject({ org_id: 'org_quickstart', accounts: 1 })
  },
  300_000,
)
