'use strict';
// A member's connection to the hub: mutual TLS, signed requests, hub-signed answers checked
// before anything in them is used, and the registry of members' keys.

const crypto = require('node:crypto');
const dns = require('node:dns');
const net = require('node:net');
const grpc = require('@grpc/grpc-js');
const signing = require('./signing');
const { ProofRefused, ProofUnavailable } = require('./witness');

const HUB = 'HUB';
const UNADDRESSED = 'UNKNOWN'; // the hub addresses a refused stream acknowledgement so
const REGISTRY_TTL_MS = 60_000;
// Trailing metadata of every hub answer: its newest signed log checkpoint (docs/witness.md).
const CHECKPOINT_METADATA = 'stophub-log-checkpoint-bin';

// Status codes that say the request did not get through or the hub could not finish it: the
// same message may be sent again (with the same message id).
const TRANSIENT = new Set([
  grpc.status.UNAVAILABLE,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.RESOURCE_EXHAUSTED,
  grpc.status.ABORTED,
  grpc.status.CANCELLED,
  grpc.status.UNKNOWN,
  grpc.status.INTERNAL,
]);

/** The hub's answer could not be trusted. Never act on it: treat it as a security event. */
class HubSignatureError extends Error {}

/** A refusal from the hub or a failure to reach it. */
class HubError extends Error {
  constructor(code, message, { reason = '', field = '', rejection = null } = {}) {
    const name = Object.keys(grpc.status).find((k) => grpc.status[k] === code) || String(code);
    super(`${name}${reason ? ` ${reason}` : ''}: ${message}${field ? ` [field ${field}]` : ''}`);
    this.code = code;
    this.reason = reason;
    this.field = field;
    this.rejection = rejection; // the hub-signed Rejection, when the refusal carried one
  }

  get transient() {
    if (this.rejection) return this.code === grpc.status.UNAVAILABLE;
    return TRANSIENT.has(this.code);
  }
}

// The reason (google.rpc.ErrorInfo) of the UNAVAILABLE that ends the streams of a hub replica
// that is shutting down: reconnect to another replica now (docs/failover.md).
const DRAINING = 'HUB_DRAINING';
const SCHEMES = ['dns:', 'ipv4:', 'ipv6:', 'unix:'];

/**
 * The hub's addresses as given (docs/failover.md): one gRPC target, or several HOST:PORT
 * separated by commas. Throws an Error naming the entry and the form expected.
 */
function parseTargets(text) {
  const given = String(text || '').trim();
  if (SCHEMES.some((s) => given.startsWith(s))) return [{ text: given }];
  const found = [];
  for (const raw of given.split(',')) {
    const entry = raw.trim();
    if (!entry) throw new Error(`empty hub address in ${JSON.stringify(given)}: give HOST:PORT, several separated by commas`);
    const m = /^(?:\[([^\]]+)\]|([^:\[\]]+)):(\d+)$/.exec(entry);
    const port = m ? Number(m[3]) : 0;
    if (!m || port < 1 || port > 65535) {
      throw new Error(`hub address ${JSON.stringify(entry)} is not HOST:PORT (e.g. hub.example.cn:7443 or [::1]:7443); give several comma-separated`);
    }
    const host = m[1] || m[2];
    const shown = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    if (!found.some((f) => f.text === shown)) found.push({ text: shown, host, port });
  }
  return found;
}

/**
 * One grpc-js target over the hub's addresses: a single one as given (a DNS name resolving to
 * several is gRPC's to pick from); several as a static ipv4:/ipv6: list, names resolved now,
 * spoken to (and TLS-checked) as the first entry. {target, authority, host}.
 */
async function hubTarget(text) {
  const entries = parseTargets(text);
  if (entries.length === 1) return { target: entries[0].text };
  const v4 = [];
  const v6 = [];
  const unresolved = [];
  for (const e of entries) {
    let ips;
    try {
      ips = net.isIP(e.host) ? [{ address: e.host, family: net.isIP(e.host) }] : await dns.promises.lookup(e.host, { all: true });
    } catch (err) {
      unresolved.push(`${e.text} (${err.code || err.message})`);
      continue;
    }
    for (const ip of ips) (ip.family === 4 ? v4 : v6).push(ip.family === 4 ? `${ip.address}:${e.port}` : `[${ip.address}]:${e.port}`);
  }
  if (v4.length === 0 && v6.length === 0) throw new Error(`none of the hub addresses resolves: ${unresolved.join(', ')}`);
  const listed = [...new Set(v4.length ? v4 : v6)].join(',');
  return { target: `${v4.length ? 'ipv4' : 'ipv6'}:${listed}`, authority: entries[0].text, host: entries[0].host };
}

