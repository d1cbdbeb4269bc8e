#!/usr/bin/env node
// kafkajs compatibility check for Odradek.
//
// Creates a 3-partition topic with the kafkajs admin client, produces 10,000
// keyed messages with acks=all (idempotent: false), reads them back from the
// beginning and checks every message. Then consumes the topic again with a
// consumer group of two kafka.consumer({ groupId }) members and checks that
// the group saw every message exactly once, that both members were assigned
// partitions, and that the group's committed offsets (admin.fetchOffsets) are
// the end offsets.
//
//   BOOTSTRAP=127.0.0.1:19092 node compat/kafkajs/test.js
//
// About the first read-back: kafkajs has no public group-less consumer:
// kafka.consumer() requires a groupId and always runs the group protocol
// (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, OffsetFetch/OffsetCommit).
// So that read-back uses kafkajs's own internal Cluster/Broker objects, the
// same code its consumer uses under the hood: Metadata to find partition
// leaders, public admin.fetchTopicOffsets() (ListOffsets) for the offset
// range, and broker.fetch() (Fetch + kafkajs's record-batch decoder) from
// offset 0. This depends on kafkajs internals and is tied to the pinned
// version (package-lock.json). It checks fetching on its own; the group phase
// (consumeWithGroup below) then does the same read the user-level way.
'use strict'

const { Kafka, logLevel, Partitioners } = require('kafkajs')
const crypto = require('crypto')

const CLIENT = 'kafkajs'
const N = 10000
const PARTITIONS = 3
const SEND_BATCH = 1000 // messages per producer.send() call
const HARD_LIMIT_MS = 110000
const START = Date.now()

const keyOf = i => `key-${i % 97}`
// "value-<i>|" plus a deterministic payload of 16..408 bytes
const valueOf = i => `value-${i}|` + i.toString(16).padStart(8, '0').repeat(2 + (i % 50))
const remainingMs = cap => Math.max(100, Math.min(cap, HARD_LIMIT_MS - 5000 - (Date.now() - START)))
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

