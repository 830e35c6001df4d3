import { useEffect, useRef, useState } from "preact/hooks";
import { call, follow, type Agent, type Conversation, type ModelPolicy, type StreamEvent, type Turn } from "../api";
import { href, time, usd, usePoll } from "../hooks";
import { AgentTable } from "./agents";
import { Phase, Problem, Section } from "./common";
import { PolicyTargets } from "./policies";

type Part = { kind: "prose" | "quote" | "summary" | "verdict"; text: string };

/** A turn's text in parts: the opposing argument it answers (a `>` line), the moderator's `SUMMARY:` and
 *  `VERDICT:` lines, and the rest as prose. */
export function parts(content: string): Part[] {
  const out: Part[] = [];
  for (const raw of content.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    const labelled = /^(summary|verdict)\s*:\s*(.*)$/i.exec(line);
    const quoted = /^>\s?(.*)$/.exec(line);
    const kind: Part["kind"] = labelled ? (labelled[1].toLowerCase() as Part["kind"]) : quoted ? "quote" : "prose";
    const text = labelled ? labelled[2] : quoted ? quoted[1] : line;
    const last = out[out.length - 1];
    if (last && last.kind === kind && kind === "prose") last.text += ` ${text}`;
    else out.push({ kind, text });
  }
  return out;
}

function TurnCard({ turn }: { turn: Turn }) {
  return (
    <article class={`turn role-${turn.role}`} data-testid="turn" data-seq={turn.seq} data-speaker={turn.speaker}>
      <header>
        <span class="seq">{turn.seq}</span>
        <strong>{turn.speaker}</strong> <span class="role">{turn.role}</span>
        <span class="meta">
          {time(turn.createdAt)} · {turn.tokensOut} tok · {turn.durationMs} ms · pod <span class="mono">{turn.pod}</span>
        </span>
      </header>
      {parts(turn.content).map((p, i) =>
        p.kind === "prose" ? (
          <p key={i}>{p.text}</p>
        ) : p.kind === "quote" ? (
          <blockquote key={i}>{p.text}</blockquote>
        ) : (
          <div key={i} class={`labelled ${p.kind}`} data-testid={p.kind}>
            <span class="label">{p.kind}</span> {p.text}
          </div>
        ),
      )}
    </article>
  );
}

function describe(event: StreamEvent): string {
  const d = event.data;
  switch (event.type) {
    case "phase":
      return `Phase ${d.phase}${d.reason ? `: ${d.reason}` : ""}`;
    case "takeover":
      return `Takeover: ${d.agent} now on ${d.toPod} (was ${d.fromPod})`;
    case "failover":
      return `${d.event === "fallback" ? "Failover" : d.event.replace(/_/g, " ")} (${d.policy}${d.agent ? `, ${d.agent}` : ""}): ${d.reason}`;
    case "circuit":
      return `Circuit ${d.state === "halfOpen" ? "half-open" : d.state}: ${d.policy}/${d.target}${d.reason ? ` (${d.reason})` : ""}`;
    case "gap":
      return d.message;
    case "error":
      return `Stream ended: ${d.message}`;
    case "end":
      return `Finished: ${d.phase}`;
    default:
      return event.type;
  }
}

function eventTime(event: StreamEvent): string {
  return time(event.data.at ?? null) || "";
}

