// The workloads that bench/run.js and bench/ab-checkouts.js share.

const payload = (id, r) => ({
  linked_account_id: id,
  name: `User ${id}`,
  udf: { plan: 'pro', seats: r, region: 'eu' },
  your_app: { app_id: 'app', auth_credentials: { Authorization: `Bearer token-${id}-${r}` } },
})

// "upsert, random order, mixed": MIX_IDS ids, each upserted 4 times, in a shuffled order.
const MIX_IDS = Number(process.env.BENCH_MIX_IDS ?? 5000)
const MIX_TIMES = 4

/** A fixed shuffle (mulberry32) of every id MIX_TIMES times, with each upsert's occurrence number. */
function mixedOrder() {
  let seed = 0x5eed
  const random = () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const ids = []
  for (let id = 0; id < MIX_IDS; id++) for (let k = 0; k < MIX_TIMES; k++) ids.push(id)
  for (let i = ids.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[ids[i], ids[j]] = [ids[j], ids[i]]
  }
  const seen = new Map()
  return ids.map((id) => {
    const k = seen.get(id) ?? 0
    seen.set(id, k + 1)
    return { id, k }
  })
}

/** The mixed row's payload: the first upsert of an id inserts, each later one changes one UDF value. */
const mixPayload = (r, { id, k }) => ({
  linked_account_id: `mix-${r}-${id}`,
  name: `User ${id}`,
  udf: { plan: 'pro', seats: k, region: 'eu' },
  your_app: { app_id: 'app', auth_credentials: { Authorization: `Bearer token-${id}` } },
})

/**
 * How late a 1 ms interval fires while 64 upserts (made by `upsert(payload)`) are kept in flight
 * for two seconds: the event-loop line.
 */
async function eventLoopLag(upsert) {
  const lateness = []
  let last = performance.now()
  const timer = setInterval(() => {
    const now = performance.now()
    lateness.push(now - last - 1)
    last = now
  }, 1)
  const end = Date.now() + 2000
  let n = 0
  const worker = async () => {
    while (Date.now() < end) await upsert(payload(`lag-${n++ % 500}`, n))
  }
  await Promise.all(Array.from({ length: 64 }, worker))
  clearInterval(timer)
  lateness.sort((a, b) => a - b)
  return { ticks: lateness.length, p50: lateness[Math.floor(lateness.length / 2)], p99: lateness[Math.floor(lateness.length * 0.99)], max: lateness[lateness.length - 1], upserts: n }
}

module.exports = { payload, MIX_IDS, MIX_TIMES, mixedOrder, mixPayload, eventLoopLag }
