// lineguard station page: polls the station's own API; no framework, nothing loaded from elsewhere.
// Auth: in production the API wants a bearer token. The page asks once, keeps it in this tab's
// sessionStorage and sends it as an Authorization header; the live <img> (which cannot send
// headers) gets it as ?token=. Every string from the API goes in via textContent, never as HTML.
"use strict";

const TOKEN_KEY = "lineguard.token";
const STREAM_LIMIT = 40;
const GALLERY_LIMIT = 24;
let token = sessionStorage.getItem(TOKEN_KEY) || "";
let verdictsMissing = false;
let lastStreamTop = null;
let lastGalleryKey = "";
const thumbs = new Map(); // seq -> object URL of its annotated frame

const $ = (id) => document.getElementById(id);

class Unauthorized extends Error {}

async function api(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) {
    askToken();
    throw new Unauthorized(path);
  }
  return response;
}

function askToken(message) {
  const dialog = $("login");
  $("login-error").textContent = message || (token ? "the token was refused" : "");
  if (!dialog.open) dialog.showModal();
}

function withToken(url) {
  return token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setChip(id, text, level, title) {
  const chip = $(id);
  chip.textContent = text;
  chip.className = "chip " + level;
  chip.title = title || "";
}

// -- status ------------------------------------------------------------------------------------
function renderStatus(s) {
  $("station-name").textContent = s.station || "";
  for (const [key, value] of Object.entries(s.counters || {})) {
    const cell = $("c-" + key);
    if (cell) cell.textContent = String(value);
  }
  if (s.model) {
    const precision = s.precision ? `, ${s.precision}` + (s.computed_in && s.computed_in !== s.precision ? ` (computes ${s.computed_in})` : "") : "";
    setChip("chip-model", `model ${s.model.name}:${s.model.version} · ${s.backend}${precision}`, "ok", `sha256 ${s.model.sha256}\nthresholds ${s.thresholds}` + (s.precision_choice ? `\nprecision ${s.precision_choice}` : ""));
  } else {
    setChip("chip-model", "no model", "bad");
  }
  const cam = s.camera || {};
  const camLevel = !cam.up ? "bad" : cam.frozen ? "warn" : "ok";
  const camText = !cam.up ? "camera down" : cam.frozen ? "camera frozen" : `camera up · ${cam.fps} fps`;
  setChip("chip-camera", camText, camLevel, `${cam.source || ""}\n${cam.detail || ""}`);
  const broker = s.broker || { connected: false, detail: "" };
  setChip("chip-broker", broker.connected ? "broker connected" : "broker not connected", broker.connected ? "ok" : "warn", broker.detail);
  if (s.drift) {
    const level = s.drift.level;
    const lines = Object.entries(s.drift.signals || {}).map(([name, sig]) => `${name}: ${sig.level} (${sig.score})`);
    setChip("chip-drift", "drift " + level, level === "ok" ? "ok" : level === "warning" ? "warn" : "bad", lines.join("\n"));
  } else {
    setChip("chip-drift", "drift n/a", "", "no model loaded");
  }
  const paused = s.inspection === "paused";  // the retained …/control message paused the station
  setChip("chip-fps", paused ? "inspection paused" : `${s.fps} units/s`, paused ? "warn" : "", `outbox pending ${s.outbox_pending}`);
}

async function pollStatus() {
  try {
    const response = await api("/v1/status");
    if (response.ok) renderStatus(await response.json());
  } catch (err) {
    if (!(err instanceof Unauthorized)) console.warn(err);
  }
}

// -- verdicts ----------------------------------------------------------------------------------
async function thumbFor(v) {
  if (!v.image) return null;
  if (thumbs.has(v.seq)) return thumbs.get(v.seq);
  const response = await api(v.image.url + "?annotated=true");
  if (!response.ok) return null;
  const url = URL.createObjectURL(await response.blob());
  thumbs.set(v.seq, url);
  return url;
}

function dropThumbs(keep) {
  for (const [seq, url] of thumbs) {
    if (!keep.has(seq)) {
      URL.revokeObjectURL(url);
      thumbs.delete(seq);
    }
  }
}

async function fetchVerdicts(query) {
  const response = await api("/v1/verdicts?" + query);
  if (response.status === 404) {
    verdictsMissing = true;
    $("stream-note").textContent = "(this station serves no verdict history: /v1/verdicts is missing)";
    return [];
  }
  if (!response.ok) return [];
  return (await response.json()).verdicts || [];
}

function verdictRow(v) {
  const li = el("li");
  li.dataset.seq = String(v.seq);
  li.dataset.verdict = v.verdict;
  const img = el("img", "thumb");
  img.alt = "";
  li.append(img);
  const text = el("div");
  const head = el("div");
  head.append(el("span", "badge " + v.verdict, v.verdict), document.createTextNode(` ${v.reason} · seq ${v.seq}`));
  const latency = typeof v.latency_ms === "number" ? ` · ${v.latency_ms.toFixed(1)} ms` : "";
  text.append(head, el("div", "meta", `${v.unit_id}${latency} · ${v.defects.length} defect(s)`));
  li.append(text);
  li.addEventListener("click", () => openDetail(v.seq));
  thumbFor(v).then((url) => { if (url) img.src = url; }).catch(() => {});
  return li;
}

async function pollVerdicts() {
  if (verdictsMissing) return;
  try {
    const items = await fetchVerdicts(`limit=${STREAM_LIMIT}`);
    const top = items.length ? items[0].seq : null;
    if (top !== lastStreamTop) {
      lastStreamTop = top;
      $("verdicts").replaceChildren(...items.map(verdictRow));
    }
  } catch (err) {
    if (!(err instanceof Unauthorized)) console.warn(err);
  }
}

function galleryTile(v) {
  const tile = el("div", "tile " + v.verdict);
  tile.dataset.seq = String(v.seq);
  tile.dataset.verdict = v.verdict;
  const img = el("img");
  img.alt = `${v.verdict} ${v.unit_id}`;
  tile.append(img, el("span", "", `${v.verdict}/${v.reason}`), el("span", "meta", v.unit_id));
  tile.addEventListener("click", () => openDetail(v.seq));
  thumbFor(v).then((url) => { if (url) img.src = url; }).catch(() => {});
  return tile;
}

async function pollGallery() {
  if (verdictsMissing) return;
  try {
    const [fails, undecided] = await Promise.all([
      fetchVerdicts(`limit=${GALLERY_LIMIT}&verdict=FAIL`),
      fetchVerdicts(`limit=${GALLERY_LIMIT}&verdict=NO_DECISION`),
    ]);
    const items = fails.concat(undecided).sort((a, b) => b.seq - a.seq).slice(0, GALLERY_LIMIT);
    const key = items.map((v) => v.seq).join(",");
    if (key !== lastGalleryKey) {
      lastGalleryKey = key;
      $("gallery").replaceChildren(...items.map(galleryTile));
    }
    const shown = new Set(items.map((v) => v.seq));
    document.querySelectorAll("#verdicts li").forEach((li) => shown.add(Number(li.dataset.seq)));
    dropThumbs(shown);
  } catch (err) {
    if (!(err instanceof Unauthorized)) console.warn(err);
  }
}

// -- detail ------------------------------------------------------------------------------------
async function openDetail(seq) {
  const dialog = $("detail");
  $("detail-title").textContent = `seq ${seq}`;
  $("detail-json").textContent = "loading…";
  $("detail-defects").tBodies[0].replaceChildren();
  const img = $("detail-img");
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.removeAttribute("src");
  if (!dialog.open) dialog.showModal();
  try {
    const response = await api(`/v1/verdicts/${seq}`);
    if (!response.ok) {
      $("detail-json").textContent = `no verdict ${seq} in the frame store (HTTP ${response.status})`;
      return;
    }
    const v = await response.json();
    $("detail-title").textContent = `${v.verdict}/${v.reason} · ${v.unit_id} · seq ${v.seq}`;
    $("detail-json").textContent = JSON.stringify(v, null, 2);
    const rows = v.defects.map((d) => {
      const tr = el("tr");
      tr.append(el("td", "", d.class_name), el("td", "", d.confidence.toFixed(3)), el("td", "", d.box.map((c) => c.toFixed(3)).join(" ")));
      return tr;
    });
    $("detail-defects").tBodies[0].replaceChildren(...rows);
    if (v.image) {
      const image = await api(v.image.url + "?annotated=true");
      if (image.ok) img.src = URL.createObjectURL(await image.blob());
    }
  } catch (err) {
    if (!(err instanceof Unauthorized)) $("detail-json").textContent = String(err);
  }
}

// -- live view ---------------------------------------------------------------------------------
function startLive() {
  const img = $("live");
  img.onload = () => { $("live-note").hidden = true; };
  img.onerror = () => {
    $("live-note").hidden = false;
    $("live-note").textContent = "live view interrupted; retrying…";
    setTimeout(startLive, 2000);
  };
  img.src = withToken("/v1/live.mjpeg") + (token ? "&" : "?") + "t=" + Date.now();
}

// -- start -------------------------------------------------------------------------------------
function every(ms, fn) {
  fn();
  setInterval(fn, ms);
}

document.addEventListener("DOMContentLoaded", () => {
  $("detail-close").addEventListener("click", () => $("detail").close());
  $("login-form").addEventListener("submit", () => {
    token = $("login-token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    startLive();
    pollStatus();
    pollVerdicts();
    pollGallery();
  });
  startLive();
  every(1000, pollStatus);
  every(1000, pollVerdicts);
  every(2500, pollGallery);
});
