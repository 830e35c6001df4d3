import { useEffect, useState } from "preact/hooks";
import { ApiError, call, saveToken, savedToken, type WhoAmI } from "./api";
import { href, useRoute } from "./hooks";
import { AgentsView } from "./views/agents";
import { ConversationView } from "./views/conversation";
import { ConversationsView } from "./views/conversations";
import { PoliciesView } from "./views/policies";

const NS_KEY = "stoa.namespace";

function Login({ onDone, error }: { onDone: (token: string, me: WhoAmI) => void; error: string | null }) {
  const [token, setToken] = useState("");
  const [problem, setProblem] = useState<string | null>(error);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    try {
      const me = await call<WhoAmI>(token.trim(), "GET", "/v1/whoami");
      onDone(token.trim(), me);
    } catch (err) {
      setProblem((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="login">
      <h1>
        <span class="brand">Stoa</span> console
      </h1>
      <p>
        Sign in with a Kubernetes bearer token, for example <code>kubectl create token &lt;serviceaccount&gt;</code> or
        your cluster's OIDC id-token. What you may see and do is what Kubernetes RBAC lets that identity do.
      </p>
      <form onSubmit={submit}>
        <textarea
          data-testid="login-token"
          rows={4}
          placeholder="eyJhbGciOi..."
          value={token}
          onInput={(e) => setToken((e.target as HTMLTextAreaElement).value)}
        />
        <button data-testid="login-submit" type="submit" disabled={busy || !token.trim()}>
          Sign in
        </button>
      </form>
      {problem && (
        <p class="problem" data-testid="login-error">
          {problem}
        </p>
      )}
    </main>
  );
}

export function App() {
  const route = useRoute();
  const [token, setToken] = useState<string | null>(savedToken());
  const [me, setMe] = useState<WhoAmI | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    if (!token || me) return;
    call<WhoAmI>(token, "GET", "/v1/whoami")
      .then(setMe)
      .catch((err) => {
        if (err instanceof ApiError && err.status === 401) {
          saveToken(null);
          setToken(null);
          setError("Your token is no longer accepted; sign in again.");
        } else setError(String(err.message));
      });
  }, [token]);

  if (!token) {
    return (
      <Login
        error={error}
        onDone={(t, who) => {
          saveToken(t);
          setToken(t);
          setMe(who);
          setError(null);
        }}
      />
    );
  }
  if (!me) return <main class="loading">{error ?? "Signing in..."}</main>;

  const namespace = route.namespace ?? localStorage.getItem(NS_KEY) ?? me.defaultNamespace;
  if (!route.namespace) {
    location.replace(href(namespace, "conversations"));
    return null;
  }
  localStorage.setItem(NS_KEY, namespace);
  const signOut = () => {
    saveToken(null);
    setToken(null);
    setMe(null);
  };
  const tabs: [string, string][] = [
    ["conversations", "Conversations"],
    ["agents", "Agents"],
    ["policies", "Model policies"],
  ];
  return (
    <div class="shell">
      <header>
        <span class="brand">Stoa</span>
        <label class="ns">
          namespace
          <input
            data-testid="ns-input"
            value={namespace}
            onChange={(e) => {
              location.hash = href((e.target as HTMLInputElement).value.trim() || namespace, route.view);
            }}
          />
        </label>
        <nav>
          {tabs.map(([view, label]) => (
            <a
              key={view}
              data-testid={`tab-${view}`}
              class={route.view === view ? "active" : ""}
              href={href(namespace, view)}
            >
              {label}
            </a>
          ))}
        </nav>
        <span class="who" data-testid="whoami" title={me.groups.join(", ")}>
          {me.username}
        </span>
        <button class="link" onClick={signOut}>
          Sign out
        </button>
      </header>
      {route.view === "agents" && <AgentsView token={token} namespace={namespace} />}
      {route.view === "policies" && <PoliciesView token={token} namespace={namespace} />}
      {route.view === "conversations" && !route.name && <ConversationsView token={token} namespace={namespace} />}
      {route.view === "conversations" && route.name && (
        <ConversationView token={token} namespace={namespace} name={route.name} />
      )}
    </div>
  );
}
