// Activation that reports its own failure. VS Code doesn't show a notification when an extension
// fails to activate, so we do it ourselves; this file does not import `vscode`, so the unit tests
// run it as it is.
import { messageOf } from '../../contract/errors';

/**
 * Runs the whole of activation, building the context object included, inside the handler: an
 * error anywhere is shown to the user through `show` and then rethrown, so VS Code also records
 * the activation as failed.
 */
export async function activateReporting<T>(body: () => T | Promise<T>, show: (message: string) => void): Promise<T> {
  try {
    return await body();
  } catch (e) {
    show(`Cove failed to activate: ${messageOf(e)}`);
    throw e;
  }
}
