// Guest text shown to people: control characters and bidi overrides come out as escapes, so a
// hostile guest cannot drive the user's terminal or reorder what is shown.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { escapeGuestLines, escapeGuestText } from '../../contract/escape';

test('a one-line text: every control character, DEL and bidi override is escaped; a backslash doubled', () => {
  assert.equal(escapeGuestText('a\x1b]0;pwned\x07b'), 'a\\x1b]0;pwned\\x07b');
  assert.equal(escapeGuestText('x\ny\tz\r'), 'x\\ny\\tz\\r');
  assert.equal(escapeGuestText('evil\u202etxt.exe'), 'evil\\u202etxt.exe');
  assert.equal(escapeGuestText('\x7f\x9b'), '\\x7f\\x9b');
  assert.equal(escapeGuestText('C:\\path'), 'C:\\\\path');
  assert.equal(escapeGuestText('plain text, ünïcode'), 'plain text, ünïcode');
});

test('console lines keep their breaks and tabs; anything else is escaped', () => {
  assert.equal(escapeGuestLines('line 1\n\tline 2\x1b[2J\n'), 'line 1\n\tline 2\\x1b[2J\n');
  assert.equal(escapeGuestLines('a\\b'), 'a\\b');
});
