// The auditor page: plain DOM, no framework, no external resource; talks only to this API.
"use strict";
(function () {
  let tier = 3;
  const $ = (id) => document.getElementById(id);

  function asOf() {
    const value = $("as-of").value;
    return value ? value + (value.length === 16 ? ":00" : "") + "Z" : "";
  }

  function url(path, params) {
    const tenant = encodeURIComponent($("tenant").value.trim());
    const request = encodeURIComponent($("request").value.trim());
    const query = new URLSearchParams(params);
    if (asOf()) query.set("as_of", asOf());
    return `/v1/tenants/${tenant}/explanations/${request}${path}?${query}`;
  }

  async function get(path, params) {
    const response = await fetch(url(path, params), {
      headers: { Authorization: "Bearer " + $("key").value },
    });
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail; } catch (e) { /* not JSON */ }
      throw new Error(`${response.status}: ${detail}`);
    }
    return response;
  }

  function status(text, error) {
    $("status").textContent = text;
    $("status").className = error ? "error" : "";
  }

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text == null ? "—" : String(text);
    row.appendChild(td);
  }

  function fill(tableId, rows, columns) {
    const body = $(tableId).querySelector("tbody");
    body.replaceChildren();
    for (const r of rows) {
      const tr = document.createElement("tr");
      for (const c of columns) cell(tr, c(r));
      body.appendChild(tr);
    }
  }

  async function show() {
    status("loading…", false);
    try {
      const body = await (await get("", { tier: String(tier) })).json();
      $("view-title").textContent = `Tier ${body.tier} · ${body.audience}`;
      $("meta").textContent = `template ${body.template_version} · from ${body.source} · ` +
        `snapshot ${body.snapshot_id}` + (body.as_of ? ` · as of ${body.as_of}` : "");
      $("view").textContent = body.text;
      document.querySelectorAll("#tiers button[data-tier]").forEach((b) =>
        b.classList.toggle("active", Number(b.dataset.tier) === tier));
      status("", false);
      await showHistory();
    } catch (err) {
      // Nothing of a previous answer stays on screen next to an error.
      for (const id of ["view", "meta"]) $(id).textContent = "";
      $("view-title").textContent = "View";
      fill("history", [], []);
      fill("reviews", [], []);
      status(err.message, true);
    }
  }

  async function showHistory() {
    // History and reviews come with the auditor's view; a key below tier 3 sees neither.
    try {
      const v = (await (await get("", { tier: "3" })).json()).view;
      fill("history", v.history, [
        (h) => h.explained_at, (h) => (h.explanation_id || "").slice(0, 16),
        (h) => h.model_version, (h) => h.review_route,
        (h) => (h.latest_review ? h.latest_review.decision : null),
      ]);
      fill("reviews", v.reviews, [
        (r) => r.reviewed_at, (r) => r.decision, (r) => r.reason,
        (r) => (r.reviewer_hash || "").slice(0, 12),
      ]);
    } catch (err) {
      fill("history", [], []);
      fill("reviews", [], []);
    }
  }

  async function letter() {
    status("printing the letter…", false);
    try {
      const blob = await (await get("/letter", { format: "pdf" })).blob();
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = `letter-${$("request").value.trim()}.pdf`;
      link.id = "letter-link";
      link.textContent = "download the letter";
      $("status").replaceChildren(link);
    } catch (err) {
      status(err.message, true);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("search").addEventListener("submit", (e) => { e.preventDefault(); show(); });
    document.querySelectorAll("#tiers button[data-tier]").forEach((b) =>
      b.addEventListener("click", () => { tier = Number(b.dataset.tier); show(); }));
    $("letter").addEventListener("click", letter);
  });
})();
