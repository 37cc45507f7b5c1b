// The Vercel AI SDK's multi-turn chat against OPENAI_BASE_URL, written as its documentation shows:
// each turn's `response.messages` pushed onto the history (stored items come back as item
// references), plain, with a function tool, with the hosted file search, and streamed. Prints what it saw.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const openai = createOpenAI({ baseURL: process.env.OPENAI_BASE_URL, apiKey: process.env.OPENAI_API_KEY });
const seen = {};

async function chat(name, model, questions, options = {}) {
  const messages = [];
  const answers = [];
  for (const question of questions) {
    messages.push({ role: "user", content: question });
    const result = await generateText({ model, messages, maxRetries: 0, ...options });
    answers.push({ text: result.text, steps: result.steps.length, sources: result.sources.length });
    messages.push(...result.response.messages);
  }
  seen[name] = { answers, history: messages.map((m) => m.role) };
}

await chat("plain", openai("gpt-4o"), ["Say hello.", "Again, in French."]);

const getWeather = tool({
  description: "The weather in a city.",
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => `sunny in ${city}`,
});
await chat("tools", openai.responses("gpt-4o"), ["Weather in Oslo?", "What should I wear?"], {
  tools: { get_weather: getWeather },
  stopWhen: stepCountIs(4),
});

await chat("file_search", openai.responses("gpt-4o"), ["How much pension?", "And the company?"], {
  tools: { file_search: openai.tools.fileSearch({ vectorStoreIds: [process.env.VECTOR_STORE_ID] }) },
});

const messages = [{ role: "user", content: "Weather in Rome?" }];
const streamed = streamText({
  model: openai("gpt-4o"),
  messages,
  tools: { get_weather: getWeather },
  stopWhen: stepCountIs(4),
  maxRetries: 0,
});
const deltas = [];
for await (const delta of streamed.textStream) deltas.push(delta);
messages.push(...(await streamed.response).messages, { role: "user", content: "And tomorrow?" });
const again = await generateText({ model: openai("gpt-4o"), messages, tools: { get_weather: getWeather }, maxRetries: 0 });
seen.streamed = { deltas, text: await streamed.text, again: again.text };

process.stdout.write(JSON.stringify(seen) + "\n");
