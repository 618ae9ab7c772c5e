'use strict';
// `npm test`: the signing of this bank against docs/signing.md, and the checks that make it
// refuse what the hub did not sign.

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');

const signing = require('../src/signing');
const { VECTORS, checkVector, envelopeOf, selfTest } = require('../src/selftest');
const { vectorsFromDoc } = require('./docvectors');
const { load } = require('../src/proto');
const { HubConnection, HubSignatureError } = require('../src/hub');
const { Book, parseTime, micros } = require('../src/bank');

const fromDoc = vectorsFromDoc();

test('docs/signing.md has the seven vectors, and the built-in copy is the same', () => {
  assert.deepEqual(
    fromDoc.map((v) => v.vector),
    [
      'ed25519-basic',
      'ed25519-unicode-empty-body',
      'ecdsa-p256-basic',
      'ed25519-negative-message-id',
      'ed25519-operator-approver',
      'sm2-sm3-basic',
      'sm2-sm3-distinguishing-id',
    ],
  );
  for (const copy of VECTORS) {
    const doc = fromDoc.find((v) => v.vector === copy.vector);
    for (const [key, value] of Object.entries(copy)) assert.equal(value, doc[key], `${copy.vector} ${key}`);
  }
});

for (const v of fromDoc) {
  test(`vector ${v.vector} from docs/signing.md`, () => {
    assert.deepEqual(checkVector(v), []);
  });
}

test('the startup self-test passes, and fails on a wrong vector', () => {
  assert.deepEqual(selfTest(), []);
  const wrong = structuredClone(VECTORS);
  wrong[0]['header.sender'] = 'BANKB';
  assert.ok(selfTest(wrong).some((f) => f.startsWith('ed25519-basic: signing input')));
});

test('the worked example: 125 bytes, length-prefixed create_time', () => {
  const input = signing.signingInput(envelopeOf(fromDoc[0]));
  assert.equal(input.length, 125);
  assert.equal(input.subarray(79, 83).toString('hex'), '0000000c');
  assert.equal(input.subarray(83, 95).toString('hex'), '00000000695735a5075bca00');
});

test('the people follow the body only when set, and are signed', () => {
  const v = fromDoc.find((x) => x.vector === 'ed25519-operator-approver');
  const env = envelopeOf(v);
  const without = signing.signingInput({ ...env, operator: '', approver: '' });
  const input = signing.signingInput(env);
  assert.equal(input.length, 145);
  assert.deepEqual(input.subarray(0, 125), without);
  assert.equal(input.subarray(125).toString('hex'), '000000066c692e77656900000006e5bca0e6958f');
  // Absent (undefined) people are the layout of an envelope that never had them.
  const absent = signing.signingInput({ ...env, operator: undefined, approver: undefined });
  assert.deepEqual(absent, without);
  const pub = Buffer.from(v.public_key, 'hex');
  assert.equal(signing.verifyEnvelope(env, 'ed25519', pub), true);
  assert.equal(signing.verifyEnvelope({ ...env, operator: 'someone' }, 'ed25519', pub), false);
  assert.equal(signing.verifyEnvelope({ ...env, approver: '' }, 'ed25519', pub), false);
});

test('field boundaries are part of the input: AB|C and A|BC differ', () => {
  const base = envelopeOf(fromDoc[0]);
  const a = signing.signingInput({ ...base, sender: 'AB', recipient: 'C' });
  const b = signing.signingInput({ ...base, sender: 'A', recipient: 'BC' });
  assert.notDeepEqual(a, b);
});

test('negative create_time seconds are two\'s complement; nanos out of range are refused', () => {
  const base = envelopeOf(fromDoc[0]);
  const input = signing.signingInput({ ...base, create_time: { seconds: '-1', nanos: 0 } });
  assert.equal(input.subarray(83, 91).toString('hex'), 'ffffffffffffffff');
  assert.throws(() => signing.signingInput({ ...base, create_time: { seconds: '0', nanos: 1e9 } }));
  assert.throws(() => signing.signingInput({ ...base, create_time: { seconds: '0', nanos: -1 } }));
  // ...and such an envelope simply does not verify.
  const pub = Buffer.from(fromDoc[0].public_key, 'hex');
  assert.equal(signing.verifyEnvelope({ ...base, create_time: { seconds: '1767323045', nanos: 1e9 } }, 'ed25519', pub), false);
});

