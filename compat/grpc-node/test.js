// RocketMQ 5's Node.js SDK (npm rocketmq-client-nodejs, gRPC) against rockfish standalone.
// Each check prints "ok <name>" or "FAILED <name>: why"; exits with the number failed.
// Environment: GRPC (host:port), SUFFIX. run.sh creates the topics, the poison group
// (retryMaxTimes 2) and the FIFO group (consumeMessageOrderly) first.
'use strict';

const {
  Producer, SimpleConsumer, PushConsumer, FilterExpression, ConsumeResult,
} = require('rocketmq-client-nodejs');

const endpoints = process.env.GRPC;
const S = process.env.SUFFIX;
const [ NORMAL, FIFO, DELAY, TX, PUSH, POISON ] =
  [ 'Normal', 'Fifo', 'Delay', 'Tx', 'Push', 'Poison' ].map(k => `Js${k}${S}`);
const POISON_GROUP = `JsPoisonGroup${S}`;
const [ HELD, FIFO_GROUP ] = [ `JsHeld${S}`, `JsFifoGroup${S}` ]; // run.sh: updateSubGroup -o true
const COMMIT = 1; // TransactionResolution.COMMIT
const failed = [];
let passed = 0;

function check(name, ok, why) {
  if (ok) {
    passed++;
    console.log(`ok ${name}`);
  } else {
    failed.push(name);
    console.log(`FAILED ${name}: ${JSON.stringify(why)}`);
  }
}
const sleep = ms => new Promise(r => setTimeout(r, ms));
const msg = (topic, body, extra = {}) => ({ topic, body: Buffer.from(body), tag: 't', keys: [ body ], ...extra });

