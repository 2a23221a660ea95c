// The readers of coved's settings from its environment. Each takes the text strictly: unset or empty
// means the default, anything it cannot read is a SettingError naming the variable, the value and
// what it takes. coved checks every setting at its start (settings.ts), so a reader called later,
// with the same environment, does not throw.

export class SettingError extends Error {
  override name = 'SettingError';
  constructor(
    readonly key: string,
    readonly value: string,
    /** What the variable takes, as a clause: "a number of seconds greater than 0". */
    readonly takes: string,
  ) {
    super(`${key}=${JSON.stringify(value)} is not a setting: it takes ${takes}, or unset it for the default`);
  }
}

/** The variable's text, trimmed; null when unset or empty. */
export function envText(env: NodeJS.ProcessEnv, key: string): string | null {
  const v = env[key]?.trim();
  return v ? v : null;
}

/** A plain decimal number (no hex, exponent or `Infinity`, which `Number` would also take). */
function decimal(text: string): number | null {
  return /^\d+(\.\d+)?$/.test(text) ? Number(text) : null;
}

/** Seconds greater than 0, returned in ms. */
export function envSecondsMs(env: NodeJS.ProcessEnv, key: string, fallbackMs: number): number {
  const text = envText(env, key);
  if (text === null) return fallbackMs;
  const v = decimal(text);
  if (v === null || v <= 0) throw new SettingError(key, text, 'a number of seconds greater than 0');
  return v * 1000;
}

/** Seconds, where 0 means never; returned in ms (0 stays 0). */
export function envSecondsOrNeverMs(env: NodeJS.ProcessEnv, key: string, fallbackMs: number): number {
  const text = envText(env, key);
  if (text === null) return fallbackMs;
  const v = decimal(text);
  if (v === null) throw new SettingError(key, text, 'a number of seconds (0 turns it off)');
  return v * 1000;
}

/** A number in (0, max]. */
export function envPositive(env: NodeJS.ProcessEnv, key: string, fallback: number, max: number, takes: string): number {
  const text = envText(env, key);
  if (text === null) return fallback;
  const v = decimal(text);
  if (v === null || v <= 0 || v > max) throw new SettingError(key, text, takes);
  return v;
}

/** A whole number in [min, max]. */
export function envWhole(env: NodeJS.ProcessEnv, key: string, fallback: number, min: number, max: number, takes: string): number {
  const text = envText(env, key);
  if (text === null) return fallback;
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) throw new SettingError(key, text, takes);
  return Number(text);
}

const ON = new Set(['on', '1', 'true', 'yes']);
const OFF = new Set(['off', '0', 'false', 'no']);

/** A switch: on/1/true/yes or off/0/false/no, in any case. */
export function envSwitch(env: NodeJS.ProcessEnv, key: string, fallback: boolean): boolean {
  const text = envText(env, key);
  if (text === null) return fallback;
  const v = text.toLowerCase();
  if (ON.has(v)) return true;
  if (OFF.has(v)) return false;
  throw new SettingError(key, text, 'on or off (also 1/0, true/false, yes/no)');
}

/** One of `choices` (lower case); null when unset. */
export function envChoice<T extends string>(env: NodeJS.ProcessEnv, key: string, choices: readonly T[]): T | null {
  const text = envText(env, key);
  if (text === null) return null;
  const v = text.toLowerCase();
  if ((choices as readonly string[]).includes(v)) return v as T;
  throw new SettingError(key, text, `one of ${choices.join(', ')}`);
}