test('an absent create_time reads as 0 seconds, 0 nanos', () => {
  const base = envelopeOf(fromDoc[0]);
  const none = signing.signingInput({ ...base, create_time: null });
  const zero = signing.signingInput({ ...base, create_time: { seconds: '0', nanos: 0 } });
  assert.deepEqual(none, zero);
});

test('verification fails on any changed field, a flipped bit, or the wrong algorithm', () => {
  const v = fromDoc[0];
  const pub = Buffer.from(v.public_key, 'hex');
  const env = envelopeOf(v);
  assert.equal(signing.verifyEnvelope(env, 'ed25519', pub), true);
  for (const [field, value] of [
    ['sender', 'BANKB'],
    ['recipient', 'HUC'],
    ['message_id', 'msg-0002'],
    ['body_type', 'stophub.v1.Case'],
    ['body', Buffer.from('0a03616264', 'hex')],
    ['create_time', { seconds: '1767323045', nanos: 123456001 }],
  ]) {
    assert.equal(signing.verifyEnvelope({ ...env, [field]: value }, 'ed25519', pub), false, field);
  }
  const flipped = Buffer.from(env.signature);
  flipped[10] ^= 1;
  assert.equal(signing.verifyEnvelope({ ...env, signature: flipped }, 'ed25519', pub), false);
  assert.equal(signing.verifyEnvelope({ ...env, signature: Buffer.alloc(0) }, 'ed25519', pub), false);
  // The algorithm comes from the key's registration, never from the envelope alone.
  assert.equal(signing.verifyEnvelope(env, 'ecdsa-p256-sha256', Buffer.from(fromDoc[2].public_key, 'hex')), false);
});

test('ECDSA: the P1363 (r || s) form is refused; DER verifies', () => {
  const v = fromDoc[2];
  const pub = Buffer.from(v.public_key, 'hex');
  const env = envelopeOf(v);
  assert.equal(signing.verifyEnvelope(env, 'ecdsa-p256-sha256', pub), true);
  const key = signing.publicKeyFromRaw('ecdsa-p256-sha256', pub);
  const p1363 = crypto.sign(
    'sha256',
    signing.signingInput(env),
    { key: signing.p256PrivateKeyFromScalar(Buffer.from(v.private_scalar, 'hex')), dsaEncoding: 'ieee-p1363' },
  );
  assert.equal(p1363.length, 64);
  assert.equal(signing.verifyBytes('ecdsa-p256-sha256', key, signing.signingInput(env), p1363), false);
});

test('SM2: the distinguishing ID is signed; r || s, a loose DER and Node\'s empty ID are refused', () => {
  const [basic, withId] = ['sm2-sm3-basic', 'sm2-sm3-distinguishing-id'].map((n) =>
    fromDoc.find((v) => v.vector === n),
  );
  const input = Buffer.from(basic.signing_input, 'hex');
  const record = Buffer.from(basic.public_key, 'hex');
  const key = signing.publicKeyFromRaw('sm2-sm3', record);
  const sig = Buffer.from(basic.signature, 'hex');
  assert.equal(signing.verifyBytes('sm2-sm3', key, input, sig), true);
  // The (g) record is the same point with an ID after it: another key, another Z.
  const other = signing.publicKeyFromRaw('sm2-sm3', Buffer.from(withId.public_key, 'hex'));
  assert.equal(other.userId, 'ALICE123@YAHOO.COM');
  assert.equal(signing.verifyBytes('sm2-sm3', other, input, sig), false);
  // r || s (64 bytes) and a DER with a needless leading zero carry the same r and s.
  const rLen = sig[3];
  const r = sig.subarray(4, 4 + rLen);
  const s = sig.subarray(4 + rLen + 2);
  const raw = Buffer.concat([r.subarray(r.length - 32), s.subarray(s.length - 32)]);
  assert.equal(signing.verifyBytes('sm2-sm3', key, input, raw), false);
  const padded = Buffer.concat([Buffer.from([0x02, s.length + 1, 0x00]), s]);
  const loose = Buffer.concat([sig.subarray(2, 4 + rLen), padded]);
  assert.equal(
    signing.verifyBytes('sm2-sm3', key, input, Buffer.concat([Buffer.from([0x30, loose.length]), loose])),
    false,
  );
  // Node's own crypto signs SM2 with an empty ID: not what the hub verifies.
  const signer = signing.sm2Signer(Buffer.from(basic.private_scalar, 'hex'));
  assert.throws(() => signing.sm2Signer(Buffer.from(basic.private_scalar, 'hex'), ''), signing.SignatureError);
  assert.deepEqual(signer.publicKey, record);
  assert.throws(
    () => signing.publicKeyFromRaw('sm2-sm3', Buffer.concat([record, Buffer.from('1234567812345678')])),
    signing.SignatureError,
  );
});

