// The SDK's hand-written type declarations checked against the broker's generated OpenAPI
// document (docs/openapi.json, derived from the wire structs the broker itself uses): every
// field the schema declares is declared here with the same optionality, and nothing else.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const openapi = JSON.parse(readFileSync(join(repo, 'docs/openapi.json'), 'utf8'));
const schemas = openapi.components.schemas;

/** The body of `export interface <name> { ... }` in a .d.ts file. */
function interfaceBody(file, name) {
  const text = readFileSync(join(repo, file), 'utf8');
  const start = text.indexOf(`export interface ${name} `);
  assert.notEqual(start, -1, `${file} declares ${name}`);
  let depth = 0;
  const open = text.indexOf('{', start);
  for (let i = open; i < text.length; i++) {
    if (text[i] === '{') depth++;
    if (text[i] === '}' && --depth === 0) return text.slice(open + 1, i);
  }
  throw new Error(`${name} in ${file} is not closed`);
}

/** `{ field: { optional, type } }` of an object type's body (top-level members only). */
function members(body) {
  const out = {};
  let depth = 0;
  let current = '';
  const flush = () => {
    const m = current.trim().match(/^([a-z_][a-z0-9_]*)(\??):\s*([\s\S]*)$/);
    if (m) out[m[1]] = { optional: m[2] === '?', type: m[3].trim() };
    current = '';
  };
  for (const line of body.split('\n').filter((l) => !/^\s*(\/\/|\/\*\*|\*)/.test(l))) {
    for (const ch of line + '\n') {
      if (ch === '{') depth++;
      if (ch === '}') depth--;
      if ((ch === ';' || ch === '\n') && depth === 0) flush();
      else current += ch;
    }
  }
  return out;
}

/** The schema an object property stands for, following `$ref` and `[T, null]`. */
function resolveSchema(s) {
  if (s?.$ref) return schemas[s.$ref.split('/').pop()];
  for (const k of ['oneOf', 'anyOf']) {
    const real = s?.[k]?.filter((x) => x.type !== 'null');
    if (real?.length === 1) return resolveSchema(real[0]);
  }
  return s;
}

/** Differences between a declared object type and a schema, recursing into inline object types. */
function compare(where, declared, schema) {
  const problems = [];
  const required = new Set(schema.required ?? []);
  const names = new Set([...Object.keys(declared), ...Object.keys(schema.properties ?? {})]);
  for (const name of names) {
    const d = declared[name];
    const p = schema.properties?.[name];
    if (!p) { problems.push(`${where}.${name} is declared but not in the schema`); continue; }
    if (!d) { problems.push(`${where}.${name} is in the schema but not declared`); continue; }
    if (d.optional === required.has(name)) {
      problems.push(`${where}.${name}: declared ${d.optional ? 'optional' : 'required'}, schema says ${required.has(name) ? 'required' : 'optional'}`);
    }
    const target = resolveSchema(p);
    if (d.type.startsWith('{') && target?.properties) {
      problems.push(...compare(`${where}.${name}`, members(d.type.slice(1, -1)), target));
    }
  }
  return problems;
}

const kinds = () => [...schemas.Kind.enum].sort();
const union = (type) => [...type.matchAll(/'([a-z_]+)'/g)].map((m) => m[1]).sort();

test('sdk-js/node: CreateSessionBody is the generated CreateSessionRequest', () => {
  const declared = members(interfaceBody('sdk-js/node/index.d.ts', 'CreateSessionBody'));
  assert.deepEqual(compare('CreateSessionBody', declared, schemas.CreateSessionRequest), []);
  assert.deepEqual(union(declared.kind.type), kinds());
});

test('sdk-js/node: CreatedSession is the generated CreateSessionResponse', () => {
  const declared = members(interfaceBody('sdk-js/node/index.d.ts', 'CreatedSession'));
  assert.deepEqual(compare('CreatedSession', declared, schemas.CreateSessionResponse), []);
});

test('sdk-js/node: the conversation request body and answer are the generated ones', () => {
  const body = members(interfaceBody('sdk-js/node/index.d.ts', 'ConversationRequestBody'));
  assert.deepEqual(compare('ConversationRequestBody', body, schemas.ConversationRequestInput), []);
  const accepted = members(interfaceBody('sdk-js/node/index.d.ts', 'ConversationRequestAccepted'));
  assert.deepEqual(compare('ConversationRequestAccepted', accepted, schemas.ConversationRequestAccepted), []);
});

