/** The agent's version, reported in the `hello` event. Bump it with protocol changes. */
export const AGENT_VERSION = '0.1.0';
