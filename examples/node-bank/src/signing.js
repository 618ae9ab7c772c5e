'use strict';
// StopHub envelope signing, written from docs/signing.md alone, with node:crypto.
//
//   signing_input = ENVELOPE_TAG || F(algorithm) || F(key_id) || F(sender) || F(recipient)
//                || F(message_id) || F(int64_be(seconds) || int32_be(nanos)) || F(body_type)
//                || F(body) [|| F(operator) || F(approver), only when either is non-empty]
//                F(x) = uint32_be(len(x)) || x
//   key_id        = lowercase_hex(SHA-256(UTF-8(algorithm) || 0x00 || public_key))[0:16]
//   digest        = SHA-256(signing_input)
//
// The body is signed and verified as the exact bytes carried in the envelope; nothing here
// ever parses and re-serializes a body.
//
// sm2-sm3 comes from sm-crypto-v2 (built on the audited @noble curves and hashes): Node's own
// crypto signs SM2 with an empty distinguishing ID, where GB/T 32918 signers, and the hub,
// use 1234567812345678.

const crypto = require('node:crypto');
const { sm2 } = require('sm-crypto-v2');

const ED25519 = 'ed25519';
const ECDSA_P256 = 'ecdsa-p256-sha256';
const SM2_SM3 = 'sm2-sm3';
const ALGORITHMS = Object.freeze([ED25519, ECDSA_P256, SM2_SM3]);
const SM2_DEFAULT_ID = Buffer.from('1234567812345678', 'ascii');
const SM2_MAX_ID = 128;
// id-ecPublicKey with the SM2 curve (1.2.156.10197.1.301), then the BIT STRING of the point.
const SM2_SPKI_PREFIX = Buffer.from(
  '3059301306072a8648ce3d020106082a811ccf5501822d034200',
  'hex',
);
const SM2_CURVE_OID = Buffer.from('06082a811ccf5501822d', 'hex');

const ENVELOPE_TAG = Buffer.from('stophub.envelope.v1\0', 'ascii'); // 20 bytes
// DER prefixes that wrap the raw public key encodings of docs/signing.md.
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const P256_SPKI_PREFIX = Buffer.from(
  '3059301306072a8648ce3d020106082a8648ce3d030107034200',
  'hex',
);
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

class SignatureError extends Error {}

function toBytes(value, what) {
  if (value === undefined || value === null) return Buffer.alloc(0);
  if (typeof value === 'string') return Buffer.from(value, 'utf8'); // no normalisation
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.length);
  throw new SignatureError(`${what} must be a string or bytes`);
}

function field(value, what) {
  const bytes = toBytes(value, what);
  if (bytes.length > 0xffffffff) throw new SignatureError(`${what} is too long to sign`);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(bytes.length);
  return [len, bytes];
}

/** An int64 from whatever a protobuf library hands out: number, string, bigint or Long. */
function toBigInt(value) {
  if (value === undefined || value === null) return 0n;
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new SignatureError(`${value} is not an exact integer`);
    return BigInt(value);
  }
  if (typeof value === 'string') return BigInt(value);
  if (typeof value === 'object' && typeof value.toString === 'function' && 'low' in value) {
    return BigInt(value.toString()); // a Long from protobufjs
  }
  throw new SignatureError(`cannot read ${typeof value} as an int64`);
}

/** {seconds: bigint, nanos: number} of an envelope's create_time; absent reads as 0, 0. */
function createTimeOf(env) {
  const ts = env.create_time;
  if (ts === undefined || ts === null) return { seconds: 0n, nanos: 0 };
  return { seconds: toBigInt(ts.seconds), nanos: Number(ts.nanos || 0) };
}

