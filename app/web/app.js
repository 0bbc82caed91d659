// vpt page: talks only to the server that served it (GET /ui/config, /readyz, /classes, /examples; POST /classify).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "vpt.token";
  const DEFAULTS = {
    token_required: false,
    samples: 20,
    max_samples: 20,
    alpha: 0.1,
    thresholds: { entropy: 0.5 },
    examples: [],
  };

  const state = {
    config: { ...DEFAULTS },
    model: null,
    classes: [],
    file: null,
    previewUrl: null,
    seq: 0, // answers to older requests are dropped
    timer: null,
  };

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  // -- HTTP ------------------------------------------------------------------------------

  async function api(path, options = {}) {
    let response;
    try {
      response = await fetch(path, {
        ...options,
        headers: { Accept: "application/json", ...(options.headers || {}) },
        cache: "no-store",
      });
    } catch {
      throw new ApiError(0, "cannot reach the server: is it still running?");
    }
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!response.ok) {
      let detail = `${response.status} ${response.statusText}`.trim();
      if (body && typeof body.detail === "string") detail = body.detail;
      else if (body && body.detail) detail = JSON.stringify(body.detail);
      throw new ApiError(response.status, detail);
    }
    return body;
  }

  function authHeaders() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  // -- messages --------------------------------------------------------------------------

  function showError(what, err) {
    const status = err instanceof ApiError && err.status ? ` (HTTP ${err.status})` : "";
    $("error-title").textContent = `${what}${status}:`;
    $("error-text").textContent = err instanceof Error ? err.message : String(err);
    $("error").hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  }

  // -- server state ----------------------------------------------------------------------

  async function loadConfig() {
    try {
      state.config = { ...DEFAULTS, ...(await api("/ui/config")) };
    } catch (err) {
      showError("Could not read the page settings", err);
    }
    $("token-box").hidden = !state.config.token_required;
    $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
    setSampleRange(state.config.max_samples, state.config.samples);
    renderExamples(state.config.examples || []);
  }

  // The demo's example pictures: one click classifies one, exactly as if it had been uploaded.
  function renderExamples(examples) {
    const items = examples.map((ex) => {
      const button = el(
        "button",
        { type: "button", class: "example", "data-example": ex.name, "aria-pressed": "false" },
        el("img", { src: ex.url, alt: "" }),
        el("span", {}, el("b", { text: ex.title }), el("small", { text: ex.note })),
      );
      button.addEventListener("click", () => useExample(ex, button));
      return el("li", {}, button);
    });
    $("example-list").replaceChildren(...items);
    $("examples").hidden = !items.length;
  }

  async function useExample(ex, button) {
    try {
      const response = await fetch(ex.url, { cache: "no-store" });
      if (!response.ok) throw new ApiError(response.status, `could not load the example ${ex.title}`);
      const blob = await response.blob();
      setFile(new File([blob], `${ex.name}.png`, { type: blob.type || "image/png" }));
      button.setAttribute("aria-pressed", "true");
    } catch (err) {
      showError("Could not load the example", err instanceof ApiError ? err : new ApiError(0, String(err)));
    }
  }

  function setSampleRange(max, value) {
    const slider = $("samples");
    slider.max = String(Math.max(1, max));
    slider.value = String(Math.min(Math.max(1, value), max));
    $("samples-out").value = slider.value;
  }

  async function pollReady(delay = 1000) {
    const box = $("model");
    try {
      const ready = await api("/readyz");
      state.model = ready.model;
      box.dataset.state = "ready";
      $("model-text").replaceChildren(
        "Model ",
        el("code", { text: ready.model.id }),
        " ",
        el("span", { class: "variant", text: ready.model.variant, title: "posterior variant" }),
      );
      const limit = Math.min(state.config.max_samples, ready.model.max_samples);
      setSampleRange(limit, Number($("samples").value));
      await loadClasses();
      return;
    } catch (err) {
      const loading = err.status === 503;
      box.dataset.state = loading ? "loading" : "down";
      $("model-text").textContent = loading ? `Model not ready: ${err.message}` : `Server unreachable: ${err.message}`;
    }
    setTimeout(() => pollReady(Math.min(delay * 1.5, 10000)), delay);
  }

  // -- classes ---------------------------------------------------------------------------

  async function loadClasses() {
    try {
      renderClasses((await api("/classes")).classes);
    } catch (err) {
      showError("Could not list the classes", err);
    }
  }

  function renderClasses(names) {
    state.classes = names;
    $("class-count").textContent = `(${names.length})`;
    const items = names.map((name) => {
      const remove = el("button", { type: "button", "aria-label": `Remove class ${name}`, title: "Remove", text: "\u00d7" });
      remove.addEventListener("click", () => removeClass(name, remove));
      return el("li", {}, el("span", { text: name }), remove);
    });
    $("class-list").replaceChildren(...items);
    if (!names.length) $("class-list").replaceChildren(el("li", { class: "none", text: "No classes yet: add some above." }));
  }

  function needToken(err) {
    if (err.status === 401 || err.status === 403) {
      $("token-box").hidden = false;
      $("token").focus();
    }
  }

  async function addClasses(event) {
    event.preventDefault();
    const input = $("new-class");
    const names = input.value.split(",").map((s) => s.trim()).filter(Boolean);
    if (!names.length) {
      showError("Nothing to add", new Error("type one or more class names, separated by commas"));
      input.focus();
      return;
    }
    const button = $("add-button");
    button.disabled = true;
    try {
      const out = await api("/classes", {
        method: "POST",
        headers: { "Content-Type": "application/json", ...authHeaders() },
        body: JSON.stringify({ names }),
      });
      clearError();
      renderClasses(out.classes);
      input.value = "";
      $("classes-status").textContent = out.added.length
        ? `Added ${out.added.join(", ")}.`
        : "Already registered: nothing changed.";
      scheduleClassify(0);
    } catch (err) {
      showError("Could not add the classes", err);
      needToken(err);
    } finally {
      button.disabled = false;
    }
  }

  async function removeClass(name, button) {
    button.disabled = true;
    try {
      const out = await api(`/classes?${new URLSearchParams({ name })}`, { method: "DELETE", headers: authHeaders() });
      clearError();
      renderClasses(out.classes);
      $("classes-status").textContent = `Removed ${out.removed}.`;
      $("new-class").focus();
      scheduleClassify(0);
    } catch (err) {
      button.disabled = false;
      showError(`Could not remove ${name}`, err);
      needToken(err);
    }
  }

  // -- image in --------------------------------------------------------------------------

  function setFile(file) {
    if (!file) return;
    for (const b of document.querySelectorAll(".example")) b.setAttribute("aria-pressed", "false");
    state.file = file;
    const drop = $("drop");
    const preview = $("preview");
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = null;
    preview.hidden = true;
    preview.classList.remove("small");
    if (file.type.startsWith("image/")) {
      state.previewUrl = URL.createObjectURL(file);
      preview.alt = `Your image${file.name ? `: ${file.name}` : ""}`;
      preview.src = state.previewUrl;
      preview.hidden = false;
    }
    drop.classList.add("has-image");
    $("drop-text").replaceChildren(
      el("span", { class: "drop-icon", "aria-hidden": "true", text: "\u21ea" }),
      el("span", { text: `${file.name || "pasted image"}: drop or choose another image` }),
    );
    scheduleClassify(0);
  }

  function firstFile(list) {
    return list && list.length ? list[0] : null;
  }

  function wireInput() {
    $("file").addEventListener("change", (e) => {
      setFile(firstFile(e.target.files));
      e.target.value = ""; // choosing the same file again fires change again
    });
    const preview = $("preview");
    preview.addEventListener("load", () => preview.classList.toggle("small", preview.naturalWidth < 160));
    preview.addEventListener("error", () => {
      preview.hidden = true; // e.g. a TIFF the browser cannot show; the server may still read it
    });

    const drop = $("drop");
    let depth = 0;
    document.addEventListener("dragenter", (e) => {
      if (e.dataTransfer && [...e.dataTransfer.types].includes("Files")) {
        depth += 1;
        drop.classList.add("dragging");
      }
    });
    document.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) drop.classList.remove("dragging");
    });
    document.addEventListener("dragover", (e) => e.preventDefault());
    document.addEventListener("drop", (e) => {
      e.preventDefault(); // never navigate away to the dropped file
      depth = 0;
      drop.classList.remove("dragging");
      setFile(firstFile(e.dataTransfer && e.dataTransfer.files));
    });
    document.addEventListener("paste", (e) => {
      const items = e.clipboardData ? [...e.clipboardData.items] : [];
      const item = items.find((i) => i.kind === "file" && i.type.startsWith("image/"));
      if (!item) return; // ordinary text paste into a field
      e.preventDefault();
      const file = item.getAsFile();
      const ext = (item.type.split("/")[1] || "png").replace(/[^a-z0-9]/gi, "");
      setFile(file.name ? file : new File([file], `pasted.${ext}`, { type: item.type }));
    });
  }

  // -- classify --------------------------------------------------------------------------

  function scheduleClassify(delay = 250) {
    clearTimeout(state.timer);
    if (state.file) state.timer = setTimeout(classify, delay);
  }

  function clampTopK() {
    const input = $("top-k");
    const n = Math.round(Number(input.value));
    const k = Number.isFinite(n) && n >= 1 ? n : 5;
    input.value = String(k);
    return k;
  }

  function setBusy(busy) {
    $("result").setAttribute("aria-busy", String(busy));
    $("busy").hidden = !busy;
  }

  async function classify() {
    if (!state.file) return;
    const seq = ++state.seq;
    setBusy(true);
    const form = new FormData();
    form.append("file", state.file, state.file.name || "image");
    const query = new URLSearchParams({ samples: $("samples").value, top_k: String(clampTopK()) });
    try {
      const out = await api(`/classify?${query}`, { method: "POST", body: form });
      if (seq !== state.seq) return;
      clearError();
      renderAnswer(out);
    } catch (err) {
      if (seq !== state.seq) return;
      showError("Could not classify the image", err);
      $("result-body").hidden = true;
      $("result-empty").hidden = false;
      $("result-empty").textContent = "No answer for this file: see the message above.";
    } finally {
      if (seq === state.seq) setBusy(false);
    }
  }

  const pct = (p) => `${(100 * p).toFixed(1)}%`;
  const spread = (std) => (std < 0.0005 ? "<0.1%" : pct(std)); // std of a probability, in points
  const nats = (x) => `${x.toFixed(3)} nats`;

  function listNames(names) {
    if (names.length < 2) return names.join("");
    return `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`;
  }

  // The plain-language reading: the server's unknown flag first, then the prediction set.
  function reading(out) {
    const top = out.classes[0];
    const guarantee = out.calibrated ? `${pct(out.coverage)} sure to hold the right one` : "no coverage guarantee";
    if (out.unknown) {
      return {
        kind: "unknown",
        title: "Looks unlike anything it knows",
        text:
          `The image may show none of the registered classes (${out.unknown_measure.replace("_", " ")} ` +
          `${out.unknown_score.toFixed(3)}, above the server's threshold). ` +
          `Its best guess is ${top ? top.label : "nothing"}.`,
      };
    }
    const set = out.prediction_set || [];
    if (set.length > 1 || out.entropy > state.config.thresholds.entropy) {
      const names = set.length > 1 ? set.slice(0, 5) : out.classes.slice(0, 2).map((c) => c.label);
      return {
        kind: "unsure",
        title: "Unsure between these classes",
        text: `One of ${listNames(names)}${set.length > 5 ? ", ..." : ""} (${guarantee}).`,
      };
    }
    return {
      kind: "confident",
      title: `Confident: ${top ? top.label : "-"}`,
      text: `Probability ${top ? pct(top.probability) : "-"}; the prediction set is this class alone (${guarantee}).`,
    };
  }

  function bar(c) {
    const lo = Math.max(0, c.probability - c.std);
    const hi = Math.min(1, c.probability + c.std);
    const fill = el("div", { class: "bar-fill" });
    fill.style.width = `${100 * c.probability}%`;
    const err = el("div", { class: "bar-err" });
    err.style.left = `${100 * lo}%`;
    err.style.width = `${100 * (hi - lo)}%`;
    const value = el("span", { class: "bar-value" }, el("b", { text: pct(c.probability) }), ` \u00b1 ${spread(c.std)}`);
    const track = el("div", { class: "bar-track", "aria-hidden": "true" }, fill, err);
    return el("li", { class: "bar-row", "data-label": c.label }, el("span", { class: "bar-label", text: c.label }), value, track);
  }

  function renderAnswer(out) {
    const r = reading(out);
    const box = $("reading");
    box.dataset.kind = r.kind;
    box.replaceChildren(el("strong", { text: r.title }), el("span", { text: r.text }));
    $("bars").replaceChildren(...out.classes.map(bar));
    $("entropy").textContent = nats(out.entropy);
    $("mi").textContent = nats(out.mutual_information);
    $("used-samples").textContent = String(out.samples);
    $("result-empty").hidden = true;
    $("result-body").hidden = false;
  }

  // -- start -----------------------------------------------------------------------------

  function wireControls() {
    const slider = $("samples");
    slider.addEventListener("input", () => {
      $("samples-out").value = slider.value;
    });
    slider.addEventListener("change", () => scheduleClassify());
    $("top-k").addEventListener("change", () => {
      clampTopK();
      scheduleClassify();
    });
    $("add-form").addEventListener("submit", addClasses);
    $("token").addEventListener("input", (e) => {
      if (e.target.value) sessionStorage.setItem(TOKEN_KEY, e.target.value);
      else sessionStorage.removeItem(TOKEN_KEY);
    });
    $("token-forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      $("token").value = "";
      $("token").focus();
    });
    $("error-close").addEventListener("click", clearError);
  }

  async function start() {
    wireInput();
    wireControls();
    await loadConfig();
    await pollReady();
  }

  start();
})();
