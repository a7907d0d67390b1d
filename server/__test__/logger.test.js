'use strict'
// The log redaction rules on their own (the suites that run the server check real log output).

const { redactUrl, loggerOptions } = require('../lib/logger')

test('secret query values and the consent page\'s session id are redacted from logged URLs', () => {
  expect(redactUrl('/link/session/s3cr3t?lang=en')).toBe('/link/session/[REDACTED]?lang=en')
  expect(redactUrl('/v1/x?session_id=a&token=b&Access_Token=c&client_secret=d&api_key=e&key=f&code=g&keep=h')).toBe(
    '/v1/x?session_id=[REDACTED]&token=[REDACTED]&Access_Token=[REDACTED]&client_secret=[REDACTED]&api_key=[REDACTED]&key=[REDACTED]&code=[REDACTED]&keep=h',
  )
  expect(redactUrl('/x?session%5Fid=a')).toBe('/x?session%5Fid=[REDACTED]')
  expect(redactUrl('/api/v2/public/linked-account/u1?page=2&limit=5')).toBe('/api/v2/public/linked-account/u1?page=2&limit=5')
  expect(redactUrl('/x?%E0%A4%A=1')).toBe('/x?%E0%A4%A=1')
})

test('logger options keep the redaction whatever the caller passes', () => {
  expect(loggerOptions(false)).toBe(false)
  expect(loggerOptions('warn').level).toBe('warn')
  const merged = loggerOptions({ level: 'debug', redact: ['body.password'] })
  expect(merged.redact.paths).toEqual(expect.arrayContaining(['headers.authorization', 'headers["x-api-key"]', 'body.password']))
  expect(() => loggerOptions(42)).toThrow(TypeError)
})
