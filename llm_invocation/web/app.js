// The chat page of llm-invocation's WebSocket front. Plain JavaScript, no build step.
//
// Protocol (see llm_invocation.actors.websocket._protocol): the page sends
//   {type: "invoke", id, request}   {type: "cancel", id}   {type: "ping", nonce}
// and receives chunk, chunks, tool_call, tool_result, done, error and pong frames, possibly
// several at once in a {type: "batch", frames: [...]} message.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const log = $("log");
  const prompt = $("prompt");
  const sendButton = $("send");
  const stopButton = $("stop");
  const statusBadge = $("status");
  const modelInput = $("model");
  const modelPicker = $("model-picker");
  const modelList = $("model-list");
  const statusDetail = $("status-detail");
  const usageLine = $("usage");
  const totalLine = $("total");
  const composer = $("composer");

  // -- the token: from ?token= (then kept for this tab and taken out of the address bar) ----
  const params = new URLSearchParams(window.location.search);
  let token = params.get("token");
  try {
    if (token) {
      window.sessionStorage.setItem("llm-token", token);
    } else {
      token = window.sessionStorage.getItem("llm-token");
    }
  } catch (_) {
    // storage may be disabled; the token from the URL still works for this page load
  }
  if (params.has("token")) {
    params.delete("token");
    const rest = params.toString();
    const clean = window.location.pathname + (rest ? "?" + rest : "") + window.location.hash;
    window.history.replaceState(null, "", clean);
  }

  // -- the model: ?model=, the last one used, or the server's default ---------------------
  // The picker lists the server's models (/models.json); the text box holds the model sent,
  // so any name can still be typed.
  const savedModel = (() => {
    try {
      return window.localStorage.getItem("llm-model");
    } catch (_) {
      return null;
    }
  })();
  modelInput.value = params.get("model") || savedModel || "";
  const OTHER = ""; // the picker's "other" entry: the text box holds a name not listed

  // Requests for the server's JSON present the token like the WebSocket does.
  function authorized(path) {
    const init = { cache: "no-store", headers: {} };
    let url = path;
    if (token && /^[\x21-\x7e]+$/.test(token)) {
      init.headers.Authorization = "Bearer " + token;
    } else if (token) {
      url += "?token=" + encodeURIComponent(token);
    }
    return [url, init];
  }

  function option(value, text) {
    const item = document.createElement("option");
    item.value = value;
    item.textContent = text;
    return item;
  }

  function syncPicker() {
    const listed = Array.from(modelPicker.options).some(
      (item) => item.value !== OTHER && item.value === modelInput.value.trim(),
    );
    modelPicker.value = listed ? modelInput.value.trim() : OTHER;
  }

  function fillModels(list) {
    const seen = new Set();
    const items = [];
    const suggestions = [];
    if (list.default) {
      items.push(option(list.default, list.default + " (default)"));
      suggestions.push(option(list.default, "default"));
      seen.add(list.default);
    }
    const groups = new Map();
    for (const entry of list.models || []) {
      if (!entry || typeof entry.model !== "string" || seen.has(entry.model)) continue;
      seen.add(entry.model);
      const provider = entry.provider || "";
      if (!groups.has(provider)) {
        const group = document.createElement("optgroup");
        group.label = provider || "models";
        groups.set(provider, group);
        items.push(group);
      }
      const label = entry.label && entry.label !== entry.model ? " — " + entry.label : "";
      groups.get(provider).appendChild(option(entry.model, entry.model + label));
      suggestions.push(option(entry.model, entry.label || ""));
    }
    items.push(option(OTHER, "other (type it)"));
    modelPicker.replaceChildren(...items);
    modelList.replaceChildren(...suggestions);
    modelPicker.disabled = false;
    modelPicker.dataset.state = "ready";
    syncPicker();
  }

  function modelsUnavailable(why) {
    modelPicker.replaceChildren(option(OTHER, why));
    modelPicker.disabled = true;
    modelPicker.dataset.state = "unavailable";
  }

  let modelsLoaded = false;
  function loadModels() {
    if (modelsLoaded) return;
    const [url, init] = authorized("models.json");
    fetch(url, init)
      .then((response) => {
        if (response.status === 401) {
          modelsUnavailable("no list: token needed");
          return null;
        }
        if (!response.ok) {
          modelsUnavailable("model list unavailable");
          return null;
        }
        return response.json();
      })
      .then((list) => {
        if (list === null) return;
        modelsLoaded = true;
        fillModels(list);
      })
      .catch(() => modelsUnavailable("model list unavailable"));
  }

  modelPicker.addEventListener("change", () => {
    if (modelPicker.value === OTHER) {
      modelInput.focus();
      modelInput.select();
    } else {
      modelInput.value = modelPicker.value;
    }
  });
  modelInput.addEventListener("input", syncPicker);

  fetch("config.json", { cache: "no-store" })
    .then((response) => (response.ok ? response.json() : {}))
    .then((config) => {
      if (!config) return;
      if (!modelInput.value && config.model) {
        modelInput.value = config.model;
        syncPicker();
      }
      const hintModel = $("hint-model");
      if (hintModel && !config.model) {
        hintModel.textContent =
          "This server names no default model: pick one of its models, or type one as " +
          "provider:model, before you send.";
      }
      const hintMock = $("hint-mock");
      if (hintMock) hintMock.hidden = !config.mock_fallback;
    })
    .catch(() => {});
  loadModels();

  // -- state --------------------------------------------------------------------------------
  const history = []; // the conversation sent with each request: [{role, content}]
  let socket = null;
  let current = null; // the generation in progress: {id, element, body, text, ...}
  let counter = 0;
  let totalCost = 0;
  let totalKnown = true;
  let reconnectDelay = 500;
  let keepAlive = null;

  // state: open, connecting or closed (the badge's colour); reason: why it is closed.
  function setStatus(state, text, reason, detail) {
    statusBadge.dataset.state = state;
    statusBadge.dataset.reason = reason || "";
    statusBadge.textContent = text;
    statusBadge.title = detail || text;
    statusDetail.textContent = detail || "";
    statusDetail.hidden = !detail;
    updateButtons();
  }

  function updateButtons() {
    const open = socket !== null && socket.readyState === WebSocket.OPEN;
    sendButton.disabled = !open || current !== null;
    stopButton.disabled = current === null || current.stopping;
  }

  function nearBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  }

  function scrollDown(force) {
    if (force || nearBottom()) log.scrollTop = log.scrollHeight;
  }

  function addMessage(role, text) {
    const hint = $("hint");
    if (hint) hint.remove();
    const article = document.createElement("article");
    article.className = "message " + role;
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = role === "user" ? "you" : role;
    const body = document.createElement("div");
    body.className = "body";
    body.appendChild(document.createTextNode(text));
    const meta = document.createElement("div");
    meta.className = "meta";
    article.append(who, body, meta);
    log.appendChild(article);
    scrollDown(true);
    return { article, body, text: body.firstChild, meta };
  }

  function notice(text, kind) {
    const p = document.createElement("p");
    p.className = "notice " + (kind || "");
    p.textContent = text;
    log.appendChild(p);
    scrollDown(true);
  }

  function formatCost(cost) {
    if (cost === null || cost === undefined || cost === "") return null;
    const value = Number(cost);
    if (!Number.isFinite(value)) return null;
    if (value === 0) return "$0";
    return "$" + (value < 0.01 ? String(Number(value.toPrecision(3))) : value.toFixed(4));
  }

  function describeUsage(usage) {
    if (!usage) return "usage unknown";
    const parts = [
      (usage.prompt_tokens || 0) + " in",
      (usage.completion_tokens || 0) + " out",
    ];
    if (usage.reasoning_tokens) parts.push(usage.reasoning_tokens + " thinking");
    if (usage.cache_read_tokens) parts.push(usage.cache_read_tokens + " cached");
    const cost = formatCost(usage.cost);
    parts.push(cost === null ? "cost unknown" : cost);
    if (usage.estimated) parts.push("estimated");
    return parts.join(" · ");
  }

  function recordUsage(usage) {
    usageLine.textContent = "last: " + describeUsage(usage);
    if (usage && formatCost(usage.cost) !== null) {
      totalCost += Number(usage.cost);
    } else {
      totalKnown = false;
    }
    const total = formatCost(totalCost) || "$0";
    totalLine.textContent = "session: " + total + (totalKnown ? "" : " + unknown");
  }

  // -- the connection -----------------------------------------------------------------------
  // The token travels as a "bearer.<token>" subprotocol, which stays out of server logs;
  // one with characters a subprotocol cannot hold goes in the query instead.
  const SUBPROTOCOL_CHARS = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

  function endpoint() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const base = new URL("ws", window.location.href);
    let url = scheme + "//" + base.host + base.pathname;
    if (token && !SUBPROTOCOL_CHARS.test(token)) url += "?token=" + encodeURIComponent(token);
    return url;
  }

  function subprotocols() {
    const offered = ["llm-invocation.v1"];
    if (token && SUBPROTOCOL_CHARS.test(token)) offered.push("bearer." + token);
    return offered;
  }

  // Why a connection ended. A browser sees no HTTP status of a refused handshake, only a
  // socket closed before it opened: the page then asks /models.json, which wants the same
  // token, to tell a refused token (401) from a server that is not there (no answer).
  function probe() {
    const [url, init] = authorized("models.json");
    const abort = new AbortController();
    const timer = window.setTimeout(() => abort.abort(), 5000);
    init.signal = abort.signal;
    return fetch(url, init)
      .then((response) => (response.status === 401 ? "token" : "refused"))
      .catch(() => (abort.signal.aborted ? "silent" : "down"))
      .finally(() => window.clearTimeout(timer));
  }

  function retryIn() {
    return "retrying in " + Math.round(reconnectDelay / 1000) + " s";
  }

  function reconnectLater() {
    // The status keeps saying what went wrong until the next attempt ends.
    window.setTimeout(() => connect(true), reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, 10000);
  }

  function closedAfterOpen(event) {
    const said = event.reason ? ": " + event.reason : "";
    if (event.code === 1001) {
      reconnectDelay = Math.max(reconnectDelay, 2000);
      setStatus(
        "closed",
        "server shutting down",
        "shutdown",
        "The server is shutting down (code 1001" + said + "). The page reconnects when " +
          "it is back: " + retryIn() + ".",
      );
    } else if (event.code === 1011) {
      setStatus(
        "closed",
        "server error",
        "error",
        "The server closed the connection after an internal error (code 1011" + said +
          "): " + retryIn() + ".",
      );
    } else {
      setStatus(
        "closed",
        "disconnected",
        "lost",
        "The connection ended (code " + event.code + said + "): " + retryIn() + ".",
      );
    }
    reconnectLater();
  }

  function closedBeforeOpen() {
    const where = window.location.host;
    if (statusBadge.dataset.state !== "closed") {
      setStatus("connecting", "checking the server…", "checking");
    }
    probe().then((outcome) => {
      if (socket !== null) return;
      const address = window.location.origin + window.location.pathname + "?token=<token>";
      if (outcome === "token") {
        // Retrying cannot help: the page needs another token, from its address.
        setStatus(
          "closed",
          token ? "token refused" : "token needed",
          token ? "token" : "no-token",
          (token
            ? "The server refused this page's token."
            : "The server wants a token, and this page has none.") +
            " Open the page as " + address + ".",
        );
        return;
      }
      if (outcome === "down") {
        setStatus(
          "closed",
          "server unreachable",
          "down",
          "Nothing answers at " + where + ": the server is not running, or the network " +
            "is down; " + retryIn() + ".",
        );
      } else if (outcome === "silent") {
        setStatus(
          "closed",
          "server not answering",
          "silent",
          "The server at " + where + " took the connection but did not answer: " +
            retryIn() + ".",
        );
      } else {
        setStatus(
          "closed",
          "connection refused",
          "refused",
          "The server answers but refused the WebSocket connection (it may be shutting " +
            "down, or not accept this page's origin): " + retryIn() + ".",
        );
      }
      reconnectLater();
    });
  }

  function connect(again) {
    if (!again) setStatus("connecting", "connecting…");
    let ws;
    try {
      ws = new WebSocket(endpoint(), subprotocols());
    } catch (error) {
      setStatus("closed", "cannot connect", "invalid", "Cannot connect: " + error.message);
      return;
    }
    socket = ws;
    let opened = false;
    ws.addEventListener("open", () => {
      opened = true;
      reconnectDelay = 500;
      setStatus("open", "connected");
      loadModels();
      keepAlive = window.setInterval(() => send({ type: "ping", nonce: String(Date.now()) }), 30000);
    });
    ws.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (_) {
        notice("the server sent something that is not JSON", "error");
        return;
      }
      if (message.type === "batch") {
        for (const frame of message.frames) handle(frame);
      } else {
        handle(message);
      }
    });
    ws.addEventListener("close", (event) => {
      if (socket !== ws) return;
      socket = null;
      window.clearInterval(keepAlive);
      if (current !== null) {
        finish("error", "connection lost before the answer ended");
      }
      if (opened) {
        closedAfterOpen(event);
      } else {
        closedBeforeOpen();
      }
    });
  }

  function send(frame) {
    if (socket === null || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  // -- frames -------------------------------------------------------------------------------
  function handle(frame) {
    switch (frame.type) {
      case "chunk":
        onChunk(frame.id, frame.chunk);
        break;
      case "chunks":
        for (const chunk of frame.chunks) onChunk(frame.id, chunk);
        break;
      case "tool_call":
        if (isCurrent(frame.id)) {
          const names = (frame.calls || []).map((call) => call.name || "?").join(", ");
          toolNote("calls " + names);
        }
        break;
      case "tool_result":
        if (isCurrent(frame.id)) toolNote((frame.results || []).length + " tool result(s)");
        break;
      case "done":
        if (isCurrent(frame.id)) onDone(frame);
        break;
      case "error":
        onError(frame);
        break;
      case "pong":
        break;
      default:
        break;
    }
  }

  function isCurrent(id) {
    return current !== null && current.id === id;
  }

  function onChunk(id, chunk) {
    if (!isCurrent(id) || !chunk) return;
    if (chunk.reasoning) {
      if (!current.thinking) {
        current.thinking = document.createElement("details");
        current.thinking.className = "thinking";
        const summary = document.createElement("summary");
        summary.textContent = "thinking";
        current.thinking.append(summary, document.createTextNode(""));
        current.view.article.insertBefore(current.thinking, current.view.body);
      }
      current.thinking.lastChild.appendData(chunk.reasoning);
    }
    if (chunk.text) {
      const follow = nearBottom();
      current.view.text.appendData(chunk.text);
      current.answer += chunk.text;
      scrollDown(follow);
    }
  }

  function toolNote(text) {
    const note = document.createElement("div");
    note.className = "tool";
    note.textContent = "🔧 " + text;
    current.view.article.insertBefore(note, current.view.meta);
  }

  function onDone(frame) {
    const usage = frame.usage || (frame.response && frame.response.usage) || null;
    current.view.meta.textContent = describeUsage(usage);
    recordUsage(usage);
    history.push({ role: "assistant", content: current.answer });
    finish("done");
  }

  function onError(frame) {
    if (frame.id === undefined || frame.id === null) {
      notice("server: " + frame.message + " (" + frame.code + ")", "error");
      return;
    }
    if (!isCurrent(frame.id)) return;
    if (frame.details && frame.details.reason === "duplicate_id") return;
    if (frame.code === "canceled") {
      current.view.meta.textContent =
        "stopped" + (frame.usage ? " · " + describeUsage(frame.usage) : "");
      if (frame.usage) recordUsage(frame.usage);
      if (current.answer) history.push({ role: "assistant", content: current.answer });
      else history.pop(); // nothing came back: forget the question
      finish("stopped");
      return;
    }
    let text = frame.message + " (" + frame.code + ")";
    if (frame.retry_after) text += " — retry in " + Math.ceil(frame.retry_after) + " s";
    finish("error", text);
  }

  function finish(state, errorText) {
    const done = current;
    if (done === null) return;
    done.view.article.dataset.state = state;
    if (state === "error") {
      const error = document.createElement("div");
      error.className = "error-text";
      error.textContent = errorText || "failed";
      done.view.article.insertBefore(error, done.view.meta);
      // The question got no answer: keep the conversation alternating.
      if (history.length && history[history.length - 1].role === "user") history.pop();
      done.userView.article.dataset.state = "unanswered";
    }
    current = null;
    updateButtons();
    prompt.focus();
  }

  // -- the composer -------------------------------------------------------------------------
  function submit() {
    const text = prompt.value.trim();
    const model = modelInput.value.trim();
    if (!text || current !== null) return;
    if (!model) {
      notice("choose a model first (provider:model)", "error");
      modelInput.focus();
      return;
    }
    try {
      window.localStorage.setItem("llm-model", model);
    } catch (_) {
      // not kept: fine
    }
    counter += 1;
    const id = "c" + counter + "-" + Date.now().toString(36);
    history.push({ role: "user", content: text });
    const request = { model: model, messages: history.slice() };
    if (!send({ type: "invoke", id: id, request: request })) {
      history.pop();
      notice("not connected", "error");
      return;
    }
    const userView = addMessage("user", text);
    const view = addMessage("assistant", "");
    view.article.dataset.id = id;
    view.article.dataset.state = "streaming";
    current = { id, view, userView, answer: "", stopping: false, thinking: null };
    prompt.value = "";
    updateButtons();
  }

  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });
  stopButton.addEventListener("click", () => {
    if (current === null || current.stopping) return;
    current.stopping = true;
    send({ type: "cancel", id: current.id });
    current.view.article.dataset.state = "stopping";
    updateButtons();
  });
  $("new-chat").addEventListener("click", () => {
    if (current !== null) return;
    history.length = 0;
    log.replaceChildren();
    notice("new conversation");
  });

  connect();
})();