export function ConversationView({ token, namespace, name }: { token: string; namespace: string; name: string }) {
  const base = `/v1/namespaces/${namespace}/conversations/${name}`;
  const conv = usePoll(() => call<Conversation>(token, "GET", base), 2000, [token, base]);
  const agents = usePoll(() => call<{ items: Agent[] }>(token, "GET", `/v1/namespaces/${namespace}/agents`), 2000, [token, namespace]);
  const policies = usePoll(
    () => call<{ items: ModelPolicy[] }>(token, "GET", `/v1/namespaces/${namespace}/modelpolicies`),
    2000,
    [token, namespace],
  );
  const [turns, setTurns] = useState<Turn[]>([]);
  const [events, setEvents] = useState<StreamEvent[]>([]);
  const [omitted, setOmitted] = useState<string[]>([]);
  const [live, setLive] = useState(true);
  const [actionError, setActionError] = useState<{ message: string; status: number | null } | null>(null);
  const transcript = useRef<HTMLDivElement>(null);
  const stick = useRef(true);

  useEffect(() => {
    const abort = new AbortController();
    setTurns([]);
    setEvents([]);
    setLive(true);
    follow(
      token,
      `${base}/events`,
      (event) => {
        if (event.type === "hello") setOmitted(event.data.omitted ?? []);
        else if (event.type === "turn") setTurns((t) => (t.some((x) => x.seq === event.data.seq) ? t : [...t, event.data]));
        else setEvents((e) => [...e, event]);
      },
      abort.signal,
    ).finally(() => setLive(false));
    return () => abort.abort();
  }, [token, base]);

  // Follow new turns while the reader is at the bottom; leave them alone once they scroll up to read.
  useEffect(() => {
    const el = transcript.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [turns.length]);
  const onScroll = () => {
    const el = transcript.current;
    if (el) stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 60;
  };

  const act = async (action: string) => {
    setActionError(null);
    try {
      await call(token, "POST", `${base}/${action}`);
    } catch (err) {
      setActionError({ message: (err as Error).message, status: (err as { status?: number }).status ?? null });
    }
  };
  const c = conv.data;
  const terminal = c ? ["Succeeded", "Failed"].includes(c.status.phase) : false;
  const participants = c?.spec?.participants.map((p) => p.agentRef) ?? [];
  const policyNames = new Set(
    (agents.data?.items ?? [])
      .filter((a) => participants.includes(a.metadata.name))
      .map((a) => a.spec?.modelPolicyRef?.name)
      .filter(Boolean),
  );
  return (
    <main class="conversation">
      <div class="title">
        <a href={href(namespace, "conversations")}>Conversations</a> / <strong>{name}</strong>
        {c && <Phase phase={c.status.phase} />}
        {c && (
          <span class="meta">
            {c.status.turns}/{c.spec?.maxTurns} turns · {c.status.tokensIn}/{c.status.tokensOut} tokens · {usd(c.status.costUSD)}
          </span>
        )}
        <span class={`live ${live ? "on" : ""}`} data-testid="live">
          {live ? "live" : "stream closed"}
        </span>
        <span class="actions">
          <button data-testid="btn-suspend" disabled={!c || terminal || c.spec?.suspend} onClick={() => act("suspend")}>
            Suspend
          </button>
          <button data-testid="btn-resume" disabled={!c || terminal || !c.spec?.suspend} onClick={() => act("resume")}>
            Resume
          </button>
          <button data-testid="btn-stop" class="danger" disabled={!c || terminal} onClick={() => act("stop")}>
            Stop
          </button>
        </span>
      </div>
      <Problem error={conv.error} status={conv.status} />
      {actionError && <Problem error={actionError.message} status={actionError.status} />}
      {c?.spec && <p class="topic">Topic: {c.spec.topic}</p>}
      {c?.status.failureReason && <p class="problem">{c.status.failureReason}</p>}
      <div class="columns">
        <div class="transcript" data-testid="transcript" ref={transcript} onScroll={onScroll}>
          {turns.map((t) => (
            <TurnCard key={t.seq} turn={t} />
          ))}
          {turns.length === 0 && <p class="muted">No turn yet.</p>}
        </div>
        <aside>
          <Section title="Events">
            {omitted.length > 0 && <p class="muted">Not shown to you: {omitted.join("; ")}</p>}
            <ul class="events" data-testid="events">
              {events.map((e, i) => (
                <li key={i} class={`event ev-${e.type}`} data-testid="event" data-type={e.type}>
                  <span class="when">{eventTime(e)}</span> {describe(e)}
                </li>
              ))}
            </ul>
          </Section>
          <Section title="Participants">
            {agents.data && <AgentTable agents={agents.data.items} only={participants} compact />}
          </Section>
          {(policies.data?.items ?? [])
            .filter((p) => policyNames.has(p.metadata.name))
            .map((p) => (
              <Section key={p.metadata.uid} title={`Model policy ${p.metadata.name}`}>
                <PolicyTargets policy={p} />
              </Section>
            ))}
        </aside>
      </div>
    </main>
  );
}