/** {seconds: string, nanos} for a Date-like time in milliseconds (or the wall clock). */
function timestamp(ms = Date.now()) {
  const seconds = Math.floor(ms / 1000);
  return { seconds: String(seconds), nanos: (ms - seconds * 1000) * 1_000_000 };
}

class HubConnection {
  /**
   * @param {object} opts
   * @param {string} opts.target        the hub's gRPC target (hubTarget(...).target)
   * @param {string} [opts.authority]   the name several replicas are spoken to as (hubTarget)
   * @param {string} opts.institution   this member's code
   * @param {object} opts.signer        signing.signerFrom(privateKey)
   * @param {Array<[string, Buffer]>} opts.hubKeys  trusted hub keys: [algorithm, raw key]
   * @param {object} opts.tls           {ca, cert, key} PEM buffers; serverName optional
   * @param {object} opts.proto         proto.load()
   */
  constructor({ target, authority, institution, signer, hubKeys, tls, proto, clock = Date.now, log, credentials }) {
    // `credentials` (ready grpc-js channel credentials) is for tests that never dial the hub.
    if (!credentials && (!tls || !tls.ca || !tls.cert || !tls.key)) {
      throw new Error('the hub serves mutual TLS only: give the CA, certificate and key');
    }
    this.institution = institution;
    this.signer = signer;
    this.proto = proto;
    this.clock = clock;
    this.log = log || (() => {});
    this.hubKeys = new Map(
      hubKeys.map(([algorithm, raw]) => [signing.keyId(algorithm, raw), { algorithm, raw }]),
    );
    if (this.hubKeys.size === 0) throw new Error("give the hub's public key");
    this.registry = new Map();
    // The LogWitness (src/witness.js) judging every checkpoint the hub sends, once set.
    this.witness = null;
    credentials = credentials || grpc.credentials.createSsl(tls.ca, tls.key, tls.cert);
    const options = {
      'grpc.initial_reconnect_backoff_ms': 250,
      'grpc.max_reconnect_backoff_ms': 5000,
      'grpc.max_receive_message_length': 8 * 1024 * 1024,
    };
    if (authority) {
      // A static address list has no name of its own: speak to every replica, and check its
      // certificate, as the first name given (one certificate serves all replicas).
      options['grpc.default_authority'] = authority;
      options['grpc.ssl_target_name_override'] = authority.replace(/^\[?(.*?)\]?:\d+$/, '$1');
    }
    if (tls && tls.serverName) options['grpc.ssl_target_name_override'] = tls.serverName;
    const s = proto.services;
    this.clients = {
      delivery: new s.DeliveryService(target, credentials, options),
      order: new s.OrderService(target, credentials, options),
      institution: new s.InstitutionService(target, credentials, options),
      audit: new s.AuditService(target, credentials, options),
    };
  }

  close() {
    for (const c of Object.values(this.clients)) c.close();
  }

  newMessageId() {
    return `${this.institution}-${crypto.randomUUID()}`;
  }

  /** `body` (a plain object of type `bodyType`) serialized once and signed as this member. */
  seal(bodyType, body, { messageId, recipient = HUB } = {}) {
    const env = {
      sender: this.institution,
      recipient,
      message_id: messageId || this.newMessageId(),
      create_time: timestamp(this.clock()),
      body_type: bodyType,
      body: this.proto.encode(bodyType, body),
    };
    return signing.signEnvelope(env, this.signer);
  }

