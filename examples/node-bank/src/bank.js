#!/usr/bin/env node
'use strict';
// A StopHub member bank in Node.js.
//
// It opens its delivery stream over mutual TLS, checks the hub's signature on every delivery,
// checks the anti-fraud centre's own signature on every order (forwarded unchanged by the hub)
// against the centre's key in the hub's registry, carries out stop orders against its book of
// accounts, answers each with a signed ExecutionResult and acknowledges the delivery once the
// hub has taken the answer. See README.md.

const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const crypto = require('node:crypto');

const signing = require('./signing');
const { selfTest } = require('./selftest');
const { load } = require('./proto');
const { DRAINING, HubConnection, HubError, HubSignatureError, hubTarget, timestamp } = require('./hub');
const { LogForkAlarm, LogWitness } = require('./witness');

const RESIGN_AFTER_MS = 4 * 60_000; // the hub's replay window is 5 minutes
const CENTRE = 'INSTITUTION_KIND_ANTI_FRAUD_CENTRE';

/** Parse an RFC 3339 time to {seconds: bigint, nanos}, keeping every fractional digit. */
function parseTime(text) {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(text);
  if (!m) throw new Error(`not an RFC 3339 time: ${JSON.stringify(text)}`);
  const ms = Date.parse(m[1] + m[3]);
  if (Number.isNaN(ms)) throw new Error(`not a time: ${JSON.stringify(text)}`);
  return { seconds: BigInt(ms / 1000), nanos: Number((m[2] || '').padEnd(9, '0')) };
}

/** A timestamp as microseconds since the epoch (the hub keeps times to the microsecond). */
function micros(ts) {
  if (!ts) return null;
  return signing.toBigInt(ts.seconds) * 1_000_000n + BigInt(Math.floor(Number(ts.nanos || 0) / 1000));
}

const trim = (s) => (s || '').trim();

/** The bank's accounts: what a core banking system would answer for this example. */
class Book {
  constructor(accounts) {
    this.accounts = new Map();
    for (const a of accounts) {
      this.accounts.set(trim(a.account_number), {
        number: trim(a.account_number),
        holder: trim(a.holder_name),
        balance: BigInt(a.balance_fen),
        credits: (a.credits || []).map((c) => ({
          at: micros(parseTime(c.time)),
          amount: BigInt(c.amount_fen),
        })),
        holds: new Map(), // order id -> fen
      });
    }
  }

  static fromFile(path) {
    const data = JSON.parse(fs.readFileSync(path, 'utf8'));
    return new Book(data.accounts || []);
  }

  /**
   * Carry out a stop: hold up to the amount, only if holder, number and every credit's time
   * and amount match the records. Idempotent per order id. Returns an ExecutionResult object.
   */
  stop(orderId, stop, institution) {
    const result = { order_id: orderId, execute_time: timestamp() };
    const acct = this.accounts.get(trim(stop.account && stop.account.account_number));
    const factsMatch =
      acct &&
      trim(stop.account.institution_code) === institution &&
      acct.holder === trim(stop.account.holder_name) &&
      stop.transactions.every((t) =>
        acct.credits.some(
          (c) => c.at === micros(t.transaction_time) && c.amount === BigInt(t.amount_fen),
        ),
      );
    if (!factsMatch) {
      return { ...result, status: 'EXECUTION_STATUS_NO_MATCH', reason_code: 'NMAT', reason: 'the four facts do not match our records' };
    }
    const amount = BigInt(stop.amount_fen);
    let held = acct.holds.get(orderId);
    if (held === undefined) {
      const heldElsewhere = [...acct.holds.values()].reduce((a, b) => a + b, 0n);
      const free = acct.balance - heldElsewhere;
      held = free < 0n ? 0n : free < amount ? free : amount;
      acct.holds.set(orderId, held);
    }
    const totalHeld = [...acct.holds.values()].reduce((a, b) => a + b, 0n);
    const available = acct.balance - totalHeld;
    const full = held === amount;
    return {
      ...result,
      status: full ? 'EXECUTION_STATUS_EXECUTED' : 'EXECUTION_STATUS_PARTIALLY_EXECUTED',
      reason_code: full ? '' : 'AM04',
      reason: full ? 'held in full' : 'balance short of the amount',
      amount_held_fen: held.toString(),
      available_balance_fen: (available < 0n ? 0n : available).toString(),
      onward_transfers: [], // this example's book records no outgoing transfers
    };
  }

