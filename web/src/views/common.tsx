import type { ComponentChildren } from "preact";
import type { Condition } from "../api";

export function Phase({ phase }: { phase: string }) {
  return (
    <span class={`badge phase-${phase.toLowerCase()}`} data-testid="phase">
      {phase}
    </span>
  );
}

export function Circuit({ state, testid }: { state: string; testid?: string }) {
  return (
    <span class={`badge circuit-${state.toLowerCase()}`} data-testid={testid} data-circuit={state}>
      {state === "halfOpen" ? "half-open" : state}
    </span>
  );
}

export function Ready({ conditions }: { conditions: Condition[] }) {
  const ready = conditions.find((c) => c.type === "Ready");
  if (!ready) return <span class="muted">-</span>;
  return (
    <span class={`badge ready-${ready.status.toLowerCase()}`} title={ready.message}>
      {ready.status === "True" ? "Ready" : ready.reason || "Not ready"}
    </span>
  );
}

export function Problem({ error, status }: { error: string | null; status: number | null }) {
  if (!error) return null;
  const hint =
    status === 403
      ? "Kubernetes RBAC does not let you do this in this namespace."
      : status === 401
        ? "Your token is no longer accepted; sign out and in again."
        : null;
  return (
    <div class="problem" data-testid="problem">
      {error}
      {hint && <div class="hint">{hint}</div>}
    </div>
  );
}

export function Section({ title, children, extra }: { title: string; children: ComponentChildren; extra?: ComponentChildren }) {
  return (
    <section>
      <h2>
        {title}
        {extra}
      </h2>
      {children}
    </section>
  );
}
