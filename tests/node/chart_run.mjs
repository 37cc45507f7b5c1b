// Streams a run whose model has the code interpreter draw a chart, through the official Node SDK against
// OPENAI_BASE_URL, and prints what the stream helpers reported as JSON: the tool call's events, the
// image parts, and where in the stream they came.
import OpenAI from "openai";

const client = new OpenAI({ maxRetries: 0 });

const assistant = await client.beta.assistants.create({ model: "gpt-4o", tools: [{ type: "code_interpreter" }] });
const thread = await client.beta.threads.create({ messages: [{ role: "user", content: "Chart it." }] });
const stream = client.beta.threads.runs.stream(thread.id, { assistant_id: assistant.id });
const seen = { events: [], created: [], deltas: [], images: [] };
stream.on("event", (event) => {
  const parts = event.event === "thread.message.delta" ? event.data.delta.content ?? [] : [];
  const image = parts.some((part) => part.type === "image_file");
  seen.events.push(image ? "thread.message.delta:image_file" : event.event);
});
stream.on("toolCallCreated", (call) => seen.created.push(structuredClone(call)));
stream.on("toolCallDelta", (delta) => seen.deltas.push(structuredClone(delta)));
stream.on("imageFileDone", (image) => {
  seen.images.push(image.file_id);
  seen.events.push("imageFileDone");
});
const run = await stream.finalRun();
const [message] = await stream.finalMessages();
process.stdout.write(JSON.stringify({ ...seen, thread_id: thread.id, status: run.status, content: message.content }) + "\n");
