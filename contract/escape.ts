// Text that came from a guest (file names, console lines, agent messages) is shown to people only
// through these functions, so a hostile guest cannot drive the user's terminal (move the cursor,
// retitle the window, hide text) or reorder what is printed with bidirectional overrides.
// It imports nothing, so the CLI, coved and the extension can all use it.

/** C0 and C1 control characters, DEL, and the Unicode bidirectional overrides and isolates. */
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** The escape for one unsafe character: `\n`, `\t`, `\x1b`, `\u202e`. */
function escapeChar(c: string): string {
  if (c === '\n') return '\\n';
  if (c === '\r') return '\\r';
  if (c === '\t') return '\\t';
  const code = c.charCodeAt(0);
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
}

/** `s` with every control character and bidi override written as an escape; a backslash is doubled. */
export function escapeGuestText(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(UNSAFE, escapeChar);
}

/**
 * Multi-line guest text (a console tail): line breaks and tabs are kept, every other control
 * character is escaped. Backslashes are kept as they are, so ordinary log lines read unchanged.
 */
export function escapeGuestLines(s: string): string {
  return s.replace(UNSAFE, (c) => (c === '\n' || c === '\t' ? c : escapeChar(c)));
}
