import { createHash } from 'node:crypto';

/**
 * The dashboard's HTML shell. It holds no data and no secret: everything comes from the
 * admin-key-guarded stream once the page has the key. uPlot and eventsource-parser are resolved
 * through an import map, so the compiled client keeps its plain imports of both packages.
 */

/** Where the page's static files are served. */
export const ASSET_BASE = '/dashboard/assets';

const IMPORT_MAP = JSON.stringify({
  imports: { uplot: `${ASSET_BASE}/vendor/uPlot.esm.js`, 'eventsource-parser': `${ASSET_BASE}/vendor/eventsource-parser.js` },
});

/** CSP hash of the inline import map, the only inline script. */
const IMPORT_MAP_HASH = `'sha256-${createHash('sha256').update(IMPORT_MAP).digest('base64')}'`;

/** Headers sent with the page: no inline script but the import map, no framing, no referrer. */
export const PAGE_HEADERS: Record<string, string> = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-cache',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'content-security-policy': [
    "default-src 'self'",
    `script-src 'self' ${IMPORT_MAP_HASH}`,
    // uPlot positions its legend and cursor with inline styles.
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' blob: data:",
    "connect-src 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'none'",
  ].join('; '),
};

/** The page. */
export function dashboardHtml(): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nodeworker autoscaler</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${ASSET_BASE}/vendor/uPlot.min.css">
<link rel="stylesheet" href="${ASSET_BASE}/dashboard.css">
<script type="importmap">${IMPORT_MAP}</script>
<script type="module" src="${ASSET_BASE}/app.js"></script>
</head>
<body>
<header class="top">
  <h1>nodeworker autoscaler</h1>
  <span id="conn" class="conn conn-off" role="status">not connected</span>
  <span id="clock" class="muted"></span>
  <button id="lock" type="button" hidden>forget admin key</button>
</header>
<main>
  <section id="unlock" class="card unlock" hidden>
    <h2>Admin key</h2>
    <p class="muted">The dashboard reads and changes the engine through the admin API. The key is kept in this
    tab's sessionStorage only (gone when the tab closes) and sent as <code>Authorization: Bearer</code>.</p>
    <form id="unlock-form" autocomplete="off">
      <label class="field"><span>admin key</span>
        <input id="admin-key" name="admin_key" type="password" required autocomplete="off">
        <small class="field-error" data-field="admin_key"></small>
      </label>
      <button type="submit">Open dashboard</button>
    </form>
  </section>
  <noscript><p class="card">The dashboard needs JavaScript.</p></noscript>
  <section id="app" hidden>
    <nav id="tabs" class="tabs" aria-label="endpoints"></nav>
    <p id="no-endpoints" class="card muted" hidden>No endpoints yet: create one with <code>POST /admin/endpoints</code>.</p>
    <div id="endpoint"></div>
    <section id="report" class="card"></section>
  </section>
</main>
</body>
</html>
`;
}
