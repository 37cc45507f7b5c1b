// Vector stores: the list, and one store's files with their status and, while a file is indexed,
// how many of its chunks are embedded (the file object's `progress`, Threadline's own field). The
// store's pane redraws every second while any file is still in progress and the pane is shown.

import { get } from "./api.js";
import { h, replace, time } from "./dom.js";
import { statusBadge } from "./threads.js";

const REFRESH_MS = 1000;

function counts(store) {
  const c = store.file_counts || {};
  return `${c.completed || 0} completed, ${c.in_progress || 0} in progress, ${c.failed || 0} failed`;
}

export async function storesPane() {
  const page = await get("/vector_stores?limit=100");
  return h(
    "section",
    { class: "card" },
    h("h1", {}, "Vector stores"),
    page.data.length
      ? h("table", { id: "store-list" }, h("thead", {}, h("tr", {}, h("th", {}, "Store"), h("th", {}, "Name"), h("th", {}, "Files"), h("th", {}, "Last active"))), h("tbody", {}, page.data.map((s) => h("tr", { "data-store-id": s.id }, h("td", { class: "mono" }, h("a", { href: `#/vector_stores/${s.id}` }, s.id)), h("td", {}, s.name || "—"), h("td", {}, counts(s)), h("td", {}, time(s.last_active_at || s.created_at))))))
      : h("p", { class: "muted" }, "No vector stores."),
  );
}

export function progressCell(file) {
  if (file.status === "in_progress" && file.progress) {
    const { chunks_done: done, chunks_total: total } = file.progress;
    return h("span", { class: "progress" }, h("progress", { max: String(total || 1), value: String(done) }), ` ${done} of ${total} chunks embedded`);
  }
  if (file.status === "failed" && file.last_error) return file.last_error.message;
  return file.status === "completed" ? `${file.usage_bytes} bytes` : "—";
}

async function filesBody(storeId) {
  const files = await get(`/vector_stores/${encodeURIComponent(storeId)}/files?limit=100`);
  const names = await Promise.all(files.data.map((f) => get(`/files/${encodeURIComponent(f.id)}`).then((o) => o.filename, () => f.id)));
  const rows = files.data.map((f, i) => h("tr", { "data-file-id": f.id }, h("td", { class: "mono" }, f.id), h("td", {}, names[i]), h("td", {}, statusBadge(f.status)), h("td", { class: "file-progress" }, progressCell(f))));
  return { rows, pending: files.data.some((f) => f.status === "in_progress") };
}

export async function storePane(storeId) {
  const store = await get(`/vector_stores/${encodeURIComponent(storeId)}`);
  const body = h("tbody", {});
  const hash = location.hash;
  async function draw() {
    const { rows, pending } = await filesBody(storeId);
    body.replaceChildren(...rows);
    if (pending) setTimeout(() => { if (location.hash === hash && body.isConnected) draw().catch(() => {}); }, REFRESH_MS);
  }
  await draw();
  return h(
    "section",
    { class: "card" },
    h("h1", {}, store.name || "Vector store"),
    h("p", { class: "mono" }, store.id),
    h("p", {}, `${counts(store)} · created ${time(store.created_at)}`),
    h("table", { id: "store-files" }, h("thead", {}, h("tr", {}, h("th", {}, "File"), h("th", {}, "Name"), h("th", {}, "Status"), h("th", {}, "Progress"))), body),
  );
}
