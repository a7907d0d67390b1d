'use strict'
// `linkvault webhooks`: webhook endpoints and their deliveries. Not implemented yet (the
// webhooks delivery work fills it in).

const { runCommand } = require('./args')

const usage = `Usage:
  linkvault webhooks create [--db PATH | --url URL] --org ORG [--environment test|production] --url ENDPOINT [--events a,b]
  linkvault webhooks list [--db PATH | --url URL]
  linkvault webhooks delete ID [--db PATH | --url URL]
  linkvault webhooks deliveries ID [--db PATH | --url URL]
`

module.exports = {
  summary: 'Manage webhook endpoints and show deliveries',
  usage,
  run(argv) {
    return runCommand('webhooks', async () => {
      if (argv.includes('--help') || argv.includes('-h')) {
        process.stdout.write(usage)
        return 0
      }
      throw new Error('not implemented yet')
    })
  },
}
