import { call, type ModelPolicy } from "../api";
import { time, usd, usePoll } from "../hooks";
import { Circuit, Problem, Ready, Section } from "./common";

/** Targets of one policy: circuit from the gateway replicas now (worst replica), else from the status the
 *  operator last wrote; latency, in-flight calls, last error and failover. */
export function PolicyTargets({ policy }: { policy: ModelPolicy }) {
  const live = new Map((policy.gateway?.targets ?? []).map((t) => [t.name, t]));
  const written = new Map(policy.status.targets.map((t) => [t.name, t]));
  const names = policy.spec?.targets.map((t) => t.name) ?? [...written.keys()];
  return (
    <table class="targets">
      <thead>
        <tr>
          <th>Target</th>
          <th>Model</th>
          <th>Circuit</th>
          <th>Latency</th>
          <th>In flight</th>
          <th>Last error</th>
          <th>Last failover</th>
        </tr>
      </thead>
      <tbody>
        {names.map((name) => {
          const now = live.get(name);
          const status = written.get(name);
          const circuit = now?.circuit ?? status?.circuit ?? "unknown";
          const spec = policy.spec?.targets.find((t) => t.name === name);
          return (
            <tr key={name} data-testid={`target-${policy.metadata.name}-${name}`}>
              <td>{name}</td>
              <td class="mono">{spec?.model ?? ""}</td>
              <td>
                <Circuit state={circuit} testid="circuit" />
              </td>
              <td>{now?.latencySeconds != null ? `${Math.round(now.latencySeconds * 1000)} ms` : "-"}</td>
              <td>{now?.inFlight ?? "-"}</td>
              <td class="error-text">{now?.lastError ?? status?.lastError ?? ""}</td>
              <td class="error-text">
                {(now?.lastFailoverReason ?? status?.lastFailoverReason) &&
                  `${time(now?.lastFailoverTime ?? status?.lastFailoverTime)} ${now?.lastFailoverReason ?? status?.lastFailoverReason}`}
              </td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

export function PoliciesView({ token, namespace }: { token: string; namespace: string }) {
  const policies = usePoll(
    () => call<{ items: ModelPolicy[] }>(token, "GET", `/v1/namespaces/${namespace}/modelpolicies`),
    2000,
    [token, namespace],
  );
  return (
    <main>
      <Problem error={policies.error} status={policies.status} />
      {policies.data?.items.map((p) => (
        <Section
          key={p.metadata.uid}
          title={`Model policy ${p.metadata.name}`}
          extra={
            <span class="meta">
              {p.spec?.strategy} · <Ready conditions={p.status.conditions} /> ·{" "}
              {p.gateway
                ? `${p.gateway.replicas} gateway replica(s), spent today ${usd(p.gateway.spentTodayUSD)}`
                : "no gateway replica answering"}
            </span>
          }
        >
          <PolicyTargets policy={p} />
          {p.gateway && p.gateway.recent.length > 0 && (
            <ul class="events compact">
              {p.gateway.recent
                .slice()
                .reverse()
                .map((e, i) => (
                  <li key={i} class={`event ev-${e.event}`}>
                    <span class="when">{time(e.at)}</span> {e.event.replace("_", " ")} {e.target ?? ""}: {e.reason}
                    {e.conversation && <span class="muted"> ({e.conversation})</span>}
                  </li>
                ))}
            </ul>
          )}
        </Section>
      ))}
      {policies.data && policies.data.items.length === 0 && <p class="muted">No ModelPolicies in {namespace}.</p>}
    </main>
  );
}
