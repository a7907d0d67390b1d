'use strict'
// Loads the native binding through the loader napi-rs generates (binding.js): a binary built in
// this folder (`npm run build` in a checkout), else the platform package installed as an
// optional dependency (`linkvault-linux-x64-gnu`, ...). When neither loads, the error says which
// platform this is, which package would have fitted and how to build from source.

const { LinkvaultError } = require('./errors')
const pkg = require('../package.json')

// The repository to build from (package.json `homepage`).
const REPOSITORY = pkg.homepage

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

function noBinaryError(cause) {
  const id = platformId()
  const wanted = `${pkg.name}-${id}`
  const supported = Object.keys(pkg.optionalDependencies ?? {})
  const fromSource =
    `To build it from source instead: clone ${REPOSITORY}, run \`npm ci\` there with Rust >= 1.89 ` +
    '(https://rustup.rs; `npm ci` builds the release addon), and install that folder (`npm install /path/to/linkvault`).'
  const why = supported.includes(wanted)
    ? `Its prebuilt binary ships in the optional dependency \`${wanted}\`, which is not installed or did not load: ` +
      'reinstall without `--omit=optional` / `--no-optional` (a lock file made on another platform can leave it out: ' +
      'remove node_modules and package-lock.json, then `npm install`, see https://github.com/npm/cli/issues/4828). '
    : `There is no prebuilt binary for this platform (prebuilt: ${supported.map((s) => s.slice(pkg.name.length + 1)).join(', ')}). `
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

module.exports = { loadBinding, platformId }
