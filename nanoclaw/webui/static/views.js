// NanoClaw console: one function per view; each returns the elements to show.
"use strict";

const selected = { group: null, run: null, schedule: null, chat: null };

function parseMetrics(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+)/);
    if (match) (out[match[1]] = out[match[1]] || []).push({ labels: match[2] || "", value: Number(match[3]) });
  }
  return out;
}

function eventLine(event) {
  const d = event.data || {};
  const what = d.runId ? `${d.group} ${d.kind} ${d.runId.slice(0, 8)}${d.status ? " " + d.status : ""}`
    : d.message || d.channel || d.name || JSON.stringify(d).slice(0, 120);
  return h("div", {}, h("span", { class: "muted" }, new Date(event.ts * 1000).toLocaleTimeString(), " "), h("b", {}, event.type), " ", what);
}

NC.views.overview = async () => {
  const [runtime, proxy, metrics, groups, promText] = await Promise.all([
    api("GET", "/container/runtime"), api("GET", "/container/credential-proxy/status"), api("GET", "/container/metrics"),
    api("GET", "/container/queue/groups"),
    fetch("/metrics", { headers: headers() }).then((r) => (r.ok ? r.text() : "")).catch(() => ""),
  ]);
  const states = await Promise.all(groups.map((g) => api("GET", `/container/queue/groups/${encodeURIComponent(g)}`)));
  const running = states.filter((s) => s.active);
  const prom = parseMetrics(promText);
  const tokens = (prom.nanoclaw_tokens_total || []).reduce((sum, s) => sum + s.value, 0);
  const lag = (prom.nanoclaw_event_loop_lag_seconds || [{ value: 0 }])[0].value;
  return [
    h("div", { class: "grid" },
      card("Runtime", h("div", { class: "stat" }, runtime.available ? "available" : "unavailable"),
        h("div", { class: "muted" }, `${runtime.backend || "no engine"} ${runtime.version || ""}`), h("div", {}, runtime.message)),
      card("Queue", h("div", { class: "stat", id: "stat-running" }, `${metrics.running} running`),
        h("div", {}, `${metrics.queued} waiting, limit ${metrics.maxConcurrent}`), h("div", { class: "muted" }, `${metrics.runsLastHour} runs in the last hour`)),
      card("Credential proxy", h("div", { class: "stat" }, proxy.running ? "running" : "stopped"),
        h("div", { class: "muted" }, `port ${proxy.port}, ${proxy.mappingCount} mappings`)),
      card("Metrics", h("div", {}, `security events: ${metrics.securityEvents.warning} warnings, ${metrics.securityEvents.violation} violations, ${metrics.securityEvents.error} errors`),
        h("div", {}, `tokens since start: ${tokens}`), h("div", { class: "muted" }, `event-loop lag ${(lag * 1000).toFixed(1)} ms`))),
    card("Running containers", table(["Group", "Kind", "Container", "Elapsed"],
      running.map((s) => h("tr", {}, h("td", {}, s.group), h("td", {}, s.containerKind), h("td", {}, s.containerName), h("td", {}, ago(s.startedAt)))))),
    card("Live events", h("div", { class: "events", id: "event-log" }, NC.events.slice(0, 100).map(eventLine))),
  ];
};