/** The signing input of an envelope (an object with the snake_case fields of Envelope). */
function signingInput(env) {
  const { seconds, nanos } = createTimeOf(env);
  if (!Number.isInteger(nanos) || nanos < 0 || nanos > 999_999_999) {
    throw new SignatureError(`create_time.nanos ${nanos} is outside 0..999999999`);
  }
  if (seconds < INT64_MIN || seconds > INT64_MAX) {
    throw new SignatureError(`create_time.seconds ${seconds} is not an int64`);
  }
  const time = Buffer.alloc(12);
  time.writeBigInt64BE(seconds, 0);
  time.writeInt32BE(nanos, 8);
  // Fields 10 and 11, the people behind the message: signed only when either is set, so an
  // envelope without them keeps the layout it always had (docs/signing.md).
  const people =
    toBytes(env.operator, 'operator').length > 0 || toBytes(env.approver, 'approver').length > 0
      ? [...field(env.operator, 'operator'), ...field(env.approver, 'approver')]
      : [];
  return Buffer.concat([
    ENVELOPE_TAG,
    ...field(env.algorithm, 'algorithm'),
    ...field(env.key_id, 'key_id'),
    ...field(env.sender, 'sender'),
    ...field(env.recipient, 'recipient'),
    ...field(env.message_id, 'message_id'),
    ...field(time, 'create_time'),
    ...field(env.body_type, 'body_type'),
    ...field(env.body, 'body'),
    ...people,
  ]);
}

function digest(env) {
  return crypto.createHash('sha256').update(signingInput(env)).digest();
}

function keyId(algorithm, rawPublicKey) {
  return crypto
    .createHash('sha256')
    .update(Buffer.from(algorithm, 'utf8'))
    .update(Buffer.from([0]))
    .update(rawPublicKey)
    .digest('hex')
    .slice(0, 16);
}

/** A KeyObject for a raw public key in the encoding docs/signing.md gives per algorithm. */
function publicKeyFromRaw(algorithm, raw) {
  raw = toBytes(raw, 'public key');
  if (algorithm === ED25519) {
    if (raw.length !== 32) throw new SignatureError(`an Ed25519 key is 32 bytes, got ${raw.length}`);
    return crypto.createPublicKey({
      key: Buffer.concat([ED25519_SPKI_PREFIX, raw]),
      format: 'der',
      type: 'spki',
    });
  }
  if (algorithm === ECDSA_P256) {
    // Uncompressed points only, so that a key has one encoding and one key id.
    if (raw.length !== 65 || raw[0] !== 0x04) {
      throw new SignatureError('a P-256 key is the 65-byte uncompressed point 04 || X || Y');
    }
    return crypto.createPublicKey({
      key: Buffer.concat([P256_SPKI_PREFIX, raw]),
      format: 'der',
      type: 'spki',
    });
  }
  if (algorithm === SM2_SM3) return sm2KeyFromRecord(raw);
  throw new SignatureError(`unknown algorithm ${JSON.stringify(algorithm)}`);
}

/**
 * The SM2 key record of docs/signing.md ("The SM2 key record"): the 65-byte point, then the
 * distinguishing ID when it is not the default. {pointHex, userId} as sm-crypto-v2 takes them.
 */
function sm2KeyFromRecord(raw) {
  if (raw.length < 65 || raw[0] !== 0x04) {
    throw new SignatureError('an SM2 key is the 65-byte uncompressed point, then an optional ID');
  }
  const point = raw.subarray(0, 65);
  const id = raw.subarray(65);
  if (id.length > SM2_MAX_ID) throw new SignatureError('the distinguishing ID is at most 128 bytes');
  if (id.equals(SM2_DEFAULT_ID)) {
    throw new SignatureError('the default distinguishing ID is never written after the point');
  }
  const pointHex = point.toString('hex');
  if (!sm2.verifyPublicKey(pointHex)) throw new SignatureError('not a point of the SM2 curve');
  return { sm2: true, pointHex, userId: sm2UserId(id.length > 0 ? id : SM2_DEFAULT_ID) };
}

/** sm-crypto-v2 takes the ID as text and hashes its UTF-8: only IDs that are UTF-8 text. */
function sm2UserId(id) {
  const text = new TextDecoder('utf-8', { fatal: true }).decode(id);
  if (!Buffer.from(text, 'utf8').equals(id)) throw new SignatureError('the ID is not UTF-8 text');
  return text;
}

