// The conformance session's page (caisse-ap-ip-server --conformance): the scenario to play,
// then four buttons for what the POS showed; the verdicts as they come. Only the API.
"use strict";
(() => {
  const TOKEN_KEY = "caisse-ap-ip.token"; // the console's: the same tab, the same token
  const $ = (id) => document.getElementById(id);
  let busy = false;

  function token() {
    const found = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (found) return decodeURIComponent(found[1]);
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
    const response = await fetch(path, init);
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || `erreur ${response.status}`);
    return data;
  }

  function item(verdict) {
    const li = document.createElement("li");
    const badge = document.createElement("span");
    badge.className = `badge ${verdict.passed ? "badge-approved" : "badge-declined"}`;
    badge.textContent = verdict.passed ? "réussi" : "échoué";
    const title = document.createElement("strong");
    title.textContent = ` ${verdict.title} `;
    const detail = document.createElement("span");
    detail.textContent = `attendu : ${verdict.expected} ; la caisse a montré : ${verdict.concluded}`;
    li.append(badge, title, detail);
    if (verdict.problems.length) {
      const problems = document.createElement("ul");
      for (const text of [...verdict.problems, `Comment corriger : ${verdict.fix}`]) {
        const line = document.createElement("li");
        line.textContent = text;
        problems.append(line);
      }
      li.append(problems);
    }
    return li;
  }

  function show(state) {
    const current = state.current;
    const buttons = $("answers").querySelectorAll("button");
    if (state.finished || !current) {
      $("progress").textContent = `Session finie : ${state.verdicts.length} scénario(s) joué(s) sur ${state.total}`;
      $("scenario-title").textContent = "Session finie";
      $("scenario-description").textContent = state.report ? `Rapport écrit : ${state.report}` : "";
      $("scenario-step").textContent = "";
      $("scenario-wire").textContent = "";
      buttons.forEach((button) => { button.disabled = true; });
    } else {
      $("progress").textContent = `Scénario ${state.index + 1} sur ${state.total} (${current.name})`;
      $("scenario-title").textContent = current.title;
      $("scenario-description").textContent = current.description;
      const amount = current.amount.replace(".", ",");
      $("scenario-step").textContent = !current.paid
        ? `Payez ${amount} € depuis la caisse.`
        : current.played
          ? "Le terminal a joué le scénario : quand la caisse affiche son issue, dites ce qu'elle montre."
          : "Le terminal joue le scénario…";
      $("scenario-wire").textContent = current.paid
        ? `Sur le réseau : ${current.requests} demande(s), ${current.malformed} mal formée(s), ${current.connections} connexion(s)`
        : "";
      buttons.forEach((button) => { button.disabled = busy || !current.paid; });
    }
    const passed = state.verdicts.filter((verdict) => verdict.passed).length;
    $("summary").textContent = state.verdicts.length
      ? `${passed} / ${state.verdicts.length} réussi(s)` : "Aucun pour l'instant.";
    $("verdicts").replaceChildren(...state.verdicts.map(item));
  }

  async function refresh() {
    try {
      show(await api("GET", "/api/conformance"));
    } catch (error) {
      $("message").textContent = error.message;
    }
  }

  $("answers").addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-shown]");
    if (!button || busy) return;
    busy = true;
    $("message").textContent = "";
    try {
      await api("POST", "/api/conformance/answer", { shown: button.dataset.shown });
    } catch (error) {
      $("message").textContent = error.message;
    }
    busy = false;
    await refresh();
  });

  refresh();
  setInterval(refresh, 1000);
})();