  /** Lift the hold placed for an order; the fen it held, or null when this book holds none. */
  release(orderId) {
    for (const acct of this.accounts.values()) {
      const held = acct.holds.get(orderId);
      if (held !== undefined) {
        acct.holds.delete(orderId);
        return held;
      }
    }
    return null;
  }
}

// How far ahead of this bank's clock a lapse's expire_time may be and still count as passed.
const CLOCK_DRIFT_MICROS = 5n * 60n * 1_000_000n;

function sameStop(signed, shown) {
  const view = (i) => {
    const s = i.stop || {};
    const a = s.account || {};
    return JSON.stringify([
      i.case_id,
      i.instruction,
      trim(a.institution_code),
      trim(a.account_number),
      trim(a.holder_name),
      String(s.amount_fen),
      (s.transactions || []).map((t) => [String(micros(t.transaction_time)), String(t.amount_fen)]),
    ]);
  };
  return view(signed) === view(shown);
}

class NodeBank {
  constructor({ hub, book, connectionName = 'node-bank', log = console.log }) {
    this.hub = hub;
    this.book = book;
    this.connectionName = connectionName;
    this.say = (event, fields = {}) =>
      log(JSON.stringify({ time: new Date().toISOString(), bank: hub.institution, event, ...fields }));
    this.answers = new Map(); // order id -> {envelope, sealedAt}
    this.acked = new Set();
    this.stopping = false;
    this.call = null;
  }

  stop() {
    this.stopping = true;
    if (this.call) this.call.cancel();
  }

  /** Deliveries until stop(); reconnects; throws on a hub signature failure or a refusal. */
  async run() {
    let failures = 0;
    while (!this.stopping) {
      try {
        await this.session();
        failures = 0;
      } catch (err) {
        if (this.stopping) return;
        if (err instanceof HubSignatureError || err instanceof LogForkAlarm) throw err;
        if (!(err instanceof HubError) && typeof err.code !== 'number') throw err; // a bug, not the hub
        const hubErr = err instanceof HubError ? err : this.hub.hubError(err);
        if (!hubErr.transient) throw hubErr;
        if (hubErr.reason === DRAINING) {
          // The replica is shutting down and asked its streams to move now: another replica
          // of the hub takes this one (docs/failover.md). Spread over 100 ms, not backed off.
          this.say('stream-moved', { error: hubErr.message });
          failures = 0;
          await new Promise((r) => setTimeout(r, Math.random() * 100));
          continue;
        }
        this.say('stream-lost', { error: hubErr.message });
      }
      if (this.stopping) return;
      failures += 1;
      // Jittered between half the ceiling and the ceiling, the ceiling doubling from 200 ms
      // to 10 s: the same rule as the Python SDK (docs/failover.md).
      const ceiling = Math.min(10_000, 200 * 2 ** (failures - 1));
      await new Promise((r) => setTimeout(r, ceiling / 2 + Math.random() * (ceiling / 2)));
    }
  }

  async session() {
    if (this.hub.witness) this.hub.witness.check();
    const call = this.hub.clients.delivery.StreamDeliveries();
    this.call = call;
    call.on('metadata', (md) => {
      const code = md.get('stophub-subscribed');
      if (code.length > 0) this.say('subscribed', { as: String(code[0]), connection: this.connectionName });
    });
    const subscribe = this.hub.seal('stophub.v1.SubscribeBody', { connection_name: this.connectionName });
    call.write({ envelope: subscribe });
    try {
      for await (const delivery of call) {
        // The hub's newest log checkpoint: after the subscription, with a delivery when it
        // changed, and on an idle stream every 2 minutes (docs/witness.md).
        if (delivery.log_checkpoint && this.hub.witness) await this.hub.witness.see(delivery.log_checkpoint);
        if (String(delivery.sequence) === '0') continue; // only the checkpoint: never acknowledged
        await this.onDelivery(call, delivery); // one at a time, in the hub's order
      }
    } finally {
      this.call = null;
      call.cancel();
    }
  }

