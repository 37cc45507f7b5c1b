// Assistants: the list, and a form to create one or edit its name, model, instructions and tools.

import { get, post } from "./api.js";
import { errorBox, h, replace, time } from "./dom.js";

const BUILT_IN = ["code_interpreter", "file_search"];

function toolNames(assistant) {
  const names = (assistant.tools || []).map((t) => (t.type === "function" ? t.function.name : t.type));
  return names.length ? names.join(", ") : "—";
}

export async function assistantsPane(id, notice = "") {
  const [list, models, current] = await Promise.all([
    get("/assistants?limit=100"),
    get("/models").catch(() => ({ data: [] })),
    id ? get(`/assistants/${encodeURIComponent(id)}`) : null,
  ]);
  const rows = list.data.map((a) =>
    h(
      "tr",
      { class: a.id === id ? "selected" : "" },
      h("td", {}, h("a", { href: `#/assistants/${a.id}` }, a.name || a.id)),
      h("td", {}, a.model),
      h("td", {}, toolNames(a)),
      h("td", {}, time(a.created_at)),
    ),
  );
  const table = rows.length
    ? h("table", { id: "assistant-list" }, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Model"), h("th", {}, "Tools"), h("th", {}, "Created"))), h("tbody", {}, rows))
    : h("p", { class: "muted" }, "No assistants yet.");
  return h(
    "div",
    { class: "split" },
    h("section", { class: "card" }, h("h1", {}, "Assistants"), h("p", {}, h("a", { href: "#/assistants", class: "button" }, "New assistant")), table),
    assistantForm(current, models.data.map((m) => m.id), notice),
  );
}

function assistantForm(assistant, modelIds, notice) {
  const functions = (assistant?.tools || []).filter((t) => t.type === "function").map((t) => t.function);
  const enabled = new Set((assistant?.tools || []).map((t) => t.type));
  const field = (id, label, control) => h("div", { class: "field" }, h("label", { for: id }, label), control);
  const name = h("input", { id: "assistant-name", value: assistant?.name || "" });
  const model = h("input", { id: "assistant-model", list: "model-ids", required: true, value: assistant?.model || modelIds[0] || "" });
  const instructions = h("textarea", { id: "assistant-instructions", rows: 6 });
  instructions.value = assistant?.instructions || "";
  const checks = BUILT_IN.map((type) => h("input", { type: "checkbox", id: `tool-${type}`, checked: enabled.has(type) }));
  const fns = h("textarea", { id: "assistant-functions", rows: 8, spellcheck: "false", class: "code" });
  fns.value = functions.length ? JSON.stringify(functions, null, 2) : "";
  const status = h("p", { role: "status", id: "assistant-status" }, notice);
  const form = h(
    "form",
    { class: "card", id: "assistant-form" },
    h("h2", {}, assistant ? `Edit ${assistant.name || assistant.id}` : "New assistant"),
    assistant ? h("p", { class: "muted mono" }, assistant.id) : null,
    field("assistant-name", "Name", name),
    field("assistant-model", "Model", model),
    h("datalist", { id: "model-ids" }, modelIds.map((m) => h("option", { value: m }))),
    field("assistant-instructions", "Instructions", instructions),
    h("fieldset", {}, h("legend", {}, "Tools"), BUILT_IN.map((type, i) => h("label", { class: "check" }, checks[i], ` ${type}`))),
    field("assistant-functions", "Functions (a JSON list of {name, description, parameters})", fns),
    h("div", { class: "actions" }, h("button", { type: "submit" }, assistant ? "Save" : "Create"), assistant ? h("a", { class: "button secondary", href: `#/chat/${assistant.id}` }, "Chat with it") : null),
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let tools;
    try {
      const declared = fns.value.trim() ? JSON.parse(fns.value) : [];
      if (!Array.isArray(declared)) throw new Error("must be a list");
      tools = [...BUILT_IN.filter((_, i) => checks[i].checked).map((type) => ({ type })), ...declared.map((fn) => ({ type: "function", function: fn }))];
    } catch (error) {
      replace(status, errorBox(`Functions: not a JSON list (${error.message})`));
      return;
    }
    const body = { name: name.value || null, model: model.value, instructions: instructions.value || null, tools };
    try {
      const saved = await post(assistant ? `/assistants/${assistant.id}` : "/assistants", body);
      // Redraw the pane so the list shows the new name and tools too.
      if (assistant) form.closest(".split").replaceWith(await assistantsPane(saved.id, "Saved."));
      else location.hash = `#/assistants/${saved.id}`;
    } catch (error) {
      replace(status, errorBox(error));
    }
  });
  return form;
}
