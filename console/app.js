// Gatehouse web console. Plain JavaScript, no dependencies: it calls the same
// REST API as curl users and keeps the session token in memory only (a reload
// means signing in again). Every text from the server goes in with
// textContent, never as HTML.
"use strict";

(function () {
  const session = { token: null, expiresAt: 0, me: null, timer: null, notice: "" };
  const main = () => document.getElementById("main");

  // --- DOM helpers -----------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === false || v === null || v === undefined) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "text") el.textContent = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  function show(...nodes) {
    const m = main();
    m.replaceChildren(...nodes);
    const heading = m.querySelector("h1");
    if (heading) { heading.setAttribute("tabindex", "-1"); heading.focus(); }
  }
  function alertText(message) { document.getElementById("alert").textContent = message || ""; }
  function statusText(message) { document.getElementById("status").textContent = message || ""; }
  function when(value) { return value ? new Date(value).toLocaleString() : "never"; }
  function field(label, input) { return h("label", {}, label, input); }

  // --- the API ---------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  const FRIENDLY = {
    401: "You are not signed in, or your session has ended. Please sign in again.",
    403: "You do not have permission to do that.",
    404: "That no longer exists.",
    429: "Too many attempts. Please wait a moment and try again.",
    503: "Gatehouse cannot reach its database right now. Please try again shortly.",
  };
  async function api(method, path, body, extra) {
    if (session.token && session.expiresAt - Date.now() < 60000 && path !== "/auth/refresh") await refresh();
    const headers = { "Accept": "application/json" };
    if (session.token) headers["Authorization"] = "Bearer " + session.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    Object.assign(headers, (extra && extra.headers) || {});
    let response;
    try {
      response = await fetch(path, {
        method, headers, credentials: "same-origin", cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (_) {
      throw new ApiError(0, "Gatehouse could not be reached. Check your connection and try again.");
    }
    if (response.status === 204) return null;
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (!response.ok) {
      const error = data && data.error;
      let message = (error && error.message) || FRIENDLY[response.status] || ("The request failed (" + response.status + ").");
      if (response.status === 429 && response.headers.get("retry-after")) {
        message += " Try again in " + response.headers.get("retry-after") + " seconds.";
      }
      if (response.status === 401 && session.token && !(extra && extra.quiet)) endSession(FRIENDLY[401]);
      throw new ApiError(response.status, message.charAt(0).toUpperCase() + message.slice(1));
    }
    return data;
  }
  // Runs an action; shows its error in words.
  async function attempt(action, button) {
    alertText("");
    if (button) button.disabled = true;
    try { return await action(); }
    catch (e) { alertText(e.message); return undefined; }
    finally { if (button) button.disabled = false; }
  }

  // --- session ---------------------------------------------------------------
  async function startSession(tokens) {
    session.token = tokens.access_token;
    session.expiresAt = Date.parse(tokens.expires_at) || Date.now() + 1000 * (tokens.expires_in || 900);
    clearTimeout(session.timer);
    const wait = Math.max(5000, session.expiresAt - Date.now() - 60000);
    session.timer = setTimeout(() => refresh().catch(() => endSession(FRIENDLY[401])), wait);
    session.me = await api("GET", "/auth/me");
    const perms = session.me.permissions || [];
    document.getElementById("nav").hidden = false;
    document.querySelectorAll("[data-admin]").forEach((a) => { a.hidden = !perms.includes("manage_users"); });
    document.querySelectorAll("[data-audit]").forEach((a) => { a.hidden = !perms.includes("view_audit_logs"); });
  }
  async function refresh() {
    const token = session.token;
    session.token = null;
    const headers = { "Authorization": "Bearer " + token };
    const tokens = await fetch("/auth/refresh", { method: "POST", headers, credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : Promise.reject(new ApiError(r.status, FRIENDLY[401]))));
    await startSession(tokens);
  }
  function endSession(message) {
    clearTimeout(session.timer);
    Object.assign(session, { token: null, expiresAt: 0, me: null });
    document.getElementById("nav").hidden = true;
    if (location.hash === "#/login") route(); else location.hash = "#/login";
    session.notice = message;
  }
  // A provider login started here carries a random nonce that this page keeps
  // in sessionStorage (which no other origin, not even another port of this
  // host, can read or write); the server binds the hand-off cookie to it.
  const HANDOFF = "gatehouse.handoff";
  function handoffNonce() {
    const bytes = crypto.getRandomValues(new Uint8Array(32));
    const nonce = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    sessionStorage.setItem(HANDOFF, nonce);
    return nonce;
  }
  // After a provider login started here, the server left a one-time session
  // cookie for us, which it hands over only with our nonce.
  async function takeHandoff() {
    const nonce = sessionStorage.getItem(HANDOFF);
    if (!nonce) return false;
    sessionStorage.removeItem(HANDOFF);
    try {
      const r = await fetch("/auth/refresh", {
        method: "POST", credentials: "same-origin",
        headers: { "X-Requested-With": "gatehouse-console", "X-Gatehouse-Handoff": nonce },
      });
      if (r.ok) { await startSession(await r.json()); return true; }
    } catch (_) { /* no hand-off */ }
    return false;
  }

  // --- pages -----------------------------------------------------------------
  async function loginPage() {
    const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true });
    const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
    const submit = h("button", { type: "submit" }, "Sign in");
    const form = h("form", { class: "stack", onsubmit: async (e) => {
      e.preventDefault();
      await attempt(async () => {
        const tokens = await api("POST", "/auth/login", { email: email.value, password: password.value });
        password.value = "";
        await startSession(tokens);
        location.hash = "#/keys";
      }, submit);
    } }, field("Email", email), field("Password", password), submit);
    const providers = h("div", { class: "providers" });
    show(h("h1", {}, "Sign in"), providers, form,
      h("p", { class: "muted" }, "Building a client? See the ", h("a", { href: "#/api" }, "API reference"), "."));
    try {
      const list = await api("GET", "/auth/providers");
      const nonce = list.data.length ? handoffNonce() : "";
      for (const p of list.data) {
        const label = p.type === "github" ? "GitHub" : p.name === "default" ? "single sign-on" : p.name;
        const url = p.login_url + (p.login_url.includes("?") ? "&" : "?") + "console=true&console_nonce=" + nonce;
        providers.append(h("a", { href: url }, "Login with " + label));
      }
    } catch (_) { /* password sign-in still works */ }
  }

  async function keysPage() {
    const me = session.me;
    const name = h("input", { name: "name", required: true, maxlength: "100" });
    const perms = (me.permissions || []).map((p) => h("label", { class: "check" }, h("input", { type: "checkbox", name: "permission", value: p }), p));
    const expiry = h("select", { name: "expires" },
      h("option", { value: "" }, "Never"), h("option", { value: "7" }, "7 days"), h("option", { value: "30" }, "30 days"),
      h("option", { value: "90", selected: true }, "90 days"), h("option", { value: "365" }, "1 year"));
    const tokenLimit = h("input", { name: "token_limit", placeholder: "none, e.g. 100000/60", pattern: "[0-9]+/[0-9]+" });
    const spendLimit = h("input", { name: "spend_limit", placeholder: "none, e.g. 25/month", pattern: "[0-9]*[.]?[0-9]+/(day|week|month|[0-9]+)" });
    const submit = h("button", { type: "submit" }, "Create key");
    const reveal = h("div");
    const list = h("div", { class: "table-wrap" });
    const form = h("form", { class: "stack", onsubmit: async (e) => {
      e.preventDefault();
      await attempt(async () => {
        const body = { name: name.value };
        const chosen = perms.map((l) => l.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
        if (chosen.length) body.permissions = chosen;
        if (expiry.value) body.expires_in_days = Number(expiry.value);
        if (tokenLimit.value.trim()) body.token_limit = tokenLimit.value.trim();
        if (spendLimit.value.trim()) body.spend_limit = spendLimit.value.trim();
        const created = await api("POST", "/auth/keys", body);
        form.reset();
        showSecret(reveal, created);
        await renderKeys(list, reveal);
      }, submit);
    } },
      field("Name", name),
      h("fieldset", {}, h("legend", {}, "Permissions (none checked: whatever your role allows)"), perms),
      field("Expires", expiry),
      field("Token budget (TOKENS/SECONDS, optional)", tokenLimit),
      field("Spend budget (USD/PERIOD: day, week, month or seconds; optional)", spendLimit), submit);
    show(h("h1", {}, "API keys"), reveal, h("h2", {}, "Create a key"), form, h("h2", {}, "Your keys"), list);
    await attempt(() => renderKeys(list, reveal));
  }

  function showSecret(container, created, note) {
    const code = h("code", { id: "new-key" }, created.key);
    const copy = h("button", { type: "button", class: "secondary", onclick: async () => {
      try { await navigator.clipboard.writeText(created.key); statusText("Key copied to the clipboard."); }
      catch (_) {
        const range = document.createRange(); range.selectNodeContents(code);
        const sel = getSelection(); sel.removeAllRanges(); sel.addRange(range);
        statusText("Select and copy the key (Ctrl+C).");
      }
    } }, "Copy key");
    const done = h("button", { type: "button", onclick: () => { container.replaceChildren(); statusText(""); } }, "I have saved it");
    container.replaceChildren(h("section", { class: "secret", "aria-labelledby": "secret-title" },
      h("h2", { id: "secret-title" }, "Your new key: " + created.name),
      h("p", {}, h("strong", {}, "Copy this key now. It is shown only once;"), " Gatehouse stores only a hash of it and cannot show it again."),
      note ? h("p", {}, note) : null,
      code, h("div", { class: "pager" }, copy, done)));
    copy.focus();
  }

  async function renderKeys(container, reveal) {
    const keys = (await api("GET", "/auth/keys")).data;
    if (!keys.length) { container.replaceChildren(h("p", { class: "muted" }, "You have no API keys yet.")); return; }
    const again = () => renderKeys(container, reveal);
    const rows = keys.map((k) => {
      const actions = h("td");
      if (k.status === "active") {
        const revoke = h("button", { type: "button", class: "danger", "aria-label": "Revoke " + k.name, onclick: () => {
          const yes = h("button", { type: "button", class: "danger", onclick: () => attempt(async () => {
            await api("DELETE", "/auth/keys/" + encodeURIComponent(k.id));
            statusText("Key " + k.name + " revoked.");
            await again();
          }, yes) }, "Yes, revoke");
          const no = h("button", { type: "button", class: "secondary", onclick: again }, "Cancel");
          actions.replaceChildren(h("span", {}, "Revoke " + k.name + "? Requests using it will be refused. "), yes, " ", no);
          no.focus();
        } }, "Revoke");
        const rotate = h("button", { type: "button", class: "secondary", "aria-label": "Rotate " + k.name, onclick: () => {
          const grace = h("select", { "aria-label": "Old secret of " + k.name + " keeps working for" },
            h("option", { value: "0" }, "no time: stops at once"), h("option", { value: "3600" }, "1 hour"),
            h("option", { value: "86400", selected: true }, "24 hours"), h("option", { value: "604800" }, "7 days"));
          const yes = h("button", { type: "button", onclick: () => attempt(async () => {
            const rotated = await api("POST", "/auth/keys/" + encodeURIComponent(k.id) + "/rotate", { grace_seconds: Number(grace.value) });
            const until = rotated.previous_secret_expires_at;
            showSecret(reveal, rotated, until ? "The old secret keeps working until " + when(until) + "." : "The old secret no longer works.");
            statusText("Key " + k.name + " rotated.");
            await again();
          }, yes) }, "Rotate now");
          const no = h("button", { type: "button", class: "secondary", onclick: again }, "Cancel");
          actions.replaceChildren(h("label", {}, "Old secret keeps working for", grace), yes, " ", no);
          grace.focus();
        } }, "Rotate");
        actions.append(rotate, " ", revoke);
      }
      return h("tr", { "data-key-id": k.id },
        h("td", {}, k.name), h("td", {}, h("code", {}, k.prefix)),
        h("td", {}, k.permissions ? k.permissions.join(", ") : h("span", { class: "muted" }, "as your role")),
        h("td", {}, h("span", { class: "badge " + k.status }, k.status)),
        h("td", {}, when(k.last_used_at)), h("td", {}, when(k.expires_at)), h("td", {}, budgetText(k)), actions);
    });
    container.replaceChildren(h("table", {},
      h("thead", {}, h("tr", {}, ["Name", "Prefix", "Permissions", "Status", "Last used", "Expires", "Budget", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows)));
  }

  function budgetText(x) {
    const parts = [];
    if (x.token_limit) parts.push(x.token_limit + " tokens/s");
    if (x.spend_limit) parts.push("$" + x.spend_limit);
    return parts.length ? parts.join(", ") : h("span", { class: "muted" }, "none");
  }

  async function profilePage() {
    const me = await api("GET", "/auth/me");
    session.me = me;
    const row = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
    show(h("h1", {}, "Profile"), h("dl", {},
      row("Email", me.email), row("Name", me.name || "—"), row("Role", me.role), row("Group", me.group),
      row("Permissions", (me.permissions || []).join(", ")), row("Signed in with", me.auth_method),
      row("Member since", when(me.created_at))));
  }

  async function usersPage() {
    const [users, groups] = await Promise.all([api("GET", "/admin/users"), api("GET", "/admin/groups")]);
    const roles = ["viewer", "operator", "admin"];
    const rows = users.data.map((u) => {
      const role = h("select", { "aria-label": "Role of " + u.email }, roles.map((r) => h("option", { value: r, selected: r === u.role }, r)));
      const group = h("select", { "aria-label": "Group of " + u.email }, groups.data.map((g) => h("option", { value: g.name, selected: g.name === u.group }, g.name)));
      const disabled = h("input", { type: "checkbox", "aria-label": "Disable " + u.email, checked: u.disabled });
      const save = h("button", { type: "button", onclick: () => attempt(async () => {
        const change = {};
        if (role.value !== u.role) change.role = role.value;
        if (group.value !== u.group) change.group = group.value;
        if (disabled.checked !== u.disabled) change.disabled = disabled.checked;
        if (!Object.keys(change).length) { statusText("Nothing to save for " + u.email + "."); return; }
        const updated = await api("PATCH", "/admin/users/" + encodeURIComponent(u.id), change);
        Object.assign(u, { role: updated.role, group: updated.group, disabled: updated.disabled });
        statusText("Saved " + u.email + ": role " + updated.role + ", group " + updated.group + (updated.disabled ? ", disabled" : "") + ".");
      }, save) }, "Save");
      return h("tr", { "data-user": u.email }, h("td", {}, u.email), h("td", {}, u.name || ""), h("td", {}, role), h("td", {}, group),
        h("td", {}, disabled), h("td", {}, save));
    });
    show(h("h1", {}, "Users"), h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Email", "Name", "Role", "Group", "Disabled", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows))));
  }

  function numberOrNull(input) { return input.value.trim() === "" ? null : Number(input.value); }
  function modelsOrNull(input) {
    const names = input.value.split(",").map((s) => s.trim()).filter(Boolean);
    return names.length ? names : null;
  }

  async function groupsPage() {
    const groups = (await api("GET", "/admin/groups")).data;
    const limitInputs = (g, label) => ({
      requests: h("input", { type: "number", min: "1", "aria-label": "Requests per period for " + label, value: g.requests_per_period ?? "" }),
      period: h("input", { type: "number", min: "1", "aria-label": "Period in seconds for " + label, value: g.period_seconds ?? "" }),
      burst: h("input", { type: "number", min: "1", "aria-label": "Burst for " + label, value: g.burst ?? "" }),
      models: h("input", { "aria-label": "Allowed models for " + label, placeholder: "any", value: (g.allowed_models || []).join(", ") }),
      tokens: h("input", { "aria-label": "Token budget for " + label, placeholder: "none", value: g.token_limit || "" }),
      spend: h("input", { "aria-label": "Spend budget for " + label, placeholder: "none", value: g.spend_limit || "" }),
    });
    const textOrNull = (input) => input.value.trim() === "" ? null : input.value.trim();
    const body = (i) => ({ requests_per_period: numberOrNull(i.requests), period_seconds: numberOrNull(i.period), burst: numberOrNull(i.burst), allowed_models: modelsOrNull(i.models), token_limit: textOrNull(i.tokens), spend_limit: textOrNull(i.spend) });
    const rows = groups.map((g) => {
      const i = limitInputs(g, g.name);
      const save = h("button", { type: "button", onclick: () => attempt(async () => {
        await api("PATCH", "/admin/groups/" + encodeURIComponent(g.name), body(i));
        statusText("Saved group " + g.name + ".");
      }, save) }, "Save");
      return h("tr", { "data-group": g.name }, h("td", {}, g.name), h("td", {}, i.requests), h("td", {}, i.period), h("td", {}, i.burst), h("td", {}, i.models), h("td", {}, i.tokens), h("td", {}, i.spend), h("td", {}, save));
    });
    const name = h("input", { name: "group", required: true, pattern: "[A-Za-z0-9_.-]+" });
    const fresh = limitInputs({}, "the new group");
    const create = h("button", { type: "submit" }, "Create group");
    const form = h("form", { class: "inline", onsubmit: (e) => {
      e.preventDefault();
      attempt(async () => {
        await api("POST", "/admin/groups", Object.assign({ name: name.value }, body(fresh)));
        statusText("Group " + name.value + " created.");
        await groupsPage();
      }, create);
    } }, field("Name", name), field("Requests", fresh.requests), field("Per seconds", fresh.period), field("Burst", fresh.burst),
      field("Allowed models (comma-separated, empty: any)", fresh.models),
      field("Token budget (TOKENS/SECONDS)", fresh.tokens), field("Spend budget (USD/PERIOD)", fresh.spend), create);
    show(h("h1", {}, "Groups"),
      h("p", { class: "muted" }, "Rate limits apply per user; empty fields mean unlimited. Allowed models may use * patterns, e.g. gpt-4o*. Budgets are shared by the group's members: tokens as TOKENS/SECONDS (100000/60), spend as USD/PERIOD (100/month)."),
      h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Name", "Requests", "Per seconds", "Burst", "Allowed models", "Token budget", "Spend budget", ""].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows))),
      h("h2", {}, "New group"), form);
  }

  // --- usage ----------------------------------------------------------------
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    for (const c of children.flat()) if (c != null) el.append(typeof c === "string" ? document.createTextNode(c) : c);
    return el;
  }
  const PALETTE = ["#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#65a30d", "#db2777"];

  /** A stacked bar per day, one colour per model. */
  function chart(rows, metric, title, format) {
    const days = [...new Set(rows.map((r) => r.day))].sort();
    const models = [...new Set(rows.map((r) => r.model))].sort();
    const value = (day, model) => rows.filter((r) => r.day === day && r.model === model).reduce((a, r) => a + metric(r), 0);
    const totals = days.map((d) => models.reduce((a, m) => a + value(d, m), 0));
    const max = Math.max(1e-9, ...totals);
    const width = Math.max(320, days.length * 48 + 60), height = 200, base = 170, bar = 28;
    const bars = days.flatMap((d, i) => {
      let y = base;
      const x = 50 + i * 48;
      return models.map((m, j) => {
        const v = value(d, m);
        const hgt = (v / max) * 150;
        y -= hgt;
        return v > 0 ? svg("rect", { x, y, width: bar, height: hgt, fill: PALETTE[j % PALETTE.length], "data-day": d, "data-model": m },
          svg("title", {}, d + " " + m + ": " + format(v))) : null;
      }).concat([svg("text", { x: x + bar / 2, y: base + 16, "text-anchor": "middle", "font-size": 10 }, d.slice(5))]);
    });
    const legend = h("ul", { class: "legend" }, models.map((m, j) =>
      h("li", {}, h("span", { class: "swatch c" + (j % PALETTE.length) }), m)));
    return h("figure", { class: "chart" },
      h("figcaption", {}, title + " (max " + format(max) + " a day)"),
      svg("svg", { viewBox: "0 0 " + width + " " + height, width, height, role: "img", "aria-label": title },
        svg("line", { x1: 45, y1: base, x2: width - 5, y2: base, stroke: "#888" }), bars),
      legend);
  }

  async function usagePage() {
    const to = new Date().toISOString().slice(0, 10);
    const from = new Date(Date.now() - 29 * 86400000).toISOString().slice(0, 10);
    const [usage, budget] = await Promise.all([
      api("GET", "/auth/usage?group_by=day,model&from=" + from + "&to=" + to),
      api("GET", "/auth/budget"),
    ]);
    const data = usage.data || usage;
    const rows = data.rows || [];
    const usd = (v) => "$" + Number(v).toFixed(v < 1 ? 4 : 2);
    const budgets = (budget.budgets || (budget.data && budget.data.budgets) || []).map((b) =>
      h("tr", { "data-budget": b.scope + ":" + b.kind }, h("td", {}, b.scope), h("td", {}, b.kind), h("td", {}, b.limit),
        h("td", {}, b.kind === "spend" ? usd(b.used) : String(b.used)),
        h("td", {}, b.kind === "spend" ? usd(b.remaining) : String(b.remaining)),
        h("td", {}, Math.ceil(b.resets_in_seconds / 60) + " min")));
    const table = rows.length ? h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Day", "Model", "Requests", "Prompt tokens", "Completion tokens", "Cost"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, h("td", {}, r.day), h("td", {}, r.model), h("td", {}, String(r.requests)),
        h("td", {}, String(r.prompt_tokens)), h("td", {}, String(r.completion_tokens)), h("td", {}, usd(r.cost_usd)))))))
      : h("p", { class: "muted" }, "No usage in the last 30 days.");
    show(h("h1", {}, "Usage"),
      h("h2", {}, "Budgets"),
      budgets.length ? h("div", { class: "table-wrap" }, h("table", { id: "budgets" },
        h("thead", {}, h("tr", {}, ["Budget", "Kind", "Limit", "Used", "Remaining", "Resets in"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, budgets))) : h("p", { class: "muted" }, "No budget applies to you."),
      h("h2", {}, "Last 30 days"),
      rows.length ? chart(rows, (r) => r.prompt_tokens + r.completion_tokens, "Tokens per day", (v) => String(Math.round(v))) : null,
      rows.length ? chart(rows, (r) => r.cost_usd, "Spend per day", usd) : null,
      table);
  }

  const ACTIONS = ["login.succeeded", "login.failed", "logout", "user.registered", "user.created", "user.updated",
    "user.role_changed", "group.created", "group.updated", "key.created", "key.updated", "key.revoked", "admin.denied"];
  async function auditPage() {
    const action = h("select", { name: "action" }, h("option", { value: "" }, "any"), ACTIONS.map((a) => h("option", { value: a }, a)));
    const outcome = h("select", { name: "outcome" }, h("option", { value: "" }, "any"), ["success", "failure", "denied"].map((o) => h("option", { value: o }, o)));
    const actor = h("input", { name: "actor", placeholder: "user id" });
    const target = h("input", { name: "target", placeholder: "user:…, key:…, group:…" });
    const since = h("input", { type: "datetime-local", name: "since" });
    const until = h("input", { type: "datetime-local", name: "until" });
    const results = h("div", { class: "table-wrap" });
    const cursors = [];
    async function load(cursor) {
      const q = new URLSearchParams({ limit: "50" });
      if (action.value) q.set("action", action.value);
      if (outcome.value) q.set("outcome", outcome.value);
      if (actor.value.trim()) q.set("actor", actor.value.trim());
      if (target.value.trim()) q.set("target", target.value.trim());
      if (since.value) q.set("since", new Date(since.value).toISOString().replace(/\.\d+Z$/, "Z"));
      if (until.value) q.set("until", new Date(until.value).toISOString().replace(/\.\d+Z$/, "Z"));
      if (cursor) q.set("cursor", cursor);
      const page = await api("GET", "/auth/audit?" + q.toString());
      const rows = page.data.map((e) => h("tr", {}, h("td", {}, when(e.time)), h("td", {}, e.action), h("td", {}, e.outcome),
        h("td", {}, h("code", {}, e.actor_id || "")), h("td", {}, h("code", {}, e.target || "")), h("td", {}, e.client_ip || ""), h("td", {}, e.detail || "")));
      const pager = h("div", { class: "pager" });
      if (cursors.length) pager.append(h("button", { type: "button", class: "secondary", onclick: () => attempt(() => { cursors.pop(); return load(cursors[cursors.length - 1]); }) }, "Previous page"));
      if (page.has_more) pager.append(h("button", { type: "button", class: "secondary", onclick: () => attempt(() => { cursors.push(page.next_cursor); return load(page.next_cursor); }) }, "Next page"));
      results.replaceChildren(rows.length ? h("table", {},
        h("thead", {}, h("tr", {}, ["Time", "Action", "Outcome", "Actor", "Target", "Client", "Detail"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows)) : h("p", { class: "muted" }, "No events match."), pager);
    }
    const submit = h("button", { type: "submit" }, "Filter");
    const form = h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); cursors.length = 0; attempt(() => load(null), submit); } },
      field("Action", action), field("Outcome", outcome), field("Actor", actor), field("Target", target), field("Since", since), field("Until", until), submit);
    show(h("h1", {}, "Audit log"), form, results);
    await attempt(() => load(null));
  }

  // --- API reference (the OpenAPI document at /openapi.json) -----------------
  function schemaType(doc, schema, depth) {
    if (!schema) return "";
    if (schema.$ref) {
      const name = schema.$ref.split("/").pop();
      const target = (doc.components.schemas || {})[name];
      return depth > 0 && target ? h("span", {}, h("code", {}, name), schemaFields(doc, target, depth - 1)) : h("code", {}, name);
    }
    if (schema.allOf) return h("span", {}, schema.allOf.map((s) => schemaType(doc, s, depth)));
    if (schema.oneOf || schema.anyOf) {
      const parts = (schema.oneOf || schema.anyOf).map((s) => schemaType(doc, s, 0));
      return h("span", {}, parts.map((p, i) => [i ? " or " : "", p]));
    }
    const type = [].concat(schema.type || "any").join(" or ");
    if (type.startsWith("array")) return h("span", {}, "array of ", schemaType(doc, schema.items, depth));
    if (schema.properties) return h("span", {}, "object", schemaFields(doc, schema, depth));
    return h("code", {}, type + (schema.format ? " (" + schema.format + ")" : ""));
  }
  function schemaFields(doc, schema, depth) {
    const props = Object.entries(schema.properties || {});
    const parts = (schema.allOf || []).map((s) => schemaType(doc, s, depth));
    if (!props.length && !parts.length) return null;
    const required = new Set(schema.required || []);
    return h("ul", { class: "fields" }, parts.map((p) => h("li", {}, p)), props.map(([name, s]) =>
      h("li", {}, h("code", {}, name), required.has(name) ? "" : h("span", { class: "muted" }, " (optional)"), ": ",
        schemaType(doc, s, depth), s.description ? h("span", { class: "muted" }, " — " + s.description) : "")));
  }
  function operationView(doc, method, path, op) {
    const auth = (op.security || []).map((r) => Object.keys(r)).flat();
    const params = (op.parameters || []).map((p) => h("tr", {},
      h("td", {}, h("code", {}, p.name)), h("td", {}, p.in), h("td", {}, p.required ? "yes" : "no"),
      h("td", {}, schemaType(doc, p.schema, 0)), h("td", {}, p.description || "")));
    const body = op.requestBody && (op.requestBody.content || {})["application/json"];
    const responses = Object.entries(op.responses || {}).map(([status, r]) => {
      const content = r.content || {};
      const type = Object.keys(content)[0];
      return h("li", {}, h("strong", {}, status), " ", r.description || "",
        type ? h("div", {}, h("span", { class: "muted" }, type + ": "), schemaType(doc, content[type].schema, 1)) : null);
    });
    return h("details", { class: "operation" },
      h("summary", {}, h("span", { class: "method " + method }, method.toUpperCase()), " ", h("code", {}, path),
        op.summary ? h("span", { class: "muted" }, " " + op.summary) : ""),
      op.description ? h("p", {}, op.description) : null,
      h("p", {}, "Authentication: ", auth.length ? auth.join(" or ") : "none"),
      params.length ? h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Parameter", "In", "Required", "Type", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, params))) : null,
      body ? h("div", {}, h("h3", {}, "Request body"), schemaType(doc, body.schema, 2)) : null,
      h("h3", {}, "Responses"), h("ul", {}, responses));
  }
  async function apiPage() {
    const doc = await api("GET", "/openapi.json");
    const aliases = h("input", { type: "checkbox" });
    const list = h("div", {});
    function render() {
      const sections = (doc.tags || []).map((tag) => {
        if (tag.name === "seed aliases" && !aliases.checked) return null;
        const ops = [];
        for (const [path, item] of Object.entries(doc.paths)) {
          for (const [method, op] of Object.entries(item)) {
            if ((op.tags || []).includes(tag.name)) ops.push(operationView(doc, method, path, op));
          }
        }
        return ops.length ? h("section", {}, h("h2", {}, tag.name), h("p", { class: "muted" }, tag.description || ""), ops) : null;
      });
      list.replaceChildren(...sections.filter(Boolean));
    }
    aliases.addEventListener("change", render);
    render();
    show(h("h1", {}, "API reference"),
      h("p", {}, doc.info.title + " " + doc.info.version + ". ", doc.info.description || ""),
      h("p", {}, "The document: ", h("a", { href: "/openapi.json" }, "/openapi.json"), " (OpenAPI " + doc.openapi + ")."),
      h("label", { class: "check" }, aliases, "Show the seed aliases"), list);
  }

  // --- routing ---------------------------------------------------------------
  const PAGES = { "#/keys": keysPage, "#/usage": usagePage, "#/profile": profilePage, "#/users": usersPage, "#/groups": groupsPage, "#/audit": auditPage, "#/api": apiPage };
  async function route() {
    const notice = session.notice;
    session.notice = "";
    const hash = location.hash || "#/keys";
    // The API reference is public, like the document it shows.
    if (!session.token && hash === "#/api") { await attempt(apiPage); return; }
    if (!session.token) {
      if (hash !== "#/login") { session.notice = notice; location.hash = "#/login"; return; }
      await attempt(loginPage);
      if (notice) alertText(notice);
      return;
    }
    const page = PAGES[hash];
    if (!page) { location.hash = "#/keys"; return; }
    document.querySelectorAll("#nav a").forEach((a) => {
      if (a.getAttribute("href") === hash) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    });
    await attempt(page);
  }

  document.addEventListener("DOMContentLoaded", async () => {
    document.getElementById("logout").addEventListener("click", async () => {
      await api("POST", "/auth/logout", undefined, { quiet: true }).catch(() => null);
      endSession("");
      statusText("Signed out.");
    });
    window.addEventListener("hashchange", () => { statusText(""); route(); });
    await takeHandoff();
    if (session.token && (location.hash === "#/login" || !location.hash)) location.hash = "#/keys";
    route();
  });
})();
