'use strict';
// The test vectors of docs/signing.md, checked at every start: a bank whose signing layout,
// key ids or algorithms disagree with the specification must not talk to the hub.
// (`npm test` checks the same vectors as read from docs/signing.md itself, so this copy
// cannot drift from the page.)

const signing = require('./signing');

// Copied from docs/signing.md, "Test vectors" (header.create_time left out: informational).
const VECTORS = [
  {
    "vector": "ed25519-basic",
    "seed": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    "public_key": "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",
    "key_id": "7ee0725d6d44b65f",
    "header.algorithm": "ed25519",
    "header.key_id": "7ee0725d6d44b65f",
    "header.sender": "BANKA",
    "header.recipient": "HUB",
    "header.message_id": "msg-0001",
    "header.create_seconds": "1767323045",
    "header.create_nanos": "123456000",
    "header.body_type": "stophub.v1.Report",
    "body": "0a03616263",
    "signing_input": "73746f706875622e656e76656c6f70652e763100000000076564323535313900000010376565303732356436643434623635660000000542414e4b4100000003485542000000086d73672d303030310000000c00000000695735a5075bca000000001173746f706875622e76312e5265706f7274000000050a03616263",
    "digest": "767fa2015ca5b5aecd0644436fdde441cf9a97b1bd3b66fb3e14c37c98019893",
    "signature": "1f55319117fac64aa7d99a34aaf2cee37a1104f5cc040bc1a3d0b04465d7beb4b33165c81b54eb92edeecf042a1449247dfee624a9cc61c73b502b277f3bba01",
    "verifies": "true"
  },
  {
    "vector": "ed25519-unicode-empty-body",
    "seed": "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",
    "public_key": "29acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd7",
    "key_id": "4ce7639386bd5133",
    "header.algorithm": "ed25519",
    "header.key_id": "4ce7639386bd5133",
    "header.sender": "银行乙",
    "header.recipient": "HUB",
    "header.message_id": "止付-1",
    "header.create_seconds": "1770091506",
    "header.create_nanos": "999999999",
    "header.body_type": "google.protobuf.Empty",
    "body": "",
    "signing_input": "73746f706875622e656e76656c6f70652e7631000000000765643235353139000000103463653736333933383662643531333300000009e993b6e8a18ce4b9990000000348554200000008e6ada2e4bb982d310000000c00000000698173f23b9ac9ff00000015676f6f676c652e70726f746f6275662e456d70747900000000",
    "digest": "5cf436c90284c7e80e11534627ac674d93c88822b38cdd4a2dd1bff5617ce54f",
    "signature": "a8807ece99dded0fc9942956271d32162cc037c1b8f4d8f142ca1489cd204e4e583193bee46e7306a37afb17f033dcb2f74d293eaf594de625fee06b7af4f606",
    "verifies": "true"
  },
  {
    "vector": "ecdsa-p256-basic",
    "private_scalar": "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721",
    "public_key": "0460fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb67903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299",
    "key_id": "8ea8185adb406394",
    "header.algorithm": "ecdsa-p256-sha256",
    "header.key_id": "8ea8185adb406394",
    "header.sender": "BANKA",
    "header.recipient": "HUB",
    "header.message_id": "msg-0001",
    "header.create_seconds": "1767323045",
    "header.create_nanos": "123456000",
    "header.body_type": "stophub.v1.Report",
    "body": "0a03616263",
    "signing_input": "73746f706875622e656e76656c6f70652e7631000000001165636473612d703235362d73686132353600000010386561383138356164623430363339340000000542414e4b4100000003485542000000086d73672d303030310000000c00000000695735a5075bca000000001173746f706875622e76312e5265706f7274000000050a03616263",
    "digest": "183be126dc09cd75b4359de1c36fc60d17a24be9b4985514cc8b3427d0725f9a",
    "signature": "3045022100f2de9e0fa462517bdee7e68598489c34abfc53c274b42630d1b11b3cf07dee0f022075126a35b636223043537a044e9c92e0d311af5750db9c8c0ec5f57bcc62a790",
    "verifies": "true"
  },
  {
    "vector": "ed25519-negative-message-id",
    "seed": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    "public_key": "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",
    "key_id": "7ee0725d6d44b65f",
    "header.algorithm": "ed25519",
    "header.key_id": "7ee0725d6d44b65f",
    "header.sender": "BANKA",
    "header.recipient": "HUB",
    "header.message_id": "msg-0002",
    "header.create_seconds": "1767323045",
    "header.create_nanos": "123456000",
    "header.body_type": "stophub.v1.Report",
    "body": "0a03616263",
    "signing_input": "73746f706875622e656e76656c6f70652e763100000000076564323535313900000010376565303732356436643434623635660000000542414e4b4100000003485542000000086d73672d303030320000000c00000000695735a5075bca000000001173746f706875622e76312e5265706f7274000000050a03616263",
    "digest": "8d319c476415bc4f93f2c4990349516b29558524a7d0992c676f8c745564df38",
    "signature": "1f55319117fac64aa7d99a34aaf2cee37a1104f5cc040bc1a3d0b04465d7beb4b33165c81b54eb92edeecf042a1449247dfee624a9cc61c73b502b277f3bba01",
    "verifies": "false"
  },
  {
    "vector": "ed25519-operator-approver",
    "seed": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    "public_key": "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",
    "key_id": "7ee0725d6d44b65f",
    "header.algorithm": "ed25519",
    "header.key_id": "7ee0725d6d44b65f",
    "header.sender": "BANKA",
    "header.recipient": "HUB",
    "header.message_id": "msg-0003",
    "header.create_seconds": "1767323045",
    "header.create_nanos": "123456000",
    "header.body_type": "stophub.v1.Report",
    "header.operator": "li.wei",
    "header.approver": "张敏",
    "body": "0a03616263",
    "signing_input": "73746f706875622e656e76656c6f70652e763100000000076564323535313900000010376565303732356436643434623635660000000542414e4b4100000003485542000000086d73672d303030330000000c00000000695735a5075bca000000001173746f706875622e76312e5265706f7274000000050a03616263000000066c692e77656900000006e5bca0e6958f",
    "digest": "b6ff38b6800517b4833fcb8d2825eac36a10f8e1e1c00380df0019d11d9941f3",
    "signature": "a62c15359853a0763ed139a934a8edb362e704b89b3ed212f9f5dad8781879a7cc417c4a98cd40d7b78fed9d93e9ebae93f167a9605c7ffd9a67cfddafaf7a02",
    "verifies": "true"
  },
  {
    "vector": "sm2-sm3-basic",
    "private_scalar": "3945208f7b2144b13f36e38ac6d39f95889393692860b51a42fb81ef4df7c5b8",
    "distinguishing_id": "1234567812345678",
    "nonce": "363d9317f50adcf35a2486c74d44d741547d6559c3ed6adc8327a9ddb2cb7ae5",
    "z": "b2e14c5c79c6df5b85f4fe7ed8db7a262b9da7e07ccb0ea9f4747b8ccda8a4f3",
    "public_key": "0409f9df311e5421a150dd7d161e4bc5c672179fad1833fc076bb08ff356f35020ccea490ce26775a52dc6ea718cc1aa600aed05fbf35e084a6632f6072da9ad13",
    "key_id": "1f939d728a0699ec",
    "header.algorithm": "sm2-sm3",
    "header.key_id": "1f939d728a0699ec",
    "header.sender": "BANKA",
    "header.recipient": "HUB",
    "header.message_id": "msg-0001",
    "header.create_seconds": "1767323045",
    "header.create_nanos": "123456000",
    "header.body_type": "stophub.v1.Report",
    "body": "0a03616263",
    "signing_input": "73746f706875622e656e76656c6f70652e76310000000007736d322d736d3300000010316639333964373238613036393965630000000542414e4b4100000003485542000000086d73672d303030310000000c00000000695735a5075bca000000001173746f706875622e76312e5265706f7274000000050a03616263",
    "digest": "9314ebc1dce507d4c6cc154d693d522b231ccfd82b7e865d5487e1a0bb7f7a75",
    "signature": "3045022100cf7fbce2503fc4b3c94cdb970ef40978f1ac41e09806bd1b58620bdc696ce47c022065ebb1471e16a9abb088e7c66377e8a6047ac99b8d2a0472bca9206fe3371777",
    "verifies": "true"
  },
  {
    "vector": "sm2-sm3-distinguishing-id",
    "private_scalar": "3945208f7b2144b13f36e38ac6d39f95889393692860b51a42fb81ef4df7c5b8",
    "distinguishing_id": "ALICE123@YAHOO.COM",
    "nonce": "78c831af2daf7ba69867be555effa03b983073d09a037dcb092c7efdbba5bbe7",
    "z": "26db4bc1839bd22e97e1dab667ec5e0a730d5e16521398b4435c576a93afd7ed",
    "public_key": "0409f9df311e5421a150dd7d161e4bc5c672179fad1833fc076bb08ff356f35020ccea490ce26775a52dc6ea718cc1aa600aed05fbf35e084a6632f6072da9ad13414c494345313233405941484f4f2e434f4d",
    "key_id": "e77f06028eba606f",
    "header.algorithm": "sm2-sm3",
    "header.key_id": "e77f06028eba606f",
    "header.sender": "BANKA",
    "header.recipient": "HUB",
    "header.message_id": "msg-0001",
    "header.create_seconds": "1767323045",
    "header.create_nanos": "123456000",
    "header.body_type": "stophub.v1.Report",
    "body": "0a03616263",
    "signing_input": "73746f706875622e656e76656c6f70652e76310000000007736d322d736d3300000010653737663036303238656261363036660000000542414e4b4100000003485542000000086d73672d303030310000000c00000000695735a5075bca000000001173746f706875622e76312e5265706f7274000000050a03616263",
    "digest": "618142899aa5d380ae705c0dd3dd5dcaf838c699f3d2d73bf0f3d75b60a67fa8",
    "signature": "3046022100c59f14bfc444e5cfe11ac2046877d32639b889aaa4c2b60aaf4babec08541c59022100d1c6d3c8736e84dcaa369f8f5f96e23d8491b73a51326caa7cafe44775a23862",
    "verifies": "true"
  }
];

