'use strict';
// The stophub.v1 contract, loaded at run time from the repository's .proto files.
//
// @grpc/proto-loader gives grpc-js the service definitions (request and response messages
// with their single `envelope` field); protobufjs, which proto-loader is built on, encodes and
// decodes the bodies that travel as bytes inside envelopes. Both use the .proto field names
// (snake_case), int64 as decimal strings and enums as their names.

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const DEFAULT_PROTO_DIR = path.resolve(__dirname, '..', '..', '..', 'proto');

const CONVERSION = Object.freeze({
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});

// google.rpc.Status and ErrorInfo, which carry the hub's refusals in the
// grpc-status-details-bin trailer (docs/errors.md). They are not in proto/, so they are
// declared here with the field numbers of google/rpc/status.proto and error_details.proto.
const GOOGLE_RPC = {
  nested: {
    google: {
      nested: {
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: 'int32', id: 1 },
                message: { type: 'string', id: 2 },
                details: { rule: 'repeated', type: 'AnyDetail', id: 3 },
              },
            },
            // google.protobuf.Any, field for field (protobufjs bundles no any.proto here).
            AnyDetail: {
              fields: {
                type_url: { type: 'string', id: 1 },
                value: { type: 'bytes', id: 2 },
              },
            },
            ErrorInfo: {
              fields: {
                reason: { type: 'string', id: 1 },
                domain: { type: 'string', id: 2 },
                metadata: { keyType: 'string', type: 'string', id: 3 },
              },
            },
          },
        },
      },
    },
  },
};

function protoFiles(protoDir) {
  const dir = path.join(protoDir, 'stophub', 'v1');
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.proto'))
    .sort()
    .map((f) => path.join('stophub', 'v1', f));
}

function load(protoDir = DEFAULT_PROTO_DIR) {
  const files = protoFiles(protoDir);
  const definition = protoLoader.loadSync(files, { ...CONVERSION, includeDirs: [protoDir] });
  const services = grpc.loadPackageDefinition(definition).stophub.v1;

  const root = new protobuf.Root();
  // Imports are relative to proto/; protobufjs supplies google/protobuf/*.proto itself.
  root.resolvePath = (_origin, target) =>
    target.startsWith('google/protobuf/') ? target : path.join(protoDir, target);
  root.loadSync(files, { keepCase: true });
  root.addJSON(GOOGLE_RPC.nested);
  root.resolveAll();

  const type = (name) => root.lookupType(name);
  return {
    services,
    root,
    type,
    /** The bytes of body `name` built from a plain object: serialized once, then signed. */
    encode(name, object) {
      const t = type(name);
      for (const key of Object.keys(object)) {
        // fromObject ignores unknown keys; a misspelt field must not vanish silently.
        if (!(key in t.fields) && !(t.oneofs && key in t.oneofs)) {
          throw new Error(`${name} has no field ${key}`);
        }
      }
      return Buffer.from(t.encode(t.fromObject(object)).finish());
    },
    /** A plain object from the bytes of body `name`; throws on malformed bytes. */
    decode(name, bytes) {
      const t = type(name);
      return t.toObject(t.decode(bytes), CONVERSION);
    },
  };
}

module.exports = { DEFAULT_PROTO_DIR, load };