  ack(call, sequence) {
    this.acked.add(sequence);
    const env = this.hub.seal('stophub.v1.AckBody', { sequences: [sequence] });
    call.write({ envelope: env });
    this.say('acknowledged', { sequence });
  }

  /** One delivery; its hub signature is checked before anything in it is read. */
  async onDelivery(call, delivery) {
    let notice;
    try {
      notice = this.hub.openHubEnvelope(delivery.envelope, 'stophub.v1.Notice');
    } catch (err) {
      this.say('SECURITY', {
        sequence: delivery.sequence,
        refused: 'delivery whose hub signature does not verify; nothing from this connection is trusted',
        error: err.message,
      });
      throw err;
    }
    const seq = String(delivery.sequence);
    if (this.acked.has(seq)) {
      this.ack(call, seq); // our acknowledgement crossed the redelivery
      return true;
    }
    if (await this.handle(seq, notice)) {
      this.ack(call, seq);
      return true;
    }
    return false;
  }

  async handle(seq, notice) {
    if (notice.kind === 'NOTICE_KIND_ORDER_EXPIRED') {
      this.lapsed(seq, notice);
      return true;
    }
    if (notice.kind !== 'NOTICE_KIND_ORDER') {
      this.say('notice', { sequence: seq, kind: notice.kind, summary: notice.summary });
      return true;
    }
    const order = notice.order;
    const problem = await this.authentic(notice);
    if (problem) {
      this.say('SECURITY', {
        sequence: seq,
        order: order.order_id,
        refused: 'NOT executed',
        why: problem,
      });
      return true; // acknowledged so the stream moves on; never executed
    }
    if (order.state !== 'ORDER_STATE_PENDING') {
      this.say('order', { sequence: seq, order: order.order_id, state: order.state, action: 'nothing to do' });
      return true;
    }
    if (order.instruction.instruction !== 'stop') {
      this.say('order', {
        sequence: seq,
        order: order.order_id,
        kind: order.kind,
        action: 'not handled by this example: answer it by hand',
      });
      return true;
    }
    const result = this.book.stop(order.order_id, order.instruction.stop, this.hub.institution);
    this.say('executed', { sequence: seq, order: order.order_id, status: result.status, held: result.amount_held_fen || '0' });
    return this.answer(order, result);
  }

  /**
   * A stop or freeze lapsed (its time ran out, or its case closed while it held nothing):
   * lift the hold. No signer caused a lapse, so the hub's word is checked as docs/signing.md
   * ("A lapse") says: addressed here, a stop or freeze, EXPIRED, its expire_time passed by
   * this bank's own clock. A lapse only ever lifts a hold.
   */
  lapsed(seq, notice) {
    const order = notice.order || {};
    const why = lapseProblem(order, this.hub.institution, notice.origin);
    if (why) {
      this.say('SECURITY', { sequence: seq, order: order.order_id, refused: 'NOT lifted', why });
      return;
    }
    const released = this.book.release(order.order_id);
    this.say('lifted', {
      sequence: seq,
      order: order.order_id,
      released_fen: released === null ? '0' : released.toString(),
      summary: notice.summary,
    });
  }

