'use strict';
// The bank as a witness of the hub's audit log (docs/witness.md), independently of the Python
// SDK: it keeps the newest hub-signed log checkpoint it has seen in a file (the format of
// hub/crypto/checkpoint.py), accepts a newer one only when the hub proves it an extension of
// the kept one (an RFC 9162 consistency proof, checked here), and raises LogForkAlarm when the
// tree shrank (ROLLBACK) or is another tree (FORK).

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const signing = require('./signing');

const FILE_FORMAT = 'stophub-log-checkpoint/1';
const EVIDENCE_FORMAT = 'stophub-log-fork/1';
const CHECKPOINT_TYPE = 'stophub.v1.LogCheckpoint';
const ROLLBACK = 'ROLLBACK';
const FORK = 'FORK';

/** The hub's log is not an extension of the checkpoint this bank kept. Never go on silently. */
class LogForkAlarm extends Error {
  constructor(kind, reason, kept, seen, evidence) {
    super(
      `${kind}: the hub's audit log is not an extension of the checkpoint this bank kept ` +
        `(${kept.treeSize} entries, root ${kept.root.toString('hex').slice(0, 16)}…): ${reason}` +
        (evidence ? `; evidence in ${evidence}` : ''),
    );
    this.kind = kind;
    this.reason = reason;
    this.kept = kept;
    this.seen = seen;
    this.evidence = evidence;
  }
}

/** The hub could not answer a proof now: nothing is decided. */
class ProofUnavailable extends Error {}
/** The hub refused to prove what it signed. */
class ProofRefused extends Error {}

const sha256 = (...parts) => crypto.createHash('sha256').update(Buffer.concat(parts)).digest();
const nodeHash = (left, right) => sha256(Buffer.from([1]), left, right);

/** RFC 9162 2.1.4.2: is the tree of `first` leaves with `firstRoot` a prefix of the tree of
 * `second` leaves with `secondRoot`? (Sizes as Numbers: a log of 2^53 entries is far off.) */
