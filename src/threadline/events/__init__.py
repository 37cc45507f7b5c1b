"""Run events (named after OpenAI's stream events) and the buses that carry them between processes."""
