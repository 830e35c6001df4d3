import { useEffect, useState } from "preact/hooks";
import { ApiError } from "./api";

export type Polled<T> = { data: T | null; error: string | null; status: number | null };

/** `load()` now and every `ms` while mounted; keeps the last good data when a poll fails. */
export function usePoll<T>(load: () => Promise<T>, ms: number, deps: unknown[]): Polled<T> {
  const [state, setState] = useState<Polled<T>>({ data: null, error: null, status: null });
  useEffect(() => {
    let alive = true;
    let timer: number | undefined;
    const tick = async () => {
      try {
        const data = await load();
        if (alive) setState({ data, error: null, status: 200 });
      } catch (err) {
        const status = err instanceof ApiError ? err.status : null;
        if (alive) setState((s) => ({ data: s.data, error: String((err as Error).message), status }));
      }
      if (alive) timer = window.setTimeout(tick, ms);
    };
    setState({ data: null, error: null, status: null });
    tick();
    return () => {
      alive = false;
      window.clearTimeout(timer);
    };
  }, deps);
  return state;
}

/** The hash route: #/<namespace>/<view>[/<name>]. */
export type Route = { namespace: string | null; view: string; name: string | null };

export function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  return { namespace: parts[0] ?? null, view: parts[1] ?? "conversations", name: parts[2] ?? null };
}

export function href(namespace: string, view: string, name?: string): string {
  return `#/${encodeURIComponent(namespace)}/${view}${name ? `/${encodeURIComponent(name)}` : ""}`;
}

export function useRoute(): Route {
  const [route, setRoute] = useState(parseRoute(location.hash));
  useEffect(() => {
    const onChange = () => setRoute(parseRoute(location.hash));
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  return route;
}

export function ago(iso: string | null | undefined): string {
  if (!iso) return "";
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 60) return `${Math.round(seconds)}s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)}h ago`;
  return `${Math.round(seconds / 86400)}d ago`;
}

export function usd(value: number | null | undefined): string {
  return `$${(value ?? 0).toFixed(value && value < 0.01 ? 6 : 4)}`;
}

export function time(iso: string | null | undefined): string {
  return iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : "";
}
