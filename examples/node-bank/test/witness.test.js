'use strict';
// `npm test`: the bank as a witness of the hub's log (src/witness.js, docs/witness.md): RFC 9162
// consistency proofs checked, a newer checkpoint kept only once proved, a fork or a rollback
// raising LogForkAlarm that stays, a checkpoint that does not verify ignored, the kept file
// in the format of hub/crypto/checkpoint.py.

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');

const signing = require('../src/signing');
const { load } = require('../src/proto');
const { HubConnection } = require('../src/hub');
const { FORK, ROLLBACK, LogForkAlarm, LogWitness, ProofRefused, verifyConsistency } = require('../src/witness');

const proto = load();
const sha = (...parts) => crypto.createHash('sha256').update(Buffer.concat(parts)).digest();
const leaf = (text) => sha(Buffer.from([0]), Buffer.from(text));
const leaves = (n, tag = 'a') => Array.from({ length: n }, (_, i) => leaf(`${tag}${i}`));
const split = (n) => 2 ** Math.floor(Math.log2(n - 1));

// RFC 6962 MTH and SUBPROOF, written out independently of the hub's Python.
function mth(ls) {
  if (ls.length === 1) return ls[0];
  const k = split(ls.length);
  return sha(Buffer.from([1]), mth(ls.slice(0, k)), mth(ls.slice(k)));
}
function subproof(m, ls, whole) {
  const n = ls.length;
  if (m === n) return whole ? [] : [mth(ls)];
  const k = split(n);
  if (m <= k) return [...subproof(m, ls.slice(0, k), whole), mth(ls.slice(k))];
  return [...subproof(m - k, ls.slice(k), false), mth(ls.slice(0, k))];
}
const proofOf = (m, ls) => subproof(m, ls, true);

const hubKey = signing.signerFrom(crypto.generateKeyPairSync('ed25519').privateKey);
const otherKey = signing.signerFrom(crypto.generateKeyPairSync('ed25519').privateKey);

function hubConnection() {
  return new HubConnection({
    target: '127.0.0.1:1',
    institution: 'NODEBANK',
    signer: otherKey,
    hubKeys: [[hubKey.algorithm, hubKey.publicKey]],
    proto,
    credentials: grpc.credentials.createInsecure(),
  });
}

/** The serialized hub-signed checkpoint of the tree `ls`. */
function checkpoint(ls, signer = hubKey) {
  const body = proto.encode('stophub.v1.LogCheckpoint', {
    tree_size: String(ls.length),
    root_hash: mth(ls),
    checkpoint_time: { seconds: '1772442000', nanos: 0 },
  });
  const env = signing.signEnvelope(
    {
      sender: 'HUB',
      recipient: 'AUDIT',
      message_id: `checkpoint-${ls.length}`,
      create_time: { seconds: '1772442000', nanos: 0 },
      body_type: 'stophub.v1.LogCheckpoint',
      body,
    },
    signer,
  );
  return proto.encode('stophub.v1.Envelope', env);
}

function witness(hubTree, file = null) {
  const asked = [];
  const hub = hubConnection();
  const w = new LogWitness({
    hub,
    file,
    prove: async (first, second) => {
      asked.push([first, second]);
      if (second > hubTree.tree.length) throw new ProofRefused(`NOT_FOUND: no checkpoint of ${second}`);
      return proofOf(first, hubTree.tree.slice(0, second));
    },
  });
  return { w, asked, hub };
}

test('RFC 9162 consistency proofs verify, and a wrong root or proof does not', () => {
  const ls = leaves(37);
  for (const m of [1, 2, 3, 7, 8, 16, 20, 36, 37]) {
    const p = proofOf(m, ls);
    assert.ok(verifyConsistency(m, 37, p, mth(ls.slice(0, m)), mth(ls)), `m=${m}`);
    assert.ok(!verifyConsistency(m, 37, p, mth(leaves(m, 'z')), mth(ls)), `fork m=${m}`);
    if (p.length > 0) {
      const bad = p.map((h, i) => (i === p.length - 1 ? sha(h) : h));
      assert.ok(!verifyConsistency(m, 37, bad, mth(ls.slice(0, m)), mth(ls)), `tampered m=${m}`);
    }
  }
});