test('SM2: the openssl command line verifies this bank\'s signatures and this bank verifies its', (t) => {
  const { spawnSync } = require('node:child_process');
  const fs = require('node:fs');
  const os = require('node:os');
  const path = require('node:path');
  if (spawnSync('openssl', ['version']).status !== 0) return t.skip('no openssl command here');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'node-bank-sm2-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = (name) => path.join(dir, name);
  assert.equal(spawnSync('openssl', ['genpkey', '-algorithm', 'SM2', '-out', file('k.key')]).status, 0);
  assert.equal(spawnSync('openssl', ['pkey', '-in', file('k.key'), '-pubout', '-out', file('k.pub')]).status, 0);
  const signer = signing.signerFrom(crypto.createPrivateKey(fs.readFileSync(file('k.key'))));
  assert.equal(signer.algorithm, 'sm2-sm3');
  const input = Buffer.from(fromDoc.find((v) => v.vector === 'sm2-sm3-basic').signing_input, 'hex');
  fs.writeFileSync(file('input'), input);
  fs.writeFileSync(file('ours.sig'), signing.signBytes('sm2-sm3', signer.privateKey, input));
  const opts = ['-rawin', '-digest', 'sm3', '-in', file('input'), '-pkeyopt', 'distid:1234567812345678'];
  const verified = spawnSync('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', file('k.pub'), '-sigfile', file('ours.sig'), ...opts]);
  assert.equal(verified.status, 0, String(verified.stderr));
  const signed = spawnSync('openssl', ['pkeyutl', '-sign', '-inkey', file('k.key'), '-out', file('theirs.sig'), ...opts]);
  assert.equal(signed.status, 0, String(signed.stderr));
  const key = signing.publicKeyFromRaw('sm2-sm3', signer.publicKey);
  assert.equal(signing.verifyBytes('sm2-sm3', key, input, fs.readFileSync(file('theirs.sig'))), true);
  // Without distid, openssl 3.0 signs under an empty ID: refused here.
  spawnSync('openssl', ['pkeyutl', '-sign', '-inkey', file('k.key'), '-out', file('empty.sig'), '-rawin', '-digest', 'sm3', '-in', file('input')]);
  assert.equal(signing.verifyBytes('sm2-sm3', key, input, fs.readFileSync(file('empty.sig'))), false);
});

test('compressed P-256 points and short Ed25519 keys are refused', () => {
  const pub = Buffer.from(fromDoc[2].public_key, 'hex');
  const compressed = Buffer.concat([Buffer.from([pub[64] & 1 ? 3 : 2]), pub.subarray(1, 33)]);
  assert.throws(() => signing.publicKeyFromRaw('ecdsa-p256-sha256', compressed), signing.SignatureError);
  assert.throws(() => signing.publicKeyFromRaw('ed25519', Buffer.alloc(31)), signing.SignatureError);
  assert.throws(() => signing.publicKeyFromRaw('sm2', Buffer.alloc(32)), signing.SignatureError);
});

// ---- the hub's signature on deliveries ----------------------------------------------------

