import type { NextConfig } from "next";

// A static export: `unimatch serve` (and nginx in compose) serve `out/` from
// the same origin as /api/v1 and /ws, so the client needs no Node server.
const config: NextConfig = {
  output: "export",
  reactStrictMode: true,
  poweredByHeader: false,
  images: { unoptimized: true },
  // Client routes use query strings (`/chat?m=<id>`), never dynamic segments.
  trailingSlash: false,
};

export default config;