  /** null when the order is the centre's, as signed; otherwise why it must not be executed. */
  async authentic(notice) {
    const order = notice.order;
    const me = this.hub.institution;
    if (!order) return 'an order notice without an order';
    if (order.addressed_to !== me) return `the order is addressed to ${order.addressed_to}, not ${me}`;
    const origin = notice.origin;
    if (!origin) return 'the order carries no signed origin';
    if (order.auto_stop_rule_id) {
      return 'issued under a standing rule: this example does not check rule authorisations';
    }
    if (origin.sender !== order.issued_by || origin.message_id !== order.origin_message_id) {
      return (
        `the forwarded instruction is ${origin.sender}/${origin.message_id}; the hub says the ` +
        `order came from ${order.issued_by}/${order.origin_message_id}`
      );
    }
    if (origin.body_type !== 'stophub.v1.OrderInstruction') {
      return `the forwarded instruction is a ${origin.body_type}`;
    }
    // Verify the centre's signature first, on the bytes as they arrived; only then parse.
    const bad = await this.hub.verifyForwarded(origin);
    if (bad) return `the centre's signature: ${bad}`;
    if ((await this.hub.kindOf(origin.sender)) !== CENTRE) {
      return `${origin.sender} is not an anti-fraud centre`;
    }
    let signed;
    try {
      signed = this.hub.proto.decode('stophub.v1.OrderInstruction', origin.body);
    } catch (err) {
      return `the signed instruction does not parse: ${err.message}`;
    }
    if (order.instruction.instruction === 'stop' && !sameStop(signed, order.instruction)) {
      return `the hub's copy of the order differs from what ${origin.sender} signed`;
    }
    if (signed.instruction !== order.instruction.instruction || signed.case_id !== order.case_id) {
      return `the hub's copy of the order differs from what ${origin.sender} signed`;
    }
    return null;
  }

  /** Send the signed answer; true when the hub has it (the delivery may be acknowledged). */
  async answer(order, result) {
    const kept = this.answers.get(order.order_id);
    let envelope;
    if (kept && Date.now() - kept.sealedAt < RESIGN_AFTER_MS) {
      envelope = kept.envelope; // a resend repeats the envelope exactly
    } else {
      envelope = this.hub.seal('stophub.v1.ExecutionResult', result, {
        messageId: `answer-${order.order_id}`,
      });
      this.answers.set(order.order_id, { envelope, sealedAt: Date.now() });
    }
    try {
      const { body } = await this.hub.send('order', 'AnswerOrder', envelope, 'stophub.v1.Order');
      if (body.order_id !== order.order_id) {
        throw new HubSignatureError(`answered ${order.order_id}, the hub answered about ${body.order_id}`);
      }
      this.say('answered', {
        order: order.order_id,
        message_id: envelope.message_id,
        digest: signing.digest(envelope).toString('hex'),
        state: body.state,
        held_fen: body.held_fen,
      });
      return true;
    } catch (err) {
      if (!(err instanceof HubError)) throw err;
      if (err.transient || !err.rejection) {
        this.say('answer-not-delivered', { order: order.order_id, error: err.message });
        return false; // unacknowledged: the hub sends the order again
      }
      if (err.reason === 'MESSAGE_ID_REUSED' || err.reason === 'ORDER_NOT_PENDING') {
        this.say('answered-before', { order: order.order_id, reason: err.reason });
        return true;
      }
      this.answers.delete(order.order_id);
      this.say('ANSWER-REFUSED', { order: order.order_id, error: err.message });
      return false;
    }
  }
}

/** null when a lapse notice passes docs/signing.md's checks; otherwise why it does not. */
function lapseProblem(order, me, origin, nowMicros = BigInt(Date.now()) * 1000n) {
  if (origin) return 'a lapse has no origin: no signer causes one';
  if (order.addressed_to !== me) return `the order is addressed to ${order.addressed_to}, not ${me}`;
  if (order.kind !== 'ORDER_KIND_STOP' && order.kind !== 'ORDER_KIND_FREEZE') {
    return `only a stop or a freeze lapses, not ${order.kind}`;
  }
  if (order.state !== 'ORDER_STATE_EXPIRED') return `the order is ${order.state}, not EXPIRED`;
  const expires = micros(order.expire_time);
  if (expires === null) return 'the order has no expire_time';
  if (expires > nowMicros + CLOCK_DRIFT_MICROS) return 'its expire_time has not passed by this bank\'s clock';
  return null;
}

function readPem(path, what) {
  try {
    return fs.readFileSync(path);
  } catch (err) {
    throw new Error(`cannot read ${what} ${path}: ${err.message}`);
  }
}

/** [algorithm, raw key] of a public key file: PEM SubjectPublicKeyInfo (`stophub keys generate`'s .pub). */
function hubKeyFrom(path) {
  return signing.rawPublicKey(crypto.createPublicKey(readPem(path, 'hub public key')));
}