/** The 32-byte private scalar of an SM2 PKCS#8 key (its ECPrivateKey's privateKey). */
function sm2ScalarOf(privateKey) {
  const der = privateKey.export({ format: 'der', type: 'pkcs8' });
  // PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier, OCTET STRING { ECPrivateKey } }
  // ECPrivateKey ::= SEQUENCE { INTEGER 1, OCTET STRING privateKey, ... }
  const read = (buf, at) => {
    let len = buf[at + 1];
    let start = at + 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      len = buf.readUIntBE(at + 2, n);
      start += n;
    }
    return { tag: buf[at], start, end: start + len };
  };
  const info = read(der, 0);
  const version = read(der, info.start);
  const algorithm = read(der, version.end);
  if (!der.subarray(algorithm.start, algorithm.end).includes(SM2_CURVE_OID)) {
    throw new SignatureError('not an SM2 private key');
  }
  const wrapped = read(der, algorithm.end);
  const ecKey = read(der, wrapped.start);
  const ecVersion = read(der, ecKey.start);
  const scalar = read(der, ecVersion.end);
  if (scalar.tag !== 0x04 || scalar.end - scalar.start !== 32) {
    throw new SignatureError('an SM2 private key holds a 32-byte scalar');
  }
  return der.subarray(scalar.start, scalar.end);
}

/** Whether `sig` is strict DER SEQUENCE { INTEGER r, INTEGER s } and nothing more. */
function strictDerSignature(sig) {
  if (sig.length < 8 || sig[0] !== 0x30 || sig[1] !== sig.length - 2) return false;
  let at = 2;
  for (let i = 0; i < 2; i++) {
    if (sig[at] !== 0x02) return false;
    const len = sig[at + 1];
    if (len < 1 || len > 33 || at + 2 + len > sig.length) return false;
    const first = sig[at + 2];
    if (first & 0x80) return false; // negative
    if (len > 1 && first === 0 && !(sig[at + 3] & 0x80)) return false; // not minimal
    at += 2 + len;
  }
  return at === sig.length;
}

/** [algorithm, raw public key bytes] of a public or private KeyObject. */
function rawPublicKey(key) {
  const pub = key.type === 'private' ? crypto.createPublicKey(key) : key;
  const spki = pub.export({ format: 'der', type: 'spki' });
  if (pub.asymmetricKeyType === 'ed25519') {
    if (!spki.subarray(0, 12).equals(ED25519_SPKI_PREFIX)) throw new SignatureError('odd SPKI');
    return [ED25519, spki.subarray(12)];
  }
  if (pub.asymmetricKeyType === 'ec' && pub.asymmetricKeyDetails.namedCurve === 'prime256v1') {
    if (!spki.subarray(0, 26).equals(P256_SPKI_PREFIX)) throw new SignatureError('odd SPKI');
    return [ECDSA_P256, spki.subarray(26)];
  }
  // Node (OpenSSL 3) reads SM2 keys but names no type for them: the SPKI prefix says it.
  if (spki.length === 91 && spki.subarray(0, 26).equals(SM2_SPKI_PREFIX)) {
    return [SM2_SM3, spki.subarray(26)];
  }
  throw new SignatureError('only Ed25519, ECDSA P-256 and SM2 keys are supported');
}

/** A private KeyObject from an Ed25519 seed (32 bytes). */
function ed25519PrivateKeyFromSeed(seed) {
  if (seed.length !== 32) throw new SignatureError('an Ed25519 seed is 32 bytes');
  return crypto.createPrivateKey({
    key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]),
    format: 'der',
    type: 'pkcs8',
  });
}

/** A private KeyObject from a P-256 scalar (32 bytes). */
function p256PrivateKeyFromScalar(scalar) {
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.setPrivateKey(scalar);
  const point = ecdh.getPublicKey(); // uncompressed
  const b64 = (b) => Buffer.from(b).toString('base64url');
  return crypto.createPrivateKey({
    key: {
      kty: 'EC',
      crv: 'P-256',
      d: b64(scalar),
      x: b64(point.subarray(1, 33)),
      y: b64(point.subarray(33, 65)),
    },
    format: 'jwk',
  });
}

/**
 * An SM2 signer's key: {sm2Private: scalar hex, pointHex, userId}. `distinguishingId` (bytes
 * or text) is the ID it signs under, the default 1234567812345678 when absent.
 */
function sm2PrivateKeyFromScalar(scalar, distinguishingId) {
  const scalarHex = Buffer.from(scalar).toString('hex');
  const pointHex = sm2.getPublicKeyFromPrivateKey(scalarHex);
  const id = distinguishingId === undefined ? SM2_DEFAULT_ID : toBytes(distinguishingId, 'ID');
  if (id.length === 0 || id.length > SM2_MAX_ID) throw new SignatureError('the ID is 1 to 128 bytes');
  return { sm2Private: scalarHex, pointHex, userId: sm2UserId(id), id };
}

