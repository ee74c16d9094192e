'use strict';
// ali-ons (a third-party, pure-JavaScript RocketMQ client) against rockfish: create a topic
// through the SDK, send with tags and keys, pull directly, then consume with a push consumer
// subscribed to one tag. Exits non-zero with the reason on any mismatch. Bounded: 60 s.

const assert = require('assert');
const { Producer, Consumer, Message } = require('ali-ons');

const nameSrv = process.env.NAMESRV || '127.0.0.1:9876';
// ali-ons asserts an HTTP client (for Aliyun's address service); with nameSrv set it is unused.
const httpclient = { request: async () => { throw new Error('unused: nameSrv is set'); } };
const topic = `OnsTopic${Date.now()}`;
const deadline = setTimeout(() => {
  console.error('ali-ons compat: timed out');
  process.exit(2);
}, 60000);

async function main() {
  const producer = new Producer({ httpclient, nameSrv, producerGroup: 'ons-compat-pg' });
  await producer.ready();
  const client = producer._mqClient;

  // 1. Create the topic through the SDK (UPDATE_AND_CREATE_TOPIC to the master TBW102 routes to).
  const defaultRoute = await client.getDefaultTopicRouteInfoFromNameServer('TBW102', 3000);
  const brokerAddr = defaultRoute.brokerDatas[0].brokerAddrs['0'];
  assert(brokerAddr, 'the default topic route names a master');
  await client.createTopic(brokerAddr, 'TBW102', {
    topicName: topic, readQueueNums: 4, writeQueueNums: 4, perm: 6,
    topicFilterType: 'SINGLE_TAG', topicSysFlag: 0, order: false,
  }, 3000);
  let route = null;
  for (let i = 0; i < 100 && !route; i++) {
    try { route = await client.getTopicRouteInfoFromNameServer(topic, 3000); } catch (e) { /* not yet registered */ }
    if (!route) await new Promise(r => setTimeout(r, 100));
  }
  assert(route, 'the created topic has a route');
  assert.strictEqual(route.queueDatas[0].writeQueueNums, 4);
  console.log(`created ${topic} on ${brokerAddr}`);

  // 2. Send: ten tagged TagA, five TagB.
  const sent = new Map();
  for (let i = 0; i < 15; i++) {
    const tag = i < 10 ? 'TagA' : 'TagB';
    const msg = new Message(topic, tag, `hello ${i}`);
    msg.keys = [ `key-${i}` ];
    const result = await producer.send(msg);
    assert.strictEqual(result.sendStatus, 'SEND_OK', JSON.stringify(result));
    assert(result.msgId, 'a message id comes back');
    sent.set(`hello ${i}`, tag);
  }
  console.log('sent 15 messages');

  // 3. Pull directly from each queue and decode the stored records.
  let pulled = 0;
  for (const qd of route.queueDatas) {
    for (let q = 0; q < qd.readQueueNums; q++) {
      const res = await client.pullMessage(brokerAddr, {
        consumerGroup: 'ons-compat-puller', topic, queueId: q, queueOffset: 0, maxMsgNums: 32,
        sysFlag: 4, commitOffset: 0, suspendTimeoutMillis: 0, subscription: '*', subVersion: 0,
      }, 3000);
      for (const m of res.msgFoundList || []) {
        assert(sent.has(m.body.toString()), `pulled an unknown body ${m.body}`);
        assert.strictEqual(m.tags, sent.get(m.body.toString()));
        pulled++;
      }
    }
  }
  assert.strictEqual(pulled, 15, `pulled ${pulled} of 15`);
  console.log('pulled 15 messages');

  // 4. Consume TagA with a push consumer (heartbeat, rebalance, long polling, offsets).
  const consumer = new Consumer({
    httpclient, nameSrv, consumerGroup: 'ons-compat-cg', consumeFromWhere: 'CONSUME_FROM_FIRST_OFFSET',
  });
  const got = new Set();
  await new Promise((resolve, reject) => {
    // The retry topic's route only appears after the first heartbeat creates it; ali-ons
    // reports the earlier lookup as an error event, as it does against Apache brokers.
    consumer.on('error', err => console.warn('consumer warning:', err.message));
    consumer.subscribe(topic, 'TagA', async msg => {
      assert.strictEqual(msg.tags, 'TagA', `filtered out ${msg.tags}`);
      got.add(msg.body.toString());
      if (got.size === 10) resolve();
    });
  });
  console.log('consumed the 10 TagA messages');
  await consumer.close();
  await producer.close();
  clearTimeout(deadline);
  console.log('ali-ons compat: OK');
  // The SDK leaves timers and sockets behind after close(); do not wait for them.
  process.exit(0);
}

main().catch(err => {
  console.error('ali-ons compat: FAILED:', err && err.stack || err);
  process.exit(1);
});
