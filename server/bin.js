#!/usr/bin/env node
'use strict'
// A minimal dispatcher for the server's commands (`node server/bin.js serve …`), used by the
// tests; `linkvault` (bin/linkvault.js at the repository root) routes the same commands.

const commands = require('./cli')

async function main(argv) {
  const [name, ...rest] = argv
  const command = Object.hasOwn(commands, name ?? '') ? commands[name] : null
  if (!command) {
    const list = Object.entries(commands).map(([n, c]) => `  ${n.padEnd(9)}${c.summary}`).join('\n')
    process.stderr.write(`${name ? `unknown command '${name}'\n` : ''}Usage: linkvault-server <command> [options]\n${list}\n`)
    return name ? 2 : 0
  }
  return command.run(rest)
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code
})