function withTimeout (promise, ms, what) {
  let timer
  const timeout = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

// records: [{partition, offset (BigInt), key (Buffer|null), value (Buffer|null)}] in consumption order
// ends: {partition: high watermark (BigInt)}
// sendResults: [{batch, partition, baseOffset}] from producer.send()
function verify (records, ends, sendResults) {
  const problems = []
  const bad = msg => { if (problems.length < 20) problems.push(msg) }

  if (records.length !== N) bad(`consumed ${records.length} records, expected ${N}`)
  const endSum = Object.values(ends).reduce((a, b) => a + b, 0n)
  if (endSum !== BigInt(N)) bad(`high watermarks ${JSON.stringify(ends, (_k, v) => typeof v === 'bigint' ? Number(v) : v)} sum to ${endSum}, expected ${N}`)

  const seen = new Map() // i -> [partition, offset]
  const byPart = new Map() // partition -> [[offset, i]]
  const keyPart = new Map()
  const firstOffset = new Map() // `${batch}:${partition}` -> lowest offset seen
  for (const { partition: p, offset: off, key, value } of records) {
    const v = value ? value.toString('latin1') : ''
    const m = /^value-(\d+)\|/.exec(v)
    if (!m) { bad(`p${p}@${off}: unparseable value ${JSON.stringify(v.slice(0, 40))}`); continue }
    const i = Number(m[1])
    if (!(i >= 0 && i < N)) { bad(`p${p}@${off}: value index ${i} out of range`); continue }
    if (seen.has(i)) { bad(`p${p}@${off}: duplicate of message ${i} (first seen at p${seen.get(i)[0]}@${seen.get(i)[1]})`); continue }
    seen.set(i, [p, off])
    if (v !== valueOf(i)) bad(`p${p}@${off}: value of message ${i} differs (${v.length} bytes, expected ${valueOf(i).length})`)
    const k = key ? key.toString('latin1') : null
    if (k !== keyOf(i)) bad(`p${p}@${off}: key of message ${i} is ${JSON.stringify(k)}, expected ${keyOf(i)}`)
    if (!keyPart.has(k)) keyPart.set(k, p)
    else if (keyPart.get(k) !== p) bad(`key ${k} found in partitions ${keyPart.get(k)} and ${p}`)
    if (!byPart.has(p)) byPart.set(p, [])
    byPart.get(p).push([off, i])
    const bk = `${Math.floor(i / SEND_BATCH)}:${p}`
    if (!firstOffset.has(bk) || off < firstOffset.get(bk)) firstOffset.set(bk, off)
  }
  const missing = []
  for (let i = 0; i < N; i++) if (!seen.has(i)) missing.push(i)
  if (missing.length) bad(`${missing.length} messages never consumed, first: ${missing.slice(0, 5)}`)

  for (const [p, lst] of [...byPart.entries()].sort((a, b) => a[0] - b[0])) {
    const j = lst.findIndex(([off], idx) => off !== BigInt(idx))
    if (j >= 0) bad(`partition ${p}: offsets not contiguous from 0 (position ${j} has offset ${lst[j][0]})`)
    for (let x = 1; x < lst.length; x++) {
      if (lst[x][1] <= lst[x - 1][1]) { bad(`partition ${p}: message ${lst[x][1]} consumed after ${lst[x - 1][1]} (not in produce order)`); break }
    }
    if (ends[p] !== BigInt(lst.length)) bad(`partition ${p}: high watermark ${ends[p]} but ${lst.length} records consumed`)
  }
  if (byPart.size !== PARTITIONS) bad(`data in partitions ${[...byPart.keys()].sort()}, expected all of 0..${PARTITIONS - 1}`)

  // Each send() returned a base offset per partition: it must be the offset at
  // which that send's first message for the partition was consumed.
  const reported = new Set()
  for (const { batch, partition, baseOffset } of sendResults) {
    const bk = `${batch}:${partition}`
    reported.add(bk)
    const got = firstOffset.get(bk)
    if (got === undefined) bad(`send #${batch}: broker acked partition ${partition} at ${baseOffset}, but no message of that send was consumed there`)
    else if (got !== BigInt(baseOffset)) bad(`send #${batch}: broker acked partition ${partition} at base offset ${baseOffset}, first message consumed at ${got}`)
  }
  for (const bk of firstOffset.keys()) {
    if (!reported.has(bk)) bad(`send #${bk.split(':')[0]}: messages consumed in partition ${bk.split(':')[1]}, but the send result has no entry for it`)
  }
  return problems
}

// Group-less read-back through kafkajs internals (see the note at the top).
async function consumeWithoutGroup (kafka, admin, topic) {
  // kafkajs keeps its Cluster factory behind a private Symbol on the Kafka object.
  const sym = Object.getOwnPropertySymbols(kafka).find(s => s.description === 'private:Kafka:createCluster')
  if (!sym) throw new Error('kafkajs internals changed (no private:Kafka:createCluster); this script expects kafkajs 2.2.4')
  const cluster = kafka[sym]({ metadataMaxAge: 300000, allowAutoTopicCreation: false })
  await cluster.connect()
  try {
    await cluster.addTargetTopic(topic) // fetches Metadata for the topic
    const leaders = {}
    for (const pm of cluster.findTopicPartitionMetadata(topic)) leaders[pm.partitionId] = pm.leader

    // ListOffsets through the public admin API
    const offsets = await admin.fetchTopicOffsets(topic)
    const ends = {}
    const next = {}
    for (const { partition, low, high } of offsets) {
      if (BigInt(low) !== 0n) throw new Error(`partition ${partition}: log start offset ${low}, expected 0`)
      ends[partition] = BigInt(high)
      next[partition] = BigInt(low)
    }

    const records = []
    while (Object.keys(ends).some(p => next[p] < ends[p])) {
      if (remainingMs(100000) <= 100) {
        const fmt = o => JSON.stringify(o, (_k, v) => typeof v === 'bigint' ? Number(v) : v)
        throw new Error(`consume timed out: ${records.length} records read, positions ${fmt(next)}, ends ${fmt(ends)}`)
      }
      const byLeader = {}
      for (const p of Object.keys(ends).map(Number)) {
        if (next[p] >= ends[p]) continue
        if (!(leaders[p] >= 0)) throw new Error(`partition ${p} has no leader in metadata`)
        ;(byLeader[leaders[p]] = byLeader[leaders[p]] || []).push(p)
      }
      let progressed = false
      for (const [leader, parts] of Object.entries(byLeader)) {
        const broker = await cluster.findBroker({ nodeId: Number(leader) })
        const fetchOffsets = {}
        for (const p of parts) fetchOffsets[p] = next[p]
        const { responses } = await broker.fetch({
          maxWaitTime: 500,
          minBytes: 1,
          maxBytes: 10 * 1024 * 1024,
          topics: [{ topic, partitions: parts.map(p => ({ partition: p, fetchOffset: fetchOffsets[p].toString(), maxBytes: 1024 * 1024 })) }]
        })
        for (const { topicName, partitions } of responses) {
          if (topicName !== topic) throw new Error(`fetch returned unexpected topic ${topicName}`)
          for (const pd of partitions) {
            for (const m of pd.messages) {
              const off = BigInt(m.offset)
              // A fetch may return whole batches that start before the
              // requested offset (kafkajs's consumer drops those too).
              if (off < fetchOffsets[pd.partition] || m.isControlRecord) continue
              records.push({ partition: pd.partition, offset: off, key: m.key, value: m.value })
              if (off + 1n > next[pd.partition]) next[pd.partition] = off + 1n
              progressed = true
            }
          }
        }
      }
      if (!progressed) await sleep(100)
    }
    return { records, ends }
  } finally {
    await cluster.disconnect()
  }
}

// The user-level way: a consumer group of two members, both subscribed to the
// topic (already produced) from the beginning. Both are started together, so
// both JoinGroups normally land in the first generation (the broker holds the
// first join of an empty group for group.initial.rebalance.delay.ms, 3 s by
// default). With autoCommit (the kafkajs default, no interval/threshold) the
// runner commits the resolved offsets after every eachBatch call, before it
// fetches again, and also when a heartbeat reports a rebalance, so a member
// never gives up a partition with records it was handed but did not commit:
// exactly once is a fair expectation even if a member joins late.
// Returns { groupId, records (consumption order, both members), info }.
async function consumeWithGroup (kafka, topic, ends) {
  const groupId = `${topic}-group`
  const total = Object.values(ends).reduce((a, b) => a + Number(b), 0)
  const records = []
  const seen = new Set()
  const info = [0, 1].map(() => ({ assigned: new Set(), records: 0, batches: 0 }))
  let finish, fail
  const finished = new Promise((resolve, reject) => { finish = resolve; fail = reject })
  finished.catch(() => {}) // a crash before we wait on it must not be an unhandled rejection
  // every record seen and both members have owned partitions (a late joiner
  // gets partitions whose committed offset is already the end)
  const check = () => { if (seen.size >= total && info.every(i => i.assigned.size)) finish() }

  const consumers = info.map((i, m) => {
    // small fetches, so that each member commits many times
    const c = kafka.consumer({ groupId, allowAutoTopicCreation: false, maxWaitTimeInMs: 500, maxBytesPerPartition: 128 * 1024 })
    c.on(c.events.GROUP_JOIN, e => {
      for (const p of e.payload.memberAssignment[topic] || []) i.assigned.add(p)
      check()
    })
    c.on(c.events.CRASH, e => fail(new Error(`group member ${m} crashed: ${e.payload.error && e.payload.error.message}`)))
    return c
  })
  try {
    await Promise.all(consumers.map(c => c.connect()))
    await Promise.all(consumers.map(c => c.subscribe({ topics: [topic], fromBeginning: true })))
    // run() resolves once the member has joined: start both at once
    await withTimeout(Promise.all(consumers.map((c, m) => c.run({
      autoCommit: true,
      eachBatch: async ({ batch }) => {
        for (const msg of batch.messages) {
          records.push({ partition: batch.partition, offset: BigInt(msg.offset), key: msg.key, value: msg.value })
          seen.add(`${batch.partition}:${msg.offset}`)
        }
        info[m].records += batch.messages.length
        info[m].batches++
        check()
      }
    }))), remainingMs(30000), 'group join')
    await withTimeout(finished, Math.max(100, remainingMs(100000) - 15000), 'group consume') // keep 15 s for disconnect + checks
      .catch(e => {
        throw new Error(`${e.message}: ${seen.size} of ${total} records, assignments ${JSON.stringify(info.map(i => [...i.assigned]))}`)
      })
  } finally {
    // disconnect() stops the runner (the batch in progress finishes and is
    // committed) and sends LeaveGroup
    for (const c of consumers) await withTimeout(c.disconnect(), remainingMs(5000), 'group member disconnect').catch(e => console.error(`  warning: ${e.message}`))
  }
  return { groupId, records, info }
}

// After both members left: committed offsets == end offsets, group Empty.
async function checkGroup (admin, groupId, topic, ends) {
  const problems = []
  const fetched = await admin.fetchOffsets({ groupId, topics: [topic] })
  const committed = {}
  for (const t of fetched) {
    if (t.topic !== topic) continue
    for (const { partition, offset } of t.partitions) committed[partition] = BigInt(offset)
  }
  const fmt = o => JSON.stringify(o, (_k, v) => typeof v === 'bigint' ? Number(v) : v)
  const keys = new Set([...Object.keys(ends), ...Object.keys(committed)])
  if ([...keys].some(p => committed[p] !== ends[p])) problems.push(`committed offsets ${fmt(committed)}, expected the end offsets ${fmt(ends)}`)
  const { groups } = await admin.describeGroups([groupId])
  const desc = groups.find(g => g.groupId === groupId)
  if (!desc || desc.errorCode !== 0 || desc.state !== 'Empty' || desc.members.length) {
    problems.push(`described as ${desc ? `${desc.state} (error ${desc.errorCode}) with ${desc.members.length} member(s)` : 'missing'} after both members left, expected Empty with none`)
  }
  const listed = (await admin.listGroups()).groups.map(g => g.groupId)
  if (!listed.includes(groupId)) problems.push(`not in ListGroups (${listed.length} groups listed)`)
  return problems
}

async function main () {
  const bootstrap = process.env.BOOTSTRAP
  if (!bootstrap) {
    console.log(`${CLIENT}: FAIL: set BOOTSTRAP=host:port`)
    return 2
  }
  const topic = `compat-kafkajs-${crypto.randomBytes(6).toString('hex')}`
  const kafka = new Kafka({
    clientId: 'odradek-compat-kafkajs',
    brokers: [bootstrap],
    logLevel: logLevel.WARN,
    connectionTimeout: 5000,
    requestTimeout: 30000,
    retry: { retries: 5, maxRetryTime: 5000 }
  })

  const admin = kafka.admin()
  await admin.connect()
  let summary
  let problems
  try {
    // 1. create the topic (waitForLeaders polls Metadata until every partition has a leader)
    const created = await withTimeout(admin.createTopics({
      topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }],
      waitForLeaders: true,
      timeout: 20000
    }), remainingMs(40000), 'createTopics')
    if (!created) throw new Error(`createTopics returned false: ${topic} already existed`)
    const md = await admin.fetchTopicMetadata({ topics: [topic] })
    const nparts = md.topics[0].partitions.length
    if (nparts !== PARTITIONS) throw new Error(`metadata lists ${nparts} partitions, expected ${PARTITIONS}`)

    // 2. produce, one send() of SEND_BATCH messages at a time, in order
    const producer = kafka.producer({
      idempotent: false,
      allowAutoTopicCreation: false,
      createPartitioner: Partitioners.DefaultPartitioner // Java-compatible murmur2
    })
    await producer.connect()
    const sendResults = []
    const t0 = Date.now()
    try {
      for (let batch = 0; batch * SEND_BATCH < N; batch++) {
        const messages = []
        for (let i = batch * SEND_BATCH; i < Math.min(N, (batch + 1) * SEND_BATCH); i++) {
          messages.push({ key: keyOf(i), value: valueOf(i) })
        }
        const res = await withTimeout(producer.send({ topic, acks: -1, timeout: 30000, messages }),
          remainingMs(60000), `send #${batch}`)
        for (const r of res) {
          if (r.errorCode !== 0) throw new Error(`send #${batch}: partition ${r.partition} error ${r.errorCode}`)
          sendResults.push({ batch, partition: r.partition, baseOffset: r.baseOffset })
        }
      }
    } finally {
      await producer.disconnect()
    }
    const produceS = (Date.now() - t0) / 1000

    // 3. read everything back without a group
    const t1 = Date.now()
    // consumeWithoutGroup() gives up by itself at the deadline; this is only a backstop
    const { records, ends } = await withTimeout(consumeWithoutGroup(kafka, admin, topic), remainingMs(HARD_LIMIT_MS) + 3000, 'consume')
    const consumeS = (Date.now() - t1) / 1000

    problems = verify(records, ends, sendResults)

    // 4. consume again with a two-member consumer group, then check the
    // group's committed offsets (only if the plain read-back was right)
    let note = ''
    if (!problems.length) {
      const t2 = Date.now()
      const { groupId, records: grecords, info } = await consumeWithGroup(kafka, topic, ends)
      const groupS = (Date.now() - t2) / 1000
      problems = verify(grecords, ends, sendResults)
      info.forEach((i, m) => { if (!i.assigned.size) problems.push(`member ${m} was never assigned a partition`) })
      problems.push(...await withTimeout(checkGroup(admin, groupId, topic, ends), remainingMs(20000), 'group check'))
      problems = problems.map(p => `group ${groupId}: ${p}`)
      note = '; group of 2: ' + info.map((i, m) => `m${m} p{${[...i.assigned].sort((a, b) => a - b)}} ${i.records} records/${i.batches} batches`).join(', ') +
        `, ${groupS.toFixed(1)}s, lag 0`
      if (!problems.length && !process.env.KEEP_TOPIC) {
        try {
          await withTimeout(admin.deleteGroups([groupId]), remainingMs(15000), 'deleteGroups')
        } catch (e) {
          note += ` (warning: deleteGroups failed: ${e.message})`
        }
      }
    }

    // 5. clean up on success (best effort: a failed delete is reported, not fatal)
    if (!problems.length && !process.env.KEEP_TOPIC) {
      try {
        await withTimeout(admin.deleteTopics({ topics: [topic], timeout: 10000 }), remainingMs(15000), 'deleteTopics')
      } catch (e) {
        note = ` (warning: deleteTopics failed: ${e.message})`
      }
    }
    const counts = Object.keys(ends).sort((a, b) => a - b).map(p => `p${p}=${ends[p]}`).join(',')
    summary = problems.length
      ? `${CLIENT}: FAIL ${problems.length} problem(s), first: ${problems[0]} [topic ${topic}]${note}`
      : `${CLIENT}: OK ${N} messages via ${topic} (${counts}); produce ${produceS.toFixed(1)}s, consume ${consumeS.toFixed(1)}s${note}`
  } finally {
    await admin.disconnect().catch(() => {})
  }
  for (const line of problems) console.error(`  ${line}`)
  console.log(summary)
  return problems.length ? 1 : 0
}

setTimeout(() => {
  console.log(`${CLIENT}: FAIL timeout: no result after ${HARD_LIMIT_MS / 1000}s`)
  process.exit(1)
}, HARD_LIMIT_MS).unref()

main().then(
  rc => process.exit(rc),
  err => {
    console.log(`${CLIENT}: FAIL ${err.name || 'Error'}: ${err.message}`)
    process.exit(1)
  }
)