function verifyConsistency(first, second, proof, firstRoot, secondRoot) {
  if (!(first > 0 && first <= second)) return false;
  if (first === second) return proof.length === 0 && firstRoot.equals(secondRoot);
  const p = [...proof];
  // BigInt for the bit walk: JS bit operators stop at 32 bits.
  const f = BigInt(first);
  if ((f & (f - 1n)) === 0n) p.unshift(firstRoot); // a power of two: a node of the second tree
  if (p.length === 0) return false;
  let fn = BigInt(first - 1);
  let sn = BigInt(second - 1);
  while (fn & 1n) {
    fn >>= 1n;
    sn >>= 1n;
  }
  let fr = p[0];
  let sr = p[0];
  for (const c of p.slice(1)) {
    if (sn === 0n) return false;
    if (fn & 1n || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      while (!(fn & 1n) && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && fr.equals(firstRoot) && sr.equals(secondRoot);
}

/** Write beside the target, flush, rename over it: never half a file. */
function writeAtomically(file, text) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

class LogWitness {
  /**
   * @param {object} opts
   * @param {object} opts.hub    the HubConnection (its pinned hub keys and proto)
   * @param {string} opts.file   where the kept checkpoint lives (null: in memory only)
   * @param {function} opts.prove  async (first, second) -> [Buffer]; throws ProofUnavailable
   *                               or ProofRefused
   * @param {function} opts.say  the bank's log
   */
  constructor({ hub, file = null, prove, say = () => {} }) {
    this.hub = hub;
    this.file = file;
    this.prove = prove;
    this.say = say;
    this.kept = null;
    this.alarm = null;
    this.judged = new Set();
    this.busy = Promise.resolve();
    if (file && fs.existsSync(file)) this.kept = this.load(fs.readFileSync(file, 'utf8'), file);
  }

  /** A checkpoint from its serialized Envelope, once its signature verifies; throws otherwise. */
  open(raw) {
    const env = this.hub.proto.decode('stophub.v1.Envelope', raw);
    if (env.sender !== 'HUB' || env.recipient !== 'AUDIT' || env.body_type !== CHECKPOINT_TYPE) {
      throw new Error(`not the hub's checkpoint (${env.sender} to ${env.recipient}, ${env.body_type})`);
    }
    const trusted = this.hub.hubKeys.get(env.key_id);
    if (!trusted || !signing.verifyEnvelope(env, trusted.algorithm, trusted.raw)) {
      throw new Error(`its signature does not verify under a hub key this bank trusts (${env.key_id})`);
    }
    const body = this.hub.proto.decode(CHECKPOINT_TYPE, env.body);
    const treeSize = Number(body.tree_size);
    const root = Buffer.from(body.root_hash);
    if (!(treeSize >= 1) || root.length !== 32) throw new Error('it signs no tree');
    return { treeSize, root, raw: Buffer.from(raw), keyId: env.key_id, time: body.checkpoint_time };
  }

  load(text, source) {
    const doc = JSON.parse(text);
    if (doc.format !== FILE_FORMAT) throw new Error(`${source} is not a checkpoint file`);
    let cp;
    try {
      cp = this.open(Buffer.from(doc.envelope, 'base64'));
    } catch (err) {
      throw new Error(
        `the kept log checkpoint ${source} does not verify (${err.message}): pin the hub key ` +
          'that signed it, or move the file aside to start witnessing anew',
      );
    }
    if (doc.tree_size !== cp.treeSize || doc.root_hash !== cp.root.toString('hex')) {
      throw new Error(`${source} disagrees with its signed envelope: it was edited`);
    }
    return cp;
  }

  dump(cp) {
    const seconds = Number(cp.time ? cp.time.seconds : 0);
    const nanos = cp.time ? cp.time.nanos : 0;
    // As Python's datetime.isoformat() writes it (hub/crypto/checkpoint.py): for people only.
    const micros = Math.floor(nanos / 1000);
    const fraction = micros ? `.${String(micros).padStart(6, '0')}` : '';
    const at = new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, `${fraction}+00:00`);
    return (
      JSON.stringify(
        {
          format: FILE_FORMAT,
          tree_size: cp.treeSize,
          root_hash: cp.root.toString('hex'),
          checkpoint_time: at,
          key_id: cp.keyId,
          envelope: cp.raw.toString('base64'),
        },
        null,
        2,
      ) + '\n'
    );
  }

  check() {
    if (this.alarm) throw this.alarm;
  }

  /** Judge a checkpoint the hub sent: a serialized Envelope (trailer) or a decoded one (stream). */
  see(envelope) {
    const raw = Buffer.isBuffer(envelope) ? envelope : this.hub.proto.encode('stophub.v1.Envelope', envelope);
    if (this.kept && raw.equals(this.kept.raw)) return Promise.resolve();
    // One judgement at a time, in arrival order.
    const turn = this.busy.then(() => {
      this.check();
      return this.judge(raw);
    });
    this.busy = turn.catch(() => {});
    return turn;
  }

  async judge(raw) {
    const kept = this.kept;
    const key = raw.toString('base64');
    if ((kept && raw.equals(kept.raw)) || this.judged.has(key)) return;
    let seen;
    try {
      seen = this.open(raw);
    } catch (err) {
      this.say('log-checkpoint-ignored', { error: err.message });
      return;
    }
    if (!kept) return this.keep(seen);
    if (seen.treeSize === kept.treeSize) {
      if (!seen.root.equals(kept.root)) this.raise(FORK, 'a checkpoint of the same size with another root', kept, seen);
      this.judged.add(key);
      return;
    }
    if (seen.treeSize > kept.treeSize) {
      const hashes = await this.proof(kept.treeSize, seen.treeSize, kept, seen, FORK);
      if (!hashes) return;
      if (!verifyConsistency(kept.treeSize, seen.treeSize, hashes, kept.root, seen.root)) {
        this.raise(FORK, "the hub's consistency proof fails", kept, seen, hashes);
      }
      return this.keep(seen);
    }
    // Smaller: an older checkpoint of the same log only if the hub still proves it a prefix.
    const hashes = await this.proof(seen.treeSize, kept.treeSize, kept, seen, ROLLBACK);
    if (!hashes) return;
    if (!verifyConsistency(seen.treeSize, kept.treeSize, hashes, seen.root, kept.root)) {
      this.raise(ROLLBACK, 'an older checkpoint that is no prefix of the kept one', kept, seen);
    }
    this.judged.add(key);
  }

  async proof(first, second, kept, seen, kind) {
    try {
      return await this.prove(first, second);
    } catch (err) {
      if (err instanceof ProofUnavailable) {
        this.say('log-checkpoint-not-judged', { tree_size: seen.treeSize, error: err.message });
        return null;
      }
      if (!(err instanceof ProofRefused)) throw err;
      const reason =
        kind === ROLLBACK
          ? `the tree shrank to ${seen.treeSize} entries; the hub cannot prove the kept tree: ${err.message}`
          : `the hub does not prove its tree of ${seen.treeSize} entries extends the kept one: ${err.message}`;
      return this.raise(kind, reason, kept, seen);
    }
  }

  keep(cp) {
    if (this.file) {
      try {
        writeAtomically(this.file, this.dump(cp));
      } catch (err) {
        // The bank goes on: the file keeps an older checkpoint of the same log.
        this.say('log-checkpoint-not-written', { file: this.file, error: err.message });
      }
    }
    this.kept = cp;
    this.judged.clear();
    this.say('log-checkpoint', { tree_size: cp.treeSize, root: cp.root.toString('hex') });
  }

  raise(kind, reason, kept, seen, hashes = []) {
    const evidence = this.file ? this.writeEvidence(kind, reason, kept, seen, hashes) : null;
    this.alarm = new LogForkAlarm(kind, reason, kept, seen, evidence);
    throw this.alarm;
  }

  /** The alarm's evidence beside the kept file; its path, or null when it cannot be written. */
  writeEvidence(kind, reason, kept, seen, hashes) {
    const stamp = new Date().toISOString().replace(/[-:.]/g, '');
    const evidence = path.join(path.dirname(this.file), `log-${kind.toLowerCase()}-${stamp}.json`);
    const doc = {
      format: EVIDENCE_FORMAT,
      kind,
      reason,
      kept: JSON.parse(this.dump(kept)),
      seen: JSON.parse(this.dump(seen)),
      proof: {
        first_size: Math.min(kept.treeSize, seen.treeSize),
        second_size: Math.max(kept.treeSize, seen.treeSize),
        hashes: hashes.map((h) => Buffer.from(h).toString('base64')),
      },
    };
    try {
      writeAtomically(evidence, JSON.stringify(doc, null, 2) + '\n');
      return evidence;
    } catch (err) {
      this.say('log-fork-evidence-not-written', { file: evidence, error: err.message });
      return null;
    }
  }
}

module.exports = {
  EVIDENCE_FORMAT,
  FILE_FORMAT,
  FORK,
  LogForkAlarm,
  LogWitness,
  ProofRefused,
  ProofUnavailable,
  ROLLBACK,
  verifyConsistency,
};
