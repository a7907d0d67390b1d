'use strict'
// Runs the webhook dispatcher with the server: started when the server is ready, stopped
// (requests in flight finished and recorded) before the store closes.

const fp = require('fastify-plugin')

const { WebhookDispatcher } = require('./dispatcher')

/**
 * @param {import('fastify').FastifyInstance} app
 * @param {false | { retryBaseMs?: number, timeoutMs?: number, pollMs?: number, concurrency?: number }} options
 */
async function webhooks(app, options) {
  if (options.enabled === false) return
  const { enabled, ...settings } = options
  const dispatcher = new WebhookDispatcher(app.linkvault.client, { ...settings, log: app.log.child({ component: 'webhooks' }) })
  app.decorate('webhookDispatcher', dispatcher)
  app.addHook('onReady', async () => {
    dispatcher.start()
  })
  app.addHook('preClose', async () => {
    await dispatcher.stop()
  })
}

module.exports = fp(webhooks, { name: 'linkvault-webhooks' })
