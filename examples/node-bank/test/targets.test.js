'use strict';
// The hub's addresses (docs/failover.md): parsed, refused with the form expected, and turned
// into one grpc-js target over every replica.

const test = require('node:test');
const assert = require('node:assert/strict');
const { hubTarget, parseTargets } = require('../src/hub');

test('one address or gRPC target is kept as given', async () => {
  assert.deepEqual(await hubTarget('hub.example.cn:7443'), { target: 'hub.example.cn:7443' });
  assert.deepEqual(await hubTarget('dns:///hub.example.cn:7443'), { target: 'dns:///hub.example.cn:7443' });
});

test('several addresses become one static list spoken to as the first', async () => {
  assert.deepEqual(
    parseTargets(' 10.0.0.1:7443, 10.0.0.2:7444,10.0.0.1:7443').map((e) => e.text),
    ['10.0.0.1:7443', '10.0.0.2:7444'],
  );
  assert.deepEqual(await hubTarget('10.0.0.1:7443,10.0.0.2:7444'), {
    target: 'ipv4:10.0.0.1:7443,10.0.0.2:7444',
    authority: '10.0.0.1:7443',
    host: '10.0.0.1',
  });
  assert.equal((await hubTarget('[::1]:1,[::2]:2')).target, 'ipv6:[::1]:1,[::2]:2');
});

test('bad addresses are refused saying what is expected', async () => {
  for (const bad of ['hub', 'hub:port', 'hub:0', 'hub:70000', '::1:7443', 'a:1,']) {
    assert.throws(() => parseTargets(bad), /HOST:PORT/, bad);
  }
  await assert.rejects(hubTarget('no-such-host.invalid:1,also-not.invalid:2'), /none of the hub addresses resolves/);
});
