/* The overview of the terminals this server runs: the command line's and those the API
 * created (POST /api/terminals, docs/api.md "ferme de terminaux"), with each one's
 * counters and a selector that opens one terminal's page (?terminal=ID), which app.js
 * serves as today. Shown once the farm has a terminal; refreshed every few seconds
 * while the page is visible. French only, like the rest of the console.
 */
(function () {
  "use strict";

  const TOKEN_KEY = "caisse-ap-ip.token"; // app.js keeps the token there
  const REFRESH_MS = 3000;
  const STATE_WORDS = { listening: "En service", deleting: "Arrêt en cours", deleted: "Supprimé" };
  const SHOWN_COUNTERS = [["approved", "acceptées"], ["declined", "refusées"], ["total", "en tout"]];
  const current = (/^t[1-9][0-9]{0,17}$/.exec(new URLSearchParams(location.search).get("terminal") || "") || [""])[0];
  const NUMBER = new Intl.NumberFormat("fr-FR");

  function $(id) {
    return document.getElementById(id);
  }

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (error) {
      return "";
    }
  }

  async function read(path) {
    const headers = { Accept: "application/json" };
    if (token()) headers.Authorization = `Bearer ${token()}`;
    const response = await fetch(path, { headers, cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return response.json();
  }

  function pageOf(id) {
    return id ? `./?terminal=${encodeURIComponent(id)}` : "./";
  }

  function item(entry) {
    const li = document.createElement("li");
    li.className = "farm-item";
    li.dataset.terminal = entry.id || "principal";
    li.dataset.state = entry.state;
    if ((entry.id || "") === current) li.setAttribute("aria-current", "page");
    const link = document.createElement("a");
    link.href = pageOf(entry.id);
    link.className = "farm-name";
    link.textContent = entry.name;
    const facts = document.createElement("p");
    facts.className = "farm-facts";
    facts.textContent = `${STATE_WORDS[entry.state] || entry.state} · port ${entry.port === null ? "—" : entry.port}`;
    const counts = document.createElement("p");
    counts.className = "farm-counts";
    const counters = entry.counters || {};
    counts.textContent = SHOWN_COUNTERS.map(([name, word]) => `${NUMBER.format(counters[name] || 0)} ${word}`).join(" · ");
    li.append(link, facts, counts);
    return li;
  }

  function render(entries) {
    $("farm").hidden = false;
    $("farm-list").replaceChildren(...entries.map(item));
    const select = $("farm-select");
    const chosen = current;
    select.replaceChildren(...entries.map((entry) => {
      const option = document.createElement("option");
      option.value = entry.id || "";
      option.textContent = entry.name;
      option.selected = (entry.id || "") === chosen;
      return option;
    }));
  }

  async function refresh() {
    let farm;
    let status;
    try {
      [farm, status] = await Promise.all([read("api/terminals"), read("api/status")]);
    } catch (error) {
      return; // no farm here (an older server), or no token yet: app.js says so
    }
    if (!farm.terminals.length) {
      $("farm").hidden = true;
      return;
    }
    const own = {
      id: "", name: "Terminal principal (ligne de commande)", state: "listening",
      port: status.terminal ? status.terminal.port : null, counters: status.counters,
    };
    const others = farm.terminals.map((terminal) => ({
      id: terminal.id,
      name: terminal.label === terminal.id ? `Terminal ${terminal.id}` : `${terminal.label} (${terminal.id})`,
      state: terminal.state, port: terminal.port, counters: terminal.counters,
    }));
    render([own, ...others]);
    $("farm-message").textContent = current && !others.some((terminal) => terminal.id === current)
      ? `Le terminal ${current} n’est plus dans la ferme.` : "";
  }

  function start() {
    $("farm-select").addEventListener("change", (event) => {
      location.assign(pageOf(event.target.value));
    });
    refresh();
    setInterval(() => {
      if (document.visibilityState === "visible") refresh();
    }, REFRESH_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