NC.views.groups = async () => {
  const namespaces = (await api("GET", "/container/namespaces")).namespaces || [];
  const states = await Promise.all(namespaces.map((n) => api("GET", `/container/queue/groups/${encodeURIComponent(n.name)}`)));
  const rows = namespaces.map((n, i) => {
    const s = states[i];
    const queue = s.active ? `running ${s.containerKind}` : s.waitingForSlot ? "waiting" : "idle";
    return h("tr", { class: `clickable${selected.group === n.name ? " selected" : ""}`, dataset: { group: n.name },
      onclick: () => { selected.group = n.name; refresh(); } },
    h("td", {}, n.name), h("td", {}, (n.chatJids || []).join(", ")), h("td", {}, n.isMain ? "main" : ""),
    h("td", {}, queue), h("td", {}, `${s.pendingTasks + s.pendingRuns} pending${s.retryCount ? `, retry ${s.retryCount}` : ""}`));
  });
  const out = [card("Namespaces", table(["Name", "Chats", "", "Queue", "Pending"], rows),
    h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); const name = e.target.elements.name.value.trim();
      act("Create namespace", () => api("POST", "/container/namespaces", { name })); } },
    h("label", {}, "New namespace", h("input", { name: "name", id: "new-namespace", placeholder: "family" })), h("button", { type: "submit" }, "Create")))];
  const ns = namespaces.find((n) => n.name === selected.group);
  if (ns) {
    const instructions = await api("GET", `/container/namespaces/${encodeURIComponent(ns.name)}/instructions`);
    out.push(card(`Instructions: ${ns.name}`,
      h("textarea", { id: "instructions", rows: 12 }, instructions.instructions || ""),
      h("button", { onclick: () => act("Save instructions", () => api("PUT", `/container/namespaces/${encodeURIComponent(ns.name)}/instructions`,
        { instructions: document.getElementById("instructions").value })) }, "Save instructions")));
    out.push(card(`Container config: ${ns.name}`,
      h("textarea", { id: "container-config", rows: 10 }, JSON.stringify(ns.containerConfig || {}, null, 2)),
      h("button", { onclick: () => act("Save container config", () => api("PUT", `/container/namespaces/${encodeURIComponent(ns.name)}`,
        { containerConfig: JSON.parse(document.getElementById("container-config").value) })) }, "Save config"),
      " ", h("button", { class: "danger", onclick: () => confirm(`Delete namespace ${ns.name}?`) &&
        act("Delete namespace", () => api("DELETE", `/container/namespaces/${encodeURIComponent(ns.name)}`)) }, "Delete namespace")));
  }
  return out;
};

function runDetails(run) {
  const live = NC.runs.get(run.runId) || { steps: [], results: [] };
  const results = run.results && run.results.length ? run.results : live.results;
  const usage = live.usage || run.usage;
  return card(`Run ${run.runId}`,
    h("div", {}, statusBadge(live.status && run.status !== live.status && run.status === "running" ? live.status : run.status),
      ` ${run.group} ${run.kind}`, run.durationMs != null ? ` ${run.durationMs} ms` : "", run.error ? h("span", { class: "bad" }, ` ${run.error}`) : ""),
    h("h3", {}, "Results"), h("div", { id: "run-results" }, (results || []).map((t) => h("pre", {}, t))),
    h("h3", {}, "Tool steps"), live.steps.length ? h("div", {}, live.steps.map((s) => h("pre", {}, JSON.stringify(s)))) : h("p", { class: "muted" }, "None seen live"),
    h("h3", {}, "Usage"), usage ? h("pre", {}, JSON.stringify({ model: live.model || run.model, ...usage }, null, 1)) : h("p", { class: "muted" }, "Not reported"));
}

NC.views.runs = async () => {
  const filters = NC.runFilters || (NC.runFilters = { group: "", status: "" });
  const query = new URLSearchParams({ limit: "100" });
  if (filters.group) query.set("group", filters.group);
  let runs = (await api("GET", `/container/run-history?${query}`)).runs;
  if (filters.status) runs = runs.filter((r) => r.status === filters.status);
  const namespaces = ((await api("GET", "/container/namespaces")).namespaces || []).map((n) => n.name);
  const out = [card("Start a run",
    h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); const f = e.target.elements;
      act("Start run", async () => { const r = await api("POST", "/container/runs", { group: f.group.value, prompt: f.prompt.value });
        selected.run = r.runId; return r; }); } },
    h("label", {}, "Group", h("select", { name: "group", id: "run-group" }, namespaces.map((n) => h("option", { value: n }, n)))),
    h("label", {}, "Prompt", h("input", { name: "prompt", id: "run-prompt", placeholder: "What should the agent do?" })),
    h("button", { type: "submit" }, "Run"))),
  card("Run history",
    h("div", { class: "row" },
      h("label", {}, "Group", h("select", { id: "filter-group", onchange: (e) => { filters.group = e.target.value; e.target.blur(); refresh(); } },
        h("option", { value: "" }, "all"), namespaces.map((n) => h("option", { value: n, selected: filters.group === n }, n)))),
      h("label", {}, "Status", h("select", { id: "filter-status", onchange: (e) => { filters.status = e.target.value; e.target.blur(); refresh(); } },
        ["", "running", "success", "error", "timeout", "cancelled", "interrupted"].map((s) => h("option", { value: s, selected: filters.status === s }, s || "all"))))),
    table(["Started", "Group", "Kind", "Status", "Duration", "Result"], runs.map((r) => h("tr", {
      class: `clickable${selected.run === r.runId ? " selected" : ""}`, dataset: { run: r.runId }, onclick: () => { selected.run = r.runId; refresh(); } },
    h("td", {}, when(r.startedAt)), h("td", {}, r.group), h("td", {}, r.kind), h("td", {}, statusBadge(r.status)),
    h("td", {}, r.durationMs != null ? `${(r.durationMs / 1000).toFixed(1)} s` : ""), h("td", {}, (r.result || r.error || "").slice(0, 120))))))];
  if (selected.run) {
    try { out.unshift(runDetails(await api("GET", `/container/runs/${encodeURIComponent(selected.run)}`))); } catch (e) { selected.run = null; }
  }
  return out;
};

