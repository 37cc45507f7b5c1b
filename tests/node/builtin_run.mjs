// Streams a run whose model calls the code interpreter, through the official Node SDK against
// OPENAI_BASE_URL, and prints what the stream helpers reported as JSON.
import OpenAI from "openai";

const client = new OpenAI({ maxRetries: 0 });

const assistant = await client.beta.assistants.create({ model: "gpt-4o", tools: [{ type: "code_interpreter" }] });
const thread = await client.beta.threads.create({ messages: [{ role: "user", content: "6 times 7?" }] });
const stream = client.beta.threads.runs.stream(thread.id, { assistant_id: assistant.id });
const seen = { events: [], created: [], deltas: [], done: [], steps: [] };
stream.on("event", (event) => seen.events.push(event.event));
stream.on("toolCallCreated", (call) => seen.created.push(structuredClone(call)));
stream.on("toolCallDelta", (delta) => seen.deltas.push(structuredClone(delta)));
stream.on("toolCallDone", (call) => seen.done.push(structuredClone(call)));
stream.on("runStepDone", (step) => seen.steps.push(step.step_details));
const run = await stream.finalRun();
const messages = await stream.finalMessages();
const text = messages.map((m) => m.content.map((part) => part.text.value).join("")).join("\n");
process.stdout.write(JSON.stringify({ ...seen, status: run.status, final_text: text }) + "\n");
