// The tests', the e2e runner's and bench/'s polling wait is the project's one wait (contract/wait.ts);
// `waitUntil` is its name in the test code.
export { waitFor as waitUntil, waitFor, WaitTimeoutError } from '../../contract/wait';
