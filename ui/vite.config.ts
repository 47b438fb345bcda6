import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";
import tailwindcss from "@tailwindcss/vite";

// The API serves ui/dist at `/`; in `npm run dev` the API is proxied from NEXUS_API (default :8000).
const api = process.env.NEXUS_API ?? "http://127.0.0.1:8000";
export default defineConfig({
  plugins: [react(), tailwindcss()],
  // Monaco (~2.7 MB, loaded lazily with the first JSON view) is one chunk by design: no size warning for it.
  build: { outDir: "dist", sourcemap: false, chunkSizeWarningLimit: 3000 },
  server: { proxy: { "/v1": api, "/graphql": { target: api, ws: true }, "/.well-known": api, "/healthz": api } },
});
