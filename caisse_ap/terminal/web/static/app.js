/* Web console of the simulated Caisse-AP terminal.
 *
 * A client of the control API (docs/api.md) and of its event stream, nothing
 * more: it knows no protocol rules and decodes no frame. The code tables it
 * shows (failure types, payment types, modes, field labels) come from the API;
 * only the words of the page itself are written here, in French.
 */
(function () {
  "use strict";

  const FEED_LIMIT = 200; // rows kept in the live feed
  const JOURNAL_LIMIT = 1000; // the API's maximum page
  const TOKEN_KEY = "caisse-ap-ip.token";
  const RECONNECT_MAX_MS = 10000;
  const SETTINGS_FIELDS = [
    "mode", "failure_type", "manual_timeout", "duration",
    "payment_type", "seller_contract", "amount_rules",
  ];

  // Words of the page for the API's names. Unknown names are shown as they are.
  const STATUS_WORDS = {
    pending: "En attente",
    approved: "Acceptée",
    declined: "Refusée",
    accepted: "Prise en compte",
    "no-answer": "Sans réponse",
    "hang-up": "Raccrochée",
    dropped: "Caisse déconnectée",
    error: "Demande invalide",
    interrupted: "Interrompue (arrêt du serveur)",
  };
  const COUNTER_WORDS = {
    approved: "Acceptées",
    declined: "Refusées",
    accepted: "Prises en compte",
    "no-answer": "Sans réponse",
    "hang-up": "Raccrochées",
    dropped: "Caisses déconnectées",
    error: "Demandes invalides",
    interrupted: "Interrompues au dernier arrêt",
    pending: "En attente",
    total: "Total",
  };
  const MODE_WORDS = {
    success: "Succès : paiement accepté",
    failure: "Échec",
    "no-answer": "Pas de réponse (la caisse attend)",
    "hang-up": "Raccrocher sans répondre",
    manual: "Manuel : décision à l’écran",
  };
  const ACTION_WORDS = {
    debit: "Débit",
    refund: "Remboursement",
    cancellation: "Annulation",
    duplicate: "Duplicata",
  };
  const DECIDED_BY_WORDS = {
    settings: "réglages",
    queue: "file d’issues",
    "amount-rule": "règle de montant",
    manual: "décision manuelle",
    "manual-timeout": "délai de décision dépassé",
    shutdown: "arrêt du serveur",
    "request-error": "demande invalide",
  };
  const OUTCOME_WORDS = {
    approved: "acceptée",
    partial: "acceptée en partie",
    "no-answer": "sans réponse",
    "hang-up": "raccroche sans répondre",
  };
  const RESULT_WORDS = {
    approved: "Paiement accepté",
    declined: "Paiement refusé",
    accepted: "Demande prise en compte",
    unknown: "Issue inconnue : vérifiez le terminal avant de réessayer",
    error: "Erreur",
  };

  const state = {
    status: null, // last GET /api/status
    settings: null, // the terminal's settings as the server last told
    choices: { modes: [], failure_types: [], payment_types: [], outcomes: [], actions: [], statuses: [] },
    transactions: new Map(), // id -> transaction, for the live feed
    waiting: new Map(), // id -> {tx, deadline}: requests held for a manual decision
    journal: [], // last GET /api/transactions for the journal table
  };

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "className") node.className = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function word(table, name) {
    if (name === null || name === undefined || name === "") return "—";
    return Object.prototype.hasOwnProperty.call(table, name) ? table[name] : String(name);
  }

  // A choice of the API is either a plain name or {name, code, label}.
  function choiceName(choice) {
    return typeof choice === "object" && choice !== null ? choice.name : String(choice);
  }

  function choiceText(choice, words) {
    if (typeof choice !== "object" || choice === null) return word(words || {}, choice);
    const label = choice.label || (words && words[choice.name]) || choice.name;
    return choice.code ? `${choice.code} · ${label}` : label;
  }

  // Payment types share CC codes (cbcontact, cbmagstripe, cbmanual are all 001):
  // the read mode and the name tell them apart.
  function paymentTypeText(choice) {
    const mode = choice.read_mode_label ? ` · ${choice.read_mode_label}` : "";
    return `${choice.label || choice.name}${mode} (${choice.name})`;
  }

  function findChoice(list, name) {
    return (list || []).find((choice) => choiceName(choice) === name);
  }

  const NUMBER = new Intl.NumberFormat("fr-FR", { maximumFractionDigits: 3 });

  function formatSeconds(value) {
    if (value === null || value === undefined || Number.isNaN(Number(value))) return "—";
    return `${NUMBER.format(Number(value))} s`;
  }

  // "1234.50" -> "1 234,50 €". The amount stays a string: no float rounding.
  function formatAmount(amount, symbol, currency) {
    if (amount === null || amount === undefined || amount === "") return "—";
    const text = String(amount);
    const negative = text.startsWith("-");
    const [whole, decimals] = text.replace(/^[-+]/, "").split(".");
    const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, "\u202f");
    const unit = symbol || currency || "";
    return `${negative ? "−" : ""}${grouped}${decimals ? "," + decimals : ""}${unit ? "\u00a0" + unit : ""}`;
  }

  function txAmount(tx) {
    return formatAmount(tx.amount, tx.currency_symbol, tx.currency);
  }

  function formatTime(iso) {
    if (!iso) return "—";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    return date.toLocaleTimeString("fr-FR", { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function formatDateTime(iso) {
    if (!iso) return "—";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    return date.toLocaleString("fr-FR", { dateStyle: "short", timeStyle: "medium" });
  }

  function hostPort(address) {
    if (!address || address.port === undefined || address.port === null) return "—";
    const host = String(address.host || "");
    return host.includes(":") ? `[${host}]:${address.port}` : `${host}:${address.port}`;
  }

  function badgeText(tx) {
    if (tx.status === "declined" && tx.reason) {
      return tx.reason.label ? `${tx.reason.label} (${tx.reason.code})` : `Refusée (${tx.reason.code})`;
    }
    if (tx.status === "error" && tx.reason && tx.reason.code) {
      return `${STATUS_WORDS.error} (${tx.reason.code})`;
    }
    return word(STATUS_WORDS, tx.status);
  }

  function badge(tx) {
    const text = badgeText(tx);
    return el("span", { className: `badge badge-${tx.status}`, dataset: { status: tx.status }, title: text }, text);
  }

  // ------------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, message, field) {
      super(message);
      this.status = status;
      this.field = field || null;
    }
  }

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (error) {
      return "";
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (token()) headers.Authorization = `Bearer ${token()}`;
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, "Le serveur ne répond pas.", null);
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (error) {
        data = null;
      }
    }
    if (!response.ok) {
      if (response.status === 401) askForToken(token() ? "Le jeton enregistré est refusé par le serveur." : null);
      const message = (data && data.error) || `Réponse HTTP ${response.status}.`;
      throw new ApiError(response.status, message, data && data.field);
    }
    return data;
  }

  // ----------------------------------------------------------- access token

  // A URL printed by the server (…/#token=…) carries the token: keep it, hide it.
  function tokenFromAddress() {
    const found = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (!found) return;
    storeToken(decodeURIComponent(found[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }

  function storeToken(value) {
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (error) {
      /* storage refused (private mode): the token is not kept */
    }
  }

  // The event stream cannot send the token: trade it for the server's cookie.
  async function openSession() {
    if (!state.status || !state.status.token_required) return true;
    if (!token()) {
      askForToken(null);
      return false;
    }
    try {
      await api("POST", "api/session");
      return true;
    } catch (error) {
      return false;
    }
  }

  function askForToken(message) {
    $("token-toggle").hidden = false;
    const panel = $("token-panel");
    panel.hidden = false;
    $("token-toggle").setAttribute("aria-expanded", "true");
    if (message) $("token-message").textContent = message;
    $("token-input").focus();
  }

  function setupToken() {
    $("token-input").value = token();
    $("token-toggle").addEventListener("click", () => {
      const panel = $("token-panel");
      panel.hidden = !panel.hidden;
      $("token-toggle").setAttribute("aria-expanded", String(!panel.hidden));
      if (!panel.hidden) $("token-input").focus();
    });
    $("token-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      storeToken($("token-input").value.trim());
      $("token-panel").hidden = true;
      $("token-toggle").setAttribute("aria-expanded", "false");
      if (await openSession()) {
        connectEvents();
        resync();
      }
    });
    $("token-forget").addEventListener("click", () => {
      api("DELETE", "api/session").catch(() => {});
      storeToken("");
      $("token-input").value = "";
    });
  }

  // ---------------------------------------------------------- terminal state

  async function loadStatus() {
    const status = await api("GET", "api/status");
    state.status = status;
    state.choices = Object.assign(state.choices, status.choices || {});
    if (status.settings) state.settings = status.settings;
    renderChoices();
    renderStatus();
    fillSettingsForm(false);
    return status;
  }

  let statusTimer = null;
  // Counters change with every event; ask for them once per burst.
  function refreshStatusSoon() {
    if (statusTimer) return;
    statusTimer = setTimeout(() => {
      statusTimer = null;
      loadStatus().catch(() => {});
    }, 100);
  }

  function renderStatus() {
    const status = state.status || {};
    const settings = state.settings || {};
    $("version").textContent = status.version ? `version ${status.version}` : "";
    if (status.token_required) $("token-toggle").hidden = false;
    const journal = status.journal || {};
    $("journal-failing").hidden = journal.state !== "failing";
    $("journal-failing").textContent = journal.state === "failing"
      ? `Le journal ne peut plus être écrit (${journal.reason}) : les transactions sont gardées en mémoire seulement ; le terminal continue.`
      : "";
    $("terminal-address").textContent = hostPort(status.terminal);
    $("web-address").textContent = hostPort(status.web);

    const mode = $("current-mode");
    let modeText = word(MODE_WORDS, settings.mode);
    if (settings.mode === "failure") {
      const failure = findChoice(state.choices.failure_types, settings.failure_type);
      modeText += ` · ${failure ? choiceText(failure) : settings.failure_type}`;
    }
    if (settings.amount_rules) modeText += " · règles de montant actives";
    mode.textContent = modeText;
    mode.dataset.mode = settings.mode || "";
    $("current-delay").textContent = formatSeconds(settings.duration);

    const counters = status.counters || {};
    $("open-connections").textContent = counters.open_connections ?? "—";
    const list = $("counters");
    list.replaceChildren();
    for (const [name, value] of Object.entries(counters)) {
      if (name === "open_connections") continue;
      list.append(el("li", { className: `counter counter-${name}`, dataset: { status: name } },
        el("span", { className: "counter-value" }, value),
        el("span", { className: "counter-name" }, word(COUNTER_WORDS, name))));
    }

    const queue = status.queue || [];
    const note = $("queue-note");
    note.hidden = queue.length === 0;
    note.textContent = queue.length
      ? `Issues imposées aux prochaines transactions : ${queue.map((item) => outcomeText(item.outcome)).join(", ")}`
      : "";
  }

  function outcomeText(name) {
    const failure = findChoice(state.choices.failure_types, name);
    return failure ? failure.label || name : word(OUTCOME_WORDS, name);
  }

  function renderChoices() {
    fillSelect($("set-mode"), state.choices.modes, MODE_WORDS);
    fillSelect($("set-failure_type"), state.choices.failure_types);
    fillSelect($("set-payment_type"), state.choices.payment_types, null, paymentTypeText);
    fillSelect($("test-action"), state.choices.actions, ACTION_WORDS);
    fillSelect($("journal-filter"), [""].concat(state.choices.statuses),
      Object.assign({ "": "Toutes" }, STATUS_WORDS));
  }

  // Rebuilds a <select> only when its choices changed, keeping the selection.
  function fillSelect(select, choices, words, textOf = choiceText) {
    const names = (choices || []).map(choiceName);
    const key = JSON.stringify(names);
    if (select.dataset.choices === key) return;
    const selected = select.value;
    select.replaceChildren(...(choices || []).map((choice) =>
      el("option", { value: choiceName(choice) }, choice === "" ? words[""] : textOf(choice, words))));
    select.dataset.choices = key;
    if (names.includes(selected)) select.value = selected;
  }

  // ------------------------------------------------------------ event stream

  let source = null;
  let reconnectDelay = 1000;
  let reconnectTimer = null;
  let everConnected = false;
  let lostSinceOpen = false;

  function setStreamState(name) {
    const words = {
      connecting: ["Connexion…", "Flux d’événements : connexion…"],
      open: ["En direct", "Flux d’événements : connecté"],
      lost: ["Déconnecté : reconnexion…", "Flux d’événements : déconnecté, reconnexion automatique…"],
    }[name];
    $("connection").dataset.state = name;
    $("connection").textContent = words[0];
    $("stream-state").dataset.state = name;
    $("stream-state").textContent = words[1];
    document.body.classList.toggle("is-offline", name === "lost");
  }

  function connectEvents() {
    if (reconnectTimer) clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (source) source.close();
    source = new EventSource("api/events");
    source.addEventListener("open", () => {
      reconnectDelay = 1000;
      setStreamState("open");
      // Events sent while the stream was down are lost: read the state again.
      if (everConnected && lostSinceOpen) resync();
      everConnected = true;
      lostSinceOpen = false;
    });
    source.addEventListener("error", () => {
      lostSinceOpen = true;
      setStreamState("lost");
      // The browser retries by itself unless the server refused the stream.
      if (source.readyState === EventSource.CLOSED) scheduleReconnect();
    });
    source.addEventListener("request", (event) => onTransactionEvent(event, true));
    source.addEventListener("answer", (event) => onTransactionEvent(event, false));
    source.addEventListener("settings", (event) => {
      const settings = parseEvent(event);
      if (!settings) return;
      state.settings = settings;
      renderStatus();
      fillSettingsForm(false);
      renderPending();
    });
  }

  function scheduleReconnect() {
    if (reconnectTimer) return;
    reconnectTimer = setTimeout(connectEvents, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, RECONNECT_MAX_MS);
  }

  function parseEvent(event) {
    try {
      return JSON.parse(event.data);
    } catch (error) {
      return null;
    }
  }

  function onTransactionEvent(event, isRequest) {
    const tx = parseEvent(event);
    if (!tx || tx.id === undefined) return;
    upsertTransaction(tx, isRequest);
    refreshStatusSoon();
    refreshJournalSoon();
  }

  async function resync() {
    try {
      await loadStatus();
      // The server may have restarted and reused ids: rebuild the feed.
      state.transactions.clear();
      state.waiting.clear();
      $("feed").replaceChildren();
      await loadFeed();
      trimFeed();
      renderPending();
      await loadJournal();
    } catch (error) {
      /* the stream's own retries will bring us back here */
    }
  }

  // --------------------------------------------------------------- live feed

  async function loadFeed() {
    const data = await api("GET", "api/transactions?limit=100");
    for (const tx of (data.transactions || []).slice().reverse()) upsertTransaction(tx, false);
  }

  function upsertTransaction(tx, arrivedNow) {
    const known = state.transactions.get(tx.id);
    // A late snapshot must not bring back a finished transaction as pending.
    if (known && known.status !== "pending" && tx.status === "pending") return;
    state.transactions.set(tx.id, tx);
    trackWaiting(tx, arrivedNow);
    renderFeedItem(tx, !known && arrivedNow);
    trimFeed();
  }

  function trimFeed() {
    const feed = $("feed");
    while (feed.children.length > FEED_LIMIT) {
      const last = feed.lastElementChild;
      state.transactions.delete(Number(last.dataset.id));
      last.remove();
    }
    $("feed-empty").hidden = feed.children.length > 0;
  }

  function renderFeedItem(tx, isNew) {
    const feed = $("feed");
    let item = feed.querySelector(`li[data-id="${CSS.escape(String(tx.id))}"]`);
    if (!item) {
      item = el("li", { className: "tx", dataset: { id: tx.id }, "data-testid": "transaction" },
        el("details", {}, el("summary", {}), el("div", { className: "tx-detail" })));
      // Newest first: before the first row with a smaller id.
      const after = Array.from(feed.children).find((row) => Number(row.dataset.id) < tx.id);
      feed.insertBefore(item, after || null);
      if (isNew) item.classList.add("is-new");
    }
    item.dataset.status = tx.status;
    const summary = item.querySelector("summary");
    summary.replaceChildren(
      el("span", { className: "tx-time" }, el("time", { datetime: tx.received_at }, formatTime(tx.received_at))),
      el("span", { className: "tx-peer", title: "Adresse de la caisse" }, tx.peer || "—"),
      el("span", { className: "tx-action" }, word(ACTION_WORDS, tx.action)),
      el("span", { className: "tx-amount" }, txAmount(tx)),
      el("span", { className: "tx-outcome" }, badge(tx)),
    );
    item.querySelector(".tx-detail").replaceChildren(...transactionDetail(tx));
  }

  function transactionDetail(tx) {
    const facts = el("dl", { className: "tx-facts" },
      fact("Transaction", `n° ${tx.id}`),
      fact("Reçue", formatDateTime(tx.received_at)),
      fact("Répondue", tx.answered_at ? formatDateTime(tx.answered_at) : "—"),
      fact("Durée", formatSeconds(tx.duration_s)),
      fact("Décidée par", word(DECIDED_BY_WORDS, tx.decided_by)),
      tx.reason ? fact("Motif", `${tx.reason.code} · ${tx.reason.label || ""}`) : null,
    );
    return [
      facts,
      el("div", { className: "frames" },
        frameBlock("Demande de la caisse", tx.request, tx.request_frame, tx.labels),
        frameBlock("Réponse du terminal", tx.answer, tx.answer_frame, tx.labels,
          tx.status === "pending" ? "En attente de la réponse…" : "Aucune réponse envoyée.")),
    ];
  }

  function fact(name, value) {
    return el("div", {}, el("dt", {}, name), el("dd", {}, value));
  }

  function frameBlock(title, fields, frame, labels, emptyText) {
    const block = el("section", { className: "frame-block" }, el("h3", {}, title));
    if (!fields || !fields.length) {
      block.append(el("p", { className: "muted" }, emptyText || "Rien n’a pu être lu."));
    } else {
      block.append(fieldsTable(fields, labels));
    }
    if (frame) {
      block.append(el("p", { className: "frame-title" }, "Trame brute"), el("pre", { className: "frame" }, el("code", {}, frame)));
    }
    return block;
  }

  // fields: [[tag, value], ...] or {tag: value}; labels: {tag: French meaning}.
  function fieldsTable(fields, labels) {
    const pairs = Array.isArray(fields) ? fields : Object.entries(fields || {});
    const body = el("tbody", {}, ...pairs.map(([tag, value]) => el("tr", {},
      el("th", { scope: "row" }, tag),
      el("td", { className: "value" }, value),
      el("td", {}, (labels && labels[tag]) || ""))));
    return el("table", { className: "fields" },
      el("thead", {}, el("tr", {},
        el("th", { scope: "col" }, "Champ"),
        el("th", { scope: "col" }, "Valeur"),
        el("th", { scope: "col" }, "Signification"))),
      body);
  }

  // ------------------------------------------------------------- manual mode

  // A request is shown on the terminal screen when the server says it waits
  // for a decision (`decision_deadline`), or, before it says so, when it came
  // in while the terminal was in manual mode.
  function trackWaiting(tx, arrivedNow) {
    const known = state.waiting.get(tx.id);
    if (tx.status !== "pending") {
      state.waiting.delete(tx.id);
    } else if (tx.decision_deadline) {
      state.waiting.set(tx.id, { tx, deadline: deadlineOf(tx, arrivedNow) });
    } else if (known) {
      known.tx = tx;
    } else if (state.settings && state.settings.mode === "manual") {
      state.waiting.set(tx.id, { tx, deadline: deadlineOf(tx, arrivedNow) });
      if (arrivedNow) askDeadline(tx.id);
    }
    renderPending();
  }

  // The request event leaves before the terminal holds the request; the
  // transaction read just after tells its decision deadline.
  async function askDeadline(id) {
    try {
      const tx = await api("GET", `api/transactions/${encodeURIComponent(id)}`);
      if (tx && tx.id === id) upsertTransaction(tx, true);
    } catch (error) {
      /* the countdown keeps its estimate */
    }
  }

  function deadlineOf(tx, arrivedNow) {
    const received = Date.parse(tx.received_at);
    const timeout = Number((state.settings && state.settings.manual_timeout) || 60) * 1000;
    let deadline = Date.parse(tx.decision_deadline || "");
    if (Number.isNaN(deadline)) deadline = received + timeout;
    const now = Date.now();
    if (Number.isNaN(deadline)) return now + timeout;
    // Server and browser clocks may differ: count from our own arrival time then.
    if (arrivedNow && !Number.isNaN(received) && Math.abs(now - received) > 5000) {
      deadline += now - received;
    }
    return deadline;
  }

  function shownWaiting() {
    let first = null;
    for (const entry of state.waiting.values()) {
      if (!first || entry.tx.id < first.tx.id) first = entry;
    }
    return first;
  }

  let countdownTimer = null;
  let shownWaitingId = null;

  function renderPending() {
    const panel = $("pending");
    const entry = shownWaiting();
    panel.hidden = !entry;
    if (!entry) {
      shownWaitingId = null;
      if (countdownTimer) clearInterval(countdownTimer);
      countdownTimer = null;
      return;
    }
    const tx = entry.tx;
    if (shownWaitingId !== tx.id) $("pending-message").textContent = "";
    shownWaitingId = tx.id;
    panel.dataset.id = tx.id;
    $("pending-action").textContent = word(ACTION_WORDS, tx.action).toUpperCase();
    $("pending-amount").textContent = txAmount(tx);
    const others = state.waiting.size - 1;
    $("pending-meta").textContent = `Caisse ${tx.peer || "?"} · transaction n° ${tx.id}` +
      (others > 0 ? ` · ${others} autre${others > 1 ? "s" : ""} en attente` : "");
    updateCountdown();
    if (!countdownTimer) countdownTimer = setInterval(updateCountdown, 250);
  }

  function updateCountdown() {
    const entry = shownWaiting();
    if (!entry) return;
    const total = Number((state.settings && state.settings.manual_timeout) || 60);
    const left = Math.max(0, (entry.deadline - Date.now()) / 1000);
    $("pending-progress").value = total > 0 ? Math.round((100 * left) / total) : 0;
    $("pending-countdown").textContent = left > 0
      ? `Délai de saisie : ${Math.ceil(left)} s`
      : "Délai de saisie dépassé : le terminal répond « time-out ».";
    $("pending").classList.toggle("is-late", left <= 10);
  }

  // What each key of the terminal sends: the card key keeps the settings' payment
  // type, unless it is contactless; the contactless key asks for the contactless
  // type of the same scheme (CB's when that scheme has none). Types come from the API.
  const CONTACTLESS = "2"; // CI, the read mode
  const CONTACT = "1";
  function decisionBody(kind) {
    if (kind === "refused" || kind === "abandon") return { outcome: kind };
    const types = state.choices.payment_types || [];
    const current = findChoice(types, state.settings && state.settings.payment_type);
    const contactless = kind === "contactless";
    let type = current;
    if (!current || contactless !== (current.read_mode === CONTACTLESS)) {
      const wanted = contactless ? CONTACTLESS : CONTACT;
      const ofScheme = (scheme) => types.find((t) => t.scheme === scheme && t.read_mode === wanted);
      type = (current && ofScheme(current.scheme)) || ofScheme("CB") || current;
    }
    return type ? { outcome: "approved", payment_type: type.name } : { outcome: "approved" };
  }

  async function decide(kind) {
    const entry = shownWaiting();
    if (!entry) return;
    const id = entry.tx.id;
    const keys = document.querySelectorAll("#pending .key");
    keys.forEach((key) => { key.disabled = true; });
    $("pending-message").textContent = "";
    try {
      const tx = await api("POST", `api/transactions/${encodeURIComponent(id)}/decision`, decisionBody(kind));
      if (tx && tx.id !== undefined) upsertTransaction(tx, false);
    } catch (error) {
      if (error.status === 404 || error.status === 409) {
        state.waiting.delete(id);
        renderPending();
        $("pending-message").textContent = "Cette transaction n’attend plus de décision.";
      } else {
        $("pending-message").textContent = `Décision non prise en compte : ${error.message}`;
      }
    } finally {
      keys.forEach((key) => { key.disabled = false; });
    }
  }

  function setupPending() {
    document.querySelectorAll("#pending .key").forEach((key) => {
      key.addEventListener("click", () => decide(key.dataset.decision));
    });
  }

  // ---------------------------------------------------------------- settings

  const settingsInput = (name) => $(`set-${name}`);

  function formValue(name) {
    const input = settingsInput(name);
    if (input.type === "checkbox") return input.checked;
    if (input.type === "number") return input.value.trim() === "" ? NaN : Number(input.value);
    return input.value;
  }

  // Shows the server's settings in the form, except in fields being edited.
  function fillSettingsForm(force) {
    const settings = state.settings;
    if (!settings) return;
    for (const name of SETTINGS_FIELDS) {
      const input = settingsInput(name);
      if (!input || !(name in settings)) continue;
      if (!force && input.dataset.dirty === "1") continue;
      const value = settings[name];
      if (input.type === "checkbox") input.checked = Boolean(value);
      else input.value = value === null || value === undefined ? "" : String(value);
      input.dataset.dirty = "";
    }
    showSettingsRows();
  }

  function showSettingsRows() {
    const mode = settingsInput("mode").value;
    $("row-failure_type").hidden = mode !== "failure";
    $("row-manual_timeout").hidden = mode !== "manual";
  }

  function clearFieldErrors(form) {
    form.querySelectorAll(".field-error").forEach((node) => { node.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach((node) => node.removeAttribute("aria-invalid"));
  }

  function showFieldError(input, errorNode, message) {
    if (!input || !errorNode) return false;
    const row = input.closest(".field");
    if (row && row.hidden) row.hidden = false;
    errorNode.textContent = message;
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return true;
  }

  async function applySettings(event) {
    event.preventDefault();
    const form = $("settings-form");
    const message = $("settings-message");
    clearFieldErrors(form);
    message.textContent = "";
    const changes = {};
    for (const name of SETTINGS_FIELDS) {
      const input = settingsInput(name);
      if (input.closest(".field").hidden) continue;
      if (state.settings && !(name in state.settings)) continue;
      const value = formValue(name);
      if (typeof value === "number" && Number.isNaN(value)) {
        showFieldError(input, $(`err-${name}`), "Indiquez un nombre de secondes.");
        return;
      }
      if (!state.settings || state.settings[name] !== value) changes[name] = value;
    }
    if (Object.keys(changes).length === 0) {
      message.textContent = "Aucun changement à appliquer.";
      return;
    }
    const button = $("apply-settings");
    button.disabled = true;
    try {
      state.settings = await api("PUT", "api/settings", changes);
      fillSettingsForm(true);
      renderStatus();
      message.textContent = "Réglages appliqués.";
    } catch (error) {
      const name = error.field;
      const shown = name && showFieldError(settingsInput(name), $(`err-${name}`), error.message);
      message.textContent = shown ? "Réglages non appliqués : corrigez le champ signalé." : `Réglages non appliqués : ${error.message}`;
    } finally {
      button.disabled = false;
    }
  }

  function setupSettings() {
    const form = $("settings-form");
    form.addEventListener("submit", applySettings);
    for (const name of SETTINGS_FIELDS) {
      const input = settingsInput(name);
      const markDirty = () => {
        input.dataset.dirty = "1";
        input.removeAttribute("aria-invalid");
        $(`err-${name}`).textContent = "";
        $("settings-message").textContent = "";
      };
      input.addEventListener("input", markDirty);
      input.addEventListener("change", markDirty);
    }
    settingsInput("mode").addEventListener("change", showSettingsRows);
    $("reset-settings").addEventListener("click", () => {
      clearFieldErrors(form);
      $("settings-message").textContent = "";
      fillSettingsForm(true);
    });
  }

  // ------------------------------------------------------------ test payment

  // "host:port", "[v6]:port" or empty (this simulator).
  function parseDestination(text) {
    const value = text.trim();
    if (!value) return { host: null, port: null };
    const match = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(value);
    if (!match) return null;
    const port = Number(match[3]);
    if (port < 1 || port > 65535) return null;
    return { host: match[1] || match[2], port };
  }

  async function sendTestPayment(event) {
    event.preventDefault();
    const form = $("test-form");
    const message = $("test-message");
    clearFieldErrors(form);
    message.textContent = "";
    const destination = parseDestination($("test-destination").value);
    if (!destination) {
      showFieldError($("test-destination"), $("err-test-destination"), "Écrivez hôte:port, par exemple 192.168.1.20:8888.");
      return;
    }
    const body = {
      amount: $("test-amount").value.trim(),
      currency: $("test-currency").value.trim().toUpperCase(),
      action: $("test-action").value,
      cheque: $("test-cheque").checked,
      receipt: $("test-receipt").checked,
      host: destination.host,
      port: destination.port,
    };
    const button = $("test-send");
    button.disabled = true;
    message.textContent = "Paiement envoyé, en attente de la réponse du terminal…";
    try {
      const result = await api("POST", "api/test-payment", body);
      message.textContent = "";
      renderTestResult(result || {});
    } catch (error) {
      const field = { host: "destination", port: "destination" }[error.field] || error.field;
      const shown = field && showFieldError($(`test-${field}`), $(`err-test-${field}`), error.message);
      message.textContent = shown ? "Paiement non envoyé : corrigez le champ signalé." : `Paiement non envoyé : ${error.message}`;
    } finally {
      button.disabled = false;
    }
  }

  function renderTestResult(result) {
    const box = $("test-result");
    const status = result.status || "error";
    box.dataset.status = status;
    let headline = word(RESULT_WORDS, status);
    if (result.reason && result.reason.code) {
      headline += ` : ${result.reason.label || ""} (${result.reason.code})`;
    }
    const amount = formatAmount(result.amount, result.currency_symbol, result.currency);
    const detail = [
      amount !== "—" ? amount : null,
      result.action ? word(ACTION_WORDS, result.action) : null,
      result.elapsed_s !== undefined ? `en ${formatSeconds(result.elapsed_s)}` : null,
    ].filter(Boolean).join(" · ");
    const parts = [
      el("p", { className: `result-headline result-${status}` }, headline),
      detail ? el("p", { className: "muted" }, detail) : null,
      result.problem ? el("p", { className: "result-problem" }, result.problem) : null,
    ];
    if (result.fields && Object.keys(result.fields).length) {
      parts.push(el("details", {}, el("summary", {}, "Champs de la réponse"), fieldsTable(result.fields, result.labels)));
    }
    if (result.request || result.answer) {
      parts.push(el("details", {}, el("summary", {}, "Trames brutes"),
        result.request ? el("p", { className: "frame-title" }, "Demande") : null,
        result.request ? el("pre", { className: "frame" }, el("code", {}, result.request)) : null,
        result.answer ? el("p", { className: "frame-title" }, "Réponse") : null,
        result.answer ? el("pre", { className: "frame" }, el("code", {}, result.answer)) : null));
    }
    if (result.receipt) {
      parts.push(el("details", {}, el("summary", {}, "Ticket client"), el("pre", { className: "receipt" }, result.receipt)));
    }
    box.replaceChildren(...parts.filter(Boolean));
    box.hidden = false;
  }

  function setupTestPayment() {
    $("test-form").addEventListener("submit", sendTestPayment);
    for (const input of $("test-form").querySelectorAll("input, select")) {
      input.addEventListener("input", () => {
        input.removeAttribute("aria-invalid");
        const error = $(`err-${input.id}`);
        if (error) error.textContent = "";
      });
    }
  }

  // ----------------------------------------------------------------- journal

  let journalTimer = null;
  function refreshJournalSoon() {
    if (journalTimer) return;
    journalTimer = setTimeout(() => {
      journalTimer = null;
      loadJournal().catch(() => {});
    }, 500);
  }

  async function loadJournal() {
    const status = $("journal-filter").value;
    const query = new URLSearchParams({ limit: String(JOURNAL_LIMIT) });
    if (status) query.set("status", status);
    try {
      const data = await api("GET", `api/transactions?${query}`);
      state.journal = data.transactions || [];
      renderJournal();
    } catch (error) {
      $("journal-message").textContent = `Journal indisponible : ${error.message}`;
    }
  }

  function renderJournal() {
    const rows = state.journal.map((tx) => el("tr", { dataset: { status: tx.status } },
      el("td", { className: "num" }, tx.id),
      el("td", {}, el("time", { datetime: tx.received_at }, formatDateTime(tx.received_at))),
      el("td", {}, tx.peer || "—"),
      el("td", {}, word(ACTION_WORDS, tx.action)),
      el("td", { className: "num" }, txAmount(tx)),
      el("td", {}, badge(tx)),
      el("td", {}, word(DECIDED_BY_WORDS, tx.decided_by)),
      el("td", { className: "num" }, formatSeconds(tx.duration_s))));
    $("journal-body").replaceChildren(...rows);
    const count = state.journal.length;
    $("journal-message").textContent = count === 0
      ? ($("journal-filter").value ? "Aucune transaction de cette issue dans le journal." : "Aucune transaction dans le journal.")
      : `${count} transaction${count > 1 ? "s" : ""}${count >= JOURNAL_LIMIT ? " (les plus récentes)" : ""}.`;
  }

  const CSV_COLUMNS = [
    ["id", (tx) => tx.id],
    ["received_at", (tx) => tx.received_at],
    ["answered_at", (tx) => tx.answered_at],
    ["duration_s", (tx) => tx.duration_s],
    ["peer", (tx) => tx.peer],
    ["action", (tx) => tx.action],
    ["amount", (tx) => tx.amount],
    ["currency", (tx) => tx.currency],
    ["status", (tx) => tx.status],
    ["reason_code", (tx) => tx.reason && tx.reason.code],
    ["reason_label", (tx) => tx.reason && tx.reason.label],
    ["decided_by", (tx) => tx.decided_by],
    ["request_frame", (tx) => tx.request_frame],
    ["answer_frame", (tx) => tx.answer_frame],
  ];

  function csvCell(value) {
    if (value === null || value === undefined) return "";
    let text = String(value);
    // A spreadsheet would run a cell starting with these as a formula.
    if (/^[=+@\t\r]/.test(text)) text = `'${text}`;
    return /[",\r\n;]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  }

  function toCsv(transactions) {
    const lines = [CSV_COLUMNS.map(([name]) => name).join(",")];
    for (const tx of transactions) lines.push(CSV_COLUMNS.map(([, get]) => csvCell(get(tx))).join(","));
    return lines.join("\r\n") + "\r\n";
  }

  function download(name, type, text) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const link = el("a", { href: url, download: name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  async function exportJournal(kind) {
    await loadJournal();
    const stamp = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
    if (kind === "csv") {
      // The BOM lets spreadsheets read the file as UTF-8 (€, accents).
      download(`journal-caisse-ap-${stamp}.csv`, "text/csv;charset=utf-8", "\ufeff" + toCsv(state.journal));
    } else {
      download(`journal-caisse-ap-${stamp}.json`, "application/json",
        JSON.stringify({ transactions: state.journal }, null, 2) + "\n");
    }
  }

  function setupJournal() {
    $("journal-form").addEventListener("submit", (event) => {
      event.preventDefault();
      loadJournal();
    });
    $("journal-filter").addEventListener("change", () => loadJournal());
    $("export-csv").addEventListener("click", () => exportJournal("csv"));
    $("export-json").addEventListener("click", () => exportJournal("json"));
  }

  // ------------------------------------------------------------------ start

  async function start() {
    setupToken();
    setupPending();
    setupSettings();
    setupTestPayment();
    setupJournal();
    setStreamState("connecting");
    tokenFromAddress();
    try {
      // Open to all: says whether a token is needed before anything else is asked.
      await loadStatus();
      if (!(await openSession())) {
        document.body.dataset.ready = "true";
        return;
      }
      // Listen first, then read: an event between the two is merged by id.
      connectEvents();
      await loadStatus();
      await loadFeed();
      await loadJournal();
    } catch (error) {
      $("journal-message").textContent = `Le serveur ne répond pas : ${error.message}`;
    }
    document.body.dataset.ready = "true";
  }

  start();
})();