test('the witness keeps a newer consistent checkpoint in its file, atomically', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'witness-'));
  const file = path.join(dir, 'log-checkpoint.json');
  const hubTree = { tree: leaves(5) };
  const { w, asked } = witness(hubTree, file);
  await w.see(checkpoint(hubTree.tree));
  hubTree.tree = leaves(12);
  await w.see(checkpoint(hubTree.tree));
  assert.deepEqual(asked, [[5, 12]]);
  assert.equal(w.kept.treeSize, 12);
  const doc = JSON.parse(fs.readFileSync(file, 'utf8'));
  assert.equal(doc.format, 'stophub-log-checkpoint/1');
  assert.equal(doc.tree_size, 12);
  assert.equal(doc.root_hash, mth(hubTree.tree).toString('hex'));
  assert.deepEqual(fs.readdirSync(dir), ['log-checkpoint.json']);
  // Read back by a new witness; the same bytes again cost no proof.
  const again = witness(hubTree, file);
  assert.equal(again.w.kept.treeSize, 12);
  await again.w.see(checkpoint(hubTree.tree));
  assert.deepEqual(again.asked, []);
});

test('a fork and a rollback raise LogForkAlarm, which stays; the kept checkpoint is not replaced', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'witness-'));
  const file = path.join(dir, 'log-checkpoint.json');
  const hubTree = { tree: leaves(9) };
  const { w } = witness(hubTree, file);
  await w.see(checkpoint(hubTree.tree));
  // An older checkpoint of the same log, still proved by the hub: no alarm.
  await w.see(checkpoint(hubTree.tree.slice(0, 4)));
  assert.equal(w.alarm, null);

  hubTree.tree = [...leaves(4), ...leaves(8, 'other')];
  await assert.rejects(w.see(checkpoint(hubTree.tree)), (err) => err instanceof LogForkAlarm && err.kind === FORK);
  assert.throws(() => w.check(), LogForkAlarm);
  await assert.rejects(w.see(checkpoint(leaves(30))), LogForkAlarm);
  assert.equal(w.kept.treeSize, 9);
  assert.equal(JSON.parse(fs.readFileSync(file, 'utf8')).tree_size, 9);
  const evidence = fs.readdirSync(dir).filter((f) => f.startsWith('log-fork-'));
  assert.equal(evidence.length, 1);
  const doc = JSON.parse(fs.readFileSync(path.join(dir, evidence[0]), 'utf8'));
  assert.equal(doc.kind, FORK);
  assert.equal(doc.kept.tree_size, 9);
  assert.equal(doc.seen.tree_size, 12);

  const rolled = witness({ tree: leaves(3) });
  await rolled.w.see(checkpoint(leaves(6)));
  await assert.rejects(rolled.w.see(checkpoint(leaves(3))), (err) => err.kind === ROLLBACK);
});

test('a checkpoint that does not verify is ignored, never kept', async () => {
  const hubTree = { tree: leaves(4) };
  const { w, asked } = witness(hubTree);
  await w.see(checkpoint(hubTree.tree, otherKey));
  assert.equal(w.kept, null);
  await w.see(checkpoint(hubTree.tree));
  await w.see(checkpoint(leaves(40), otherKey));
  assert.equal(w.kept.treeSize, 4);
  assert.deepEqual(asked, []);
});

test('a kept file the pinned hub keys do not verify stops the bank instead of being overwritten', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'witness-'));
  const file = path.join(dir, 'log-checkpoint.json');
  const forged = checkpoint(leaves(3), otherKey);
  const text = JSON.stringify({
    format: 'stophub-log-checkpoint/1',
    tree_size: 3,
    root_hash: mth(leaves(3)).toString('hex'),
    envelope: forged.toString('base64'),
  });
  fs.writeFileSync(file, text);
  assert.throws(() => witness({ tree: [] }, file), /move the file aside/);
  assert.equal(fs.readFileSync(file, 'utf8'), text);
});