function hubConnection(hubPrivate) {
  const proto = load();
  const bank = signing.signerFrom(crypto.generateKeyPairSync('ed25519').privateKey);
  const hub = signing.signerFrom(hubPrivate);
  const conn = new HubConnection({
    target: '127.0.0.1:1', // never dialled by these tests
    institution: 'NODEBANK',
    signer: bank,
    hubKeys: [[hub.algorithm, hub.publicKey]],
    credentials: grpc.credentials.createInsecure(),
    proto,
  });
  return { conn, proto, hub };
}

function hubNotice(proto, signer, overrides = {}) {
  const env = {
    sender: 'HUB',
    recipient: 'NODEBANK',
    message_id: 'hub-1',
    create_time: { seconds: '1767323045', nanos: 0 },
    body_type: 'stophub.v1.Notice',
    body: proto.encode('stophub.v1.Notice', { kind: 'NOTICE_KIND_ORDER', case_id: 'C-1', summary: 'stop' }),
    ...overrides,
  };
  return signing.signEnvelope(env, signer);
}

test('a delivery the hub signed is opened', (t) => {
  const hubKey = crypto.generateKeyPairSync('ed25519').privateKey;
  const { conn, proto, hub } = hubConnection(hubKey);
  t.after(() => conn.close());
  const notice = conn.openHubEnvelope(hubNotice(proto, hub), 'stophub.v1.Notice');
  assert.equal(notice.kind, 'NOTICE_KIND_ORDER');
  assert.equal(notice.case_id, 'C-1');
});

test('a forged hub signature is refused', (t) => {
  const hubKey = crypto.generateKeyPairSync('ed25519').privateKey;
  const { conn, proto, hub } = hubConnection(hubKey);
  t.after(() => conn.close());
  // Signed by another key that claims to be the hub's key id.
  const forger = signing.signerFrom(crypto.generateKeyPairSync('ed25519').privateKey);
  const forged = hubNotice(proto, { ...forger, keyId: hub.keyId });
  assert.throws(() => conn.openHubEnvelope(forged, 'stophub.v1.Notice'), HubSignatureError);
  // Signed by another key under its own id: not a hub key this bank trusts.
  assert.throws(() => conn.openHubEnvelope(hubNotice(proto, forger), 'stophub.v1.Notice'), /not a hub key/);
  // The hub's genuine signature, then the body changed: refused.
  const genuine = hubNotice(proto, hub);
  const tampered = {
    ...genuine,
    body: proto.encode('stophub.v1.Notice', { kind: 'NOTICE_KIND_ORDER', case_id: 'C-2', summary: 'stop' }),
  };
  assert.throws(() => conn.openHubEnvelope(tampered, 'stophub.v1.Notice'), /does not verify/);
  // A genuine hub message, but for another member or of another type: refused.
  assert.throws(
    () => conn.openHubEnvelope(hubNotice(proto, hub, { recipient: 'BANKB' }), 'stophub.v1.Notice'),
    /addressed to/,
  );
  assert.throws(() => conn.openHubEnvelope(genuine, 'stophub.v1.Order'), /expected stophub.v1.Order/);
  // Not even claiming to be the hub.
  assert.throws(() => conn.openHubEnvelope(hubNotice(proto, hub, { sender: 'CENTRE' }), 'stophub.v1.Notice'), /claims sender/);
});

// ---- the book -----------------------------------------------------------------------------

