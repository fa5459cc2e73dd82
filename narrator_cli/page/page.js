// The team cache in a browser: list, search, sort, play, and follow the words while a line plays.
// Everything an entry says is set as text (textContent), never as markup: it comes from whoever uploaded it.
"use strict";

const PAGE = 200; // rows rendered at a time
const TOKEN = "narrator-token"; // sessionStorage: asked once, kept for this tab's session, sent as a header

const state = { rows: [], sorted: [], shown: [], limit: PAGE, sort: "created", dir: -1, query: "", playing: null };
const $ = (id) => document.getElementById(id);

const SORTS = {
  text: (r) => (r.text ?? r.key).toLowerCase(),
  voice: (r) => r.voice ?? "",
  model: (r) => r.model ?? "",
  provider: (r) => r.provider ?? "",
  duration: (r) => r.duration,
  size: (r) => r.size,
  billed: (r) => r.billed ?? -1,
  created: (r) => r.created ?? "",
  used: (r) => r.used,
};

function headers() {
  const token = sessionStorage.getItem(TOKEN);
  return token ? { "X-Narrator-Token": token } : {};
}

async function load() {
  document.body.dataset.state = "loading";
  let resp;
  try {
    resp = await fetch("/__narrator-page/rows", { headers: headers(), cache: "no-store" });
  } catch (err) {
    return fail("cannot reach the server");
  }
  if (resp.status === 401) {
    const had = sessionStorage.getItem(TOKEN) !== null;
    sessionStorage.removeItem(TOKEN);
    return lock(had ? "the server refused that token" : "");
  }
  if (!resp.ok) return fail(`the server answered ${resp.status}`);
  const body = await resp.json();
  const at = Object.fromEntries(body.fields.map((name, i) => [name, i]));
  state.rows = body.rows.map((r) => ({
    key: r[at.cacheKey], file: r[at.fileName], text: r[at.text], voice: r[at.voiceId], model: r[at.modelId],
    provider: r[at.provider], duration: r[at.duration], size: r[at.fileSize], billed: r[at.characterCost],
    created: r[at.createdAt], used: r[at.lastUsed], hits: r[at.hits], words: r[at.words],
  }));
  for (const row of state.rows) row.find = (row.text ?? row.key).toLowerCase();
  showTotals(body);
  $("token-form").hidden = true;
  $("error").hidden = true;
  resort();
  document.body.dataset.state = "ready";
}

function lock(message) {
  document.body.dataset.state = "locked";
  $("token-form").hidden = false;
  if (message) fail(message, "locked");
  $("token").focus();
}

function fail(message, keep) {
  const error = $("error");
  error.textContent = message;
  error.hidden = false;
  if (!keep) document.body.dataset.state = "error";
}

function showTotals(body) {
  const t = body.totals;
  $("total-entries").textContent = count(t.entries);
  $("total-bytes").textContent = bytes(t.bytes);
  $("total-duration").textContent = hours(t.duration);
  $("total-billed").textContent = count(t.charactersBilled);
  $("total-saved").textContent = count(t.charactersSaved);
  $("version").textContent = `narrator ${body.version}`;
}

function resort() {
  const key = SORTS[state.sort];
  const dir = state.dir;
  state.sorted = state.rows.slice().sort((a, b) => {
    const x = key(a), y = key(b);
    return x < y ? -dir : x > y ? dir : 0;
  });
  for (const th of document.querySelectorAll("th")) th.removeAttribute("aria-sort");
  const button = document.querySelector(`th button[data-sort="${state.sort}"]`);
  button.parentElement.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
  filter();
}

function filter() {
  const q = state.query;
  state.shown = q ? state.sorted.filter((r) => r.find.includes(q)) : state.sorted;
  state.limit = PAGE;
  render(true);
}

function render(fresh) {
  const body = $("rows");
  const from = fresh ? 0 : body.childElementCount;
  const rows = state.shown.slice(from, state.limit);
  const frag = document.createDocumentFragment();
  for (const row of rows) frag.append(line(row));
  if (fresh) body.replaceChildren(frag);
  else body.append(frag);
  $("more").hidden = state.shown.length <= state.limit;
  $("count").textContent = `${count(state.shown.length)} of ${count(state.rows.length)} entries`;
}

function cell(tr, name, text, numeric) {
  const td = document.createElement("td");
  td.className = numeric ? `${name} num` : name;
  td.textContent = text;
  tr.append(td);
  return td;
}

