// The team dashboard: reads GET /universal/overview (the same records the API answers) and draws it.
// No library and no build step: plain DOM and SVG.
"use strict";

const STATES = ["unlabelled", "predicted", "corrected", "approved"];
// SVG elements are made in the SVG namespace (MDN Web Docs, Document: createElementNS() method)
const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#3d7fd9", "#e39a2d", "#2f9e5b", "#d24b4b", "#8e5cd9", "#1aa3a3", "#c2569b", "#7a8a2e"];

function headers() {
  const token = sessionStorage.getItem("universal-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== "") node.textContent = text;
  return node;
}

// A cell's text: integers as they are, other numbers to three decimals, nothing as a dash.
function shown(value) {
  if (value === null || value === undefined) return "–";
  return typeof value === "number" && !Number.isInteger(value) ? value.toFixed(3) : String(value);
}

function table(node, columns, rows) {
  node.replaceChildren();
  const head = element("tr");
  columns.forEach(([title, numeric]) => head.append(element("th", numeric ? { class: "number" } : {}, title)));
  node.append(head);
  rows.forEach((row) => {
    const line = element("tr");
    row.forEach((value, index) => line.append(element("td", columns[index][1] ? { class: "number" } : {},
                                                     shown(value))));
    node.append(line);
  });
  if (!rows.length) node.append(element("tr", {}, "nothing yet"));
}

function progress(data) {
  const images = data.progress.images;
  const total = STATES.reduce((sum, state) => sum + images[state], 0);
  const bar = document.getElementById("progress-bar");
  bar.replaceChildren();
  STATES.forEach((state) => {
    if (!images[state]) return;
    const part = element("div", { class: state, "data-state": state, style: `flex: ${images[state]}` },
                         String(images[state]));
    part.title = `${images[state]} ${state}`;
    bar.append(part);
  });
  const legend = document.getElementById("progress-legend");
  legend.className = "legend";
  legend.replaceChildren(...STATES.map((state) => {
    const item = element("span", { "data-count": state }, `${state}: ${images[state]}`);
    item.prepend(element("i", { class: state }));
    return item;
  }));
  document.getElementById("subtitle").textContent =
    `${total} images · ${images.approved} approved · ${data.progress.prelabelled} pre-labelled`;
  document.getElementById("prelabel").textContent = data.batch
    ? `Batch pre-labelling: ${data.batch.status || "unknown"}` : "";
  const classes = Object.entries(data.progress.classes);
  table(document.getElementById("classes"),
        [["class"], ["predicted", true], ["corrected", true], ["approved", true], ["rejected", true]],
        classes.map(([name, counts]) => [name, counts.predicted || 0, counts.corrected || 0, counts.approved || 0,
                                         counts.rejected || 0]));
}

function findings(data) {
  const list = document.getElementById("findings-list");
  list.replaceChildren();
  if (!data.findings.length) list.append(element("p", {}, "No image has warnings or errors."));
  data.findings.forEach((item) => {
    const row = element("div", { class: "finding", "data-image": item.image });
    const text = element("div");
    const link = element("a", { href: `../universal/labels/${encodeURIComponent(item.image)}` }, item.image);
    const title = element("h3", {}, "");
    title.append(link, ` · ${item.worst} (${item.of})`);
    title.className = item.worst;
    text.append(title);
    item.findings.forEach((finding) => text.append(element("p", { class: finding.severity }, finding.message)));
    if (item.preview) {  // fetched with the token, as an <img> would be sent without it
      const picture = element("img", { alt: `preview of ${item.image}` });
      fetch(item.preview, { headers: headers() }).then((answer) => answer.ok ? answer.blob() : null)
        .then((blob) => { if (blob) picture.src = URL.createObjectURL(blob); });
      row.append(picture);
    }
    row.append(text);
    list.append(row);
  });
}

function people(data) {
  table(document.getElementById("annotator-table"),
        [["annotator"], ["images", true], ["versions", true], ["seconds", true], ["voxels added", true],
         ["voxels removed", true], ["Dice vs prediction", true]],
        Object.entries(data.annotators).map(([name, e]) => [name, e.images, e.versions, Math.round(e.seconds),
                                                              e.added, e.removed, e.mean_dice]));
  table(document.getElementById("effort-table"),
        [["model version"], ["versions", true], ["voxels added", true], ["voxels removed", true],
         ["Dice vs prediction", true]],
        Object.entries(data.effort_by_model_version).map(([version, e]) => [version === "None" ? "released" : version,
                                                                           e.versions, e.added, e.removed, e.mean_dice]));
  table(document.getElementById("agreement-table"),
        [["class"], ["mean Dice", true], ["lowest Dice", true], ["pairs", true]],
        Object.entries(data.agreement).map(([name, a]) => [name, a.mean_dice, a.lowest_dice, a.pairs]));
}

// A line plot of series {name: [[x, y], ...]} into node, y in 0..yMax.
function plot(node, series, { xLabel = "", yLabel = "", yMax = null } = {}) {
  node.replaceChildren();
  const names = Object.keys(series).filter((name) => series[name].length);
  if (!names.length) { node.append(element("p", {}, "nothing yet")); return; }
  const points = names.flatMap((name) => series[name]);
  const [x0, x1] = [Math.min(...points.map((p) => p[0])), Math.max(...points.map((p) => p[0]))];
  const top = yMax ?? Math.max(...points.map((p) => p[1])) * 1.05;
  const [width, height, left, bottom] = [640, 220, 44, 28];
  const sx = (x) => left + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (width - left - 150);
  const sy = (y) => height - bottom - (y / (top || 1)) * (height - bottom - 24);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  const add = (tag, attributes, text) => {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    if (text) node.textContent = text;
    svg.append(node);
  };
  add("line", { x1: left, y1: sy(0), x2: width - 150, y2: sy(0), stroke: "#9aa3ad" });
  add("line", { x1: left, y1: sy(0), x2: left, y2: sy(top), stroke: "#9aa3ad" });
  add("text", { x: left - 6, y: sy(top) + 4, "text-anchor": "end" }, top.toFixed(2));
  add("text", { x: left - 6, y: sy(0) + 4, "text-anchor": "end" }, "0");
  add("text", { x: (width - 150) / 2, y: height - 6, "text-anchor": "middle" }, `${xLabel} ${x0}–${x1}`);
  add("text", { x: 4, y: 12 }, yLabel);
  names.forEach((name, index) => {
    const colour = PALETTE[index % PALETTE.length];
    const path = series[name].map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`);
    add("path", { d: path.join(" "), fill: "none", stroke: colour, "stroke-width": 2 });
    series[name].forEach((p) => add("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: colour }));
    add("text", { x: width - 140, y: 18 + index * 14, fill: colour }, name);
  });
  node.append(svg);
}

function models(data) {
  const series = {};
  data.versions.forEach((version) => {
    Object.entries(version.gate_dice).forEach(([name, dice]) => {
      (series[name] = series[name] || []).push([version.version, dice]);
    });
  });
  plot(document.getElementById("versions-plot"), series, { xLabel: "version", yLabel: "Dice", yMax: 1 });
  const runs = document.getElementById("runs-plot");
  runs.replaceChildren();
  if (!data.runs.length) runs.append(element("p", {}, "nothing yet"));
  data.runs.forEach((run) => {
    const box = element("div", { "data-run": run.run });
    box.append(element("h3", {}, `run ${run.run}`));
    const loss = element("div");
    const validation = element("div");
    box.append(loss, validation);
    runs.append(box);
    plot(loss, { loss: run.loss }, { xLabel: "step", yLabel: "loss" });
    if (Object.keys(run.validation).length) {
      plot(validation, run.validation, { xLabel: "step", yLabel: "validation Dice", yMax: 1 });
    }
  });
}

async function load() {
  const answer = await fetch("overview", { headers: headers() });
  if (answer.status === 401 || answer.status === 403) {
    document.getElementById("login").hidden = false;
    document.getElementById("content").hidden = true;
    document.getElementById("login-error").textContent = sessionStorage.getItem("universal-token")
      ? `the server refused this token (${answer.status})` : "";
    return;
  }
  const data = await answer.json();
  document.getElementById("login").hidden = true;
  document.getElementById("content").hidden = false;
  progress(data);
  findings(data);
  people(data);
  models(data);
  document.body.dataset.loaded = "true";
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("universal-token", document.getElementById("token").value.trim());
  load();
});
load();
