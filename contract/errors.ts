// Errors that reach a user. Each says what went wrong and, in `hint`, what to do next; coved sends
// them as JSON-RPC errors (code + message + data.hint) and the CLI and the extension show them.
import { ErrorCodes } from './protocol';

export type CoveErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export class CoveError extends Error {
  override name = 'CoveError';
  constructor(
    readonly code: CoveErrorCode,
    message: string,
    readonly hint?: string,
    readonly consoleTail?: string,
  ) {
    super(message);
  }
}

export function isCoveError(e: unknown): e is CoveError {
  return e instanceof CoveError;
}

export const invalidInput = (message: string, hint?: string) => new CoveError(ErrorCodes.invalidInput, message, hint);
export const notFound = (message: string, hint?: string) => new CoveError(ErrorCodes.notFound, message, hint);
export const conflict = (message: string, hint?: string) => new CoveError(ErrorCodes.conflict, message, hint);
export const missingTool = (message: string, hint?: string) => new CoveError(ErrorCodes.missingTool, message, hint);

/** A message for any thrown value, without a stack. */
export function messageOf(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}