  /**
   * The body of a hub-signed envelope addressed to this member, as a plain object; throws
   * HubSignatureError otherwise. `alsoAddressedTo` admits one more recipient.
   */
  openHubEnvelope(env, bodyType, { alsoAddressedTo } = {}) {
    const what = `hub message ${env && env.message_id ? env.message_id : '(no id)'}`;
    if (!env) throw new HubSignatureError('the hub sent no envelope');
    if (env.sender !== HUB) {
      throw new HubSignatureError(`${what} claims sender ${JSON.stringify(env.sender)}, not HUB`);
    }
    const trusted = this.hubKeys.get(env.key_id);
    if (!trusted || trusted.algorithm !== env.algorithm) {
      throw new HubSignatureError(
        `${what} is signed with ${env.algorithm} key ${JSON.stringify(env.key_id)}, ` +
          `not a hub key this bank trusts (${[...this.hubKeys.keys()].join(', ')})`,
      );
    }
    if (!signing.verifyEnvelope(env, trusted.algorithm, trusted.raw)) {
      throw new HubSignatureError(`${what} does not verify with the hub key ${env.key_id}`);
    }
    // A genuine hub message for another member or of another type, replayed here, passes
    // the signature check; these two checks make it fail.
    if (env.recipient !== this.institution && env.recipient !== alsoAddressedTo) {
      throw new HubSignatureError(`${what} is addressed to ${JSON.stringify(env.recipient)}`);
    }
    if (env.body_type !== bodyType) {
      throw new HubSignatureError(`${what} carries a ${env.body_type}, expected ${bodyType}`);
    }
    try {
      return this.proto.decode(bodyType, env.body);
    } catch (err) {
      throw new HubSignatureError(`${what} is not a valid ${bodyType}: ${err.message}`);
    }
  }

  /** The refusal in a gRPC error, from the hub-signed Rejection when there is one. */
  hubError(err, { messageId = null } = {}) {
    const code = err.code;
    let message = err.details || err.message || '';
    let reason = '';
    let field = '';
    const raw = err.metadata ? err.metadata.get('grpc-status-details-bin') : [];
    if (!raw || raw.length === 0) return new HubError(code, message);
    let status;
    try {
      status = this.proto.decode('google.rpc.Status', raw[0]);
    } catch {
      return new HubError(code, message);
    }
    let signed = null;
    for (const detail of status.details) {
      const type = detail.type_url.slice(detail.type_url.lastIndexOf('/') + 1);
      if (type === 'google.rpc.ErrorInfo') {
        const info = this.proto.decode('google.rpc.ErrorInfo', detail.value);
        reason = info.reason;
        field = field || (info.metadata && info.metadata.field) || '';
      } else if (type === 'stophub.v1.Envelope') {
        signed = this.proto.decode('stophub.v1.Envelope', detail.value);
      }
    }
    if (!signed) return new HubError(code, message, { reason, field });
    const rejection = this.openHubEnvelope(signed, 'stophub.v1.Rejection', {
      alsoAddressedTo: messageId === null ? UNADDRESSED : undefined,
    });
    if (messageId !== null && (rejection.message_id !== messageId || rejection.sender !== this.institution)) {
      throw new HubSignatureError(
        `the hub-signed refusal names ${rejection.sender}/${rejection.message_id}, ` +
          `not ${this.institution}/${messageId}`,
      );
    }
    const signedCode = grpc.status[rejection.code];
    message = rejection.message || message;
    return new HubError(signedCode === undefined ? code : signedCode, message, {
      reason: rejection.reason || reason,
      field: rejection.field || field,
      rejection,
    });
  }

  /**
   * Send a signed envelope to a unary RPC; the hub-signed answer's body as a plain object. The
   * log checkpoint in the answer's trailing metadata is witnessed (a LogForkAlarm rejects).
   */
  send(client, method, envelope, answerType, { timeoutMs = 30_000, witness = true } = {}) {
    const watching = witness && this.witness;
    if (watching) this.witness.check();
    return new Promise((resolve, reject) => {
      const deadline = new Date(Date.now() + timeoutMs);
      // grpc-js reports the trailers ('status') right after the answer's callback.
      let ended = null;
      const call = this.clients[client][method]({ envelope }, { deadline }, (err, response) => {
        (async () => {
          if (err) {
            const refusal = this.hubError(err, { messageId: envelope.message_id });
            if (watching) await this.witnessTrailers(err.metadata);
            throw refusal;
          }
          const answer = { envelope: response.envelope, body: this.openHubEnvelope(response.envelope, answerType) };
          if (watching) await this.witnessTrailers((await ended).metadata);
          return answer;
        })().then(resolve, reject);
      });
      ended = new Promise((r) => call.on('status', r));
    });
  }

  async witnessTrailers(metadata) {
    const values = metadata ? metadata.get(CHECKPOINT_METADATA) : [];
    for (const value of values) await this.witness.see(Buffer.from(value));
  }

