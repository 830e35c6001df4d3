// The console is built into the Python package (agents/stoa_web/static), so the wheel and the image carry
// it and nothing needs Node at run time. `make console` runs `npm ci && npm run build`.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: "../agents/stoa_web/static",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    // One small bundle; no inline scripts or styles (the API's Content-Security-Policy allows none).
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    target: "es2022",
  },
});
