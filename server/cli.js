'use strict'
// The server's commands for the `linkvault` command line (bin/linkvault.js routes
// `serve|keys|webhooks` here). Each command is `{ summary, usage, run(argv) }`: `argv` is the
// arguments after the command name, `run` resolves with the process exit code (0 success,
// 1 failure, 2 usage error: unknown flag or bad value, reported in one line on stderr).

module.exports = {
  serve: require('./cli/serve'),
  keys: require('./cli/keys'),
  webhooks: require('./cli/webhooks'),
}
