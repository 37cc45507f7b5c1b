// One program mixing chat completions, embeddings and models through the official Node SDK against
// OPENAI_BASE_URL; prints what it saw as JSON.
import OpenAI from "openai";

const client = new OpenAI({ maxRetries: 0 });

const reply = await client.chat.completions.create({
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: "hello from node" }],
});
const stream = await client.chat.completions.create({
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: "stream please" }],
  stream: true,
  stream_options: { include_usage: true },
});
const deltas = [];
let usage = null;
for await (const chunk of stream) {
  if (chunk.choices[0]?.delta?.content) deltas.push(chunk.choices[0].delta.content);
  if (chunk.usage) usage = chunk.usage;
}
const embedded = await client.embeddings.create({ model: "text-embedding-3-small", input: ["a", "b"] });
const models = [];
for await (const model of client.models.list()) models.push(model.id);

console.log(
  JSON.stringify({
    id: reply.id,
    content: reply.choices[0].message.content,
    finish_reason: reply.choices[0].finish_reason,
    deltas,
    usage,
    dimensions: embedded.data.map((d) => d.embedding.length),
    models,
  }),
);
