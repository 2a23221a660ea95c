// The agent logs human text to stderr, one line per event; the init appends it to
// /var/log/cove/cove-agent.log. Never log key material or environment values.

export function log(message: string): void {
  process.stderr.write(`${new Date().toISOString()} ${message}\n`);
}

export function errorText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code && !err.message.startsWith(code) ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}
