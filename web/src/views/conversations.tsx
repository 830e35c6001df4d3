import { useState } from "preact/hooks";
import { call, type Agent, type Conversation } from "../api";
import { ago, href, usd, usePoll } from "../hooks";
import { Phase, Problem, Section } from "./common";

const ROLES = ["moderator", "pro", "con", "member"];

function defaultRole(agent: Agent): string {
  const role = agent.spec?.role ?? "member";
  return ROLES.includes(role) ? role : "member";
}

function NewConversation({ token, namespace, agents }: { token: string; namespace: string; agents: Agent[] }) {
  const [name, setName] = useState("");
  const [topic, setTopic] = useState("");
  const [chosen, setChosen] = useState<Record<string, string>>({});
  const [maxTurns, setMaxTurns] = useState(13);
  const [maxRounds, setMaxRounds] = useState(4);
  const [error, setError] = useState<{ message: string; status: number | null } | null>(null);
  const [busy, setBusy] = useState(false);
  const roles = (agent: Agent) => chosen[agent.metadata.name];
  const participants = agents
    .filter((a) => roles(a))
    .map((a) => ({ agentRef: a.metadata.name, role: roles(a) }))
    .sort((a, b) => Number(b.role === "moderator") - Number(a.role === "moderator"));
  const moderator = participants.find((p) => p.role === "moderator")?.agentRef;
  const start = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const spec: Record<string, unknown> = { topic, participants, maxTurns, maxRounds };
      if (moderator) spec.moderator = moderator;
      await call(token, "POST", `/v1/namespaces/${namespace}/conversations`, { name, spec });
      location.hash = href(namespace, "conversations", name);
    } catch (err) {
      setError({ message: (err as Error).message, status: (err as { status?: number }).status ?? null });
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="new" onSubmit={start}>
      <div class="row">
        <label>
          Name
          <input data-testid="new-name" value={name} placeholder="ai-jobs-debate" onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        </label>
        <label class="grow">
          Topic
          <input
            data-testid="new-topic"
            value={topic}
            placeholder="AI's impact on the job market"
            onInput={(e) => setTopic((e.target as HTMLInputElement).value)}
          />
        </label>
        <label>
          Max turns
          <input data-testid="new-max-turns" type="number" min={1} max={200} value={maxTurns} onInput={(e) => setMaxTurns(Number((e.target as HTMLInputElement).value))} />
        </label>
        <label>
          Max rounds
          <input data-testid="new-max-rounds" type="number" min={1} max={200} value={maxRounds} onInput={(e) => setMaxRounds(Number((e.target as HTMLInputElement).value))} />
        </label>
      </div>
      <div class="row participants">
        Participants:
        {agents.map((a) => (
          <label key={a.metadata.uid} class="participant">
            <input
              type="checkbox"
              data-testid={`participant-${a.metadata.name}`}
              checked={Boolean(roles(a))}
              onChange={(e) => {
                const on = (e.target as HTMLInputElement).checked;
                setChosen((c) => {
                  const next = { ...c };
                  if (on) next[a.metadata.name] = defaultRole(a);
                  else delete next[a.metadata.name];
                  return next;
                });
              }}
            />
            {a.metadata.name}
            {roles(a) && (
              <select
                value={roles(a)}
                onChange={(e) => setChosen((c) => ({ ...c, [a.metadata.name]: (e.target as HTMLSelectElement).value }))}
              >
                {ROLES.map((r) => (
                  <option key={r} value={r}>
                    {r}
                  </option>
                ))}
              </select>
            )}
          </label>
        ))}
        <button data-testid="start" type="submit" disabled={busy || !name || !topic || participants.length === 0}>
          Start
        </button>
      </div>
      {error && <Problem error={error.message} status={error.status} />}
    </form>
  );
}

export function ConversationsView({ token, namespace }: { token: string; namespace: string }) {
  const list = usePoll(
    () => call<{ items: Conversation[] }>(token, "GET", `/v1/namespaces/${namespace}/conversations`),
    2000,
    [token, namespace],
  );
  const agents = usePoll(
    () => call<{ items: Agent[] }>(token, "GET", `/v1/namespaces/${namespace}/agents`),
    5000,
    [token, namespace],
  );
  return (
    <main>
      <Section title="New conversation">
        {agents.data ? (
          <NewConversation token={token} namespace={namespace} agents={agents.data.items} />
        ) : (
          <Problem error={agents.error} status={agents.status} />
        )}
      </Section>
      <Section title="Conversations">
        <Problem error={list.error} status={list.status} />
        <table>
          <thead>
            <tr>
              <th>Name</th>
              <th>Phase</th>
              <th>Turns</th>
              <th>Last speaker</th>
              <th>Cost</th>
              <th>Created</th>
            </tr>
          </thead>
          <tbody>
            {list.data?.items.map((c) => (
              <tr key={c.metadata.uid} data-testid={`conversation-${c.metadata.name}`}>
                <td>
                  <a href={href(namespace, "conversations", c.metadata.name)}>{c.metadata.name}</a>
                </td>
                <td>
                  <Phase phase={c.status.phase} />
                </td>
                <td>
                  {c.status.turns}/{c.spec?.maxTurns ?? "?"}
                </td>
                <td>{c.status.lastSpeaker ?? ""}</td>
                <td>{usd(c.status.costUSD)}</td>
                <td>{ago(c.metadata.creationTimestamp)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </Section>
    </main>
  );
}
