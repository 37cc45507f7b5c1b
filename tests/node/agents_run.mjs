// The OpenAI Agents SDK for JavaScript against OPENAI_BASE_URL, set up as its documentation shows for
// another base URL: its default client an OpenAI client on the server, the Responses API, no tracing.
// An agent with a function tool, run; a second turn chained by `previousResponseId`, a third sent its
// whole `history`; then a streamed run read as text deltas. Prints what it saw.
import { Agent, run, setDefaultOpenAIClient, setOpenAIAPI, setTracingDisabled, tool } from "@openai/agents";
import OpenAI from "openai";
import { z } from "zod";

setDefaultOpenAIClient(
  new OpenAI({ baseURL: process.env.OPENAI_BASE_URL, apiKey: process.env.OPENAI_API_KEY, maxRetries: 0 }),
);
setOpenAIAPI("responses");
setTracingDisabled(true);

const getWeather = tool({
  name: "get_weather",
  description: "The weather in a city.",
  parameters: z.object({ city: z.string() }),
  execute: async ({ city }) => `sunny in ${city}`,
});
const agent = new Agent({ name: "weather", instructions: "Be brief.", model: "gpt-4o", tools: [getWeather] });

const kinds = (result) => result.newItems.map((item) => item.type);

const first = await run(agent, "Weather in Oslo?");
const chained = await run(agent, "What should I wear?", { previousResponseId: first.lastResponseId });
const replayed = await run(agent, [...first.history, { role: "user", content: "Which city?" }]);

const streamed = await run(agent, "Weather in Rome?", { stream: true });
const deltas = [];
for await (const delta of streamed.toTextStream()) deltas.push(delta);
await streamed.completed;

const seen = {
  first: { text: first.finalOutput, items: kinds(first), responseId: first.lastResponseId ?? null },
  chained: { text: chained.finalOutput, items: kinds(chained) },
  replayed: { text: replayed.finalOutput, history: first.history.map((item) => item.type ?? item.role) },
  streamed: { deltas, text: streamed.finalOutput, items: kinds(streamed) },
};
process.stdout.write(JSON.stringify(seen) + "\n");