const USAGE = `usage: node src/bank.js --target HOST:PORT[,HOST:PORT...] --institution CODE --key BANK.key
         --hub-key HUB.pub [--hub-key NEW-HUB.pub] --ca CA.pem --cert CODE-tls.pem
         --tls-key CODE-tls.key --accounts ACCOUNTS.json [--server-name NAME]
         [--connection-name NAME] [--log-checkpoint FILE] [--proto-dir DIR]
         [--distinguishing-id ID]   (an SM2 key's ID, when not 1234567812345678)`;

async function main(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      target: { type: 'string' },
      institution: { type: 'string' },
      key: { type: 'string' },
      'hub-key': { type: 'string', multiple: true },
      ca: { type: 'string' },
      cert: { type: 'string' },
      'tls-key': { type: 'string' },
      'server-name': { type: 'string' },
      accounts: { type: 'string' },
      'connection-name': { type: 'string', default: 'node-bank' },
      'log-checkpoint': { type: 'string' },
      'proto-dir': { type: 'string' },
      'distinguishing-id': { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  for (const name of ['target', 'institution', 'key', 'hub-key', 'ca', 'cert', 'tls-key', 'accounts']) {
    if (!values[name]) {
      console.error(`missing --${name}\n${USAGE}`);
      return 2;
    }
  }
  // Refuse to run with a signing implementation that disagrees with docs/signing.md.
  const failed = selfTest();
  if (failed.length > 0) {
    for (const f of failed) console.error(`signing self-test FAILED: ${f}`);
    return 4;
  }
  let where;
  try {
    // Several replicas of the hub: HOST:PORT,HOST:PORT (docs/failover.md).
    where = await hubTarget(values.target);
  } catch (err) {
    console.error(`--target: ${err.message}\n${USAGE}`);
    return 2;
  }
  let signer;
  try {
    signer = signing.signerFrom(crypto.createPrivateKey(readPem(values.key, 'signing key')), {
      distinguishingId: values['distinguishing-id'],
    });
  } catch (err) {
    console.error(`--key: ${err.message}\n${USAGE}`);
    return 2;
  }
  const proto = load(values['proto-dir']);
  const hub = new HubConnection({
    target: where.target,
    authority: where.authority,
    institution: values.institution,
    signer,
    hubKeys: values['hub-key'].map(hubKeyFrom),
    tls: {
      ca: readPem(values.ca, 'CA certificate'),
      cert: readPem(values.cert, 'TLS certificate'),
      key: readPem(values['tls-key'], 'TLS key'),
      serverName: values['server-name'],
    },
    proto,
  });
  const bank = new NodeBank({
    hub,
    book: Book.fromFile(values.accounts),
    connectionName: values['connection-name'],
  });
  // The newest log checkpoint this bank saw, kept beside its key unless told otherwise.
  const keptFile = values['log-checkpoint'] || path.join(path.dirname(path.resolve(values.key)), 'log-checkpoint.json');
  try {
    hub.witness = new LogWitness({
      hub,
      file: keptFile,
      prove: (first, second) => hub.consistencyProof(first, second),
      say: bank.say,
    });
  } catch (err) {
    bank.say('FATAL', { error: err.message });
    hub.close();
    return 1;
  }
  bank.say('started', {
    key_id: signer.keyId,
    algorithm: signer.algorithm,
    target: values.target,
    log_checkpoint: keptFile,
    kept_tree_size: hub.witness.kept ? hub.witness.kept.treeSize : 0,
  });
  const stop = () => bank.stop();
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  try {
    await bank.run();
    bank.say('stopped');
    return 0;
  } catch (err) {
    if (err instanceof LogForkAlarm) {
      // Someone rewrote the hub's log that this bank saw signed: stop, keep the evidence.
      bank.say('LOG-FORK-ALARM', { kind: err.kind, error: err.message, evidence: err.evidence });
      return 5;
    }
    bank.say(err instanceof HubSignatureError ? 'SECURITY-STOP' : 'FATAL', { error: err.message });
    return err instanceof HubSignatureError ? 3 : 1;
  } finally {
    hub.close();
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}

module.exports = { Book, NodeBank, main, parseTime, micros, sameStop, lapseProblem };
