// A small JSON Schema validator: the subset agent/api/events.schema.json uses ($ref to $defs,
// oneOf, type, const, enum, properties, required, additionalProperties: false, items, minimum,
// maximum, minLength). It throws on any keyword it does not know, so the schema cannot grow past
// what the tests really check.
import * as fs from 'node:fs';
import * as path from 'node:path';

type Schema = { [key: string]: unknown };

const KNOWN = new Set([
  '$schema', '$id', '$ref', '$defs', 'title', 'description',
  'oneOf', 'type', 'const', 'enum', 'properties', 'required', 'additionalProperties', 'items',
  'minimum', 'maximum', 'minLength',
]);

export function loadEventsSchema(repoRoot: string): Schema {
  return JSON.parse(fs.readFileSync(path.join(repoRoot, 'agent', 'api', 'events.schema.json'), 'utf8')) as Schema;
}

/** Returns the list of problems; empty when `value` is valid. */
export function validate(root: Schema, value: unknown): string[] {
  const errors: string[] = [];
  check(root, root, value, '$', errors);
  return errors;
}

function typeOk(type: string, v: unknown): boolean {
  switch (type) {
    case 'object':
      return typeof v === 'object' && v !== null && !Array.isArray(v);
    case 'array':
      return Array.isArray(v);
    case 'string':
      return typeof v === 'string';
    case 'number':
      return typeof v === 'number' && Number.isFinite(v);
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v);
    case 'boolean':
      return typeof v === 'boolean';
    default:
      throw new Error(`schema type ${type} is not supported by the test validator`);
  }
}

function check(root: Schema, schema: Schema, v: unknown, at: string, errors: string[]): void {
  for (const key of Object.keys(schema)) if (!KNOWN.has(key)) throw new Error(`schema keyword ${key} at ${at} is not supported by the test validator`);
  if (typeof schema.$ref === 'string') {
    const m = /^#\/\$defs\/(.+)$/.exec(schema.$ref);
    const target = m ? (root.$defs as Record<string, Schema> | undefined)?.[m[1]] : undefined;
    if (!target) throw new Error(`unresolvable $ref ${schema.$ref}`);
    check(root, target, v, at, errors);
  }
  if (Array.isArray(schema.oneOf)) {
    const passing = (schema.oneOf as Schema[]).filter((s) => validateSub(root, s, v));
    if (passing.length !== 1) errors.push(`${at}: matches ${passing.length} of oneOf, not exactly 1`);
  }
  if (typeof schema.type === 'string' && !typeOk(schema.type, v)) {
    errors.push(`${at}: not of type ${schema.type}`);
    return;
  }
  if ('const' in schema && v !== schema.const) errors.push(`${at}: is not ${JSON.stringify(schema.const)}`);
  if (Array.isArray(schema.enum) && !schema.enum.includes(v)) errors.push(`${at}: ${JSON.stringify(v)} not in ${JSON.stringify(schema.enum)}`);
  if (typeof v === 'number') {
    if (typeof schema.minimum === 'number' && v < schema.minimum) errors.push(`${at}: below ${schema.minimum}`);
    if (typeof schema.maximum === 'number' && v > schema.maximum) errors.push(`${at}: above ${schema.maximum}`);
  }
  if (typeof v === 'string' && typeof schema.minLength === 'number' && v.length < schema.minLength) errors.push(`${at}: shorter than ${schema.minLength}`);
  if (typeOk('object', v)) {
    const obj = v as Record<string, unknown>;
    const props = (schema.properties ?? {}) as Record<string, Schema>;
    for (const req of (schema.required ?? []) as string[]) if (!(req in obj)) errors.push(`${at}: missing ${req}`);
    for (const [key, sub] of Object.entries(props)) if (key in obj) check(root, sub, obj[key], `${at}.${key}`, errors);
    if (schema.additionalProperties === false) {
      for (const key of Object.keys(obj)) if (!(key in props)) errors.push(`${at}: unexpected property ${key}`);
    }
  }
  if (Array.isArray(v) && schema.items) v.forEach((item, i) => check(root, schema.items as Schema, item, `${at}[${i}]`, errors));
}

function validateSub(root: Schema, schema: Schema, v: unknown): boolean {
  const errors: string[] = [];
  check(root, schema, v, '$', errors);
  return errors.length === 0;
}
