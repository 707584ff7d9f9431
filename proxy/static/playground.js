// gpu-audio playground: speak a line through the proxy, play it, align it, follow the words.
// Same-origin, relative URLs only; the proxy adds the API key, so no key ever lives here.
"use strict";

(function () {
  const $ = (selector) => document.querySelector(selector);
  const els = {
    form: $("#speak-form"), text: $("#text"), instruct: $("#instruct"), speak: $("#speak"),
    status: $("#status"), error: $("#error"), audio: $("#audio"), download: $("#download"),
    words: $("#words"), warnings: $("#warnings"), health: $("#health"),
    healthRefresh: $("#health-refresh"), access: $("#access"), accessForm: $("#access-form"),
    accessKey: $("#access-key"), accessError: $("#access-error"),
  };
  // The proxy renders one card per service it relays (gpu_audio.services): name, title, path.
  const cards = [...els.health.querySelectorAll("[data-server]")];
  const SERVERS = Object.fromEntries(cards.map((card) => [card.dataset.server, card.dataset.title]));
  const PATHS = Object.fromEntries(cards.map((card) => [card.dataset.server, card.dataset.path]));
  const LANGUAGE = "en";

  let audioUrl = null;
  let wordEls = [];
  let current = -1;
  let frame = 0;
  let waitingForAccess = null;  // {promise, resolve} while the access form is shown
  let healthTimer = 0;

  // ---- HTTP ------------------------------------------------------------------------------

  class ApiFailure extends Error {
    constructor(status, message, retryAfter) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  function isAccessKeyError(status, data) {
    return status === 401 && typeof data.error === "string" && /access key/i.test(data.error);
  }

  async function call(method, path, body) {
    const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, options);
    } catch (err) {
      throw new ApiFailure(0, "The proxy cannot be reached (" + (err.message || err) + ").");
    }
    let data = {};
    const raw = await response.text();
    try {
      data = raw ? JSON.parse(raw) : {};
    } catch (err) {
      data = { error: "The answer was not JSON (HTTP " + response.status + ")." };
    }
    if (isAccessKeyError(response.status, data)) {
      await askForAccess();
      return call(method, path, body);  // retry once the cookie is set
    }
    if (!response.ok || data.success === false) {
      const message = data.error || ("HTTP " + response.status + " " + response.statusText);
      throw new ApiFailure(response.status, message, response.headers.get("Retry-After"));
    }
    return { status: response.status, data };
  }

  // ---- access key --------------------------------------------------------------------------

  function askForAccess() {
    if (!waitingForAccess) {
      let resolve;
      const promise = new Promise((r) => { resolve = r; });
      waitingForAccess = { promise, resolve };
      els.access.hidden = false;
      els.accessError.hidden = true;
      setStatus("Waiting for the proxy access key…");
      els.accessKey.focus();
    }
    return waitingForAccess.promise;
  }

  els.accessForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    els.accessError.hidden = true;
    let response, data = {};
    try {
      response = await fetch("access", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ key: els.accessKey.value }),
      });
      data = await response.json().catch(() => ({}));
    } catch (err) {
      showAccessError("The proxy cannot be reached (" + (err.message || err) + ").");
      return;
    }
    if (!response.ok) {
      showAccessError(data.error || ("HTTP " + response.status));
      els.accessKey.select();
      return;
    }
    els.accessKey.value = "";
    els.access.hidden = true;
    const waiting = waitingForAccess;
    waitingForAccess = null;
    if (waiting) waiting.resolve();
  });

  function showAccessError(message) {
    els.accessError.textContent = message;
    els.accessError.hidden = false;
  }

  // ---- health ------------------------------------------------------------------------------

  function describeFailure(name, err) {
    const label = SERVERS[name] || name;
    if (err.status === 503) {
      const wait = err.retryAfter ? " Retry after " + err.retryAfter + " s." : "";
      return label + " is starting or busy (503): " + err.message + wait;
    }
    if (err.status) return label + " failed (HTTP " + err.status + "): " + err.message;
    return label + ": " + err.message;
  }

  function fillServer(name, state, data, note) {
    const card = els.health.querySelector('[data-server="' + name + '"]');
    const field = (key) => card.querySelector('[data-field="' + key + '"]');
    card.dataset.state = state;
    field("status").textContent = data.status || state;
    field("engine").textContent = data.engine || "–";
    field("gpu").textContent = data.gpu_name || (data.device ? "none (" + data.device + ")" : "–");
    field("loaded").textContent = data.model_loaded === undefined ? "–" : (data.model_loaded ? "yes" : "no");
    const noteEl = field("note");
    noteEl.textContent = note || "";
    noteEl.hidden = !note;
  }

  async function checkServer(name) {
    // /health answers 503 with a JSON body while the model loads: show that body too.
    let response, data = {};
    try {
      response = await fetch(PATHS[name] + "/health",
        { credentials: "same-origin", headers: { Accept: "application/json" } });
      data = await response.json().catch(() => ({}));
    } catch (err) {
      fillServer(name, "down", {}, "The proxy cannot be reached.");
      return false;
    }
    if (isAccessKeyError(response.status, data)) {
      fillServer(name, "unknown", {}, "Needs the proxy access key.");
      await askForAccess();
      return checkServer(name);
    }
    if (response.ok && data.status === "ok") {
      const extra = [];
      if (data.model && data.model !== data.engine) extra.push("model " + data.model);
      if (data.model_size) extra.push("size " + data.model_size);
      if (typeof data.in_flight === "number" && data.in_flight) extra.push(data.in_flight + " in flight");
      fillServer(name, "ok", data, extra.join(" · "));
      if ("supports_instruct" in data) {  // the engine's capabilities, from its /health
        els.instruct.placeholder = data.supports_instruct === false
          ? "this engine (" + data.engine + ") ignores instruct" : "e.g. speak slowly and warmly";
      }
      return true;
    }
    let note = data.error || "";
    if (response.status === 503) {
      const retry = response.headers.get("Retry-After");
      note = (data.status === "loading" ? "Starting: the model is loading." : "Busy or starting (503).")
        + (data.error ? " " + data.error : "") + (retry ? " Retry after " + retry + " s." : "");
    } else if (!note) {
      note = "HTTP " + response.status;
    }
    fillServer(name, data.status === "loading" ? "loading" : "down", data, note);
    return false;
  }

  async function checkHealth() {
    clearTimeout(healthTimer);
    const results = await Promise.all(Object.keys(SERVERS).map(checkServer));
    // Poll while a server is starting; once both are up, refresh only on demand.
    if (!results.every(Boolean)) healthTimer = setTimeout(checkHealth, 5000);
  }

  els.healthRefresh.addEventListener("click", checkHealth);

  // ---- speak, play, align ------------------------------------------------------------------

  function setStatus(message) { els.status.textContent = message; }

  function showError(message) {
    els.error.textContent = message;
    els.error.hidden = !message;
  }

  function base64ToBlob(b64, type) {
    const binary = atob(b64);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return new Blob([bytes], { type });
  }

  function setAudio(b64) {
    if (audioUrl) URL.revokeObjectURL(audioUrl);
    audioUrl = URL.createObjectURL(base64ToBlob(b64, "audio/wav"));
    els.audio.src = audioUrl;
    els.download.href = audioUrl;
    els.download.hidden = false;
  }

  function fmt(seconds) { return Number(seconds).toFixed(2); }

  function showWords(words) {
    els.words.replaceChildren();
    wordEls = [];
    current = -1;
    if (!words.length) {
      const empty = document.createElement("p");
      empty.className = "empty";
      empty.textContent = "The aligner returned no words.";
      els.words.append(empty);
      return;
    }
    for (const w of words) {
      const item = document.createElement("button");
      item.type = "button";
      item.className = "word";
      item.dataset.start = w.start;
      item.dataset.end = w.end;
      if (typeof w.score === "number") item.dataset.score = w.score;
      item.title = fmt(w.start) + "–" + fmt(w.end) + " s"
        + (typeof w.score === "number" ? ", score " + w.score.toFixed(2) : "");
      const text = document.createElement("span");
      text.className = "w";
      text.textContent = w.word;
      const time = document.createElement("span");
      time.className = "t";
      time.textContent = fmt(w.start) + "–" + fmt(w.end);
      item.append(text, time);
      item.addEventListener("click", () => {
        els.audio.currentTime = w.start;
        els.audio.play().catch(() => {});
      });
      els.words.append(item);
      wordEls.push(item);
    }
    highlight();
  }

  function highlight() {
    const t = els.audio.currentTime;
    let index = -1;
    for (let i = 0; i < wordEls.length; i++) {
      if (Number(wordEls[i].dataset.start) <= t) index = i; else break;
    }
    // Between words (past the end of the last started one) nothing is lit.
    if (index >= 0 && t > Number(wordEls[index].dataset.end) + 0.05) index = -1;
    if (index === current) return;
    if (current >= 0 && wordEls[current]) {
      wordEls[current].classList.remove("current");
      wordEls[current].removeAttribute("aria-current");
    }
    current = index;
    if (current >= 0) {
      wordEls[current].classList.add("current");
      wordEls[current].setAttribute("aria-current", "true");
    }
  }

  function follow() {
    highlight();
    frame = els.audio.paused ? 0 : requestAnimationFrame(follow);
  }

  els.audio.addEventListener("timeupdate", highlight);
  els.audio.addEventListener("seeked", highlight);
  els.audio.addEventListener("play", () => { if (!frame) frame = requestAnimationFrame(follow); });
  els.audio.addEventListener("ended", () => { cancelAnimationFrame(frame); frame = 0; highlight(); });

  els.form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = els.text.value.trim();
    const instruct = els.instruct.value.trim();
    if (!text) {
      showError("Type some text to speak first.");
      els.text.focus();
      return;
    }
    showError("");
    els.warnings.hidden = true;
    els.speak.disabled = true;
    els.form.setAttribute("aria-busy", "true");
    let stage = "tts";
    try {
      setStatus("Speaking…");
      let began = performance.now();
      const tts = await call("POST", PATHS.tts + "/generate_batch", { texts: [text], instructs: [instruct] });
      const audio = (tts.data.audios || [])[0];
      if (!audio) throw new ApiFailure(200, "The TTS server answered without audio.");
      const ttsMs = performance.now() - began;
      setAudio(audio);
      els.audio.play().catch(() => {});  // autoplay may be refused; the controls still work
      const warnings = tts.data.warnings || [];
      els.warnings.textContent = warnings.join(" ");
      els.warnings.hidden = !warnings.length;
      const seconds = (tts.data.durations || [])[0];
      const spoke = (seconds ? fmt(seconds) + " s of audio" : "audio") + " in " + Math.round(ttsMs) + " ms";

      stage = "whisperx";
      setStatus("Spoke " + spoke + ". Aligning…");
      els.words.replaceChildren();
      began = performance.now();
      const aligned = await call("POST", PATHS.whisperx + "/align", { audio, text, language: LANGUAGE });
      showWords(aligned.data.words || []);
      setStatus("Spoke " + spoke + "; aligned " + wordEls.length + " words in "
        + Math.round(performance.now() - began) + " ms.");
    } catch (err) {
      setStatus("");
      if (err instanceof ApiFailure) {
        showError(describeFailure(stage, err));
        if (err.status === 503 || err.status === 502 || err.status === 0) checkHealth();
      } else {
        showError("Something went wrong in the page: " + (err.message || err));
      }
    } finally {
      els.speak.disabled = false;
      els.form.removeAttribute("aria-busy");
    }
  });

  // Ctrl/Cmd+Enter in the text box speaks.
  els.text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) els.form.requestSubmit();
  });

  checkHealth();
})();
