// Threads: the list (filtered by metadata on the server, by text here in the browser), and one thread
// with its messages and runs.

import { get, query } from "./api.js";
import { errorBox, h, messageText, metadataText, replace, time } from "./dom.js";

// "a=1, b=2" as {"metadata[a]": "1", "metadata[b]": "2"}.
function metadataParams(text) {
  const params = {};
  for (const pair of text.split(",")) {
    const at = pair.indexOf("=");
    if (at > 0) params[`metadata[${pair.slice(0, at).trim()}]`] = pair.slice(at + 1).trim();
  }
  return params;
}

async function firstMessage(threadId) {
  const page = await get(`/threads/${threadId}/messages?limit=1&order=asc`);
  return page.data.length ? messageText(page.data[0]) : "";
}

export async function threadsPane() {
  const metadata = h("input", { id: "filter-metadata", placeholder: "key=value, key2=value2" });
  const text = h("input", { id: "filter-text", type: "search", placeholder: "words in the first message" });
  const body = h("tbody", {});
  const status = h("p", { class: "muted", id: "threads-status" });
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  let rows = [];
  let lastId = null;

  function applyText() {
    const needle = text.value.trim().toLowerCase();
    let shown = 0;
    for (const row of rows) {
      row.el.hidden = needle !== "" && !row.first.toLowerCase().includes(needle);
      if (!row.el.hidden) shown += 1;
    }
    replace(status, `${shown} of ${rows.length} loaded threads shown.`);
  }

  async function load(reset) {
    if (reset) {
      rows = [];
      lastId = null;
      body.replaceChildren();
    }
    replace(status, "Loading…");
    try {
      const page = await get(`/threads${query({ limit: 50, after: lastId, ...metadataParams(metadata.value) })}`);
      const firsts = await Promise.all(page.data.map((t) => firstMessage(t.id)));
      page.data.forEach((thread, i) => {
        const el = h(
          "tr",
          { "data-thread-id": thread.id },
          h("td", { class: "mono" }, h("a", { href: `#/threads/${thread.id}` }, thread.id)),
          h("td", {}, metadataText(thread.metadata)),
          h("td", { class: "excerpt" }, firsts[i] || "—"),
          h("td", {}, time(thread.last_active_at || thread.created_at)),
        );
        body.appendChild(el);
        rows.push({ el, first: firsts[i] });
      });
      lastId = page.last_id;
      more.hidden = !page.has_more;
      applyText();
    } catch (error) {
      replace(status, errorBox(error));
    }
  }

  const form = h(
    "form",
    { class: "filters", id: "thread-filters" },
    h("label", { for: "filter-metadata" }, "Metadata"),
    metadata,
    h("button", { type: "submit" }, "Filter"),
    h("label", { for: "filter-text" }, "Text"),
    text,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load(true);
  });
  text.addEventListener("input", applyText);
  more.addEventListener("click", () => load(false));
  await load(true);
  return h(
    "section",
    { class: "card" },
    h("h1", {}, "Threads"),
    form,
    h("p", { class: "muted" }, "Metadata filters run on the server. The text filter searches the first message of the threads loaded on this page, in your browser; the server has no text search."),
    h("table", { id: "thread-list" }, h("thead", {}, h("tr", {}, h("th", {}, "Thread"), h("th", {}, "Metadata"), h("th", {}, "First message"), h("th", {}, "Last active"))), body),
    more,
    status,
  );
}

export function usageText(usage) {
  if (!usage) return "—";
  return `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion = ${usage.total_tokens} tokens`;
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

export async function threadPane(threadId) {
  const id = encodeURIComponent(threadId);
  const [thread, messages, runs] = await Promise.all([
    get(`/threads/${id}`),
    get(`/threads/${id}/messages?limit=100&order=asc`),
    get(`/threads/${id}/runs?limit=100`),
  ]);
  const lastAssistant = runs.data.length ? runs.data[0].assistant_id : "";
  return h(
    "div",
    { class: "split" },
    h(
      "section",
      { class: "card" },
      h("h1", {}, "Thread"),
      h("p", { class: "mono" }, thread.id),
      h("p", {}, `Metadata: ${metadataText(thread.metadata)} · created ${time(thread.created_at)}`),
      lastAssistant ? h("p", {}, h("a", { class: "button", href: `#/chat/${lastAssistant}/${thread.id}` }, "Continue in chat")) : null,
      h("h2", {}, "Messages"),
      h("ol", { class: "messages", id: "thread-messages" }, messages.data.map((m) => h("li", { class: `bubble ${m.role}` }, h("div", { class: "meta" }, `${m.role} · ${time(m.created_at)}`), h("div", { class: "text" }, messageText(m))))),
    ),
    h(
      "section",
      { class: "card" },
      h("h2", {}, "Runs"),
      runs.data.length
        ? h("table", { id: "thread-runs" }, h("thead", {}, h("tr", {}, h("th", {}, "Run"), h("th", {}, "Status"), h("th", {}, "Model"), h("th", {}, "Tokens"))), h("tbody", {}, runs.data.map((r) => h("tr", {}, h("td", { class: "mono" }, h("a", { href: `#/threads/${thread.id}/runs/${r.id}` }, r.id)), h("td", {}, statusBadge(r.status)), h("td", {}, r.model), h("td", {}, r.usage ? String(r.usage.total_tokens) : "—")))))
        : h("p", { class: "muted" }, "No runs."),
    ),
  );
}