test('times keep every digit; the book stops only when the four facts match', () => {
  assert.deepEqual(parseTime('2026-01-02T03:04:05.123456Z'), { seconds: 1767323045n, nanos: 123456000 });
  assert.deepEqual(parseTime('2026-01-02T11:04:05+08:00'), { seconds: 1767323045n, nanos: 0 });
  const book = new Book([
    {
      account_number: '6222',
      holder_name: 'Li Si',
      balance_fen: 6_000_000,
      credits: [{ time: '2026-01-02T03:04:05.123456Z', amount_fen: 5_000_000 }],
    },
  ]);
  const fact = { transaction_time: { seconds: '1767323045', nanos: 123456000 }, amount_fen: '5000000' };
  const stop = (holder, amount, facts = [fact]) => ({
    account: { institution_code: 'NODEBANK', account_number: '6222', holder_name: holder },
    amount_fen: String(amount),
    transactions: facts,
  });
  assert.equal(book.stop('O-1', stop('Wang Wu', 5_000_000), 'NODEBANK').status, 'EXECUTION_STATUS_NO_MATCH');
  const wrongTime = { ...fact, transaction_time: { seconds: '1767323046', nanos: 123456000 } };
  assert.equal(book.stop('O-1', stop('Li Si', 5_000_000, [wrongTime]), 'NODEBANK').reason_code, 'NMAT');
  const held = book.stop('O-1', stop('Li Si', 5_000_000), 'NODEBANK');
  assert.equal(held.status, 'EXECUTION_STATUS_EXECUTED');
  assert.equal(held.amount_held_fen, '5000000');
  assert.equal(held.available_balance_fen, '1000000');
  assert.equal(book.stop('O-1', stop('Li Si', 5_000_000), 'NODEBANK').amount_held_fen, '5000000', 'idempotent');
  const second = book.stop('O-2', stop('Li Si', 5_000_000), 'NODEBANK');
  assert.equal(second.status, 'EXECUTION_STATUS_PARTIALLY_EXECUTED');
  assert.equal(second.reason_code, 'AM04');
  assert.equal(second.amount_held_fen, '1000000');
  assert.equal(micros(fact.transaction_time), 1767323045123456n);
});

// ---- the centre's signature on orders -----------------------------------------------------