test('sdk-js: the page\'s CreatedSession names the same fields, and SessionKind the same kinds', () => {
  // The page is handed the create answer as is; it only needs `id` and `browser_token`, so the
  // rest may be optional there, but no field may be missing or invented.
  const declared = members(interfaceBody('sdk-js/index.d.ts', 'CreatedSession'));
  assert.deepEqual(Object.keys(declared).sort(), Object.keys(schemas.CreateSessionResponse.properties).sort());
  const text = readFileSync(join(repo, 'sdk-js/index.d.ts'), 'utf8');
  assert.deepEqual(union(text.match(/export type SessionKind = ([^;]+);/)[1]), kinds());
});

test('the comparison finds a field the declarations lack', () => {
  const declared = members(interfaceBody('sdk-js/node/index.d.ts', 'CreatedSession'));
  delete declared.ttl_s;
  assert.deepEqual(compare('CreatedSession', declared, schemas.CreateSessionResponse), [
    'CreatedSession.ttl_s is in the schema but not declared',
  ]);
});

/** Like `compare`, but a declaration may leave out schema fields (the SDK types what it reads). */
function compareDeclared(where, declared, schema) {
  return compare(where, declared, schema).filter((p) => !p.endsWith('is in the schema but not declared'));
}
const enumOf = (name) => [...schemas[name].enum].sort();
const dts = (file) => readFileSync(join(repo, file), 'utf8');
const typeUnion = (file, name) => union(dts(file).match(new RegExp(`export type ${name} =([^;]+);`))[1]);

test('sdk-js: Certificate is the generated CertificateInfo', () => {
  const declared = members(interfaceBody('sdk-js/index.d.ts', 'Certificate'));
  assert.deepEqual(compare('Certificate', declared, schemas.CertificateInfo), []);
});

test('sdk-js: statuses, conversation ends and error codes are the generated enums', () => {
  const statuses = union(dts('sdk-js/index.d.ts').match(/export type SessionStatus = ([^;]+);/)[1]);
  const terminal = typeUnion('sdk-js/index.d.ts', 'TerminalStatus');
  assert.deepEqual([...statuses, ...terminal].sort(), enumOf('Status'));
  assert.deepEqual(typeUnion('sdk-js/index.d.ts', 'EndedBy'), enumOf('EndedBy'));
  assert.deepEqual(typeUnion('sdk-js/index.d.ts', 'BrokerErrorCode'), enumOf('ErrorCode'));
  const nodeStatus = members(interfaceBody('sdk-js/node/index.d.ts', 'SessionView')).status.type;
  assert.deepEqual(union(nodeStatus), enumOf('Status'));
});

test('sdk-js: the session view, its result and the request result declare only generated fields', () => {
  assert.deepEqual(compareDeclared('ApprovedResult', members(interfaceBody('sdk-js/index.d.ts', 'ApprovedResult')), schemas.ApprovedResult), []);
  assert.deepEqual(compareDeclared('node SessionView', members(interfaceBody('sdk-js/node/index.d.ts', 'SessionView')), schemas.SessionView), []);
  // The page's SessionView merges the create answer and the snapshots.
  const page = members(interfaceBody('sdk-js/index.d.ts', 'SessionView'));
  assert.deepEqual(compareDeclared('SessionView', page, schemas.SessionView), []);
  // `type` is the frame's tag; `local` is the SDK's own mark.
  const result = members(interfaceBody('sdk-js/index.d.ts', 'RequestResult'));
  delete result.type;
  delete result.local;
  assert.deepEqual(compareDeclared('RequestResult', result, schemas.ConversationRequestView), []);
});

test('the declared-subset comparison finds a field the broker never sends', () => {
  const declared = members(interfaceBody('sdk-js/index.d.ts', 'ApprovedResult'));
  declared.colour = { optional: true, type: 'string' };
  assert.deepEqual(compareDeclared('ApprovedResult', declared, schemas.ApprovedResult), [
    'ApprovedResult.colour is declared but not in the schema',
  ]);
});

test('sdk-js: the events name the device as the broker sends it, and the QR frame\'s fields', () => {
  const status = members(interfaceBody('sdk-js/index.d.ts', 'StatusEvent'));
  const device = members(status.device.type.replace(/\s*\|\s*null$/, '').slice(1, -1));
  assert.deepEqual(compare('StatusEvent.device', device, schemas.DeviceView), []);
  const qr = members(interfaceBody('sdk-js/index.d.ts', 'QrEvent'));
  for (const field of Object.keys(schemas.QrFrame.properties)) assert.ok(qr[field], `QrEvent.${field}`);
});