function line(row) {
  const tr = document.createElement("tr");
  tr.className = row === state.playing ? "entry playing" : "entry";
  tr.dataset.key = row.key;
  const first = document.createElement("td");
  const play = document.createElement("button");
  play.type = "button";
  play.className = "play";
  play.setAttribute("aria-label", "Play");
  play.textContent = "▶";
  play.addEventListener("click", () => start(row, tr));
  first.append(play);
  tr.append(first);
  const text = cell(tr, "text", row.text ?? "");
  if (row.text === null) {
    const code = document.createElement("code");
    code.textContent = row.key;
    text.append(code);
    text.title = "uploaded without its text";
  }
  cell(tr, "voice", row.voice ?? "");
  cell(tr, "model", row.model ?? "");
  cell(tr, "provider", row.provider ?? "");
  cell(tr, "duration", `${row.duration.toFixed(2)} s`, true);
  cell(tr, "size", bytes(row.size), true);
  cell(tr, "billed", row.billed === null ? "" : count(row.billed), true);
  cell(tr, "created", row.created ? when(Date.parse(row.created)) : "");
  cell(tr, "used", row.used ? when(row.used * 1000) : "");
  return tr;
}

// --- playing and captions ---------------------------------------------------------------
let words = [];
let shownWord = -1;

async function start(row, tr) {
  const player = $("player");
  for (const el of document.querySelectorAll("tr.playing")) el.classList.remove("playing");
  tr.classList.add("playing");
  state.playing = row;
  $("now").hidden = false;
  player.src = `/__narrator-audio/${encodeURIComponent(row.file)}`;
  player.play().catch(() => {}); // a browser may wait for a gesture; the controls are there
  await captions(row);
}

async function captions(row) {
  const box = $("captions");
  words = [];
  shownWord = -1;
  let timed = null;
  if (row.words > 0) {
    try {
      const resp = await fetch(`/__narrator-page/entry?key=${encodeURIComponent(row.key)}`, { headers: headers() });
      if (resp.ok) timed = usable((await resp.json()).words);
    } catch (err) { /* the line still plays */ }
  }
  if (state.playing !== row) return; // another line was started meanwhile
  if (timed) box.removeAttribute("data-estimated");
  else box.dataset.estimated = "true";
  words = timed ?? estimate(row.text ?? "", row.duration);
  const frag = document.createDocumentFragment();
  words.forEach((w, i) => {
    if (i) frag.append(" ");
    const span = document.createElement("span");
    span.className = "word";
    span.textContent = w.text;
    frag.append(span);
  });
  box.replaceChildren(frag);
  follow();
}

let frame = 0;
function loop() { // while playing, every frame: a word is shorter than the 250 ms between timeupdate events
  follow();
  frame = !$("player").paused && !$("player").ended ? requestAnimationFrame(loop) : 0;
}

function usable(list) {
  if (!Array.isArray(list)) return null;
  const out = [];
  for (const w of list) {
    if (!w || typeof w.text !== "string" || !Number.isFinite(w.start) || !Number.isFinite(w.end)) return null;
    out.push({ text: w.text, start: w.start, end: w.end });
  }
  return out.length ? out : null;
}

function estimate(text, duration) {
  const parts = text.split(/\s+/).filter(Boolean);
  const total = parts.reduce((n, p) => n + p.length + 1, 0);
  let t = 0;
  return parts.map((p) => {
    const start = t;
    t += (duration * (p.length + 1)) / total;
    return { text: p, start, end: t };
  });
}

function follow() {
  const player = $("player");
  const now = player.currentTime;
  let at = -1;
  for (let lo = 0, hi = words.length - 1; lo <= hi;) {
    const mid = (lo + hi) >> 1;
    if (words[mid].start <= now) { at = mid; lo = mid + 1; } else hi = mid - 1;
  }
  if (at !== shownWord) {
    const spans = $("captions").children;
    if (shownWord >= 0 && spans[shownWord]) spans[shownWord].classList.remove("now");
    if (at >= 0 && spans[at]) spans[at].classList.add("now");
    shownWord = at;
  }
}

// --- formatting -------------------------------------------------------------------------
const NUMBER = new Intl.NumberFormat();
function count(n) { return NUMBER.format(n ?? 0); }
function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}
function hours(seconds) {
  const s = Math.round(seconds ?? 0);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${String(m).padStart(2, "0")} min` : m ? `${m} min ${s % 60} s` : `${s} s`;
}
function when(ms) {
  if (!Number.isFinite(ms)) return "";
  const d = new Date(ms);
  const pad = (x) => String(x).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// --- wiring -----------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("search").addEventListener("input", (event) => {
    state.query = event.target.value.trim().toLowerCase();
    filter();
  });
  for (const button of document.querySelectorAll("th button[data-sort]")) {
    button.addEventListener("click", () => {
      const key = button.dataset.sort;
      state.dir = state.sort === key ? -state.dir : (key === "text" || key === "voice" || key === "model"
        || key === "provider" ? 1 : -1);
      state.sort = key;
      resort();
    });
  }
  $("more").addEventListener("click", () => { state.limit += PAGE; render(false); });
  new IntersectionObserver((seen) => {
    if (seen.some((e) => e.isIntersecting) && !$("more").hidden) { state.limit += PAGE; render(false); }
  }, { rootMargin: "400px" }).observe($("more"));
  $("player").addEventListener("play", () => { if (!frame) loop(); });
  $("player").addEventListener("seeked", follow);
  $("player").addEventListener("timeupdate", follow);
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN, token);
    $("token").value = "";
    load();
  });
  load();
});