function envelopeOf(v) {
  return {
    algorithm: v['header.algorithm'],
    key_id: v['header.key_id'],
    sender: v['header.sender'],
    recipient: v['header.recipient'],
    message_id: v['header.message_id'],
    create_time: { seconds: v['header.create_seconds'], nanos: Number(v['header.create_nanos']) },
    body_type: v['header.body_type'],
    body: Buffer.from(v.body, 'hex'),
    signature: Buffer.from(v.signature, 'hex'),
    operator: v['header.operator'] || '',
    approver: v['header.approver'] || '',
  };
}

/** What is wrong with this implementation against one vector ([] when it agrees). */
function checkVector(v) {
  const name = v.vector;
  const failures = [];
  const expect = (ok, what) => {
    if (!ok) failures.push(`${name}: ${what}`);
  };
  const algorithm = v['header.algorithm'];
  const pub = Buffer.from(v.public_key, 'hex');
  const env = envelopeOf(v);
  const input = signing.signingInput(env);
  expect(input.toString('hex') === v.signing_input, 'signing input differs');
  expect(signing.digest(env).toString('hex') === v.digest, 'digest differs');
  expect(signing.keyId(algorithm, pub) === v.key_id, 'key id differs');
  const verifies = signing.verifyEnvelope(env, algorithm, pub);
  expect(verifies === (v.verifies === 'true'), `verification gave ${verifies}`);
  let privateKey = null;
  let signer = null;
  if (v.seed) privateKey = signing.ed25519PrivateKeyFromSeed(Buffer.from(v.seed, 'hex'));
  if (v.private_scalar && algorithm === signing.SM2_SM3) {
    signer = signing.sm2Signer(Buffer.from(v.private_scalar, 'hex'), v.distinguishing_id);
  } else if (v.private_scalar) {
    privateKey = signing.p256PrivateKeyFromScalar(Buffer.from(v.private_scalar, 'hex'));
  }
  if (privateKey) signer = signing.signerFrom(privateKey);
  if (signer && v.verifies === 'true') {
    expect(signer.publicKey.equals(pub), 'public key from the private key differs');
    expect(signer.keyId === v.key_id, 'key id of the private key differs');
    const signed = signing.signEnvelope({ ...env, signature: undefined }, signer);
    if (algorithm === signing.ED25519) {
      // Ed25519 is deterministic: the signature must be reproduced exactly.
      expect(signed.signature.toString('hex') === v.signature, 'Ed25519 signature differs');
    } else {
      // ECDSA and SM2 are randomised: a fresh signature must verify.
      expect(signing.verifyEnvelope(signed, algorithm, pub), `own ${algorithm} signature does not verify`);
    }
  }
  return failures;
}

/** Failures against every vector; [] when this implementation agrees with the page. */
function selfTest(vectors = VECTORS) {
  const failures = vectors.flatMap((v) => {
    try {
      return checkVector(v);
    } catch (err) {
      return [`${v.vector}: ${err.message}`];
    }
  });
  if (vectors.length === 0) failures.push('no vectors');
  return failures;
}

module.exports = { VECTORS, checkVector, envelopeOf, selfTest };