async function main() {
  const checked = [];
  const producer = new Producer({
    endpoints, namespace: '', topics: [ NORMAL, FIFO, DELAY, TX ],
    checker: { async check(m) { checked.push(m.body.toString()); return COMMIT; } },
  });
  await producer.startup();
  const simple = new SimpleConsumer({
    endpoints, namespace: '', consumerGroup: `JsSimple${S}`, awaitDuration: 3000,
    subscriptions: new Map([ NORMAL, FIFO, DELAY, TX ].map(t => [ t, new FilterExpression('*') ])),
  });
  await simple.startup();

  let sent = 0;
  for (let i = 0; i < 5; i++) { await producer.send(msg(NORMAL, `n${i}`)); sent++; }
  for (let i = 0; i < 5; i++) { await producer.send(msg(FIFO, `f${i}`, { messageGroup: 'order-1' })); }
  const delaySent = Date.now();
  await producer.send(msg(DELAY, 'd0', { delay: 3000 }));
  const t1 = producer.beginTransaction();
  await producer.send(msg(TX, 'tx-commit'), t1);
  await t1.commit();
  const t2 = producer.beginTransaction();
  await producer.send(msg(TX, 'tx-rollback'), t2);
  await t2.rollback();
  const t3 = producer.beginTransaction();
  await producer.send(msg(TX, 'tx-checked'), t3); // left open: the check-back commits it
  check('send normal, FIFO, delay and transactional messages', sent === 5);

  const seen = []; // [body, attempt, time]
  let lapsedAt = 0;
  const want = [ 'n0', 'n1', 'n2', 'n3', 'n4', 'f0', 'f1', 'f2', 'f3', 'f4', 'd0', 'tx-commit', 'tx-checked' ];
  const done = () => want.every(b => seen.some(s => s[0] === b)) && seen.some(s => s[0] === 'n2' && s[1] >= 2);
  const deadline = Date.now() + 60000;
  while (Date.now() < deadline && !done()) {
    const got = await simple.receive(16, 4000);
    for (const m of got) {
      const body = m.body.toString();
      seen.push([ body, m.deliveryAttempt, Date.now() ]);
      if (body === 'n2' && !lapsedAt) { lapsedAt = Date.now(); continue; } // not acked: back in 4 s
      await simple.ack(m);
    }
  }
  const bodies = seen.map(s => s[0]);
  check('simple consumer receives every normal message', [ 0, 1, 2, 3, 4 ].every(i => bodies.includes(`n${i}`)), bodies);
  const fifo = bodies.filter(b => b.startsWith('f'));
  check('FIFO messages arrive in order', fifo.join() === 'f0,f1,f2,f3,f4', fifo);
  const d = seen.filter(s => s[0] === 'd0');
  check('a delay message arrives after its delivery time', d.length > 0 && d[0][2] >= delaySent + 2500, [ d, delaySent ]);
  check('a committed transaction is delivered', bodies.includes('tx-commit'), bodies);
  check('a transaction left open is committed by the check-back', bodies.includes('tx-checked') && checked.includes('tx-checked'), [ bodies, checked ]);
  check('a rolled back transaction is never delivered', !bodies.includes('tx-rollback'), bodies);
  const again = seen.filter(s => s[0] === 'n2' && s[1] >= 2);
  check('an un-acked message comes back after its invisible time, attempt 2', again.length > 0 && again[0][2] - lapsedAt >= 3500, [ again, lapsedAt ]);
  const twice = bodies.filter(b => b.startsWith('n') && b !== 'n2' && bodies.filter(x => x === b).length > 1);
  check('an acked message never comes back', twice.length === 0, twice);
  await simple.shutdown();

  // A FIFO group (updateSubGroup -o true): a message group's next message waits until the one
  // before is acked.
  const p3 = new Producer({ endpoints, namespace: '', topics: [ HELD ] });
  await p3.startup();
  const held = new SimpleConsumer({
    endpoints, namespace: '', consumerGroup: FIFO_GROUP, awaitDuration: 2000,
    subscriptions: new Map([[ HELD, new FilterExpression('*') ]]),
  });
  await held.startup();
  for (let i = 0; i < 3; i++) await p3.send(msg(HELD, `h${i}`, { messageGroup: 'order-2' }));
  const first = await held.receive(1, 20000);
  const blocked = await held.receive(1, 20000); // h0 not acked yet: nothing
  for (const m of first) await held.ack(m);
  const rest = [];
  for (let end = Date.now() + 20000; Date.now() < end && rest.length < 2;) {
    for (const m of await held.receive(1, 20000)) { rest.push(m.body.toString()); await held.ack(m); }
  }
  const heldGot = [ first.map(m => m.body.toString()), blocked.map(m => m.body.toString()), rest ];
  check('a FIFO group\'s next message waits until the one before is acked',
    JSON.stringify(heldGot) === JSON.stringify([[ 'h0' ], [], [ 'h1', 'h2' ]]), heldGot);
  await held.shutdown();
  await p3.shutdown();

  const p2 = new Producer({ endpoints, namespace: '', topics: [ PUSH, POISON ] });
  await p2.startup();
  const pushed = new Set();
  const push = new PushConsumer({
    endpoints, namespace: '', consumerGroup: `JsPush${S}`,
    subscriptions: new Map([[ PUSH, new FilterExpression('*') ]]),
    messageListener: { consume(m) { pushed.add(m.body.toString()); return ConsumeResult.SUCCESS; } },
  });
  await push.startup();
  for (let i = 0; i < 5; i++) await p2.send(msg(PUSH, `p${i}`));
  for (let end = Date.now() + 30000; Date.now() < end && pushed.size < 5;) await sleep(200);
  check('a push consumer consumes', pushed.size === 5, [ ...pushed ]);
  await push.shutdown();

  const attempts = [];
  const poison = new PushConsumer({
    endpoints, namespace: '', consumerGroup: POISON_GROUP,
    subscriptions: new Map([[ POISON, new FilterExpression('*') ]]),
    messageListener: { consume(m) { attempts.push(m.deliveryAttempt); return ConsumeResult.FAILURE; } },
  });
  await poison.startup();
  await p2.send(msg(POISON, 'poison'));
  const dlq = `%DLQ%${POISON_GROUP}`;
  let found = false;
  for (let end = Date.now() + 60000; Date.now() < end && !found;) {
    await sleep(1000);
    const reader = new SimpleConsumer({
      endpoints, namespace: '', consumerGroup: `JsDlqReader${S}`, awaitDuration: 2000,
      subscriptions: new Map([[ dlq, new FilterExpression('*') ]]),
    });
    try {
      await Promise.race([ reader.startup(), sleep(5000).then(() => { throw new Error('startup timed out'); }) ]);
      for (const m of await reader.receive(16, 10000)) {
        found = found || m.body.toString() === 'poison';
        await reader.ack(m);
      }
    } catch (e) {
      // the DLQ topic does not exist yet
    }
    await reader.shutdown().catch(() => {});
  }
  check('a failing message reaches the DLQ after its max attempts', found && attempts.length >= 3, attempts);
  await poison.shutdown();
  await p2.shutdown();
  await producer.shutdown();
}

main().catch(e => { failed.push(`error: ${e && e.stack || e}`); console.log(`FAILED: ${e && e.stack || e}`); })
  .finally(() => {
    console.log(`grpc-node compat: ${passed} passed, ${failed.length} failed`);
    process.exit(failed.length);
  });
