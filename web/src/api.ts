// The console's side of `stoa api`: JSON calls and the conversation event stream, both with the bearer
// token the user signed in with. Types follow docs/api/openapi.json (only the fields the console reads).

export type Condition = { type: string; status: string; reason: string; message: string };

export type Meta = { name: string; namespace: string; uid: string; creationTimestamp: string | null };

export type Participant = { agentRef: string; role: string };

export type ConversationSpec = {
  topic: string;
  participants: Participant[];
  maxTurns: number;
  maxRounds: number | null;
  moderator: string | null;
  suspend: boolean;
  stop: boolean;
};

export type ConversationStatus = {
  phase: string;
  turns: number;
  lastSpeaker: string | null;
  tokensIn: number;
  tokensOut: number;
  costUSD: number;
  failureReason: string | null;
  conditions: Condition[];
};

export type Conversation = { metadata: Meta; spec: ConversationSpec | null; status: ConversationStatus };

export type AgentStatus = {
  replicas: number;
  readyReplicas: number;
  standbyReplicas: number;
  activePod: string | null;
  previousPod: string | null;
  takeovers: number;
  turnsHandled: number;
  tokensIn: number;
  tokensOut: number;
  costUSD: number;
  conditions: Condition[];
};

export type Agent = {
  metadata: Meta;
  spec: { role: string; modelPolicyRef: { name: string } | null; replicas: number } | null;
  status: AgentStatus;
};

export type TargetHealth = {
  name: string;
  circuit: string;
  lastError?: string | null;
  lastFailoverReason?: string | null;
  lastFailoverTime?: string | null;
};

export type GatewayTarget = TargetHealth & {
  inFlight: number;
  latencySeconds: number | null;
  lastSuccessTime: string | null;
};

export type GatewayEvent = {
  at: string;
  event: string;
  policy: string;
  target: string | null;
  fromTarget: string | null;
  reason: string;
  agent: string | null;
  conversation: string | null;
};

export type ModelPolicy = {
  metadata: Meta;
  spec: { strategy: string; targets: { name: string; model: string; baseURL: string }[] } | null;
  status: { targets: TargetHealth[]; endpoint: string | null; conditions: Condition[] };
  gateway: {
    replicas: number;
    unreachable: string[];
    targets: GatewayTarget[];
    spentTodayUSD: number;
    recent: GatewayEvent[];
  } | null;
};

export type Turn = {
  seq: number;
  speaker: string;
  role: string;
  content: string;
  tokensIn: number;
  tokensOut: number;
  costUSD: number;
  model: string;
  durationMs: number;
  pod: string;
  createdAt: string;
};

export type WhoAmI = { username: string; groups: string[]; defaultNamespace: string };

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const TOKEN_KEY = "stoa.token";

export function savedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveToken(token: string | null): void {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export async function call<T>(token: string, method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  let data: any = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = { message: text };
  }
  if (!resp.ok) throw new ApiError(resp.status, data.message || `${resp.status} ${resp.statusText}`);
  return data as T;
}

export type StreamEvent = { type: string; id: string | null; data: any };

/** Server-Sent Events over fetch (EventSource cannot send a bearer token). Reconnects with the last id,
 *  so nothing is missed; resolves when the stream ends (`end`, `error`, 204) or `signal` aborts. */
export async function follow(
  token: string,
  path: string,
  onEvent: (event: StreamEvent) => void,
  signal: AbortSignal,
): Promise<void> {
  let lastId: string | null = null;
  let retryMs = 2000;
  while (!signal.aborted) {
    try {
      const headers: Record<string, string> = { Authorization: `Bearer ${token}`, Accept: "text/event-stream" };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const resp = await fetch(path, { headers, signal });
      if (resp.status === 204) return;
      if (!resp.ok || !resp.body) {
        const data = await resp.json().catch(() => ({}));
        onEvent({ type: "error", id: null, data: { status: resp.status, message: data.message || resp.statusText } });
        return;
      }
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let type = "message";
      let id: string | null = null;
      let data: string[] = [];
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let newline: number;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline).replace(/\r$/, "");
          buffer = buffer.slice(newline + 1);
          if (line === "") {
            if (data.length) {
              if (id) lastId = id;
              const event = { type, id, data: JSON.parse(data.join("\n")) };
              onEvent(event);
              if (type === "end" || type === "error") return;
            }
            type = "message";
            id = null;
            data = [];
          } else if (!line.startsWith(":")) {
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (field === "event") type = val;
            else if (field === "data") data.push(val);
            else if (field === "id") id = val;
            else if (field === "retry" && /^\d+$/.test(val)) retryMs = Number(val);
          }
        }
      }
    } catch (err) {
      if (signal.aborted) return;
    }
    await new Promise((resolve) => setTimeout(resolve, retryMs));
  }
}