NC.views.schedules = async () => {
  const schedules = (await api("GET", "/container/schedules?limit=200")).schedules || [];
  const base = (s) => `/container/schedules/${encodeURIComponent(s.id)}`;
  const out = [card("Schedules", table(["Name", "Group", "Schedule", "Status", "Next run", "Last result", ""], schedules.map((s) =>
    h("tr", { dataset: { schedule: s.id }, class: selected.schedule === s.id ? "selected" : "" },
      h("td", {}, s.name), h("td", {}, s.group), h("td", {}, `${s.schedule.type} ${s.schedule.value}`), h("td", {}, statusBadge(s.status)),
      h("td", {}, when(s.nextRun)), h("td", {}, (s.lastResult || "").slice(0, 80)),
      h("td", {}, s.enabled
        ? h("button", { class: "quiet", onclick: () => act(`Pause ${s.name}`, () => api("PUT", base(s), { enabled: false })) }, "Pause")
        : h("button", { class: "quiet", onclick: () => act(`Resume ${s.name}`, () => api("PUT", base(s), { enabled: true })) }, "Resume"),
      " ", h("button", { class: "quiet", onclick: () => act(`Run ${s.name} now`, () => api("POST", `${base(s)}/run`)) }, "Run now"),
      " ", h("button", { class: "quiet", onclick: () => { selected.schedule = s.id; refresh(); } }, "Logs"))))))];
  const current = schedules.find((s) => s.id === selected.schedule);
  if (current) {
    const logs = (await api("GET", `${base(current)}/logs?limit=50`)).logs || [];
    out.push(card(`Logs: ${current.name}`, table(["Planned", "Ran", "Status", "Duration", "Result or error"], logs.map((l) =>
      h("tr", {}, h("td", {}, when(l.plannedAt)), h("td", {}, when(l.runAt)), h("td", {}, statusBadge(l.status)),
        h("td", {}, l.durationMs != null ? `${l.durationMs} ms` : ""), h("td", {}, (l.result || l.error || "").slice(0, 160)))))));
  }
  return out;
};

NC.views.channels = async () => {
  const channels = (await api("GET", "/channels")).channels;
  const details = await Promise.all(channels.map((c) => api("GET", `/channels/${encodeURIComponent(c.name)}`)));
  const chats = (await api("GET", "/channels/chats?limit=50")).chats;
  const out = [card("Channels", table(["Channel", "Status", "Account", "In", "Out", "Last error", ""], details.map((c) =>
    h("tr", {}, h("td", {}, c.name), h("td", {}, h("span", { class: `badge ${c.connected ? "ok" : c.configured ? "warn" : ""}` }, c.statusMessage)),
      h("td", {}, c.accountName || ""), h("td", {}, c.messagesIn), h("td", {}, c.messagesOut), h("td", {}, c.lastError || ""),
      h("td", {}, c.configured ? h("button", { class: "quiet", onclick: () => confirm(`Disconnect ${c.name}?`) &&
        act(`Disconnect ${c.name}`, () => api("POST", `/channels/${c.name}/disconnect`)) }, "Disconnect") : "")))),
  h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); const f = e.target.elements;
    act(`Connect ${f.channel.value}`, () => api("POST", `/channels/${f.channel.value}/connect`, JSON.parse(f.credentials.value))); } },
  h("label", {}, "Channel", h("select", { name: "channel", id: "connect-channel" }, channels.map((c) => h("option", { value: c.name }, c.name)))),
  h("label", {}, "Credentials (JSON, as the API docs show)", h("input", { name: "credentials", id: "connect-credentials", type: "password", placeholder: '{"botToken": "..."}' })),
  h("button", { type: "submit" }, "Connect"))),
  card("Recent chats", table(["Chat", "Channel", "Name", "Namespace", "Last message"], chats.map((c) =>
    h("tr", { class: `clickable${selected.chat === c.jid ? " selected" : ""}`, onclick: () => { selected.chat = c.jid; refresh(); } },
      h("td", {}, c.jid), h("td", {}, c.channel), h("td", {}, c.name || ""), h("td", {}, c.namespace || ""), h("td", {}, when(c.lastMessageAt))))))];
  if (selected.chat) {
    const messages = (await api("GET", `/channels/chats/${encodeURIComponent(selected.chat)}/messages?limit=50`)).messages;
    out.push(card(`Messages: ${selected.chat}`, table(["Time", "From", "Message"], messages.map((m) =>
      h("tr", {}, h("td", {}, when(m.timestamp)), h("td", {}, m.isFromBot ? "bot" : m.senderName || m.sender), h("td", {}, m.content))))));
  }
  return out;
};

