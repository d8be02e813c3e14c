// The page: models from the server's list, uploads with their real progress (XHR upload events), then the job's
// progress as Triton answers (Server-Sent Events from /api/jobs/ID/events), then the result beside the original.
// Plain DOM; every text from a file or the server goes in with textContent.
"use strict";

const ACTIVE_ITEMS = 3; // uploads + event streams open at once (a browser allows 6 connections per host)

const state = { models: [], limits: {}, queue: [], active: 0 };
const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "className") node.className = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c);
  return node;
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GB`;
}

// ---- server and models ----------------------------------------------------------------------------------------

async function loadHealth() {
  const line = $("#server");
  try {
    const r = await fetch("/api/health");
    const h = await r.json();
    const t = h.triton;
    line.textContent = t.ready
      ? `Triton ${t.version} at ${t.url} · ready`
      : `Triton at ${t.url} is not ready${t.error ? ": " + t.error : ""}`;
    line.classList.toggle("down", !t.ready);
  } catch (e) {
    line.textContent = "The page server does not answer";
    line.classList.add("down");
  }
}

async function loadModels() {
  try {
    const r = await fetch("/api/models");
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
    state.models = body.models;
    state.limits = body.limits;
    renderModels();
  } catch (e) {
    $("#model-info").replaceChildren(el("dd", { text: `Cannot read the models: ${e.message}. Retrying…` }));
    setTimeout(loadModels, 3000);
  }
}

function currentModel() {
  return state.models.find((m) => m.id === $("#model").value);
}

function renderModels() {
  const select = $("#model");
  const previous = select.value;
  select.replaceChildren(...state.models.map((m) =>
    el("option", { value: m.id, text: m.title ? `${m.id} — ${m.title}` : m.id })));
  if (state.models.some((m) => m.id === previous)) select.value = previous;
  else {
    const firstImage = state.models.find((m) => m.images);
    if (firstImage) select.value = firstImage.id;
  }
  select.disabled = state.models.length === 0;
  $("#limits").textContent = `Up to ${bytes(state.limits.max_upload)} per file. Photos: PNG, JPEG, WebP, BMP, TIFF. ` +
    `Clips: MP4, MOV, MKV, WebM (sound kept).`;
  renderModel();
}

function renderModel() {
  const m = currentModel();
  const info = $("#model-info");
  const form = $("#options");
  if (!m) {
    info.replaceChildren(el("dt", { text: "Models" }), el("dd", { text: "none loaded on the server" }));
    form.replaceChildren();
    return;
  }
  const takes = [m.images && "photos", m.videos && "videos"].filter(Boolean).join(" and ");
  info.replaceChildren(
    el("dt", { text: "Task" }), el("dd", { text: { style: "style transfer", sr: "super-resolution",
      vsr: "video super-resolution" }[m.task] || m.task }),
    el("dt", { text: "Scale" }), el("dd", { text: `×${m.scale}` }),
    el("dt", { text: "Weights" }), el("dd", {},
      el("span", { className: `weights-${m.weights}`, text: m.weights === "real" ? "real (trained)" : m.weights })),
    el("dt", { text: "Takes" }), el("dd", { text: takes }),
    el("dt", { text: "License" }), el("dd", { text: m.license || "—" }),
  );
  const fields = m.options.map((o) => {
    const id = `opt-${o.name}`;
    let input;
    if (o.type === "choice") {
      input = el("select", { id, name: o.name }, ...o.choices.map((c) => el("option", { value: c, text: c })));
      input.value = o.default;
    } else {
      input = el("input", { id, name: o.name, type: "number", min: o.min, max: o.max, step: o.step,
        value: o.default, inputmode: o.type === "int" ? "numeric" : "decimal" });
    }
    input.dataset.default = String(o.default);
    return el("div", { className: "field" }, el("label", { className: "field-label", for: id, text: o.label }),
      input, o.help ? el("span", { className: "help", text: o.help }) : "");
  });
  if (!m.images) fields.push(el("p", { className: "note", text: `${m.id} takes videos only.` }));
  else if (m.videos) fields.push(el("p", { className: "note", text: "Options apply to photos; clips keep their " +
    "frame rate, frame count and sound." }));
  form.replaceChildren(...fields);
  const format = $("#opt-output_format");
  const quality = $("#opt-quality");
  if (format && quality) {
    const sync = () => { quality.disabled = format.value === "PNG"; };
    format.addEventListener("change", sync);
    sync();
  }
}

// Only options changed from the server's default are sent: an identical request is then the same request to
// Triton's response cache whatever page or script sent it.
function chosenOptions() {
  const out = {};
  for (const input of $("#options").querySelectorAll("[name]")) {
    if (input.disabled || input.value === "" || input.value === input.dataset.default) continue;
    if (input.type === "number" && Number(input.value) === Number(input.dataset.default)) continue;
    out[input.name] = input.value;
  }
  return out;
}

// ---- items ----------------------------------------------------------------------------------------------------

function addFiles(files) {
  const m = currentModel();
  if (!m) return;
  const options = chosenOptions();
  for (const file of files) {
    const item = makeItem(file, m, options);
    $("#items").prepend(item.node);
    $("#empty").hidden = true;
    if (file.size > state.limits.max_upload) {
      fail(item, { source: "web", message: `${bytes(file.size)} is over the limit of ${bytes(state.limits.max_upload)}` });
      continue;
    }
    state.queue.push(item);
  }
  pump();
}

function makeItem(file, model, options) {
  const node = $("#item-template").content.firstElementChild.cloneNode(true);
  const item = { file, model, options, node, job: null, events: 0, uploadEvents: 0, doneSeen: [], finished: false };
  $(".name", node).textContent = file.name;
  $(".badge.kind", node).textContent = file.type.startsWith("video/") ? "video" : "photo";
  $(".badge.model", node).textContent = model.id;
  $(".remove", node).addEventListener("click", () => removeItem(item));
  return item;
}

function pump() {
  while (state.active < ACTIVE_ITEMS && state.queue.length) {
    const item = state.queue.shift();
    state.active += 1;
    upload(item);
  }
}

function release(item) {
  if (item.released) return;
  item.released = true;
  state.active -= 1;
  pump();
}

function setBar(item, which, fraction, text) {
  const bar = $(`.bar.${which}`, item.node);
  const progress = $("progress", bar);
  if (fraction === null) progress.removeAttribute("value");
  else progress.value = fraction;
  $(".bar-text", bar).textContent = text;
}

function upload(item) {
  const params = new URLSearchParams({ model: item.model.id, name: item.file.name, ...item.options });
  const xhr = new XMLHttpRequest();
  item.xhr = xhr;
  item.node.dataset.state = "uploading";
  xhr.open("POST", `/api/jobs?${params}`);
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  xhr.upload.addEventListener("progress", (e) => {
    item.uploadEvents += 1;
    item.node.dataset.uploadEvents = item.uploadEvents;
    const total = e.lengthComputable ? e.total : item.file.size;
    setBar(item, "upload", total ? e.loaded / total : null,
      `${Math.round((100 * e.loaded) / (total || 1))} % (${bytes(e.loaded)} of ${bytes(total)})`);
  });
  xhr.upload.addEventListener("load", () => setBar(item, "upload", 1, `done (${bytes(item.file.size)})`));
  xhr.addEventListener("load", () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON: the status says it */ }
    if (xhr.status === 202) {
      setBar(item, "upload", 1, `done (${bytes(item.file.size)})`);
      update(item, body);
      watch(item, body.id);
    } else {
      setBar(item, "upload", 0, `refused (HTTP ${xhr.status})`);
      fail(item, { source: "web", message: body.error ? body.error.message : `HTTP ${xhr.status}` });
    }
  });
  xhr.addEventListener("error", () => fail(item, { source: "web", message: "the upload failed (network error)" }));
  xhr.addEventListener("abort", () => fail(item, { source: "web", message: "upload cancelled" }));
  xhr.send(item.file);
}

function watch(item, id) {
  const source = new EventSource(`/api/jobs/${id}/events`);
  item.source = source;
  const onJob = (e) => {
    item.events += 1;
    item.node.dataset.events = item.events;
    update(item, JSON.parse(e.data));
  };
  source.addEventListener("job", onJob);
  source.addEventListener("end", (e) => {
    onJob(e);
    source.close();
    release(item);
  });
  source.addEventListener("error", () => {
    if (item.finished) { source.close(); return; }
    // the browser reconnects by itself; if the job is gone (expired, server restarted), say so
    fetch(`/api/jobs/${id}`).then((r) => {
      if (r.status === 404) { source.close(); fail(item, { source: "web", message: "the job is gone (expired or the page server restarted)" }); }
    }).catch(() => {});
  });
}

function update(item, job) {
  item.job = job;
  const node = item.node;
  node.dataset.state = job.state;
  node.dataset.job = job.id;
  $(".badge.kind", node).textContent = job.kind === "video" ? "video" : "photo";
  const p = job.progress;
  if (!item.doneSeen.includes(p.done)) {
    item.doneSeen.push(p.done);
    node.dataset.doneSeen = item.doneSeen.join(" ");
  }
  if (p.total) node.dataset.total = p.total;
  const fraction = p.total ? p.done / p.total : (job.state === "done" ? 1 : null);
  setBar(item, "work", job.state === "queued" ? 0 : fraction, job.state === "done" ? `done: ${p.stage === "done" ?
    summary(job) : p.stage}` : p.stage);
  if (job.cache) {
    const cache = $(".cache", node);
    cache.hidden = false;
    cache.textContent = job.cache.text;
    cache.classList.toggle("hit", !!job.cache.answered_from_cache);
  }
  if (job.state === "failed" || job.state === "cancelled") {
    fail(item, job.error || { source: "web", message: job.state });
  }
  if (job.state === "done" && !item.finished) {
    item.finished = true;
    showResult(item, job);
  }
  $(".remove", node).textContent = job.state === "queued" || job.state === "running" ? "Cancel" : "Remove";
}

function summary(job) {
  const n = job.progress.done;
  return job.kind === "video" ? `${n} frame${n === 1 ? "" : "s"}` : `${n} tile${n === 1 ? "" : "s"}`;
}

function fail(item, error) {
  item.finished = true;
  item.node.dataset.state = item.job && item.job.state === "cancelled" ? "cancelled" : "failed";
  const box = $(".error", item.node);
  box.hidden = false;
  const who = error.source === "triton"
    ? `Triton refused it${error.status ? ` (${error.status})` : ""}: `
    : "Not processed: ";
  box.replaceChildren(el("span", { className: "status", text: who }), el("span", { className: "reason", text: error.message }));
  $(".remove", item.node).textContent = "Remove";
  if (!item.job || !item.source) release(item);
}

function removeItem(item) {
  if (item.xhr && item.xhr.readyState !== 4) item.xhr.abort();
  if (item.source) item.source.close();
  if (item.job) fetch(`/api/jobs/${item.job.id}`, { method: "DELETE" }).catch(() => {});
  const i = state.queue.indexOf(item);
  if (i >= 0) state.queue.splice(i, 1);
  else if (!item.finished) release(item);
  if (item.objectUrl) URL.revokeObjectURL(item.objectUrl);
  item.node.remove();
  $("#empty").hidden = $("#items").children.length > 0;
}

function showResult(item, job) {
  const box = $(".result", item.node);
  box.hidden = false;
  const r = job.result;
  item.objectUrl = URL.createObjectURL(item.file);
  let media;
  if (job.kind === "video") {
    media = el("div", { className: "videos" },
      el("figure", {}, el("figcaption", { text: "Result (with its sound)" }),
        el("video", { className: "after", src: r.url, controls: true, playsinline: true, preload: "metadata" })),
      el("figure", {}, el("figcaption", { text: "Original" }),
        el("video", { className: "before", src: item.objectUrl, controls: true, muted: true, playsinline: true,
          preload: "metadata" })));
  } else {
    const after = el("img", { className: "after", src: r.url, alt: `result of ${item.file.name}`,
      width: r.width, height: r.height });
    const before = el("img", { className: "before", src: item.objectUrl, alt: `original ${item.file.name}` });
    const layer = el("div", { className: "before-layer" }, before);
    const compare = el("div", { className: "compare" }, after, layer, el("span", { className: "divider" }),
      el("span", { className: "tag tag-before", text: "before" }), el("span", { className: "tag tag-after", text: "after" }));
    const slider = el("input", { className: "slider", type: "range", min: 0, max: 100, value: 50,
      "aria-label": "before / after" });
    slider.addEventListener("input", () => compare.style.setProperty("--pos", `${slider.value}%`));
    media = el("div", { className: "compare-wrap" }, compare, slider);
    if (r.width && r.height) media.style.setProperty("--ratio", String(r.width / r.height));
    before.addEventListener("error", () => {  // TIFF, for one: the server reads it, this browser does not
      layer.remove();
      slider.replaceWith(el("p", { className: "hint", text: "This browser cannot show the original file; the " +
        "result is above." }));
    });
  }
  const size = job.input && r.width ? `${job.input.width}×${job.input.height} → ${r.width}×${r.height}` :
    (r.width ? `${r.width}×${r.height}` : "");
  const facts = [size];
  if (job.kind === "video") {
    facts.push(`${job.detail.frames} frames at ${Number(job.detail.fps).toFixed(2).replace(/\.?0+$/, "")} fps`,
      `audio ${job.detail.audio}`);
  } else {
    facts.push(`${job.detail.tiles} tile${job.detail.tiles === 1 ? "" : "s"}`);
  }
  facts.push(`${r.media_type.split("/")[1].toUpperCase()} ${bytes(r.bytes)}`, `${job.seconds.toFixed(2)} s`);
  const link = el("a", { className: "download", href: r.download_url, download: r.filename, text: "Download" });
  box.replaceChildren(media, el("p", { className: "facts" }, el("span", { className: "facts-text",
    text: facts.filter(Boolean).join(" · ") + " · " }), link));
}

// ---- wiring ---------------------------------------------------------------------------------------------------

function init() {
  $("#model").addEventListener("change", renderModel);
  $("#files").addEventListener("change", (e) => { addFiles([...e.target.files]); e.target.value = ""; });
  const drop = $("#drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => { e.preventDefault(); addFiles([...e.dataTransfer.files]); });
  loadHealth();
  loadModels();
  setInterval(loadHealth, 15000);
}

document.addEventListener("DOMContentLoaded", init);