  /** The hub's consistency proof between its trees of `first` and `second` entries. */
  async consistencyProof(first, second) {
    let body;
    for (let attempt = 1; ; attempt++) {
      const env = this.seal('stophub.v1.GetConsistencyProofBody', {
        first_size: String(first),
        second_size: String(second),
      });
      try {
        // Not witnessed itself: the checkpoint under judgement rides on its answer too.
        ({ body } = await this.send('audit', 'GetConsistencyProof', env, 'stophub.v1.ConsistencyProof', {
          witness: false,
        }));
        break;
      } catch (err) {
        if (!(err instanceof HubError)) throw err;
        // UNAUTHENTICATED judges this request's envelope (its time, key or signature), not the
        // proof: once more with a fresh envelope, then the proof cannot be had now.
        if (err.code === grpc.status.UNAUTHENTICATED && attempt === 1) continue;
        if (err.transient || err.code === grpc.status.PERMISSION_DENIED || err.code === grpc.status.UNAUTHENTICATED) {
          throw new ProofUnavailable(err.message);
        }
        throw new ProofRefused(err.message);
      }
    }
    if (Number(body.first_size) !== first || Number(body.second_size) !== second) {
      throw new ProofRefused(`asked ${first}..${second}, the hub proved ${body.first_size}..${body.second_size}`);
    }
    return body.hashes.map((h) => Buffer.from(h));
  }

  async getInstitution(code) {
    const env = this.seal('stophub.v1.GetInstitutionBody', { code });
    const { body } = await this.send('institution', 'GetInstitution', env, 'stophub.v1.Institution');
    // The hub's answers do not name the request they answer: the content must match it.
    if (body.code !== code) {
      throw new HubSignatureError(`asked about ${code}, the hub answered about ${body.code}`);
    }
    this.registry.set(code, { institution: body, fetched: Date.now() });
    return body;
  }

  async member(code, { fresh = false } = {}) {
    const cached = this.registry.get(code);
    if (!fresh && cached && Date.now() - cached.fetched < REGISTRY_TTL_MS) return cached.institution;
    return this.getInstitution(code);
  }

  /**
   * null if `env`, forwarded by the hub, verifies with its sender's key as registered with
   * the hub (and valid when the envelope was made); otherwise why not.
   */
  async verifyForwarded(env) {
    const who = `${env.sender || '(no sender)'}/${env.message_id || '(no id)'}`;
    if (!env.sender || !env.signature || env.signature.length === 0) return `${who} is not signed`;
    let inst;
    try {
      inst = await this.member(env.sender);
    } catch (err) {
      if (err instanceof HubError && err.code === grpc.status.NOT_FOUND && err.rejection) {
        return `${who}: ${env.sender} is not a registered member`;
      }
      throw err;
    }
    let key = inst.keys.find((k) => k.key_id === env.key_id);
    if (!key) {
      inst = await this.member(env.sender, { fresh: true }); // registered since we looked
      key = inst.keys.find((k) => k.key_id === env.key_id);
    }
    if (!key) return `${who}: ${env.sender} has no key ${JSON.stringify(env.key_id)}`;
    const made = signing.createTimeOf(env).seconds;
    if (key.state === 'KEY_STATE_REVOKED') {
      const revoked = key.revoke_time ? signing.toBigInt(key.revoke_time.seconds) : null;
      if (revoked === null || revoked <= made) return `${who}: key ${key.key_id} was revoked`;
    } else if (key.state !== 'KEY_STATE_ACTIVE') {
      return `${who}: key ${key.key_id} is ${key.state}`;
    }
    if (key.algorithm !== env.algorithm) {
      return `${who}: key ${key.key_id} is ${key.algorithm}, the envelope says ${env.algorithm}`;
    }
    if (!signing.verifyEnvelope(env, key.algorithm, key.public_key)) {
      return `${who}: signature does not verify with ${env.sender}'s key ${key.key_id}`;
    }
    return null;
  }

  /** Kind of member `code` (e.g. INSTITUTION_KIND_ANTI_FRAUD_CENTRE). */
  async kindOf(code) {
    return (await this.member(code)).kind;
  }
}

module.exports = {
  DRAINING,
  HUB,
  HubConnection,
  HubError,
  HubSignatureError,
  TRANSIENT,
  hubTarget,
  parseTargets,
  timestamp,
};
