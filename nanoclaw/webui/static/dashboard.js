// NanoClaw console: the core (sign-in, REST calls, the live event stream, routing, DOM helpers).
// Everything goes through the public REST API; the key lives in sessionStorage, never in a URL.
"use strict";

const KEY_STORAGE = "nanoclaw.apiKey";
const API = "/api/v1";
const NC = { views: {}, runs: new Map(), events: [], lastEventId: null, stream: null, timers: [] };

// -- DOM helpers (text only: nothing the server sends is ever parsed as HTML) -------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function table(headers, rows) {
  return h("table", {}, h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.length ? rows : [h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, "Nothing yet"))]));
}

function card(title, ...children) { return h("section", { class: "card" }, h("h2", {}, title), ...children); }

function ago(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 90) return `${seconds} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : ""; }

function flash(message, isError) {
  const el = document.getElementById("flash");
  el.textContent = message || "";
  el.className = isError ? "error" : "";
}

function statusBadge(status) {
  const cls = { success: "ok", running: "warn", queued: "warn", active: "ok", paused: "warn" }[status] || (status ? "bad" : "");
  return h("span", { class: `badge ${cls}` }, status || "");
}

// -- REST ------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error && body.error.code;
  }
}

function key() { return sessionStorage.getItem(KEY_STORAGE) || ""; }

function headers(extra) {
  const out = Object.assign({}, extra || {});
  if (key()) out["X-API-Key"] = key();
  return out;
}

async function api(method, path, body) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(API + path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
  if (response.status === 401) {
    signOut("The server refused the API key (401 Unauthorized). Type a valid key.");
    throw new ApiError(401, data);
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// Run an action from a button: show what failed instead of failing silently.
async function act(label, fn) {
  try {
    const result = await fn();
    flash(`${label}: done`);
    refresh();
    return result;
  } catch (error) {
    if (error.status !== 401) flash(`${label} failed: ${error.message}`, true);
    return null;
  }
}

// -- sign-in ------------------------------------------------------------------------------
async function signIn(candidate) {
  const error = document.getElementById("login-error");
  error.textContent = "";
  const response = await fetch(API + "/container/queue/counts", { headers: candidate ? { "X-API-Key": candidate } : {} });
  if (response.status === 401) {
    error.textContent = candidate
      ? "That API key was refused (401 Unauthorized): check it, or create one with `nanoclaw api-key create --name console`."
      : "This server requires an API key.";
    return false;
  }
  if (!response.ok) {
    error.textContent = `The server answered ${response.status}; try again.`;
    return false;
  }
  sessionStorage.setItem(KEY_STORAGE, candidate);
  start();
  return true;
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  if (NC.stream) NC.stream.abort();
  NC.stream = null;
  NC.timers.forEach(clearInterval);
  NC.timers = [];
  document.getElementById("app").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
}

// -- live events: fetch() + ReadableStream, since EventSource cannot send X-API-Key ----------
async function connectEvents() {
  const controller = new AbortController();
  NC.stream = controller;
  const live = document.getElementById("live");
  while (NC.stream === controller) {
    try {
      const extra = NC.lastEventId !== null ? { "Last-Event-ID": NC.lastEventId } : {};
      const response = await fetch(API + "/events", { headers: headers(extra), signal: controller.signal });
      if (response.status === 401) { signOut("The server refused the API key (401 Unauthorized). Type a valid key."); return; }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      live.textContent = "live"; live.className = "badge ok";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          handleMessage(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    live.textContent = "reconnecting"; live.className = "badge warn";
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function handleMessage(block) {
  const message = { event: "message", data: "" };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") NC.lastEventId = value;
    else if (field === "event") message.event = value;
    else if (field === "data") message.data += value;
  }
  if (!message.data) return;
  let payload;
  try { payload = JSON.parse(message.data); } catch (e) { return; }
  if (message.event === "gap") { refresh(); return; }
  if (message.event === "dropped") return;
  onEvent(payload);
}

function onEvent(event) {
  NC.events.unshift(event);
  NC.events.length = Math.min(NC.events.length, 200);
  const data = event.data || {};
  if (event.type.startsWith("run.")) {
    const run = NC.runs.get(data.runId) || { runId: data.runId, group: data.group, kind: data.kind, steps: [], results: [] };
    if (event.type === "run.queued") run.status = "queued";
    if (event.type === "run.started") run.status = "running";
    if (event.type === "run.progress") run.steps.push(data.event);
    if (event.type === "run.result") run.results.push(data.text);
    if (event.type === "run.finished") Object.assign(run, { status: data.status, error: data.error, usage: data.usage, model: data.model, durationMs: data.durationMs });
    NC.runs.set(data.runId, run);
  }
  scheduleRefresh();
}

// -- routing and refreshing ------------------------------------------------------------------
let refreshPending = null;
function scheduleRefresh() {
  if (refreshPending) return;
  refreshPending = setTimeout(() => { refreshPending = null; refresh(); }, 150);
}

let rendering = 0;
async function refresh() {
  const name = (location.hash || "#overview").slice(1).split("/")[0];
  const view = NC.views[name] || NC.views.overview;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.getAttribute("href") === `#${name}`);
  const ticket = ++rendering;
  try {
    const content = await view();
    if (ticket !== rendering) return;
    const main = document.getElementById("view");
    const focused = document.activeElement && document.activeElement.id;
    if (focused && main.querySelector(`#${CSS.escape(focused)}`)) return; // do not replace a form being typed in
    main.replaceChildren(...[].concat(content));
  } catch (error) {
    if (error.status !== 401) flash(`Could not load: ${error.message}`, true);
  }
}

function start() {
  document.getElementById("login").hidden = true;
  document.getElementById("app").hidden = false;
  flash("");
  refresh();
  connectEvents();
  NC.timers.push(setInterval(() => { if (!document.hidden) refresh(); }, 15000));
}

window.addEventListener("hashchange", () => { flash(""); refresh(); });
document.getElementById("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  signIn(document.getElementById("login-key").value.trim());
});
document.getElementById("logout").addEventListener("click", () => signOut(""));

window.addEventListener("DOMContentLoaded", async () => {
  if (key()) { start(); return; }
  const health = await fetch(API + "/health").then((r) => r.json()).catch(() => ({}));
  if (health.auth === false) { sessionStorage.setItem(KEY_STORAGE, ""); start(); return; }
  document.getElementById("login").hidden = false;
});