function signBytes(algorithm, privateKey, input) {
  if (algorithm === ED25519) return crypto.sign(null, input, privateKey); // pure Ed25519
  if (algorithm === ECDSA_P256) {
    return crypto.sign('sha256', input, { key: privateKey, dsaEncoding: 'der' });
  }
  if (algorithm === SM2_SM3) {
    // hash: true makes the library compute Z from the ID and key, then SM3(Z || input).
    const sig = sm2.doSignature(Uint8Array.from(input), privateKey.sm2Private, {
      der: true,
      hash: true,
      publicKey: privateKey.pointHex,
      userId: privateKey.userId,
    });
    return Buffer.from(sig, 'hex');
  }
  throw new SignatureError(`unknown algorithm ${JSON.stringify(algorithm)}`);
}

function verifyBytes(algorithm, publicKey, input, signature) {
  const sig = toBytes(signature, 'signature');
  try {
    if (algorithm === ED25519) {
      return sig.length === 64 && crypto.verify(null, input, publicKey, sig);
    }
    if (algorithm === ECDSA_P256) {
      return crypto.verify('sha256', input, { key: publicKey, dsaEncoding: 'der' }, sig);
    }
    if (algorithm === SM2_SM3) {
      return (
        strictDerSignature(sig) &&
        sm2.doVerifySignature(Uint8Array.from(input), sig.toString('hex'), publicKey.pointHex, {
          der: true,
          hash: true,
          userId: publicKey.userId,
        })
      );
    }
  } catch {
    return false; // a malformed signature is a signature that does not verify
  }
  throw new SignatureError(`unknown algorithm ${JSON.stringify(algorithm)}`);
}

/** Fill in algorithm, key_id and signature of `env` (which has every other field). */
function signEnvelope(env, signer) {
  env.algorithm = signer.algorithm;
  env.key_id = signer.keyId;
  env.signature = signBytes(signer.algorithm, signer.privateKey, signingInput(env));
  return env;
}

/**
 * Whether `env` verifies with `rawKey`, registered for `algorithm`. The algorithm comes from
 * the registration, never from the envelope alone: an envelope naming another one fails.
 */
function verifyEnvelope(env, algorithm, rawKey) {
  if (env.algorithm !== algorithm) return false;
  if (env.key_id !== keyId(algorithm, toBytes(rawKey, 'public key'))) return false;
  let input;
  try {
    input = signingInput(env);
  } catch {
    return false; // nanos out of range: the envelope is invalid
  }
  return verifyBytes(algorithm, publicKeyFromRaw(algorithm, rawKey), input, env.signature);
}

/**
 * What this bank signs with: a private KeyObject with its algorithm and key id. An SM2 key
 * signs under `distinguishingId` (the default when absent), which is then part of its key
 * record and key id.
 */
function signerFrom(privateKey, { distinguishingId } = {}) {
  const [algorithm, raw] = rawPublicKey(privateKey);
  if (algorithm === SM2_SM3) return sm2Signer(sm2ScalarOf(privateKey), distinguishingId);
  if (distinguishingId !== undefined) throw new SignatureError('an ID is for SM2 keys only');
  return { algorithm, privateKey, publicKey: raw, keyId: keyId(algorithm, raw) };
}

/** An SM2 signer from its 32-byte scalar (and ID). */
function sm2Signer(scalar, distinguishingId) {
  const key = sm2PrivateKeyFromScalar(scalar, distinguishingId);
  const point = Buffer.from(key.pointHex, 'hex');
  const record = key.id.equals(SM2_DEFAULT_ID) ? point : Buffer.concat([point, key.id]);
  return { algorithm: SM2_SM3, privateKey: key, publicKey: record, keyId: keyId(SM2_SM3, record) };
}

module.exports = {
  ALGORITHMS,
  ECDSA_P256,
  ED25519,
  ENVELOPE_TAG,
  SM2_SM3,
  SignatureError,
  createTimeOf,
  digest,
  ed25519PrivateKeyFromSeed,
  keyId,
  p256PrivateKeyFromScalar,
  publicKeyFromRaw,
  rawPublicKey,
  signBytes,
  signEnvelope,
  signerFrom,
  signingInput,
  sm2Signer,
  strictDerSignature,
  toBigInt,
  verifyBytes,
  verifyEnvelope,
};