NC.views.audit = async () => {
  const filters = NC.auditFilters || (NC.auditFilters = { severity: "", group: "" });
  const query = new URLSearchParams({ limit: "200" });
  if (filters.severity) query.set("severity", filters.severity);
  if (filters.group) query.set("group", filters.group);
  const entries = (await api("GET", `/container/audit-log?${query}`)).entries;
  return card("Audit log",
    h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); filters.group = e.target.elements.group.value.trim(); document.activeElement.blur(); refresh(); } },
      h("label", {}, "Severity", h("select", { id: "audit-severity", onchange: (e) => { filters.severity = e.target.value; e.target.blur(); refresh(); } },
        ["", "info", "warning", "violation", "error"].map((s) => h("option", { value: s, selected: filters.severity === s }, s || "all")))),
      h("label", {}, "Group", h("input", { name: "group", id: "audit-group", value: filters.group })), h("button", { type: "submit" }, "Filter")),
    table(["Time", "Severity", "Category", "Group", "Message"], entries.map((e) => h("tr", {},
      h("td", {}, when(e.timestamp)), h("td", {}, h("span", { class: `badge ${e.severity === "info" ? "" : e.severity === "warning" ? "warn" : "bad"}` }, e.severity)),
      h("td", {}, e.category), h("td", {}, e.group || ""), h("td", {}, e.message)))));
};

NC.views.proxy = async () => {
  const [status, mappings] = await Promise.all([api("GET", "/container/credential-proxy/status"), api("GET", "/container/credential-proxy/mappings")]);
  const list = mappings.mappings;
  const base = "/container/credential-proxy";
  return [card("Credential proxy",
    h("p", {}, h("span", { class: `badge ${status.running ? "ok" : "warn"}` }, status.running ? "running" : "stopped"),
      ` port ${status.port} on ${status.bindHost}, ${status.mappingCount} mappings`),
    status.running ? h("button", { class: "quiet", onclick: () => act("Stop proxy", () => api("POST", `${base}/stop`)) }, "Stop")
      : h("button", { onclick: () => act("Start proxy", () => api("POST", `${base}/start`)) }, "Start")),
  card("Mappings", table(["Name", "Upstream", "Credential", ""], list.map((m) => h("tr", { dataset: { mapping: m.name } },
    h("td", {}, m.name), h("td", {}, m.upstreamUrl), h("td", {}, `${m.credentialType} ${m.credentialMasked || ""}`),
    h("td", {}, h("button", { class: "danger", onclick: () => confirm(`Delete mapping ${m.name}?`) &&
      act(`Delete ${m.name}`, () => api("DELETE", `${base}/mappings/${encodeURIComponent(m.id)}`)) }, "Delete"))))),
  h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); const f = e.target.elements;
    act("Add mapping", () => api("POST", `${base}/mappings`, { name: f.name.value.trim(), upstreamUrl: f.upstream.value.trim(),
      credentialType: f.type.value, credential: f.credential.value })); } },
  h("label", {}, "Name", h("input", { name: "name", id: "mapping-name", placeholder: "anthropic" })),
  h("label", {}, "Upstream URL", h("input", { name: "upstream", id: "mapping-upstream", placeholder: "https://api.anthropic.com" })),
  h("label", {}, "Type", h("select", { name: "type", id: "mapping-type" }, ["api_key", "bearer"].map((t) => h("option", { value: t }, t)))),
  h("label", {}, "Credential", h("input", { name: "credential", id: "mapping-credential", type: "password" })),
  h("button", { type: "submit" }, "Add")))];
};
