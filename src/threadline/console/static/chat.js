// The chat pane: pick an assistant, write, and watch the run stream in; tool calls the run asks for
// can be answered here, and every run links to its timeline.

import { get, post, stream } from "./api.js";
import { errorBox, h, messageText, pretty, replace } from "./dom.js";
import { statusBadge } from "./threads.js";

export async function chatPane(assistantId, threadId) {
  const [assistants, earlier] = await Promise.all([
    get("/assistants?limit=100"),
    threadId ? get(`/threads/${encodeURIComponent(threadId)}/messages?limit=100&order=asc`) : { data: [] },
  ]);
  if (!assistants.data.length) {
    return h("section", { class: "card" }, h("h1", {}, "Chat"), h("p", {}, "Create an assistant first: ", h("a", { href: "#/assistants" }, "Assistants"), "."));
  }
  const chosen = assistants.data.find((a) => a.id === assistantId) || assistants.data[0];
  let thread = threadId || null;

  const select = h("select", { id: "chat-assistant" }, assistants.data.map((a) => h("option", { value: a.id, selected: a.id === chosen.id }, a.name || a.id)));
  const threadLabel = h("span", { id: "chat-thread", class: "mono" });
  const log = h("ol", { class: "messages chat-log", id: "chat-log", "aria-live": "polite" });
  const runs = h("div", { class: "run-status", id: "chat-runs" });
  const input = h("textarea", { id: "chat-input", rows: 3, placeholder: "Write a message; Enter sends, Shift+Enter for a new line" });
  const send = h("button", { type: "submit", id: "chat-send" }, "Send");
  const newThread = h("button", { type: "button", class: "secondary" }, "New thread");

  const runLines = new Map(); // run id → its status, so a run resumed after tool outputs keeps one line

  function showThread() {
    replace(threadLabel, thread ? h("a", { href: `#/threads/${thread}` }, thread) : "a new thread starts with your first message");
  }

  function bubble(role, text) {
    const textEl = h("div", { class: "text" }, text);
    log.appendChild(h("li", { class: `bubble ${role}` }, h("div", { class: "meta" }, role), textEl));
    log.scrollTop = log.scrollHeight;
    return textEl;
  }

  for (const message of earlier.data) bubble(message.role, messageText(message));
  showThread();

  // Follows one streamed run (and the runs resumed after tool outputs) until its stream ends.
  async function follow(path, body) {
    let current = null;
    let textEl = null;
    const pendingCalls = [];
    await stream(path, body, (event, data) => {
      if (event.startsWith("thread.run.") && !event.startsWith("thread.run.step")) {
        let statusEl = runLines.get(data.id);
        if (!statusEl) {
          statusEl = h("span", {});
          runLines.set(data.id, statusEl);
          runs.appendChild(h("div", { class: "run-line" }, h("a", { href: `#/threads/${data.thread_id}/runs/${data.id}`, class: "mono" }, `Timeline of ${data.id}`), " ", statusEl));
        }
        current = data;
        replace(statusEl, statusBadge(data.status));
        if (data.status === "requires_action") pendingCalls.push(...data.required_action.submit_tool_outputs.tool_calls);
        if (data.last_error) statusEl.appendChild(h("span", { class: "error" }, ` ${data.last_error.message}`));
      } else if (event === "thread.message.created") {
        textEl = bubble("assistant", "");
      } else if (event === "thread.message.delta") {
        for (const part of data.delta.content || []) {
          if (part.type === "text" && part.text && part.text.value) textEl.textContent += part.text.value;
        }
        log.scrollTop = log.scrollHeight;
      } else if (event === "error") {
        runs.appendChild(errorBox(data.error ? data.error.message : "The stream failed."));
      }
    });
    if (pendingCalls.length) log.appendChild(toolForm(current, pendingCalls));
  }

  // The run waits for outputs: one box per call, then the run resumes, streamed like the first part.
  function toolForm(run, calls) {
    const outputs = calls.map((call) => h("textarea", { rows: 2, class: "code", "data-call-id": call.id }));
    const form = h(
      "form",
      { class: "bubble tool-form" },
      h("div", { class: "meta" }, "The run asks for tool outputs"),
      calls.map((call, i) => h("div", { class: "tool-call" }, h("h4", {}, `function ${call.function.name}`), h("pre", { class: "arguments" }, pretty(call.function.arguments)), h("label", {}, "output", outputs[i]))),
      h("button", { type: "submit" }, "Submit outputs"),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const tool_outputs = calls.map((call, i) => ({ tool_call_id: call.id, output: outputs[i].value }));
      form.querySelector("button").disabled = true;
      try {
        await follow(`/threads/${run.thread_id}/runs/${run.id}/submit_tool_outputs`, { tool_outputs });
      } catch (error) {
        runs.appendChild(errorBox(error));
      }
    });
    return form;
  }

  const form = h("form", { class: "chat-form", id: "chat-form" }, input, send);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || send.disabled) return;
    send.disabled = true;
    try {
      if (!thread) {
        thread = (await post("/threads", { metadata: { source: "console" } })).id;
        // Keep the address in step without redrawing the pane.
        history.replaceState(null, "", `#/chat/${select.value}/${thread}`);
        showThread();
      }
      await post(`/threads/${thread}/messages`, { role: "user", content: text });
      bubble("user", text);
      input.value = "";
      await follow(`/threads/${thread}/runs`, { assistant_id: select.value });
    } catch (error) {
      if (error.status !== 401) runs.appendChild(errorBox(error));
    } finally {
      send.disabled = false;
      input.focus();
    }
  });
  newThread.addEventListener("click", () => {
    location.hash = `#/chat/${select.value}`;
  });
  select.addEventListener("change", () => {
    history.replaceState(null, "", thread ? `#/chat/${select.value}/${thread}` : `#/chat/${select.value}`);
  });

  return h(
    "section",
    { class: "card chat" },
    h("h1", {}, "Chat"),
    h("div", { class: "chat-head" }, h("label", { for: "chat-assistant" }, "Assistant"), select, " Thread: ", threadLabel, newThread),
    log,
    runs,
    form,
  );
}
