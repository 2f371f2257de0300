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
  const EXPORT_LIMIT = 100000; // transactions in one export, read page by page
  const TOKEN_KEY = "caisse-ap-ip.token";
  const RECONNECT_MAX_MS = 10000;
  // ?terminal=t1: the page of one terminal of the farm (farm.js shows them all); its
  // calls go to /api/terminals/t1/…, the same routes as the command line's terminal.
  const FARM_TERMINAL = (/^t[1-9][0-9]{0,17}$/.exec(new URLSearchParams(location.search).get("terminal") || "") || [null])[0];

  function apiPath(path) {
    if (!FARM_TERMINAL || !path.startsWith("api/") || path.startsWith("api/session")) return path;
    return `api/terminals/${FARM_TERMINAL}/${path.slice(4)}`;
  }
  const SETTINGS_FIELDS = [
    "mode", "failure_type", "manual_timeout", "duration", "payment_type", "seller_contract",
    "profile", "amount_rules", "currencies", "answer_version", "pad_amount",
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
    pre_authorisation: "Pré-autorisation",
  };
  const DECIDED_BY_WORDS = {
    settings: "réglages",
    queue: "file d’issues",
    "amount-rule": "règle de montant",
    manual: "décision manuelle",
    "manual-timeout": "délai de décision dépassé",
    shutdown: "arrêt du serveur",
    "request-error": "demande invalide",
    terminal: "terminal réel (proxy)",
    recording: "enregistrement rejoué",
    scenario: "scénario du kit de conformité",
  };
  // Where the answer came from, when not from this simulator (--proxy, --replay).
  const ORIGIN_WORDS = { proxied: "proxy", replayed: "rejeu", conformance: "conformité" };
  const OUTCOME_WORDS = {
    approved: "Acceptée",
    partial: "Acceptée en partie",
    "no-answer": "Sans réponse",
    "hang-up": "Raccroche sans répondre",
    terminal: "Réponse du terminal réel, retardée",
    "terminal-split": "Réponse du terminal réel, découpée",
  };
  const OUTCOME_CHOICE_WORDS = {
    approved: "Acceptée",
    partial: "Acceptée en partie (la moitié, si la caisse l’accepte : BF=1)",
    "no-answer": "Sans réponse (la caisse attend)",
    "hang-up": "Raccroche sans répondre",
    terminal: "Réponse du terminal réel, retardée",
    "terminal-split": "Réponse du terminal réel, découpée",
  };
  // With --replay the recording answers in the real terminal's place.
  const REPLAYED_WORDS = {
    terminal: "Réponse de l’enregistrement, retardée",
    "terminal-split": "Réponse de l’enregistrement, découpée",
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
    rules: null, // last GET /api/amount-rules
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

  // The API's error codes (docs/api.md) in the page's words. The API's own
  // `error` text is English, for people reading the API by hand: never shown.
  const ERROR_WORDS = {
    network: () => "Le serveur ne répond pas.",
    aborted: () => "Demande annulée.",
    not_found: () => "Cette fonction n’existe pas sur ce serveur (une autre version ?).",
    unknown_transaction: () => "Cette transaction n’est pas (ou plus) dans le journal.",
    method_not_allowed: () => "Le serveur refuse cette opération ici (une autre version ?).",
    cross_origin: () => "Refusé : la demande ne vient pas de la console de ce serveur.",
    host_not_allowed: () => "Refusé : ce serveur ne répond pas à ce nom d’hôte (option --web-allowed-host).",
    token_required: () => "Ce serveur demande un jeton d’accès valide.",
    body_required: () => "La demande envoyée était vide.",
    body_too_large: () => "La demande envoyée est trop volumineuse.",
    json_required: () => "La demande envoyée n’était pas au format JSON.",
    invalid_json: () => "La demande envoyée n’était pas du JSON valide.",
    object_required: () => "La demande envoyée n’avait pas la forme attendue.",
    unknown_field: () => "Ce champ est inconnu du serveur (une autre version ?).",
    empty_list: () => "Ajoutez au moins une issue.",
    queue_full: () => "La file d’issues est pleine : videz-la d’abord.",
    not_waiting: () => "Cette transaction n’attend plus de décision.",
    not_listening: () => "Le terminal n’écoute pas : aucun paiement ne peut lui être envoyé.",
    no_raw_log: () => "Ce serveur ne garde pas de journal brut (lancé depuis du code, pas en ligne de commande).",
    unknown_terminal: () => "Ce terminal n’existe pas (ou plus) dans la ferme.",
    too_many_terminals: (limits) => (limits && limits.max !== undefined ? `La ferme fait déjà tourner ${NUMBER.format(limits.max)} terminaux : supprimez-en un d’abord.` : "La ferme fait déjà tourner le maximum de terminaux."),
    port_in_use: () => "Ce port est déjà pris sur l’adresse de la ferme : choisissez-en un autre, ou 0.",
    terminal_deleted: () => "Ce terminal est supprimé : on peut seulement le consulter.",
    too_many_test_payments: () => "Trop de paiements de test en cours : attendez la fin de l’un d’eux.",
    internal_error: () => "Erreur interne du serveur : son journal (sortie d’erreur) en dit plus.",
    required: () => "Ce champ est obligatoire.",
    empty: () => "Ce champ ne peut pas être vide ni fait seulement d’espaces.",
    not_a_number: () => "Indiquez un nombre, par exemple 0,5.",
    out_of_range: (limits) => rangeText(limits),
    not_boolean: () => "Cochez ou décochez la case.",
    not_text: () => "Valeur non valide : du texte est attendu.",
    too_long: (limits) => (limits && limits.max_length ? `${NUMBER.format(limits.max_length)} caractères au plus.` : "Texte trop long."),
    not_printable_ascii: () => "Lettres sans accent, chiffres et signes courants seulement (ASCII).",
    invalid_format: () => "Forme non valide : voyez l’exemple sous le champ.",
    unknown_choice: () => "Ce choix est inconnu du serveur.",
    unknown_currency: () => "Devise inconnue ou refusée : un code ISO 4217 comme EUR, XPF ou 978.",
    invalid_amount: () => "Montant non valide : écrivez des chiffres avec au plus une virgule, par exemple 12,50.",
    amount_zero: () => "Le montant est nul : il doit être au-dessus de zéro.",
    amount_negative: () => "Le montant est négatif : un montant négatif est un remboursement ; choisissez l’opération « Remboursement » avec un montant positif.",
    amount_too_large: (limits) => (limits && limits.max
      ? `Le montant est au-delà de ${formatAmount(limits.max, null, limits.currency)}, le plus grand que le champ CB porte (12 chiffres).`
      : "Le montant est trop grand pour le champ CB (12 chiffres)."),
    amount_too_precise: (limits) => (!limits || limits.decimals === undefined ? "Montant non valide : trop de décimales pour cette devise."
      : limits.decimals === 0 ? `Montant non valide : trop de décimales, ${limits.currency || "cette devise"} n’en a pas.`
        : `Montant non valide : trop de décimales, ${limits.currency || "cette devise"} en a ${limits.decimals}.`),
    confirmation_required: () => "Ce paiement irait au terminal réel derrière le proxy : confirmez-le d’abord.",
    real_terminal_required: () => "Cette issue transmet la réponse d’un terminal réel : elle n’existe qu’en mode proxy (--proxy) ou rejeu (--replay), et jamais pour une décision au clavier.",
    invalid_value: () => "Valeur non valide.",
  };

  function rangeText(limits) {
    if (!limits) return "Valeur hors des limites permises.";
    const low = limits.above !== undefined ? `plus de ${NUMBER.format(limits.above)}`
      : limits.min !== undefined ? `de ${NUMBER.format(limits.min)}` : null;
    const high = limits.max !== undefined && limits.max !== null ? NUMBER.format(limits.max) : null;
    if (low && high) return limits.above !== undefined ? `Indiquez ${low} et au plus ${high}.` : `Indiquez un nombre ${low} à ${high}.`;
    if (low) return `Indiquez un nombre ${low} ou plus.`;
    return high ? `Indiquez au plus ${high}.` : "Valeur hors des limites permises.";
  }

  // French words for an error of the API, from its machine code.
  function errorWords(code, limits) {
    const words = Object.prototype.hasOwnProperty.call(ERROR_WORDS, code) ? ERROR_WORDS[code] : null;
    return words ? words(limits) : `Le serveur a refusé la demande (code « ${code || "inconnu"} »).`;
  }

  class ApiError extends Error {
    constructor(status, code, field, limits) {
      super(errorWords(code, limits));
      this.status = status;
      this.code = code;
      this.field = field || null;
      this.limits = limits || null;
    }
  }

  // The visible label of a form control, for messages that name it.
  function labelOf(input) {
    const label = input && input.id ? document.querySelector(`label[for="${CSS.escape(input.id)}"]`) : null;
    return label ? label.textContent.trim() : "";
  }

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (error) {
      return "";
    }
  }

  async function api(method, path, body, signal) {
    const headers = { Accept: "application/json" };
    const init = { method, headers, cache: "no-store", signal };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (token()) headers.Authorization = `Bearer ${token()}`;
    let response;
    try {
      response = await fetch(apiPath(path), init);
    } catch (error) {
      throw new ApiError(0, error.name === "AbortError" ? "aborted" : "network");
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
      const code = data && data.code ? data.code : `http_${response.status}`;
      throw new ApiError(response.status, code, data && data.field, data && data.limits);
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

    renderUpstream(status.upstream);
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
    renderQueue();
  }

  // Behind --proxy the real terminal answers: the simulator's mode and delay do not
  // apply. With --replay the recording answers what it holds; the settings the rest.
  function upstream() {
    return (state.status && state.status.upstream) || null;
  }

  function renderUpstream(up) {
    const proxied = Boolean(up && up.mode === "proxied");
    const replayed = Boolean(up && up.mode === "replayed");
    $("row-answered-by").hidden = !up;
    $("answered-by").textContent = proxied
      ? `Le terminal réel à ${hostPort(up)} (proxy) : il décide de chaque paiement, sauf issue imposée par la file d’issues.`
      : replayed ? `L’enregistrement ${up.file || "rejoué"} (rejeu) : ${up.in_order
        ? "les réponses enregistrées, dans l’ordre, quelles que soient les demandes"
        : "la réponse enregistrée de la même demande (opération, montant, devise)"}, avec ses délais.` : "";
    $("row-mode").hidden = proxied;
    $("row-delay").hidden = proxied;
    $("mode-term").textContent = replayed ? "Mode (demandes absentes de l’enregistrement)" : "Mode";
    $("delay-term").textContent = replayed ? "Délai (demandes absentes de l’enregistrement)" : "Délai avant réponse";
    $("settings-upstream").hidden = !up;
    $("settings-upstream").textContent = proxied
      ? `Mode proxy : le terminal réel à ${hostPort(up)} répond. Le profil sert à repérer ses écarts ; les autres réglages ne valent que pour les réponses de la file d’issues.`
      : replayed ? `Rejeu de ${up.file || "l’enregistrement"} : ces réglages répondent aux demandes que l’enregistrement n’a pas.` : "";
    $("test-upstream").hidden = !proxied;
    $("test-upstream").textContent = proxied
      ? `Mode proxy : un paiement envoyé ici part au terminal réel à ${hostPort(up)}. La console demande de le confirmer.`
      : "";
    $("footer-note").textContent = proxied
      ? `Proxy devant le terminal réel ${hostPort(up)} : les paiements sont réels.`
      : "Terminal de test, aucune vraie transaction bancaire.";
  }

  function outcomeText(name) {
    const failure = findChoice(state.choices.failure_types, name);
    const replayed = Boolean(upstream() && upstream().mode === "replayed");
    return failure ? failure.label || name : word(replayed ? Object.assign({}, OUTCOME_WORDS, REPLAYED_WORDS) : OUTCOME_WORDS, name);
  }

  function renderChoices() {
    fillSelect($("set-mode"), state.choices.modes, MODE_WORDS);
    fillSelect($("set-failure_type"), state.choices.failure_types);
    fillSelect($("set-payment_type"), state.choices.payment_types, null, paymentTypeText);
    fillSelect($("set-profile"), state.choices.profiles);
    fillSelect($("test-action"), state.choices.actions, ACTION_WORDS);
    fillSelect($("queue-outcome"), outcomeChoices(Boolean(upstream())));
    fillSelect($("other-outcome"), outcomeChoices(false));
    const types = [{ name: "", label: "celle des réglages" }].concat(state.choices.payment_types || []);
    const typeText = (choice) => (choice.name ? paymentTypeText(choice) : choice.label);
    fillSelect($("queue-payment_type"), types, null, typeText);
    fillSelect($("other-payment_type"), types, null, typeText);
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
    source = new EventSource(apiPath("api/events"));
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
      renderRules();
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
      el("span", { className: "tx-outcome" }, badge(tx), ...originMarks(tx)),
    );
    item.querySelector(".tx-detail").replaceChildren(...transactionDetail(tx));
    if (item.querySelector("details").open) fitOpenRow(item, false);
  }

  // The feed scrolls in its box; an opened row taller than the box, or low in it,
  // would have its answer frame cut. A short feed grows to its lowest open row; a
  // long one grows to its tallest open row, which then scrolls into full view.
  function fitOpenRow(item, reveal = true) {
    const feed = $("feed");
    feed.style.maxHeight = "";
    const box = feed.clientHeight;
    if (getComputedStyle(feed).overflowY === "visible" || box === 0) return; // phone: no box
    const rows = Array.from(feed.querySelectorAll(".tx > details[open]")).map((d) => d.parentElement);
    const contentTop = feed.getBoundingClientRect().top - feed.scrollTop;
    const lowest = Math.max(0, ...rows.map((row) => row.getBoundingClientRect().bottom - contentTop));
    const tallest = Math.max(0, ...rows.map((row) => row.offsetHeight));
    const height = lowest <= box * 1.5 ? lowest : tallest;
    if (height > box) feed.style.maxHeight = `${Math.ceil(height) + 2}px`;
    const top = item.getBoundingClientRect().top - feed.getBoundingClientRect().top;
    const bottom = top + item.offsetHeight;
    if (reveal && (top < 0 || bottom > feed.clientHeight)) feed.scrollTop += top;
  }

  function setupFeed() {
    // "toggle" does not bubble: caught on its way down.
    $("feed").addEventListener("toggle", (event) => {
      const item = event.target.closest && event.target.closest(".tx");
      if (item) fitOpenRow(item, event.target.open);
    }, true);
  }

  function transactionDetail(tx) {
    const facts = el("dl", { className: "tx-facts" },
      fact("Transaction", `n° ${tx.id}`),
      fact("Reçue", formatDateTime(tx.received_at)),
      fact("Répondue", tx.answered_at ? formatDateTime(tx.answered_at) : "—"),
      fact("Durée", formatSeconds(tx.duration_s)),
      fact("Décidée par", word(DECIDED_BY_WORDS, tx.decided_by)),
      tx.scenario ? fact("Scénario", tx.scenario) : null,
      tx.reason ? fact("Motif", `${tx.reason.code} · ${tx.reason.label || ""}`) : null,
      fact("Protocole", tx.protocol === "concert-e+" ? "Concert E+ (liaison série)" : "Caisse-AP sur IP"),
      (tx.deviations || []).length ? fact("Écarts", deviationList(tx)) : null,
    );
    const ex = tx.exchange;
    const replay = tx.amount !== null && tx.amount !== undefined && tx.currency
      ? el("button", { type: "button", className: "ghost", "data-replay": tx.id, "data-testid": "replay" }, "Rejouer")
      : null;
    return [
      facts,
      replay ? el("div", { className: "tx-tools" }, replay,
        el("span", { className: "muted" }, "Renvoie la même demande depuis la caisse de test ; le résultat s’affiche dans la caisse de test.")) : null,
      ex ? el("div", { className: "frames" },
        nativeBlock("Demande Concert E+ de la caisse", ex.request, ex.request_frame),
        nativeBlock("Réponse Concert E+ du terminal", ex.answer, ex.answer_frame)) : null,
      el("div", { className: "frames" },
        frameBlock(ex ? "Équivalent Caisse-AP de la demande" : "Demande de la caisse",
          tx.request, tx.request_frame, tx.labels),
        frameBlock(ex ? "Équivalent Caisse-AP de la réponse" : "Réponse du terminal",
          tx.answer, tx.answer_frame, tx.labels,
          tx.status === "pending" ? "En attente de la réponse…" : "Aucune réponse envoyée.")),
      tx.receipt ? ticket(tx.receipt) : null,
    ].filter(Boolean);
  }

  // An exchange in the POS's own protocol: rows of [name, value, label].
  function nativeBlock(title, rows, frame) {
    const labels = Object.fromEntries((rows || []).map(([name, , label]) => [name, label]));
    return frameBlock(title, (rows || []).map(([name, value]) => [name, value]), frame, labels,
      "Aucune réponse envoyée.");
  }

  // The test payment that sends a transaction's request again: the same amount,
  // currency, action and options, read from the request's fields.
  function replayBody(tx) {
    const fields = Object.fromEntries(tx.request || []);
    return {
      amount: tx.amount,
      currency: tx.currency,
      action: tx.action || "debit",
      cheque: fields.CC === "00C",
      receipt: String(fields.CK || "").startsWith("1"),
      partial: fields.BF === "1",
      immediate: fields.BA === "1",
      reference: fields.CF || null,
      timeout: parseDecimal($("test-timeout").value) || 30,
    };
  }

  function replay(id) {
    const tx = state.transactions.get(id) || state.journal.find((row) => row.id === id);
    if (!tx) return;
    $("test-title").scrollIntoView({ block: "nearest" });
    runTestPayment(replayBody(tx));
  }

  // A raw frame with a button that copies it.
  function frameView(title, frame) {
    const code = el("code", {}, frame);
    const copy = el("button", { type: "button", className: "ghost small copy", "data-testid": "copy-frame" }, "Copier");
    copy.addEventListener("click", () => copyText(frame, copy));
    return el("div", { className: "frame-view" },
      el("div", { className: "frame-head" }, el("p", { className: "frame-title" }, title), copy),
      el("pre", { className: "frame" }, code));
  }

  async function copyText(text, button) {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copié";
    } catch (error) {
      button.textContent = "Copie refusée par le navigateur";
    }
    setTimeout(() => { button.textContent = "Copier"; }, 2000);
  }

  // The customer receipt as the terminal would print it.
  function ticket(text) {
    return el("section", { className: "ticket-block" }, el("h3", {}, "Ticket client"),
      el("pre", { className: "ticket", "data-testid": "ticket" }, text));
  }

  // A proxied or replayed transaction is marked, with its deviations counted at a glance.
  function originMarks(tx) {
    const marks = [];
    if (ORIGIN_WORDS[tx.mode]) {
      marks.push(el("span", { className: "badge badge-mode", "data-testid": "origin" }, ORIGIN_WORDS[tx.mode]));
    }
    const count = (tx.deviations || []).length;
    if (count) {
      const text = `⚠ ${count} écart${count > 1 ? "s" : ""}`;
      const title = tx.deviations.map((d) => d.label).join(", ");
      marks.push(el("span", { className: "badge badge-deviations", title, "data-testid": "deviations" }, text));
    }
    return marks;
  }

  function deviationList(tx) {
    return el("ul", { className: "deviations" }, ...tx.deviations.map((d) => el("li", {},
      `${d.side === "pos" ? "caisse" : "terminal"} · ${d.label}${deviationDetail(d) ? ` : ${deviationDetail(d)}` : ""}`)));
  }

  // The French detail (older journals have only `detail`, then made of tags and values).
  function deviationDetail(d) {
    return d.detail_fr !== undefined && d.detail_fr !== null ? d.detail_fr : d.detail || "";
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
    if (frame) block.append(frameView("Trame brute", frame));
    return block;
  }

  // A long value (a receipt's base64...) shortened: the whole is in the raw frame.
  const LONG_VALUE = 64;
  function longValue(value) {
    const text = String(value);
    if (text.length <= LONG_VALUE) return text;
    return el("span", { className: "long-value", title: text },
      `${text.slice(0, 24)}… (${NUMBER.format(text.length)} caractères, voir la trame brute)`);
  }

  // fields: [[tag, value], ...] or {tag: value}; labels: {tag: French meaning}.
  function fieldsTable(fields, labels) {
    const pairs = Array.isArray(fields) ? fields : Object.entries(fields || {});
    const body = el("tbody", {}, ...pairs.map(([tag, value]) => el("tr", {},
      el("th", { scope: "row" }, tag),
      el("td", { className: "value" }, longValue(value)),
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
    if (kind === "other") {
      const body = { outcome: $("other-outcome").value };
      if ($("other-payment_type").value) body.payment_type = $("other-payment_type").value;
      return body;
    }
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
    const keys = document.querySelectorAll("#pending .key, #other-decision button");
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
    $("other-decision").addEventListener("submit", (event) => {
      event.preventDefault();
      decide("other");
    });
  }

  // ---------------------------------------------------------------- settings

  const settingsInput = (name) => $(`set-${name}`);

  // "0,5", "0.5", " 3 600 " -> a number; anything else -> NaN. Text inputs, not
  // type=number: a browser's number input drops a decimal comma it does not expect.
  function parseDecimal(text) {
    const value = String(text).replace(/[\s\u00a0\u202f]/g, "").replace(",", ".");
    return /^(\d+(\.\d*)?|\.\d+)$/.test(value) ? Number(value) : NaN;
  }

  // Seconds as the page writes them: "0,5", "3", "3 600".
  function decimalText(value) {
    return value === null || value === undefined ? "" : NUMBER.format(Number(value));
  }

  // Each setting's control: how to read it (a value for the API, or an error
  // message) and how to show the server's value back.
  const SETTING_KINDS = {
    seconds: {
      read: (input) => {
        const number = parseDecimal(input.value);
        return Number.isNaN(number) ? { error: "Indiquez un nombre de secondes, par exemple 0,5." } : { value: number };
      },
      show: decimalText,
    },
    contract: {
      read: (input) => (input.value.trim() ? { value: input.value.trim() } : { error: ERROR_WORDS.empty() }),
      show: (value) => value,
    },
    optional: { // blank means null: the server's default (echo the request's version)
      read: (input) => ({ value: input.value.trim() || null }),
      show: (value) => value || "",
    },
    currencies: { // blank means every currency
      read: (input) => {
        const codes = input.value.split(/[\s,;]+/).filter(Boolean).map((code) => code.toUpperCase());
        return { value: codes.length ? codes : null };
      },
      show: (value) => (value ? value.join(", ") : ""),
    },
    check: { read: (input) => ({ value: input.checked }), show: (value) => Boolean(value) },
    choice: { read: (input) => ({ value: input.value }), show: (value) => value },
  };

  function settingKind(name) {
    return SETTING_KINDS[settingsInput(name).dataset.kind || "choice"];
  }

  function sameValue(a, b) {
    return JSON.stringify(a) === JSON.stringify(b);
  }

  // Shows the server's settings in the form, except in fields being edited.
  function fillSettingsForm(force) {
    const settings = state.settings;
    if (!settings) return;
    for (const name of SETTINGS_FIELDS) {
      const input = settingsInput(name);
      if (!input || !(name in settings)) continue;
      if (!force && input.dataset.dirty === "1") continue;
      const shown = settingKind(name).show(settings[name]);
      if (input.type === "checkbox") input.checked = shown;
      else input.value = shown === null || shown === undefined ? "" : String(shown);
      input.dataset.dirty = "";
    }
    showSettingsRows();
  }

  // What the profile chosen in the form changes from the standard one, and its source.
  function showProfileDifferences() {
    const box = $("profile-differences");
    const profile = findChoice(state.choices.profiles, settingsInput("profile").value);
    if (!profile) { box.replaceChildren(); return; }
    const rows = (profile.differences || []).map((d) =>
      el("tr", {}, el("th", { scope: "row" }, d.point), el("td", {}, d.standard), el("td", {}, d.profile)));
    const table = rows.length
      ? el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Point"), el("th", {}, "Standard"),
        el("th", {}, profile.name))), el("tbody", {}, ...rows))
      : el("p", {}, "Aucune différence avec le profil standard.");
    box.replaceChildren(el("p", { className: "profile-source" }, `Source : ${profile.source_fr || profile.source}`), table);
  }

  function showSettingsRows() {
    showProfileDifferences();
    const mode = settingsInput("mode").value;
    // Behind --proxy no request reaches the mode, the manual keypad or the rules.
    const proxied = Boolean(upstream() && upstream().mode === "proxied");
    $("row-mode-setting").hidden = proxied;
    $("row-amount_rules").hidden = proxied;
    $("row-failure_type").hidden = proxied || mode !== "failure";
    $("row-manual_timeout").hidden = proxied || mode !== "manual";
  }

  function clearFieldErrors(form) {
    form.querySelectorAll(".field-error").forEach((node) => { node.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach((node) => node.removeAttribute("aria-invalid"));
  }

  function showFieldError(input, errorNode, message) {
    if (!input || !errorNode) return false;
    const row = input.closest(".field");
    if (row && row.hidden) row.hidden = false;
    const folded = input.closest("details"); // "Autres options..." and the like
    if (folded) folded.open = true;
    errorNode.textContent = message;
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return true;
  }

  // An error of the API next to the field it names (when the form has it), and
  // a sentence for the whole form naming the field by its visible label.
  function showApiError(error, input, errorNode, messageNode, what) {
    const shown = error.field && showFieldError(input, errorNode, error.message);
    messageNode.textContent = shown
      ? `${what} : « ${labelOf(input)} » — ${error.message}`
      : `${what} : ${error.message}`;
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
      const read = settingKind(name).read(input);
      if (read.error) {
        showFieldError(input, $(`err-${name}`), read.error);
        message.textContent = `Réglages non appliqués : « ${labelOf(input)} » — ${read.error}`;
        return;
      }
      if (!state.settings || !sameValue(state.settings[name], read.value)) changes[name] = read.value;
    }
    if (Object.keys(changes).length === 0) {
      fillSettingsForm(true); // "0,50" typed for 0,5: show it as understood
      message.textContent = "Aucun changement à appliquer.";
      return;
    }
    const button = $("apply-settings");
    button.disabled = true;
    try {
      state.settings = await api("PUT", "api/settings", changes);
      fillSettingsForm(true);
      renderStatus();
      renderRules();
      message.textContent = "Réglages appliqués.";
    } catch (error) {
      showApiError(error, settingsInput(error.field), $(`err-${error.field}`), message, "Réglages non appliqués");
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
    settingsInput("profile").addEventListener("change", showProfileDifferences);
    $("reset-settings").addEventListener("click", () => {
      clearFieldErrors(form);
      $("settings-message").textContent = "";
      fillSettingsForm(true);
    });
  }

  // ------------------------------------------------------ queue and rules

  // Every outcome the API takes, in the page's words: approvals, then no answer
  // and hang-up, then each failure by its AF code. Those that pass on the upstream's
  // answer only behind --proxy or --replay, and never for a request waiting at the
  // keypad (this simulator answers it).
  function outcomeChoices(withUpstream) {
    const forwarded = state.choices.forwarded_outcomes || ["terminal", "terminal-split"];
    const replayed = Boolean(upstream() && upstream().mode === "replayed");
    const words = replayed ? Object.assign({}, OUTCOME_CHOICE_WORDS, REPLAYED_WORDS) : OUTCOME_CHOICE_WORDS;
    const names = (state.choices.outcomes || []).filter((name) => withUpstream || !forwarded.includes(name));
    return names.map((name) => {
      const failure = findChoice(state.choices.failure_types, name);
      return { name, label: failure ? `Refus AF ${failure.code} · ${failure.label || name}` : word(words, name) };
    });
  }

  function specText(spec) {
    const type = spec.payment_type ? findChoice(state.choices.payment_types, spec.payment_type) : null;
    return [
      outcomeText(spec.outcome),
      type ? paymentTypeText(type) : null,
      spec.delay !== undefined && spec.delay !== null ? `après ${formatSeconds(spec.delay)}` : null,
    ].filter(Boolean).join(" · ");
  }

  function renderQueue() {
    const queue = (state.status && state.status.queue) || [];
    const last = queue.length - 1;
    const items = queue.map((spec, index) => el("li", { className: "queue-item", "data-testid": "queue-item" },
      el("span", { className: "queue-text" }, specText(spec)),
      el("span", { className: "queue-buttons" },
        el("button", { type: "button", className: "ghost small", "data-queue-move": index, "data-by": -1, disabled: index === 0, "aria-label": `Monter l’issue ${index + 1}` }, "↑"),
        el("button", { type: "button", className: "ghost small", "data-queue-move": index, "data-by": 1, disabled: index === last, "aria-label": `Descendre l’issue ${index + 1}` }, "↓"),
        el("button", { type: "button", className: "ghost small", "data-queue-remove": index, "aria-label": `Retirer l’issue ${index + 1}` }, "Retirer"))));
    $("queue-list").replaceChildren(...items);
    $("queue-empty").hidden = queue.length > 0;
  }

  // The API appends or clears; a reordered or shortened queue is sent whole again.
  async function replaceQueue(specs) {
    const message = $("queue-message");
    message.textContent = "";
    try {
      let data = await api("DELETE", "api/next");
      if (specs.length) data = await api("POST", "api/next", specs);
      state.status.queue = data.queue;
      renderStatus();
      return true;
    } catch (error) {
      message.textContent = `File non modifiée : ${error.message}`;
      return false;
    }
  }

  async function addToQueue(event) {
    event.preventDefault();
    const form = $("queue-form");
    const message = $("queue-message");
    clearFieldErrors(form);
    message.textContent = "";
    const spec = { outcome: $("queue-outcome").value };
    if ($("queue-payment_type").value) spec.payment_type = $("queue-payment_type").value;
    if ($("queue-delay").value.trim()) {
      const delay = parseDecimal($("queue-delay").value);
      if (Number.isNaN(delay)) {
        showFieldError($("queue-delay"), $("err-queue-delay"), "Indiquez un nombre de secondes, par exemple 0,5.");
        return;
      }
      spec.delay = delay;
    }
    try {
      const data = await api("POST", "api/next", spec);
      state.status.queue = data.queue;
      renderStatus();
      $("queue-delay").value = "";
      message.textContent = `Ajoutée : ${specText(data.queue[data.queue.length - 1])}.`;
    } catch (error) {
      showApiError(error, $(`queue-${error.field}`), $(`err-queue-${error.field}`), message, "Issue non ajoutée");
    }
  }

  function setupQueue() {
    $("queue-form").addEventListener("submit", addToQueue);
    $("queue-clear").addEventListener("click", async () => {
      if (await replaceQueue([])) $("queue-message").textContent = "File vidée.";
    });
    $("queue-list").addEventListener("click", async (event) => {
      const queue = ((state.status && state.status.queue) || []).slice();
      const move = event.target.closest("[data-queue-move]");
      const remove = event.target.closest("[data-queue-remove]");
      if (move) {
        const from = Number(move.dataset.queueMove);
        const to = from + Number(move.dataset.by);
        [queue[from], queue[to]] = [queue[to], queue[from]];
        if (await replaceQueue(queue)) {
          const again = $("queue-list").querySelectorAll(`[data-queue-move="${to}"]`)[Number(move.dataset.by) < 0 ? 0 : 1];
          if (again && !again.disabled) again.focus();
        }
      } else if (remove) {
        queue.splice(Number(remove.dataset.queueRemove), 1);
        await replaceQueue(queue);
      }
    });
  }

  // The rules come with the server (default table, or --amount-rules FILE); the
  // switch is the amount_rules setting.
  async function loadRules() {
    try {
      state.rules = await api("GET", "api/amount-rules");
    } catch (error) {
      $("rules-message").textContent = `Règles indisponibles : ${error.message}`;
      return;
    }
    renderRules();
  }

  function centsText(cents) {
    const shown = cents.map((cent) => `,${String(cent).padStart(2, "0")}`);
    if (shown.length > 2 && cents[cents.length - 1] - cents[0] === cents.length - 1) {
      return `${shown[0]} à ${shown[shown.length - 1]}`;
    }
    return shown.join(", ");
  }

  function matchText(match) {
    const parts = [];
    if (match.cents) parts.push(`centimes ${centsText(match.cents)}`);
    if (match.amount) parts.push(`montant ${formatAmount(match.amount)}`);
    if (match.amount_min) parts.push(`à partir de ${formatAmount(match.amount_min)}`);
    if (match.amount_max) parts.push(`jusqu’à ${formatAmount(match.amount_max)}`);
    if (match.action) parts.push(word(ACTION_WORDS, match.action).toLowerCase());
    if (match.application) parts.push(`CC ${match.application}`);
    return parts.join(" · ") || "tout montant";
  }

  function renderRules() {
    const rules = state.rules;
    const on = Boolean(state.settings && state.settings.amount_rules);
    $("rules-switch").checked = on;
    const proxied = Boolean(upstream() && upstream().mode === "proxied");
    $("rules-switch").disabled = proxied;
    $("rules-state").textContent = proxied
      ? "Sans effet en mode proxy : le terminal réel répond à chaque paiement (la file d’issues mise à part)."
      : on
      ? "Actives : la première règle qui correspond au montant décide (après la file d’issues)."
      : "Inactives : les réglages décident.";
    if (!rules) return;
    $("rules-body").replaceChildren(...(rules.rules || []).map((rule) => el("tr", { "data-testid": "rule" },
      el("td", { "data-label": "Montant" }, matchText(rule.match || {})),
      el("td", { "data-label": "Issue" }, specText(rule.outcome || {})))));
    // The server names its built-in table "default table"; else the source is a file.
    $("rules-source").textContent = !rules.source ? ""
      : rules.source === "default table" ? "Table par défaut (option --amount-rules sans fichier)."
        : `Fichier : ${rules.source}`;
  }

  function setupRules() {
    $("rules-switch").addEventListener("change", async () => {
      const wanted = $("rules-switch").checked;
      $("rules-message").textContent = "";
      try {
        state.settings = await api("PUT", "api/settings", { amount_rules: wanted });
        fillSettingsForm(true);
        renderStatus();
        $("rules-message").textContent = wanted ? "Règles activées." : "Règles désactivées.";
      } catch (error) {
        $("rules-message").textContent = `Non modifié : ${error.message}`;
      }
      renderRules();
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

  // The test payment in flight: its abort controller and its elapsed-time timer.
  let testPayment = null;

  // Reads the test form; {body} or {input, error} for the first bad field.
  function testPaymentBody() {
    const destination = parseDestination($("test-destination").value);
    if (!destination) return { input: $("test-destination"), error: "Écrivez hôte:port, par exemple 192.168.1.20:8888." };
    const timeout = parseDecimal($("test-timeout").value);
    if (Number.isNaN(timeout) || timeout <= 0 || timeout > 600) {
      return { input: $("test-timeout"), error: rangeText({ above: 0, max: 600 }) };
    }
    const reference = $("test-reference").value.trim();
    return {
      body: {
        amount: $("test-amount").value.trim(),
        currency: $("test-currency").value.trim().toUpperCase(),
        action: $("test-action").value,
        cheque: $("test-cheque").checked,
        receipt: $("test-receipt").checked,
        partial: $("test-partial").checked,
        immediate: $("test-immediate").checked,
        reference: reference || null,
        timeout,
        host: destination.host,
        port: destination.port,
      },
    };
  }

  async function sendTestPayment(event) {
    event.preventDefault();
    const form = $("test-form");
    clearFieldErrors(form);
    $("test-message").textContent = "";
    const read = testPaymentBody();
    if (read.error) {
      $("test-result").hidden = true; // no old result under a new error
      showFieldError(read.input, $(`err-${read.input.id}`), read.error);
      return;
    }
    await runTestPayment(read.body);
  }

  // Sends a test payment; the page stays usable: elapsed time shown, cancel offered.
  async function runTestPayment(body) {
    // Behind --proxy, to this console's terminal or to the real one: asked first. (The
    // server checks it too: what it still refuses is asked after, below.)
    const up = upstream();
    const toReal = up && up.mode === "proxied" && !body.confirm_real_payment &&
      (body.host === null || body.host === undefined || (body.host === up.host && body.port === up.port));
    if (toReal) {
      if (!(await confirmRealPayment(body, up))) {
        $("test-message").textContent = `Paiement non envoyé : le terminal réel ${hostPort(up)} n’a rien reçu.`;
        return;
      }
      body = Object.assign({}, body, { confirm_real_payment: `${up.host}:${up.port}` });
    }
    if (testPayment) testPayment.controller.abort();
    const message = $("test-message");
    const controller = new AbortController();
    const started = Date.now();
    const tick = () => {
      const seconds = (Date.now() - started) / 1000;
      $("test-elapsed").textContent = `En attente de la réponse du terminal… ${NUMBER.format(Math.floor(seconds))} s (délai ${formatSeconds(body.timeout)})`;
    };
    const current = { controller, timer: setInterval(tick, 500) };
    testPayment = current;
    tick();
    $("test-result").hidden = true;
    $("test-waiting").hidden = false;
    $("test-send").disabled = true;
    message.textContent = "";
    let toConfirm = false;
    try {
      const result = await api("POST", "api/test-payment", body, controller.signal);
      renderTestResult(result || {});
    } catch (error) {
      if (error.code === "confirmation_required" && upstream() && !body.confirm_real_payment) {
        toConfirm = true; // refused before anything was sent: ask, then send again
      } else if (error.code === "aborted") {
        message.textContent = "Paiement de test annulé dans la console. Le terminal a pu le recevoir : voyez le flux des transactions.";
      } else {
        const field = { host: "destination", port: "destination" }[error.field] || error.field;
        showApiError(error, $(`test-${field}`), $(`err-test-${field}`), message, "Paiement non envoyé");
      }
    } finally {
      clearInterval(current.timer);
      if (testPayment === current) {
        testPayment = null;
        $("test-waiting").hidden = true;
        $("test-send").disabled = false;
      }
    }
    if (!toConfirm) return;
    if (await confirmRealPayment(body, up)) {
      await runTestPayment(Object.assign({}, body, { confirm_real_payment: `${up.host}:${up.port}` }));
    } else {
      message.textContent = `Paiement non envoyé : le terminal réel ${hostPort(up)} n’a rien reçu.`;
    }
  }

  // Behind --proxy a test payment (or « Rejouer ») is a real one: the person confirms
  // it, seeing the real terminal and the amount. True when confirmed.
  function confirmRealPayment(body, up) {
    const dialog = $("confirm-real");
    const amount = formatAmount(body.amount, null, body.currency || "EUR");
    $("confirm-real-text").textContent =
      `Envoyer un vrai paiement de ${amount} (${word(ACTION_WORDS, body.action || "debit")}) au terminal réel ${hostPort(up)} ?`;
    return new Promise((resolve) => {
      dialog.returnValue = "";
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
      dialog.showModal();
    });
  }

  // What went wrong with a payment whose outcome is not an answer, in French:
  // the client's own sentence is English.
  function problemText(result) {
    if (result.status === "error") return "Le terminal n’a pas pu être joint : rien n’a été envoyé.";
    if (result.status !== "unknown") return null;
    if (!result.answer) return "Pas de réponse du terminal dans le délai, ou connexion coupée : le paiement a pu aboutir.";
    return "Réponse illisible ou incohérente avec la demande : voyez les trames brutes.";
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
    const problem = problemText(result);
    const parts = [
      el("p", { className: `result-headline result-${status}` }, headline),
      detail ? el("p", { className: "muted" }, detail) : null,
      problem ? el("p", { className: "result-problem" }, problem) : null,
    ];
    if (result.fields && Object.keys(result.fields).length) {
      parts.push(el("details", {}, el("summary", {}, "Champs de la réponse"), fieldsTable(result.fields, result.labels)));
    }
    if (result.request || result.answer) {
      parts.push(el("details", {}, el("summary", {}, "Trames brutes"),
        result.request ? frameView("Demande", result.request) : null,
        result.answer ? frameView("Réponse", result.answer) : null));
    }
    if (result.receipt) parts.push(ticket(result.receipt));
    box.replaceChildren(...parts.filter(Boolean));
    box.hidden = false;
  }

  function setupTestPayment() {
    $("test-form").addEventListener("submit", sendTestPayment);
    $("test-cancel").addEventListener("click", () => {
      if (testPayment) testPayment.controller.abort();
    });
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

  // True once the journal is read again; false (and said) when the server did not answer.
  async function loadJournal() {
    const status = $("journal-filter").value;
    const query = new URLSearchParams({ limit: String(JOURNAL_LIMIT) });
    if (status) query.set("status", status);
    const terminal = journalTerminal();
    if (terminal) query.set("terminal", terminal);
    loadJournalTerminals(); // not awaited: the farm's list only names the filter's choices
    try {
      const data = await api("GET", `api/transactions?${query}`);
      state.journal = data.transactions || [];
      renderJournal();
      return true;
    } catch (error) {
      $("journal-message").textContent = `Journal indisponible : ${error.message}`;
      return false;
    }
  }

  // One journal holds every terminal's transactions (the command line's and the farm's):
  // on the command line's terminal's page a filter keeps one terminal's ("main": its own),
  // its choices read from the farm. A farm terminal's page reads its own rows only.
  const farmLabels = new Map(); // farm terminal id -> its label
  function journalTerminal() {
    return FARM_TERMINAL ? "" : $("journal-terminal").value;
  }

  async function loadJournalTerminals() {
    if (FARM_TERMINAL) return;
    let farm;
    try {
      farm = await api("GET", "api/terminals");
    } catch (error) {
      return; // no farm (an older server) or no token yet: the filter stays as it is
    }
    const terminals = farm.terminals || [];
    for (const terminal of terminals) farmLabels.set(terminal.id, terminal.label);
    const select = $("journal-terminal");
    const chosen = select.value;
    const choices = [["", "Tous"], ["main", "Terminal principal"]].concat(
      terminals.map((terminal) => [terminal.id, terminalName(terminal.id)]));
    if (chosen && !choices.some(([value]) => value === chosen)) choices.push([chosen, terminalName(chosen)]);
    const key = JSON.stringify(choices);
    if (select.dataset.choices !== key) {
      select.replaceChildren(...choices.map(([value, text]) => el("option", { value }, text)));
      select.dataset.choices = key;
      select.value = chosen;
    }
    $("journal-terminal-field").hidden = terminals.length === 0 && !chosen;
  }

  // What the journal's filters keep, in words: " de cette issue", " de ce terminal"...
  function filteredWords(status, terminal) {
    if (status && terminal) return " de cette issue et de ce terminal";
    return status ? " de cette issue" : terminal ? " de ce terminal" : "";
  }

  // A row's terminal as people name it: "principal" (the command line's), or its label.
  function terminalName(id) {
    if (!id) return "principal";
    const label = farmLabels.get(id);
    return label && label !== id ? `${label} (${id})` : `Terminal ${id}`;
  }

  const JOURNAL_COLUMNS = ["N°", "Reçue à", "Caisse", "Opération", "Montant", "Issue", "Décidée par", "Durée", "Terminal"];
  const openJournalRows = new Set(); // ids whose details are shown

  function renderJournal() {
    const rows = [];
    for (const tx of state.journal) {
      const open = openJournalRows.has(tx.id);
      const toggle = el("button", {
        type: "button", className: "row-toggle", "aria-expanded": String(open),
        "aria-label": `Détails de la transaction n° ${tx.id}`, "data-journal-id": tx.id,
      }, String(tx.id));
      const cells = [
        toggle,
        el("time", { datetime: tx.received_at }, formatDateTime(tx.received_at)),
        tx.peer || "—",
        word(ACTION_WORDS, tx.action),
        txAmount(tx),
        badge(tx),
        word(DECIDED_BY_WORDS, tx.decided_by),
        formatSeconds(tx.duration_s),
        terminalName(tx.terminal),
      ];
      rows.push(el("tr", { dataset: { status: tx.status, id: tx.id }, className: open ? "is-open" : null },
        ...cells.map((cell, index) => el("td", {
          className: [4, 7].includes(index) ? "num" : null, "data-label": JOURNAL_COLUMNS[index],
        }, cell))));
      if (open) {
        rows.push(el("tr", { className: "journal-detail", "data-testid": "journal-detail" },
          el("td", { colspan: JOURNAL_COLUMNS.length }, el("div", { className: "tx-detail" }, ...transactionDetail(tx)))));
      }
    }
    $("journal-body").replaceChildren(...rows);
    const count = state.journal.length;
    $("journal-message").textContent = count === 0
      ? `Aucune transaction${filteredWords($("journal-filter").value, journalTerminal())} dans le journal.`
      : `${count} transaction${count > 1 ? "s" : ""}${count >= JOURNAL_LIMIT ? ` : les ${NUMBER.format(JOURNAL_LIMIT)} plus récentes (les exports prennent tout)` : ""}.`;
  }

  // The CSV is for people, in French: French headers and words, local times. Scripts
  // read the JSON export (or the API), whose names and UTC times do not change.
  const pad = (number, size = 2) => String(number).padStart(size, "0");

  // "2026-12-07 01:19:34" in the browser's local time (what the console shows).
  function localDateTime(iso) {
    const date = iso ? new Date(iso) : null;
    if (!date || Number.isNaN(date.getTime())) return null;
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
      `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  }

  // The local time's offset from UTC at that moment: "UTC+01:00" (summer: "UTC+02:00"; a
  // cell starting with "+" would be a formula).
  function utcOffset(iso) {
    const date = iso ? new Date(iso) : null;
    if (!date || Number.isNaN(date.getTime())) return null;
    const minutes = -date.getTimezoneOffset();
    const sign = minutes < 0 ? "-" : "+";
    return `UTC${sign}${pad(Math.floor(Math.abs(minutes) / 60))}:${pad(Math.abs(minutes) % 60)}`;
  }

  const decimal = (value) => (value === null || value === undefined ? null : String(value).replace(".", ","));

  const CSV_COLUMNS = [
    ["N°", (tx) => tx.id],
    ["Reçue le (heure locale)", (tx) => localDateTime(tx.received_at)],
    ["Répondue le (heure locale)", (tx) => localDateTime(tx.answered_at)],
    ["Décalage UTC", (tx) => utcOffset(tx.received_at)],
    ["Durée (s)", (tx) => decimal(tx.duration_s)],
    ["Caisse", (tx) => tx.peer],
    ["Opération", (tx) => (tx.action ? word(ACTION_WORDS, tx.action) : null)],
    ["Montant", (tx) => decimal(tx.amount)],
    ["Devise", (tx) => tx.currency],
    ["Issue", (tx) => word(STATUS_WORDS, tx.status)],
    ["Code motif (AF)", (tx) => tx.reason && tx.reason.code],
    ["Motif", (tx) => tx.reason && tx.reason.label],
    ["Décidée par", (tx) => (tx.decided_by ? word(DECIDED_BY_WORDS, tx.decided_by) : null)],
    ["Origine", (tx) => ORIGIN_WORDS[tx.mode] || "simulateur"],
    ["Écarts", (tx) => (tx.deviations || []).map((d) =>
      `${d.label}${deviationDetail(d) ? ` : ${deviationDetail(d)}` : ""}`).join(" ; ")],
    ["Trame de la demande", (tx) => tx.request_frame],
    ["Trame de la réponse", (tx) => tx.answer_frame],
    ["Terminal", (tx) => tx.terminal || "principal"], // a farm terminal's id, or the command line's
  ];

  // The CSV of a French spreadsheet: ";" between cells, a decimal comma.
  const CSV_SEPARATOR = ";";

  function csvCell(value) {
    if (value === null || value === undefined) return "";
    let text = String(value);
    // A spreadsheet would run a cell starting with these as a formula.
    if (/^[=+@\t\r]/.test(text)) text = `'${text}`;
    return /[",\r\n;]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  }

  function toCsv(transactions) {
    const lines = [CSV_COLUMNS.map(([name]) => csvCell(name)).join(CSV_SEPARATOR)];
    for (const tx of transactions) {
      lines.push(CSV_COLUMNS.map(([, get]) => csvCell(get(tx))).join(CSV_SEPARATOR));
    }
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

  // Every transaction the filter asks for, read from the journal page by page (newest
  // first), up to EXPORT_LIMIT: {rows, cut}. Throws ApiError when the server fails.
  async function journalForExport(status, terminal) {
    const rows = [];
    let before = null;
    while (rows.length < EXPORT_LIMIT) {
      const query = new URLSearchParams({ limit: String(JOURNAL_LIMIT) });
      if (status) query.set("status", status);
      if (terminal) query.set("terminal", terminal);
      if (before !== null) query.set("before", String(before));
      const page = (await api("GET", `api/transactions?${query}`)).transactions || [];
      rows.push(...page);
      if (page.length < JOURNAL_LIMIT) return { rows, cut: false };
      before = page[page.length - 1].id;
    }
    return { rows: rows.slice(0, EXPORT_LIMIT), cut: true };
  }

  async function exportJournal(kind) {
    // Never a stale file: what the server says now, or nothing.
    const status = $("journal-filter").value;
    const terminal = journalTerminal();
    let found;
    try {
      found = await journalForExport(status, terminal);
    } catch (error) {
      $("journal-message").textContent = "Export impossible : le serveur ne répond pas. Rien n’a été téléchargé.";
      return;
    }
    const { rows, cut } = found;
    const stamp = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
    // A file cut at the limit says so in its name, and the page says it too.
    const fileTerminal = FARM_TERMINAL || terminal;
    const name = `journal-caisse-ap-${fileTerminal ? `${fileTerminal}-` : ""}${stamp}${cut ? `-les-${EXPORT_LIMIT}-plus-recentes` : ""}`;
    if (kind === "csv") {
      // The BOM lets spreadsheets read the file as UTF-8 (€, accents).
      download(`${name}.csv`, "text/csv;charset=utf-8", "\ufeff" + toCsv(rows));
    } else {
      download(`${name}.json`, "application/json",
        JSON.stringify({ transactions: rows }, null, 2) + "\n");
    }
    const which = filteredWords(status, terminal);
    $("journal-message").textContent = cut
      ? `Exporté : les ${NUMBER.format(EXPORT_LIMIT)} transactions les plus récentes${which} (la limite d’un export) ; les plus anciennes ne sont pas dans le fichier.`
      : `Exporté : ${NUMBER.format(rows.length)} transaction${rows.length > 1 ? "s" : ""}${which}, tout ce que le journal en garde.`;
  }

  // The raw log of a time range (GET /api/log), downloaded as a text file.
  async function downloadRawLog(event) {
    event.preventDefault();
    const message = $("raw-log-message");
    message.textContent = "";
    const query = new URLSearchParams();
    for (const name of ["since", "until"]) {
      const value = $(`raw-log-${name}`).value; // local time, as the person reads the clock
      if (value) query.set(name, new Date(value).toISOString());
    }
    const headers = token() ? { Authorization: `Bearer ${token()}` } : {};
    let text;
    try {
      const response = await fetch(apiPath(`api/log?${query}`), { headers, cache: "no-store" });
      if (!response.ok) {
        const data = await response.json().catch(() => null);
        throw new ApiError(response.status, data && data.code ? data.code : `http_${response.status}`, data && data.field, data && data.limits);
      }
      text = await response.text();
    } catch (error) {
      message.textContent = `Journal brut indisponible : ${error instanceof ApiError ? error.message : errorWords("network")}`;
      return;
    }
    const lines = text ? text.split("\n").length - 1 : 0;
    const stamp = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
    download(`caisse-ap-ip-server-${stamp}.log`, "text/plain;charset=utf-8", text);
    message.textContent = `${NUMBER.format(lines)} ligne${lines > 1 ? "s" : ""} téléchargée${lines > 1 ? "s" : ""}.`;
  }

  function setupJournal() {
    $("raw-log-form").addEventListener("submit", downloadRawLog);
    $("journal-form").addEventListener("submit", (event) => {
      event.preventDefault();
      loadJournal();
    });
    $("journal-filter").addEventListener("change", () => loadJournal());
    $("journal-terminal").addEventListener("change", () => loadJournal());
    $("export-csv").addEventListener("click", () => exportJournal("csv"));
    $("export-json").addEventListener("click", () => exportJournal("json"));
    $("journal-body").addEventListener("click", (event) => {
      const toggle = event.target.closest("[data-journal-id]");
      if (!toggle) return;
      const id = Number(toggle.dataset.journalId);
      if (openJournalRows.has(id)) openJournalRows.delete(id);
      else openJournalRows.add(id);
      renderJournal();
      const again = $("journal-body").querySelector(`[data-journal-id="${id}"]`);
      if (again) again.focus();
    });
    document.addEventListener("click", (event) => {
      const button = event.target.closest("[data-replay]");
      if (button) replay(Number(button.dataset.replay));
    });
  }

  // ------------------------------------------------------------------ start

  async function start() {
    setupToken();
    setupPending();
    setupSettings();
    setupTestPayment();
    setupQueue();
    setupRules();
    setupJournal();
    setupFeed();
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
      await loadRules();
    } catch (error) {
      $("journal-message").textContent = `Le serveur ne répond pas : ${error.message}`;
    }
    document.body.dataset.ready = "true";
  }

  start();
})();
