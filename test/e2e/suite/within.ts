// A deadline on anything the extension host awaits, with what was awaited in the error.
/** Resolves as `p` does, or rejects after `ms` naming `what`. */
export function within<T>(what: string, ms: number, p: Thenable<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out after ${Math.round(ms / 1000)} s: ${what}`)), ms);
    Promise.resolve(p).then(
      (v) => (clearTimeout(t), resolve(v)),
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
