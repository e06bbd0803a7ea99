// clipface search page: talks to the JSON API of the same server. No external resources.
// The API token is kept in sessionStorage (this tab only) and sent as "Authorization: Bearer".
"use strict";

const TOKEN_KEY = "clipface-token";
const $ = (id) => document.getElementById(id);
let thumbnails = [];  // object URLs of the grid shown, revoked on the next render

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token()) headers.set("Authorization", "Bearer " + token());
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let reason = response.statusText;
    try { reason = (await response.json()).error || reason; } catch (_) { /* not JSON */ }
    if (response.status === 401) $("token").focus();
    throw new Error(`${response.status}: ${reason}`);
  }
  return response;
}

async function loadStats(quiet = false) {
  try {
    const s = await (await api("/api/stats")).json();
    const test = s.is_test_model ? " [TEST MODEL: random weights]" : "";
    $("stats").textContent = `${s.count} images of ${s.identities} people, model ${s.model}${test}, ${s.kind} index`;
    $("token-state").textContent = "connected";
    // an image-only model (dlib, FaceNet) has no text tower: no text box, a line that says why
    $("text-form").hidden = !s.has_text;
    $("text-query").disabled = !s.has_text;
    $("no-text").hidden = s.has_text;
    $("no-text").textContent = s.has_text ? "" : `${s.model} has no text tower: search with a photo.`;
    for (const el of document.querySelectorAll("input.k")) el.max = s.max_k;
  } catch (err) {
    $("token-state").textContent = "";
    if (!quiet) setStatus(err.message, true);
  }
}

async function showThumbnail(img, url) {
  try {
    const blob = await (await api(url)).blob();
    const objectUrl = URL.createObjectURL(blob);
    thumbnails.push(objectUrl);
    img.src = objectUrl;
  } catch (_) {
    img.alt = "thumbnail unavailable";
  }
}

function render(results, person = null) {
  thumbnails.forEach((u) => URL.revokeObjectURL(u));
  thumbnails = [];
  const grid = $("results");
  grid.replaceChildren();
  for (const r of results) {
    const card = document.createElement("figure");
    card.className = "card";
    card.title = r.path;
    if (person && r.name && r.name.toLowerCase() === person.toLowerCase()) card.classList.add("match");
    const img = document.createElement("img");
    img.alt = r.name || "unknown person";
    const thumb = document.createElement("div");
    thumb.className = "thumb";
    thumb.append(img);
    if (r.box && r.width > 0 && r.height > 0) {
      // the whole image is shown (its own aspect ratio), the matching face outlined in percentages of it
      thumb.style.aspectRatio = `${r.width} / ${r.height}`;
      const [x0, y0, x1, y1] = r.box;
      const face = document.createElement("div");
      face.className = "face-box";
      face.title = "matching face";
      face.style.left = `${(100 * Math.max(0, x0)) / r.width}%`;
      face.style.top = `${(100 * Math.max(0, y0)) / r.height}%`;
      face.style.width = `${(100 * (Math.min(r.width, x1) - Math.max(0, x0))) / r.width}%`;
      face.style.height = `${(100 * (Math.min(r.height, y1) - Math.max(0, y0))) / r.height}%`;
      thumb.append(face);
    }
    const meta = document.createElement("figcaption");
    meta.className = "meta";
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = `${r.rank}. ${r.name || "unknown"}`;
    const score = document.createElement("div");
    score.className = "score";
    score.textContent = `score ${r.score.toFixed(3)}`;
    meta.append(name, score);
    card.append(thumb, meta);
    grid.append(card);
    showThumbnail(img, r.image_url);
  }
}

async function run(label, request, after) {
  setStatus(`${label}…`);
  try {
    const body = await (await request()).json();
    after(body);
    setStatus(`${label}: ${body.results.length} results`);
  } catch (err) {
    render([]);
    setStatus(err.message, true);
  }
}

function kOf(id) {
  return parseInt($(id).value, 10) || 10;
}

function photoForm(fileInput, kInput, extra = {}) {
  const form = new FormData();
  const file = $(fileInput).files[0];
  if (file) form.append("file", file);
  form.append("k", String(kOf(kInput)));
  for (const [key, value] of Object.entries(extra)) form.append(key, value);
  return form;
}

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  setStatus("");
  loadStats();
});

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
    $("view-search").hidden = tab.dataset.view !== "search";
    $("view-audit").hidden = tab.dataset.view !== "audit";
    render([]);
    setStatus("");
  });
}

$("text-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const query = $("text-query").value;
  run(`"${query}"`, () => api("/api/search/text", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ query, k: kOf("text-k") }),
  }), (body) => render(body.results));
});

$("image-form").addEventListener("submit", (e) => {
  e.preventDefault();
  run("photo search", () => api("/api/search/image", { method: "POST", body: photoForm("image-file", "image-k") }),
    (body) => render(body.results));
});

$("audit-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("audit-name").value.trim();
  $("audit-summary").hidden = true;
  run(`audit of ${name}`, () => api("/api/audit", {
    method: "POST", body: photoForm("audit-file", "audit-k", { name }),
  }), (body) => {
    const verdict = $("audit-verdict");
    verdict.textContent = body.verdict;
    verdict.className = "verdict " + (body.identifies === true ? "yes" : body.identifies === false ? "no" : "");
    const figures = [
      ["query", body.query],
      [`matches in top ${body.k}`, `${body.matches} of ${body.k}`],
      [`precision@${body.k}`, body.precision_at_k.toFixed(2)],
      ["images of this person indexed", String(body.in_index)],
      ["chance precision", body.chance.toFixed(3)],
      ["rule", `identifies when matches >= ${body.threshold} x min(k, images indexed)`],
    ];
    $("audit-figures").replaceChildren(...figures.flatMap(([k, v]) => {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      return [dt, dd];
    }));
    $("audit-summary").hidden = false;
    render(body.results, body.name);
  });
});

loadStats(true);  // works at once where the server needs no token or this tab already has it
