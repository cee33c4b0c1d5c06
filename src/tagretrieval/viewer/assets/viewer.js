// tagretrieval embedding viewer: hand-written, no library, runs from file://.
// State a test (or a curious user) can read: window.viewerState; actions: window.viewer.
(function () {
  "use strict";

  const DATA = JSON.parse(document.getElementById("viewer-data").textContent);
  const T = DATA.tracks;
  const N = T.id.length;
  const DIM = DATA.dim;
  const TOP_K = 10;
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
    "#9edae5", "#dbdb8d", "#393b79"];
  const GREY = "#d3d3d3";
  const HAS_TAG = "#d62728";
  const SPLIT_COLORS = { train: "#1f77b4", valid: "#ff7f0e", test: "#2ca02c" };
  // viridis, reversed: near (distance 0) is yellow, far is purple
  const RAMP = ["#fde725", "#b5de2b", "#6ece58", "#35b779", "#1f9e89", "#26828e", "#31688e", "#3e4989",
    "#482878", "#440154"];
  const MAX_LEGEND = 19;

  // ---------- data ----------
  function decode(b64, rows) {
    // little-endian int16 (value * 1/scale), rows of DIM; returned L2-normalised as Float32Array
    const bytes = atob(b64);
    const view = new DataView(new ArrayBuffer(bytes.length));
    for (let i = 0; i < bytes.length; i++) view.setUint8(i, bytes.charCodeAt(i));
    const out = new Float32Array(rows * DIM);
    for (let r = 0; r < rows; r++) {
      let norm = 0;
      for (let d = 0; d < DIM; d++) {
        const v = view.getInt16(2 * (r * DIM + d), true) * DATA.embedding_scale;
        out[r * DIM + d] = v;
        norm += v * v;
      }
      norm = Math.sqrt(norm) || 1;
      for (let d = 0; d < DIM; d++) out[r * DIM + d] /= norm;
    }
    return out;
  }
  const songs = decode(DATA.track_embeddings, N);
  const tagVectors = decode(DATA.tag_embeddings, DATA.tags.length);

  function cosineTo(vectors, offset) {
    // cosine of every song to the unit vector vectors[offset .. offset + DIM)
    const out = new Float32Array(N);
    for (let i = 0; i < N; i++) {
      let s = 0;
      for (let d = 0; d < DIM; d++) s += songs[i * DIM + d] * vectors[offset + d];
      out[i] = s;
    }
    return out;
  }

  const tagIndex = new Map();
  DATA.tags.forEach((t, j) => tagIndex.set(t.toLowerCase(), j));
  const tagCount = new Array(DATA.tags.length).fill(0);
  T.tag_ids.forEach(ids => ids.forEach(j => { tagCount[j] += 1; }));
  const categories = [...new Set(DATA.categories)];
  const projections = Object.keys(DATA.projections);

  // ---------- state ----------
  const state = {
    ready: false,
    nTracks: N,
    nTracksTotal: DATA.n_tracks_total,
    projection: projections[0],
    colorMode: "cluster",
    colorArg: null,
    colors: new Array(N).fill(GREY),
    values: null,          // per-song number behind the colours (cosine distance in "similarity" mode)
    legend: [],
    selected: -1,
    hovered: -1,
    searchTag: null,
    searchResults: [],     // [{index, track_id, artist, score}], best first
    highlighted: [],
    audioSrc: "",
    plotArea: null,        // {left, top, right, bottom} in canvas px: where the map is fitted at zoom 1
    pointRadius: 0,        // px, as drawn
    errors: [],
  };
  window.viewerState = state;

  const $ = id => document.getElementById(id);
  const canvas = $("map");
  const ctx = canvas.getContext("2d");
  let drawOrder = Array.from({ length: N }, (_, i) => i);
  let view = { zoom: 1, panX: 0, panY: 0 };
  let xy = DATA.projections[state.projection];

  // ---------- colours ----------
  function rampColor(t) {
    t = Math.min(1, Math.max(0, t));
    const x = t * (RAMP.length - 1);
    const i = Math.min(RAMP.length - 2, Math.floor(x));
    const a = parseInt(RAMP[i].slice(1), 16), b = parseInt(RAMP[i + 1].slice(1), 16);
    const f = x - i;
    const mix = shift => Math.round(((a >> shift) & 255) * (1 - f) + ((b >> shift) & 255) * f);
    return "#" + ((1 << 24) | (mix(16) << 16) | (mix(8) << 8) | mix(0)).toString(16).slice(1);
  }

  function categorical(labels, order) {
    // labels[i] a string (null: "none"); legend entries for `order`, extra labels pooled as "other"
    const counts = new Map();
    labels.forEach(l => counts.set(l, (counts.get(l) || 0) + 1));
    const shown = order.filter(l => counts.has(l) && l !== null).slice(0, MAX_LEGEND);
    const colorOf = new Map(shown.map((l, k) => [l, PALETTE[k % PALETTE.length]]));
    const legend = shown.map(l => ({ label: String(l), color: colorOf.get(l), count: counts.get(l) }));
    const other = [...counts.keys()].filter(l => l !== null && !colorOf.has(l));
    if (other.length) {
      legend.push({ label: "other (" + other.length + ")", color: "#555555",
        count: other.reduce((s, l) => s + counts.get(l), 0) });
    }
    if (counts.has(null)) legend.push({ label: "none", color: GREY, count: counts.get(null) });
    const colors = labels.map(l => l === null ? GREY : (colorOf.get(l) || "#555555"));
    return { colors, legend, background: labels.map(l => l === null) };
  }

  function recolor() {
    const mode = state.colorMode;
    let result;
    state.values = null;
    if (mode === "cluster") {
      const labels = T.cluster.map(c => "cluster " + c);
      const order = Array.from({ length: DATA.n_clusters }, (_, c) => "cluster " + c);
      result = categorical(labels, order);
    } else if (mode === "split") {
      const colors = T.split.map(s => SPLIT_COLORS[s] || "#555555");
      const counts = {};
      T.split.forEach(s => { counts[s] = (counts[s] || 0) + 1; });
      const legend = Object.keys(counts).sort().map(s => ({ label: s, color: SPLIT_COLORS[s] || "#555555", count: counts[s] }));
      result = { colors, legend, background: colors.map(() => false) };
    } else if (mode === "tag") {
      const j = state.colorArg;
      const has = T.tag_ids.map(ids => ids.includes(j));
      const n = has.filter(Boolean).length;
      result = {
        colors: has.map(h => h ? HAS_TAG : GREY),
        legend: [{ label: "has " + DATA.tags[j], color: HAS_TAG, count: n }, { label: "not", color: GREY, count: N - n }],
        background: has.map(h => !h),
      };
    } else if (mode === "category") {
      // a song's label: its most frequent (catalogue-wide) tag of the category; null if it has none
      const inCategory = DATA.tags.map((_, j) => DATA.categories[j] === state.colorArg);
      const labels = T.tag_ids.map(ids => {
        let best = -1;
        ids.forEach(j => { if (inCategory[j] && (best < 0 || tagCount[j] > tagCount[best])) best = j; });
        return best < 0 ? null : DATA.tags[best];
      });
      const order = DATA.tags.map((t, j) => j).filter(j => inCategory[j])
        .sort((a, b) => tagCount[b] - tagCount[a] || a - b).map(j => DATA.tags[j]);
      result = categorical(labels, order);
    } else if (mode === "similarity") {
      if (state.selected < 0) {
        result = { colors: new Array(N).fill(GREY), legend: [{ label: "click a song first", color: GREY, count: N }],
          background: new Array(N).fill(true) };
      } else {
        const cos = cosineTo(songs, state.selected * DIM);
        const distance = Array.from(cos, c => 1 - c);
        const far = distance.reduce((m, d) => Math.max(m, d), 0) || 1;
        result = { colors: distance.map(d => rampColor(d / far)), legend: [], background: null };
        result.gradient = { near: 0, far };
        state.values = distance;
      }
    }
    state.colors = result.colors;
    state.legend = result.legend;
    state.gradient = result.gradient || null;
    if (state.values) {
      drawOrder.sort((a, b) => state.values[b] - state.values[a]);  // nearest drawn last, on top
    } else {
      drawOrder = Array.from({ length: N }, (_, i) => i);
      const bg = result.background;
      drawOrder.sort((a, b) => (bg[b] ? 1 : 0) - (bg[a] ? 1 : 0) || a - b);
    }
    renderLegend();
    draw();
  }

  function renderLegend() {
    const box = $("legend");
    box.textContent = "";
    if (state.gradient) {
      const bar = document.createElement("div");
      bar.className = "gradient";
      bar.style.background = "linear-gradient(to right, " + RAMP.join(", ") + ")";
      const ends = document.createElement("div");
      ends.className = "ends";
      const near = document.createElement("span");
      near.textContent = "cosine distance 0 (selected)";
      const far = document.createElement("span");
      far.textContent = state.gradient.far.toFixed(3);
      ends.append(near, far);
      const note = document.createElement("div");
      note.className = "muted";
      note.textContent = "in the full " + DIM + "-d embedding, not the 2-D map";
      box.append(bar, ends, note);
      return;
    }
    state.legend.forEach(entry => {
      const row = document.createElement("div");
      row.className = "item";
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = entry.color;
      const text = document.createElement("span");
      text.textContent = entry.label + " (" + entry.count + ")";
      row.append(swatch, text);
      box.append(row);
    });
  }

  // ---------- drawing ----------
  const MARGIN = 20;  // px between the outermost points and the plot area's edge (> point radius + rings)

  function size() {
    const rect = canvas.getBoundingClientRect();
    return { w: rect.width, h: rect.height };
  }

  function plotArea(w, h) {
    // the canvas minus a margin, and minus the band of the reset button at the bottom (no point hides under it)
    const canvasRect = canvas.getBoundingClientRect();
    const button = $("reset-view").getBoundingClientRect();
    const bottom = button.height > 0 ? Math.min(h, button.top - canvasRect.top) : h;
    return { left: MARGIN, top: MARGIN, right: Math.max(MARGIN + 1, w - MARGIN), bottom: Math.max(MARGIN + 1, bottom - MARGIN) };
  }

  // map coordinates -> canvas pixels at zoom 1: the map's extent fitted into the plot area, aspect ratio kept,
  // centred; recomputed when the canvas changes size or another projection is shown
  let fit = null;
  function fitView() {
    const { w, h } = size();
    let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
    for (let i = 0; i < N; i++) {
      minX = Math.min(minX, xy[2 * i]); maxX = Math.max(maxX, xy[2 * i]);
      minY = Math.min(minY, xy[2 * i + 1]); maxY = Math.max(maxY, xy[2 * i + 1]);
    }
    if (!(N > 0)) { minX = maxX = minY = maxY = 0; }
    const area = plotArea(w, h);
    const areaW = area.right - area.left, areaH = area.bottom - area.top;
    const spanX = Math.max(maxX - minX, 1e-12), spanY = Math.max(maxY - minY, 1e-12);
    const scale = Math.min(areaW / spanX, areaH / spanY);
    fit = {
      w, h, scale, area,
      x0: area.left + (areaW - (maxX - minX) * scale) / 2 - minX * scale,
      y0: area.top + (areaH - (maxY - minY) * scale) / 2 + maxY * scale,  // screen y grows downwards
    };
    state.plotArea = area;
  }

  function toScreen(i) {
    const { w, h, scale, x0, y0 } = fit;
    const x = x0 + xy[2 * i] * scale;
    const y = y0 - xy[2 * i + 1] * scale;
    return { x: (x - w / 2) * view.zoom + w / 2 + view.panX, y: (y - h / 2) * view.zoom + h / 2 + view.panY };
  }

  function draw() {
    const { w, h } = size();
    if (!fit || fit.w !== w || fit.h !== h) fitView();
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const r = (N > 5000 ? 2 : N > 1000 ? 3 : 4.5) * Math.sqrt(view.zoom);
    state.pointRadius = r;
    ctx.lineWidth = 0.5;
    ctx.strokeStyle = "rgba(0,0,0,0.25)";
    for (const i of drawOrder) {
      const p = toScreen(i);
      ctx.beginPath();
      ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
      ctx.fillStyle = state.colors[i];
      ctx.fill();
      if (N <= 5000) ctx.stroke();
    }
    for (const [color, width] of [["#fff", 4.5], ["#000", 2]]) {  // search hits: black ring on a white halo
      ctx.strokeStyle = color;
      ctx.lineWidth = width;
      for (const i of state.highlighted) {
        const p = toScreen(i);
        ctx.beginPath();
        ctx.arc(p.x, p.y, r + 3, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }
    for (const [i, color, radius] of [[state.hovered, "#555", r + 2], [state.selected, "#e6007e", r + 5]]) {
      if (i < 0) continue;
      const p = toScreen(i);
      ctx.beginPath();
      ctx.arc(p.x, p.y, radius, 0, 2 * Math.PI);
      ctx.strokeStyle = color;
      ctx.lineWidth = 2.5;
      ctx.stroke();
    }
  }

  function nearest(x, y, radius) {
    if (!fit) fitView();
    let best = -1, bestD = radius * radius;
    for (let i = 0; i < N; i++) {
      const p = toScreen(i);
      const d = (p.x - x) * (p.x - x) + (p.y - y) * (p.y - y);
      if (d <= bestD) { best = i; bestD = d; }
    }
    return best;
  }

  // ---------- selection, audio, search ----------
  function describe(box, i) {
    box.textContent = "";
    const id = document.createElement("div");
    id.className = "id";
    id.textContent = T.id[i];
    const artist = document.createElement("div");
    artist.textContent = T.artist[i] ? "artist: " + T.artist[i] : "artist: (unknown)";
    const tags = document.createElement("div");
    tags.textContent = "tags: " + (T.tag_text[i] || "(none)");
    const meta = document.createElement("div");
    meta.className = "muted";
    meta.textContent = "split " + (T.split[i] || "?") + " \u00b7 cluster " + T.cluster[i];
    box.append(id, artist, tags, meta);
  }

  function select(i) {
    if (!(i >= 0 && i < N)) throw new Error("no song with index " + i);
    state.selected = i;
    const info = $("selected-info");
    info.classList.remove("muted");
    describe(info, i);
    playAudio(i);
    [...$("results").children].forEach(li => li.classList.toggle("selected", Number(li.dataset.index) === i));
    if ($("recolor-on-click").checked) setColorMode("similarity");
    else if (state.colorMode === "similarity") recolor();
    else draw();
  }

  function playAudio(i) {
    const player = $("player");
    const status = $("audio-status");
    state.audioSrc = T.audio[i];
    if (!T.audio[i]) {
      player.pause();
      player.removeAttribute("src");
      status.textContent = "no audio for this song";
      return;
    }
    status.textContent = "";
    player.src = T.audio[i];
    const playing = player.play();
    if (playing) playing.catch(err => { status.textContent = "cannot play " + decodeURI(T.audio[i]) + ": " + err.message; });
  }

  function findTag(text) {
    const query = text.trim().toLowerCase();
    if (!query) return -1;
    if (tagIndex.has(query)) return tagIndex.get(query);
    const prefix = DATA.tags.findIndex(t => t.toLowerCase().startsWith(query));
    return prefix >= 0 ? prefix : DATA.tags.findIndex(t => t.toLowerCase().includes(query));
  }

  function search(text) {
    const j = typeof text === "number" ? text : findTag(String(text));
    const status = $("search-status");
    const list = $("results");
    list.textContent = "";
    if (j < 0) {
      state.searchTag = null;
      state.searchResults = [];
      state.highlighted = [];
      status.textContent = text ? "no tag matches \u201c" + text + "\u201d" : "";
      draw();
      return [];
    }
    const cos = cosineTo(tagVectors, j * DIM);
    const order = Array.from({ length: N }, (_, i) => i).sort((a, b) => cos[b] - cos[a] || a - b);
    state.searchTag = DATA.tags[j];
    state.searchResults = order.slice(0, TOP_K).map(i => ({ index: i, track_id: T.id[i], artist: T.artist[i], score: cos[i] }));
    state.highlighted = state.searchResults.map(r => r.index);
    status.textContent = "top " + state.searchResults.length + " of " + N + " songs for \u201c" + DATA.tags[j] +
      "\u201d (cosine in the full embedding)";
    for (const r of state.searchResults) {
      const li = document.createElement("li");
      li.dataset.index = r.index;
      li.className = r.index === state.selected ? "selected" : "";
      li.textContent = r.track_id + (r.artist ? " \u2014 " + r.artist : "") + " ";
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = r.score.toFixed(3);
      li.append(score);
      li.addEventListener("click", () => select(r.index));
      list.append(li);
    }
    draw();
    return state.searchResults;
  }

  function setColorMode(mode, arg) {
    state.colorMode = mode;
    $("color-mode").value = mode;
    const argSelect = $("color-arg");
    argSelect.textContent = "";
    argSelect.hidden = !(mode === "tag" || mode === "category");
    if (mode === "tag") {
      const byCount = DATA.tags.map((t, j) => j).sort((a, b) => tagCount[b] - tagCount[a] || a - b);
      byCount.forEach(j => argSelect.append(new Option(DATA.tags[j] + " (" + tagCount[j] + ")", String(j))));
      const j = arg !== undefined ? Number(arg) : (typeof state.colorArg === "number" ? state.colorArg : byCount[0]);
      state.colorArg = j;
      argSelect.value = String(j);
    } else if (mode === "category") {
      categories.forEach(c => argSelect.append(new Option(c, c)));
      state.colorArg = arg !== undefined ? arg : (categories.includes(state.colorArg) ? state.colorArg : categories[0]);
      argSelect.value = state.colorArg;
    }
    recolor();
  }

  function setProjection(name) {
    if (!DATA.projections[name]) throw new Error("no projection " + name);
    state.projection = name;
    $("projection").value = name;
    xy = DATA.projections[name];
    fit = null;
    draw();
  }

  // ---------- events ----------
  const tooltip = $("tooltip");
  let press = null;

  function local(event) {
    const rect = canvas.getBoundingClientRect();
    return { x: event.clientX - rect.left, y: event.clientY - rect.top };
  }

  canvas.addEventListener("mousedown", event => {
    const p = local(event);
    press = { x: p.x, y: p.y, panX: view.panX, panY: view.panY, moved: false };
  });
  window.addEventListener("mouseup", event => {
    if (press && !press.moved && event.target === canvas) {
      const p = local(event);
      const i = nearest(p.x, p.y, 10);
      if (i >= 0) select(i);
    }
    press = null;
    canvas.classList.remove("dragging");
  });
  canvas.addEventListener("mousemove", event => {
    const p = local(event);
    if (press && (press.moved || Math.abs(p.x - press.x) + Math.abs(p.y - press.y) > 4)) {
      press.moved = true;
      canvas.classList.add("dragging");
      view.panX = press.panX + p.x - press.x;
      view.panY = press.panY + p.y - press.y;
      tooltip.hidden = true;
      draw();
      return;
    }
    const i = nearest(p.x, p.y, 8);
    if (i !== state.hovered) {
      state.hovered = i;
      draw();
    }
    if (i < 0) { tooltip.hidden = true; return; }
    describe(tooltip, i);
    tooltip.hidden = false;
    const { w } = size();
    tooltip.style.left = Math.min(p.x + 14, w - tooltip.offsetWidth - 4) + "px";
    tooltip.style.top = (p.y + 14) + "px";
  });
  canvas.addEventListener("mouseleave", () => {
    tooltip.hidden = true;
    if (state.hovered >= 0) { state.hovered = -1; draw(); }
  });
  canvas.addEventListener("wheel", event => {
    event.preventDefault();
    const p = local(event);
    const { w, h } = size();
    const factor = Math.exp(-event.deltaY * 0.0015);
    const zoom = Math.min(50, Math.max(0.5, view.zoom * factor));
    const f = zoom / view.zoom;
    // keep the point under the cursor fixed
    view.panX = (p.x - w / 2) - f * (p.x - w / 2 - view.panX);
    view.panY = (p.y - h / 2) - f * (p.y - h / 2 - view.panY);
    view.zoom = zoom;
    draw();
  }, { passive: false });
  $("reset-view").addEventListener("click", () => { view = { zoom: 1, panX: 0, panY: 0 }; draw(); });
  window.addEventListener("resize", draw);

  $("color-mode").addEventListener("change", event => setColorMode(event.target.value));
  $("color-arg").addEventListener("change", event => {
    setColorMode(state.colorMode, state.colorMode === "tag" ? Number(event.target.value) : event.target.value);
  });
  $("projection").addEventListener("change", event => setProjection(event.target.value));
  const box = $("search");
  box.addEventListener("input", () => { if (tagIndex.has(box.value.trim().toLowerCase())) search(box.value); });
  box.addEventListener("keydown", event => { if (event.key === "Enter") search(box.value); });
  box.addEventListener("search", () => { if (!box.value) search(""); });

  // ---------- start ----------
  function start() {
    document.title = DATA.title;
    $("title").textContent = DATA.title;
    $("summary").textContent = N + " songs" + (DATA.n_tracks_total > N ? " (random subsample of " + DATA.n_tracks_total + ")" : "") +
      ", " + DATA.tags.length + " tags, " + DIM + "-d embeddings, " + DATA.n_clusters + " clusters";
    projections.forEach(p => $("projection").append(new Option(p === "tsne" ? "t-SNE" : p.toUpperCase(), p)));
    $("projection-row").hidden = projections.length < 2;
    DATA.tags.forEach(t => $("tag-list").append(new Option(t)));
    setColorMode("cluster");
    state.ready = true;
  }

  window.viewer = {
    select, search, setColorMode, setProjection,
    // page (client) coordinates of song i on the map, e.g. to click it
    clientPosition(i) {
      if (!fit) fitView();
      const rect = canvas.getBoundingClientRect();
      const p = toScreen(i);
      return { x: rect.left + p.x, y: rect.top + p.y };
    },
  };
  window.addEventListener("error", event => state.errors.push(String(event.message)));
  start();
})();
