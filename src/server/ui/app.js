// effnetd's try-it page: sends each image to POST /v1/classify, as any
// client would, and shows the answer. No external resources.
"use strict";

const MAX_FILES = 16;   // per pick, drop or paste
const $ = (id) => document.getElementById(id);
let classes = 1000;

function text(tag, content, cls) {
  const el = document.createElement(tag);
  if (content !== undefined) el.textContent = content;
  if (cls) el.className = cls;
  return el;
}

function describeWeights(w) {
  if (!w) return "unknown";
  const sha = w.sha256 ? " (sha256 " + w.sha256.slice(0, 12) + "…)" : "";
  if (w.source === "hub") {
    return "hf://" + w.repo + "@" + w.revision + "/" + w.file + ", commit " + (w.commit || "").slice(0, 12) +
      (w.trained === false ? ", seeded: untrained" : "") + sha;
  }
  // The path only with the server's show-paths setting; the file's name always.
  const file = w.path || w.file;
  if (w.source === "seeded") return "seeded, untrained (seed " + w.seed + "): " + file + sha;
  return "file " + file + sha;
}

function describeLabels(l) {
  if (!l) return "unknown";
  const names = {
    "builtin-imagenet-1k": "ImageNet-1k names (built in)",
    "hub:config.json": "names from the repository's config.json",
    "indices": "class indices (no names)",
  };
  const src = names[l.source] || (l.source.startsWith("file:") ? "file " + l.source.slice(5) : l.source);
  return src + ", " + l.count + " classes";
}

async function loadModel() {
  try {
    const r = await fetch("/v1/models", { headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const m = (await r.json()).models[0];
    classes = m.classes;
    $("model-name").textContent = m.name + " (variant " + m.variant + ", input " + m.input_size + "px)";
    $("model-precision").textContent = m.precision + " on " + m.cpu_isa;
    $("model-weights").textContent = describeWeights(m.weights);
    $("model-labels").textContent = describeLabels(m.labels);
    $("untrained").hidden = !(m.weights && m.weights.trained === false);
    $("indices").hidden = !(m.labels && m.labels.source === "indices");
    $("topk").max = String(Math.min(classes, 20));
  } catch (e) {
    $("model-name").textContent = "cannot read /v1/models: " + e.message;
  }
}

// "total;dur=12.3, queue;dur=0.1" -> {total: 12.3, queue: 0.1}
function serverTiming(header) {
  const out = {};
  for (const part of (header || "").split(",")) {
    const m = /^\s*([\w-]+)\s*;.*dur=([\d.]+)/.exec(part);
    if (m) out[m[1]] = parseFloat(m[2]);
  }
  return out;
}

function topK() {
  const k = parseInt($("topk").value, 10);
  return Number.isFinite(k) && k >= 1 ? Math.min(k, classes) : 5;
}

function renderPredictions(card, answer) {
  const list = text("ol", undefined, "preds");
  list.setAttribute("aria-label", "Top classes");
  for (const p of answer.predictions) {
    const li = text("li", undefined, "pred");
    const row = text("div", undefined, "row");
    row.append(text("span", p.label, "label"), text("span", (p.score * 100).toFixed(1) + "%", "score"));
    const bar = text("div", undefined, "bar");
    bar.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.style.width = Math.max(0, Math.min(100, p.score * 100)).toFixed(1) + "%";
    bar.append(fill);
    li.append(row, bar);
    li.dataset.index = String(p.index);
    list.append(li);
  }
  card.append(list);
}

async function classify(file, card, status) {
  const t0 = performance.now();
  try {
    const r = await fetch("/v1/classify?top_k=" + topK(), {
      method: "POST",
      headers: { "Content-Type": file.type === "image/png" ? "image/png" : file.type === "image/jpeg" ? "image/jpeg" : "application/octet-stream" },
      body: file,
    });
    const rtt = performance.now() - t0;
    const answer = await r.json().catch(() => ({}));
    status.remove();
    if (!r.ok || !answer.predictions) {
      const msg = answer.error ? answer.error.message + " (" + answer.error.code + ")" : "HTTP " + r.status;
      card.append(text("p", "Error: " + msg, "error"));
      card.dataset.state = "error";
      return;
    }
    renderPredictions(card, answer);
    const st = serverTiming(r.headers.get("Server-Timing"));
    const server = st.total !== undefined ? st.total.toFixed(1) + " ms on the server" : "server time not given";
    const infer = st.infer !== undefined ? " (inference " + st.infer.toFixed(1) + " ms)" : "";
    card.append(text("p", server + infer + ", " + rtt.toFixed(0) + " ms round trip; model " + answer.model, "timing"));
    card.dataset.state = "done";
  } catch (e) {
    status.remove();
    card.append(text("p", "Error: " + e.message, "error"));
    card.dataset.state = "error";
  }
}

async function handle(files) {
  const images = Array.from(files).filter((f) => /^image\//.test(f.type) || f.type === "");
  if (!images.length) {
    $("status").textContent = "No image among the files given.";
    return;
  }
  const take = images.slice(0, MAX_FILES);
  $("status").textContent = "Classifying " + take.length + " image" + (take.length > 1 ? "s" : "") +
    (images.length > take.length ? " (the first " + MAX_FILES + ")" : "") + "…";
  const jobs = take.map((file) => {
    const card = text("li", undefined, "result");
    card.dataset.state = "pending";
    const fig = document.createElement("figure");
    fig.className = "fig";
    const img = document.createElement("img");
    img.src = URL.createObjectURL(file);
    img.alt = file.name || "pasted image";
    img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
    fig.append(img, text("figcaption", file.name || "pasted image"));
    const status = text("p", "Classifying…", "timing");
    card.append(fig, status);
    $("results").prepend(card);
    return classify(file, card, status);
  });
  await Promise.all(jobs);
  $("status").textContent = "Done: " + take.length + " image" + (take.length > 1 ? "s" : "") + " classified.";
}

function setup() {
  loadModel();
  const input = $("files");
  input.addEventListener("change", () => { handle(input.files); input.value = ""; });
  const drop = $("drop");
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => { e.preventDefault(); handle(e.dataTransfer.files); });
  document.addEventListener("paste", (e) => {
    if (e.clipboardData && e.clipboardData.files.length) {
      e.preventDefault();
      handle(e.clipboardData.files);
    }
  });
}

document.addEventListener("DOMContentLoaded", setup);
