// Checks agent events against contract/events.schema.json with a JSON Schema library (ajv, draft
// 2020-12), so the schema that non-TypeScript clients read is the one the tests and coved hold real
// traffic to.
import Ajv2020 from 'ajv/dist/2020';
import type { AgentEvent } from './events';
import schema from './events.schema.json';

const validateEvent = new Ajv2020({ allErrors: true }).compile<AgentEvent>(schema);

/** Returns what is wrong with `value` as an agent event; empty when it is a valid one. */
export function agentEventProblems(value: unknown): string[] {
  if (validateEvent(value)) return [];
  return (validateEvent.errors ?? []).map((e) => `${e.instancePath === '' ? '$' : `$${e.instancePath}`}: ${e.message ?? e.keyword}`);
}

/** True when `value` is an agent event the schema accepts. */
export function isAgentEvent(value: unknown): value is AgentEvent {
  return validateEvent(value);
}
