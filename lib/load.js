'use strict'
// Loads the native binding through the loader napi-rs generates (binding.js): a binary built in
// this folder (`npm run build` in a checkout), else the platform package installed as an
// optional dependency (`linkvault-linux-x64-gnu`, ...). When neither loads, the error says which
// platform this is, which package would have fitted and how to build from source.

const { LinkvaultError } = require('./errors')
const pkg = require('../package.json')

// The repository to build from (package.json `repository`).
const REPOSITORY = String(pkg.repository?.url ?? pkg.repository ?? '').replace(/^git\+/, '').replace(/\.git$/, '')

/** `linux-x64-gnu`, `linux-arm64-musl`, `darwin-arm64`, `win32-x64-msvc`, ... */
function platformId() {
  const { platform, arch } = process
  if (platform === 'linux') return `${platform}-${arch}-${isMusl() ? 'musl' : 'gnu'}`
  if (platform === 'win32') return `${platform}-${arch}-msvc`
  return `${platform}-${arch}`
}

function isMusl() {
  // glibc reports its version in the process report; musl has none.
  try {
    const report = process.report && process.report.getReport()
    return !(report && report.header && report.header.glibcVersionRuntime)
  } catch {
    return false
  }
}

function libcLabel(id) {
  if (id.endsWith('-gnu')) return ' (glibc)'
  if (id.endsWith('-musl')) return ' (musl libc)'
  return ''
}

/** `x86_64-unknown-linux-gnu` → `linux-x64-gnu`, as napi-rs names its platform packages. */
function targetId(triple) {
  const [cpu, ...rest] = triple.split('-')
  const arch = { x86_64: 'x64', aarch64: 'arm64', i686: 'ia32', armv7: 'arm' }[cpu] ?? cpu
  const sys = rest.join('-')
  if (sys.includes('darwin')) return `darwin-${arch}`
  if (sys.includes('windows')) return `win32-${arch}-${sys.endsWith('gnu') ? 'gnu' : 'msvc'}`
  if (sys.includes('linux')) return `linux-${arch}-${sys.endsWith('musl') ? 'musl' : 'gnu'}`
  return `${sys}-${arch}`
}

function noBinaryError(cause) {
  const id = platformId()
  const supported = (pkg.napi?.targets ?? []).map(targetId)
  const wanted = `${pkg.name}-${id}`
  const fromSource =
    `To build it from source: in a checkout of ${REPOSITORY}, with Rust >= 1.89 (https://rustup.rs), run ` +
    '`npm ci` (it builds the release addon; `npm run build` rebuilds it), then install that folder (`npm install /path/to/checkout`).'
  const why = supported.includes(id)
    ? `Its prebuilt binary ships in the optional dependency \`${wanted}\`, which is not installed or did not load: ` +
      'reinstall without `--omit=optional` / `--no-optional` (a lock file made on another platform can leave it out: ' +
      'remove node_modules and package-lock.json, then `npm install`, see https://github.com/npm/cli/issues/4828). '
    : `There is no prebuilt binary for this platform (prebuilt: ${supported.join(', ')}). `
  return new LinkvaultError(
    `linkvault could not load its native binary for ${process.platform}-${process.arch}${libcLabel(id)}, Node ${process.version}. ` +
      why +
      fromSource,
    { code: 'BINARY_NOT_FOUND', status: 500, cause },
  )
}

function loadBinding() {
  try {
    return require('../binding.js')
  } catch (cause) {
    throw noBinaryError(cause)
  }
}

module.exports = { loadBinding, platformId, targetId, noBinaryError }