test("an order is executed only if the centre's own signature on it verifies", async (t) => {
  const { NodeBank } = require('../src/bank');
  const { conn, proto } = hubConnection(crypto.generateKeyPairSync('ed25519').privateKey);
  t.after(() => conn.close());
  const centre = signing.signerFrom(crypto.generateKeyPairSync('ed25519').privateKey);
  // The registry as the hub's signed GetInstitution answer would give it (cached here).
  conn.registry.set('CENTRE', {
    fetched: Date.now(),
    institution: {
      code: 'CENTRE',
      kind: 'INSTITUTION_KIND_ANTI_FRAUD_CENTRE',
      keys: [{ key_id: centre.keyId, algorithm: centre.algorithm, public_key: centre.publicKey, state: 'KEY_STATE_ACTIVE' }],
    },
  });
  const instruction = {
    case_id: 'C-1',
    stop: {
      account: { institution_code: 'NODEBANK', account_number: '6222', holder_name: 'Li Si' },
      amount_fen: '5000000',
      transactions: [{ transaction_time: { seconds: '1767323045', nanos: 123456000 }, amount_fen: '5000000' }],
    },
  };
  const origin = (signer, body = instruction) =>
    signing.signEnvelope(
      {
        sender: 'CENTRE',
        recipient: 'HUB',
        message_id: 'centre-1',
        create_time: { seconds: '1767323045', nanos: 0 },
        body_type: 'stophub.v1.OrderInstruction',
        body: proto.encode('stophub.v1.OrderInstruction', body),
      },
      signer,
    );
  // What the hub shows: the order decoded as the bank receives it.
  const shown = proto.decode(
    'stophub.v1.OrderInstruction',
    proto.encode('stophub.v1.OrderInstruction', instruction),
  );
  const notice = (env, instr = shown) => ({
    kind: 'NOTICE_KIND_ORDER',
    order: {
      order_id: 'O-1',
      case_id: 'C-1',
      addressed_to: 'NODEBANK',
      issued_by: 'CENTRE',
      origin_message_id: 'centre-1',
      auto_stop_rule_id: '',
      state: 'ORDER_STATE_PENDING',
      instruction: instr,
    },
    origin: env,
  });
  const bank = new NodeBank({ hub: conn, book: null, log: () => {} });
  assert.equal(await bank.authentic(notice(origin(centre))), null);

  const forger = signing.signerFrom(crypto.generateKeyPairSync('ed25519').privateKey);
  const forged = await bank.authentic(notice(origin({ ...forger, keyId: centre.keyId })));
  assert.match(forged, /signature does not verify with CENTRE's key/);

  const bigger = structuredClone(shown);
  bigger.stop.amount_fen = '9000000';
  assert.match(await bank.authentic(notice(origin(centre), bigger)), /differs from what CENTRE signed/);

  const elsewhere = notice(origin(centre));
  elsewhere.order.addressed_to = 'BANKB';
  assert.match(await bank.authentic(elsewhere), /addressed to BANKB/);
});

// ---- lapses ------------------------------------------------------------------------------

test('a lapse lifts the hold only when the order is ours, a stop or freeze, EXPIRED and due', async (t) => {
  const { NodeBank, lapseProblem } = require('../src/bank');
  const { conn } = hubConnection(crypto.generateKeyPairSync('ed25519').privateKey);
  t.after(() => conn.close());
  const book = new Book([
    {
      account_number: '6222',
      holder_name: 'Li Si',
      balance_fen: 5_000_000,
      credits: [{ time: '2026-01-02T03:04:05.123456Z', amount_fen: 5_000_000 }],
    },
  ]);
  const stop = {
    account: { institution_code: 'NODEBANK', account_number: '6222', holder_name: 'Li Si' },
    amount_fen: '5000000',
    transactions: [{ transaction_time: { seconds: '1767323045', nanos: 123456000 }, amount_fen: '5000000' }],
  };
  assert.equal(book.stop('O-1', stop, 'NODEBANK').amount_held_fen, '5000000');
  const now = BigInt(Date.now()) * 1000n;
  const at = (m) => ({ seconds: String(m / 1_000_000n), nanos: 0 });
  const lapse = (changes = {}) => ({
    kind: 'NOTICE_KIND_ORDER_EXPIRED',
    summary: 'stop O-1 lapsed (48 hours passed); NODEBANK must release the hold',
    origin: null,
    order: {
      order_id: 'O-1',
      addressed_to: 'NODEBANK',
      kind: 'ORDER_KIND_STOP',
      state: 'ORDER_STATE_EXPIRED',
      expire_time: at(now - 1_000_000n),
      ...changes,
    },
  });
  const me = 'NODEBANK';
  assert.equal(lapseProblem(lapse().order, me, null, now), null);
  const refused = [
    [lapseProblem(lapse({ addressed_to: 'BANKB' }).order, me, null, now), /addressed to BANKB/],
    [lapseProblem(lapse({ kind: 'ORDER_KIND_RETURN' }).order, me, null, now), /only a stop or a freeze/],
    [lapseProblem(lapse({ state: 'ORDER_STATE_HOLDING' }).order, me, null, now), /not EXPIRED/],
    [lapseProblem(lapse({ expire_time: null }).order, me, null, now), /no expire_time/],
    // A day ahead of this bank's clock: the hub may not lift a hold before its time.
    [lapseProblem(lapse({ expire_time: at(now + 86_400_000_000n) }).order, me, null, now), /has not passed/],
    [lapseProblem(lapse().order, me, { sender: 'CENTRE' }, now), /has no origin/],
  ];
  for (const [why, pattern] of refused) assert.match(why, pattern);
  // Within five minutes of drift it has passed.
  assert.equal(lapseProblem(lapse({ expire_time: at(now + 60_000_000n) }).order, me, null, now), null);

  const said = [];
  const bank = new NodeBank({ hub: conn, book, log: (line) => said.push(JSON.parse(line)) });
  // A lapse not yet due is refused, and the hold stays.
  assert.equal(await bank.handle('7', lapse({ expire_time: at(now + 86_400_000_000n) })), true);
  assert.equal(said.at(-1).event, 'SECURITY');
  assert.equal(book.accounts.get('6222').holds.get('O-1'), 5_000_000n);
  // The genuine lapse lifts it, once.
  assert.equal(await bank.handle('8', lapse()), true);
  assert.deepEqual([said.at(-1).event, said.at(-1).released_fen], ['lifted', '5000000']);
  assert.equal(book.accounts.get('6222').holds.has('O-1'), false);
  assert.equal(await bank.handle('9', lapse()), true);
  assert.deepEqual([said.at(-1).event, said.at(-1).released_fen], ['lifted', '0']);
});
