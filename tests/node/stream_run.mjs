// Streams two runs through the official Node SDK against OPENAI_BASE_URL and prints what it saw as JSON:
// a plain text run, then a function-call run answered with submitToolOutputsStream.
import OpenAI from "openai";

const client = new OpenAI({ maxRetries: 0 });

function follow(stream) {
  const seen = { events: [], deltas: [] };
  stream.on("event", (event) => seen.events.push(event.event));
  stream.on("textDelta", (delta) => seen.deltas.push(delta.value));
  return seen;
}

function textOf(messages) {
  return messages.map((m) => m.content.map((part) => part.text.value).join("")).join("\n");
}

async function textRun() {
  const assistant = await client.beta.assistants.create({ model: "gpt-4o" });
  const thread = await client.beta.threads.create({ messages: [{ role: "user", content: "hello" }] });
  const stream = client.beta.threads.runs.stream(thread.id, { assistant_id: assistant.id });
  const seen = follow(stream);
  const run = await stream.finalRun();
  const messages = await stream.finalMessages();
  return { ...seen, status: run.status, final_text: textOf(messages) };
}

async function toolRun() {
  const assistant = await client.beta.assistants.create({
    model: "gpt-4o",
    tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }],
  });
  const thread = await client.beta.threads.create({ messages: [{ role: "user", content: "weather?" }] });
  const stream = client.beta.threads.runs.stream(thread.id, { assistant_id: assistant.id });
  const seen = follow(stream);
  const paused = await stream.finalRun();
  if (paused.status !== "requires_action") throw new Error(`expected requires_action, got ${paused.status}`);
  const calls = paused.required_action.submit_tool_outputs.tool_calls;
  const after = client.beta.threads.runs.submitToolOutputsStream(paused.id, {
    thread_id: thread.id,
    tool_outputs: calls.map((call) => ({ tool_call_id: call.id, output: "sunny" })),
  });
  const afterSeen = follow(after);
  const run = await after.finalRun();
  const messages = await after.finalMessages();
  return {
    events: seen.events,
    tool_calls: calls.map((c) => ({ name: c.function.name, arguments: JSON.parse(c.function.arguments) })),
    after_events: afterSeen.events,
    status: run.status,
    final_text: textOf(messages),
  };
}

const result = { text_run: await textRun(), tool_run: await toolRun() };
process.stdout.write(JSON.stringify(result) + "\n");
