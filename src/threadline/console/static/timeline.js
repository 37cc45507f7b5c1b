// One run's timeline: its status changes on a time axis, then its steps (messages written, tool calls
// with their arguments and outputs) and the tokens it used.

import { get } from "./api.js";
import { h, messageText, pretty, time } from "./dom.js";
import { statusBadge, usageText } from "./threads.js";

const TERMINAL = new Set(["completed", "failed", "cancelled", "expired", "incomplete"]);

function seconds(value) {
  return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
}

// Each status holds from its transition to the next; a run still going holds its last status until now.
function axis(transitions) {
  if (!transitions.length) return h("p", { class: "muted" }, "No transitions recorded.");
  const start = transitions[0].at;
  const last = transitions[transitions.length - 1];
  const end = TERMINAL.has(last.status) ? last.at : Math.max(last.at, Date.now() / 1000);
  const span = Math.max(end - start, 0.001);
  const bar = h("div", { class: "axis", id: "run-axis" });
  transitions.forEach((tr, i) => {
    const until = i + 1 < transitions.length ? transitions[i + 1].at : end;
    const segment = h("div", { class: `segment status-${tr.status}`, title: `${tr.status} for ${seconds(until - tr.at)}` }, tr.status);
    // Terminal states are instants: a thin marker; the others get their share of the run's time.
    segment.style.flexGrow = String(TERMINAL.has(tr.status) ? 0 : Math.max((until - tr.at) / span, 0.02));
    bar.appendChild(segment);
  });
  const rows = transitions.map((tr) =>
    h("tr", {}, h("td", {}, `+${seconds(tr.at - start)}`), h("td", {}, statusBadge(tr.status)), h("td", {}, tr.cause || "—"), h("td", { class: "mono" }, tr.worker_id || "—")),
  );
  return h(
    "div",
    {},
    bar,
    h("table", { id: "run-transitions" }, h("thead", {}, h("tr", {}, h("th", {}, "At"), h("th", {}, "Status"), h("th", {}, "Cause"), h("th", {}, "Worker"))), h("tbody", {}, rows)),
  );
}

function toolCall(call) {
  if (call.type === "function") {
    return h(
      "div",
      { class: "tool-call" },
      h("h4", {}, `function ${call.function.name}`, h("span", { class: "muted mono" }, ` ${call.id}`)),
      h("div", { class: "label" }, "arguments"),
      h("pre", { class: "arguments" }, pretty(call.function.arguments)),
      h("div", { class: "label" }, "output"),
      h("pre", { class: "output" }, call.function.output === null || call.function.output === undefined ? "(no output yet)" : pretty(call.function.output)),
    );
  }
  if (call.type === "code_interpreter") {
    const outputs = (call.code_interpreter.outputs || []).map((o) => (o.type === "logs" ? o.logs : `[${o.type}]`));
    return h("div", { class: "tool-call" }, h("h4", {}, "code_interpreter"), h("div", { class: "label" }, "input"), h("pre", {}, call.code_interpreter.input), h("div", { class: "label" }, "outputs"), h("pre", {}, outputs.join("\n") || "—"));
  }
  if (call.type === "file_search") {
    const results = call.file_search.results || [];
    return h("div", { class: "tool-call" }, h("h4", {}, "file_search"), h("ul", {}, results.map((r) => h("li", {}, `${r.file_name || r.file_id} (score ${r.score})`))));
  }
  return h("div", { class: "tool-call" }, h("h4", {}, call.type));
}

function step(item, messages) {
  const details = item.step_details;
  let body;
  if (details.type === "message_creation") {
    const message = messages.get(details.message_creation.message_id);
    body = h("div", {}, h("div", { class: "muted mono" }, details.message_creation.message_id), message ? h("div", { class: "text" }, messageText(message)) : null);
  } else {
    body = h("div", {}, (details.tool_calls || []).map(toolCall));
  }
  return h(
    "li",
    { class: "step", "data-step-type": details.type },
    h("div", { class: "step-head" }, h("strong", {}, details.type), " ", statusBadge(item.status), h("span", { class: "muted" }, ` ${time(item.created_at)} · ${usageText(item.usage)}`)),
    item.last_error ? h("p", { class: "error" }, `${item.last_error.code}: ${item.last_error.message}`) : null,
    body,
  );
}

export async function runPane(threadId, runId) {
  const base = `/threads/${encodeURIComponent(threadId)}/runs/${encodeURIComponent(runId)}`;
  const [run, transitions, steps, messages] = await Promise.all([
    get(base),
    get(`${base}/transitions`),
    get(`${base}/steps?limit=100&order=asc`),
    get(`/threads/${encodeURIComponent(threadId)}/messages?limit=100&run_id=${encodeURIComponent(runId)}`),
  ]);
  const byId = new Map(messages.data.map((m) => [m.id, m]));
  return h(
    "section",
    { class: "card", id: "run-timeline" },
    h("h1", {}, "Run ", statusBadge(run.status)),
    h("p", { class: "mono" }, run.id, " · ", h("a", { href: `#/threads/${run.thread_id}` }, run.thread_id)),
    h("p", {}, `Assistant ${run.assistant_id} · model ${run.model} · created ${time(run.created_at)}`),
    h("p", { id: "run-usage" }, `Usage: ${usageText(run.usage)}`),
    run.last_error ? h("p", { class: "error" }, `${run.last_error.code}: ${run.last_error.message}`) : null,
    h("h2", {}, "Timeline"),
    axis(transitions.data),
    h("h2", {}, "Steps"),
    steps.data.length ? h("ol", { class: "steps", id: "run-steps" }, steps.data.map((s) => step(s, byId))) : h("p", { class: "muted" }, "No steps."),
  );
}
