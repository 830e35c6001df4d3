import { call, type Agent } from "../api";
import { usd, usePoll } from "../hooks";
import { Problem, Ready, Section } from "./common";

/** Agents as the operator reports them; ``compact`` (beside a transcript) leaves out role and tokens. */
export function AgentTable({ agents, only, compact }: { agents: Agent[]; only?: string[]; compact?: boolean }) {
  const shown = only ? agents.filter((a) => only.includes(a.metadata.name)) : agents;
  return (
    <table class="agents">
      <thead>
        <tr>
          <th>Agent</th>
          {!compact && <th>Role</th>}
          <th title="ready / desired">Replicas</th>
          <th>Active pod</th>
          <th>Takeovers</th>
          <th>Turns</th>
          {!compact && <th>Tokens in/out</th>}
          <th>Cost</th>
          <th>Ready</th>
        </tr>
      </thead>
      <tbody>
        {shown.map((a) => (
          <tr key={a.metadata.uid} data-testid={`agent-${a.metadata.name}`}>
            <td>{a.metadata.name}</td>
            {!compact && <td>{a.spec?.role ?? ""}</td>}
            <td title={`${a.status.standbyReplicas} standby`}>
              {a.status.readyReplicas}/{a.status.replicas}
            </td>
            <td class="mono" data-testid="active-pod" title={a.status.previousPod ? `previous: ${a.status.previousPod}` : ""}>
              {a.status.activePod ?? "-"}
            </td>
            <td data-testid="takeovers">{a.status.takeovers}</td>
            <td>{a.status.turnsHandled}</td>
            {!compact && (
              <td>
                {a.status.tokensIn}/{a.status.tokensOut}
              </td>
            )}
            <td>{usd(a.status.costUSD)}</td>
            <td>
              <Ready conditions={a.status.conditions} />
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function AgentsView({ token, namespace }: { token: string; namespace: string }) {
  const agents = usePoll(
    () => call<{ items: Agent[] }>(token, "GET", `/v1/namespaces/${namespace}/agents`),
    2000,
    [token, namespace],
  );
  return (
    <main>
      <Section title="Agents">
        <Problem error={agents.error} status={agents.status} />
        {agents.data && <AgentTable agents={agents.data.items} />}
        {agents.data && agents.data.items.length === 0 && <p class="muted">No Agents in {namespace}.</p>}
      </Section>
    </main>
  );
}
