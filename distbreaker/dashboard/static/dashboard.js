// The live page: fragments arrive over server-sent events (rendered and escaped by the
// server once per update); the countdowns tick here between updates. The token is kept
// in this page's memory only and sent as a header, never in a URL.
(function () {
  "use strict";
  const byId = (id) => document.getElementById(id);
  let receivedAt = performance.now();
  let ageAtReceipt = 0;
  let names = [];

  function tick() {
    const elapsed = (performance.now() - receivedAt) / 1000 + ageAtReceipt;
    for (const cell of document.querySelectorAll("[data-reset-in]")) {
      const left = Number(cell.dataset.resetIn) - elapsed;
      cell.textContent = left > 0 ? left.toFixed(1) + "s" : "due";
    }
  }

  function statesByName() {
    const states = new Map();
    for (const row of byId("rows").querySelectorAll("tr[data-name]")) {
      const cell = row.querySelector("td.state");
      states.set(row.dataset.name, cell ? cell.dataset.state : "");
    }
    return states;
  }

  function updateTargets(list) {
    const select = byId("target");
    if (!select || list.join("\n") === names.join("\n")) return;
    const chosen = select.value;
    select.replaceChildren(...list.map((name) => new Option(name, name)));
    if (list.includes(chosen)) select.value = chosen;
    names = list.slice();
  }

  function apply(message) {
    const before = statesByName();
    const fleet = message.fleet;
    byId("rows").innerHTML = fleet.rows;
    byId("health").innerHTML = fleet.health;
    byId("events").innerHTML = fleet.events;
    receivedAt = performance.now();
    ageAtReceipt = Number(message.age) || 0;
    updateTargets(fleet.names);
    for (const [name, state] of statesByName()) {
      if (before.has(name) && before.get(name) !== state) {
        const row = byId("rows").querySelector(`tr[data-name="${CSS.escape(name)}"]`);
        if (row) row.classList.add("flash");
      }
    }
    tick();
  }

  const live = byId("live");
  const source = new EventSource("events");
  source.addEventListener("fleet", (event) => {
    try {
      apply(JSON.parse(event.data));
      live.textContent = "live";
      live.className = "live on";
    } catch (error) {
      console.error("distbreaker: bad update", error);
    }
  });
  source.onerror = () => {
    live.textContent = "reconnecting…";
    live.className = "live";
  };
  setInterval(tick, 200);

  const controls = byId("controls");
  if (!controls) return;
  const result = byId("result");
  const show = (text, ok) => {
    result.textContent = text;
    result.className = ok ? "ok" : "error";
  };
  byId("rows").addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-name]");
    if (row) byId("target").value = row.dataset.name;
  });
  controls.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const action = button.dataset.action;
    const name = byId("target").value;
    if (!name) return show("choose a breaker first", false);
    const body = { reason: byId("reason").value };
    if (action === "hold_open") body.seconds = Number(byId("seconds").value);
    show(`${action.replace("_", " ")} ${name}…`, true);
    try {
      const response = await fetch(
        `api/breakers/${encodeURIComponent(name)}/${action}`,
        {
          method: "POST",
          headers: {
            "Content-Type": "application/json",
            "X-Distbreaker-Token": byId("token").value,
          },
          body: JSON.stringify(body),
          credentials: "omit",
          cache: "no-store",
        },
      );
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) {
        return show(`refused (HTTP ${response.status}): ${answer.error || response.statusText}`, false);
      }
      show(`${name} is now ${answer.status.state.replace("_", " ")}`, true);
    } catch (error) {
      show(`request failed: ${error}`, false);
    }
  });
})();
