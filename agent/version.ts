/** The agent's version, reported in the `hello` event and its SSH banner. Bump it with protocol changes (0.2.0: `cove-control`, `problems`). */
export const AGENT_VERSION = '0.2.0';
