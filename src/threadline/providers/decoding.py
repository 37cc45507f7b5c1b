"""The decoding loop of a local GGUF model: load it, then turn one request into model events.

This runs inside the model host process (:mod:`threadline.providers.host_process`), never in the
server: llama.cpp is native code, and a crash in it must end only the calls in flight. A
:class:`Turn` decides between answering and calling a function (a closed set of choices walked as a
trie), decodes the answer or the arguments (under a grammar when JSON is wanted), and reports text,
tool-call fragments, usage and the finish reason through ``emit``. Setting ``stop`` ends it at the
next token.
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from threadline.domain.ports.models import (
    Finish,
    ModelEvent,
    ModelRequest,
    ProviderError,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from threadline.providers.grammars import (
    JSON_MAX_TOKENS,
    json_object_grammar,
    schema_grammar,
    schema_violation,
)
from threadline.providers.local_tools import (
    ANSWER_CHOICE,
    CALL_CHOICE,
    arguments_prompt,
    decision_prompt,
    function_specs,
    parameters,
    plain_messages,
    relevant_functions,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

DEFAULT_TEMPERATURE = 1.0  # the Assistants API's defaults
DEFAULT_TOP_P = 1.0
DEFAULT_REPEAT_PENALTY = 1.1
# A small local model can ramble until its context is full; without a limit from the run, stop at
# this many tokens (the run's message then ends as if the model had stopped).
DEFAULT_ANSWER_TOKENS = 1024
"""Applied to free text only: tiny models loop at low temperature without it. Never under a grammar,
where penalising repeated tokens (quotes, braces) would fight the JSON syntax."""

# ChatML, for GGUF files that carry no chat template of their own.
_CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(slots=True)
class Loaded:
    llm: Llama
    formatter: Jinja2ChatFormatter
    n_ctx: int


class Stopped(Exception):
    """The consumer went away: stop decoding."""


_LOG_ERROR = 4  # ggml_log_level's GGML_LOG_LEVEL_ERROR in the pinned llama.cpp
_errors: collections.deque[str] = collections.deque(maxlen=8)


def _keep_llama_errors() -> None:
    """Keep llama.cpp's own error lines: a failed load's exception says only "Failed to load model",
    and llama-cpp-python silences stderr while loading."""
    import llama_cpp

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def on_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        line = text.decode("utf-8", "replace").strip()
        if level == _LOG_ERROR and line:
            _errors.append(line)

    global _log_callback
    _log_callback = on_log  # ctypes needs the callback kept alive
    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))


_log_callback: object = None


def load_model(model_path: str, n_threads: int) -> Loaded:
    """Load a GGUF file with its own context size and chat template (ChatML when it has none)."""
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    _keep_llama_errors()
    try:
        # n_ctx=0: the context size the model was trained with, from the GGUF metadata.
        llm = Llama(
            model_path=model_path,
            n_ctx=0,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            verbose=False,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        # llama.cpp's first error says what is wrong; the ones after it say that loading failed.
        detail = _errors[0].split(": ", 1)[-1] if _errors else str(exc)
        raise ProviderError(f"llama.cpp cannot load it: {detail}") from exc
    template = llm.metadata.get("tokenizer.chat_template") or _CHATML_TEMPLATE
    bos, eos = llm.token_bos(), llm.token_eos()
    formatter = Jinja2ChatFormatter(
        template=template,
        bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
        eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
    )
    return Loaded(llm=llm, formatter=formatter, n_ctx=llm.n_ctx())


class Turn:
    """One request, run start to end in the worker thread while it holds the model."""

    def __init__(
        self,
        loaded: Loaded,
        request: ModelRequest,
        emit: Callable[[ModelEvent], None],
        stop: threading.Event,
        *,
        repeat_penalty: float,
    ) -> None:
        self.loaded = loaded
        self.repeat_penalty = repeat_penalty
        self.llm = loaded.llm
        self.request = request
        self.emit = emit
        self.stop = stop
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.temperature = DEFAULT_TEMPERATURE if request.temperature is None else request.temperature
        self.top_p = DEFAULT_TOP_P if request.top_p is None else request.top_p
        self.max_tokens = request.max_tokens if request.max_tokens and request.max_tokens > 0 else None

    def run(self) -> None:
        if self.request.seed is None:
            self._run()
            return
        # A seeded request samples from its own seed; the next request is back on the model's.
        previous = self.llm._seed
        self.llm.set_seed(self.request.seed & 0xFFFFFFFF)
        try:
            self._run()
        finally:
            self.llm.set_seed(previous)

    def _run(self) -> None:
        request = self.request
        messages = plain_messages(request.messages)
        functions = function_specs(request)
        by_name = {str(spec.get("name")): spec for spec in functions}
        choice = request.tool_choice

        forced: str | None = None
        if isinstance(choice, dict):
            forced = str((choice.get("function") or {}).get("name", ""))
            if forced not in by_name:
                raise ProviderError(
                    f"tool_choice names {forced!r}, which is not among the tools", code="invalid_prompt"
                )
        if not functions or choice == "none":
            name = None
        elif forced is not None:
            name = forced
        elif choice == "required" and len(functions) == 1:
            name = str(functions[0].get("name"))
        elif choice == "required":
            name = self._choose(messages, functions, allow_answer=False)
        elif request.messages and request.messages[-1].get("role") == "tool":
            # The calls it asked for have just been answered: a small model would happily ask again,
            # forever; it answers from the results instead.
            name = None
        else:
            # A small model asked "answer or call?" says "call" to nearly everything; only functions
            # the conversation is plainly about are put to it.
            candidates = relevant_functions(messages, functions)
            name = self._choose(messages, candidates, allow_answer=True) if candidates else None
        reason = self._answer(messages) if name is None else self._call(messages, by_name[name])
        self.emit(Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens))
        self.emit(Finish(reason))

    # -- steps ------------------------------------------------------------------------------------

    def _answer(self, messages: list[dict[str, str]]) -> FinishReason:
        grammar, max_tokens = None, self.max_tokens
        response_format = self.request.response_format or {}
        if response_format.get("type") == "json_object":
            grammar = json_object_grammar()
        elif response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
            grammar = schema_grammar(schema)
        max_tokens = max_tokens or (DEFAULT_ANSWER_TOKENS if grammar is None else JSON_MAX_TOKENS)
        _, reason = self._generate(
            self._prompt(messages),
            grammar=grammar,
            max_tokens=max_tokens,
            on_text=lambda t: self.emit(TextDelta(t)),
            stops=[s for s in self.request.stop or [] if s],
        )
        return reason

    def _choose(
        self, messages: list[dict[str, str]], functions: list[dict[str, Any]], *, allow_answer: bool
    ) -> str | None:
        """The function the model picks (``None``: answer), out of a closed set of choices.

        The reply is constrained to the choices' own tokenizations (``Answer``, ``Call <name>``, each
        ending in end-of-sequence), walked as a trie: the model's next-token distribution decides only
        where the choices branch. (A character grammar of the choices would also admit tokens that
        merely start a choice, like "C" or "An", and summing whole-choice log-probabilities penalises
        long names for tokens that are near-certain anyway.)
        """
        names = list(dict.fromkeys(str(spec.get("name")) for spec in functions))
        choices = ([ANSWER_CHOICE] if allow_answer else []) + [CALL_CHOICE + name for name in names]
        eos = self.llm.token_eos()
        sequences = [[*self._tokens(choice, special=False), eos] for choice in choices]
        prompt = self._tokens(self._prompt(decision_prompt(messages, functions)))
        logprobs = self._evaluate(prompt)
        self.prompt_tokens += len(prompt)
        remaining = list(range(len(choices)))
        position = 0
        while len(remaining) > 1:
            if self.stop.is_set():
                raise Stopped
            options = sorted({sequences[i][position] for i in remaining})
            token = (
                options[self._pick([float(logprobs[t]) for t in options])] if len(options) > 1 else options[0]
            )
            remaining = [i for i in remaining if sequences[i][position] == token]
            self.completion_tokens += 1
            if len(remaining) > 1:
                self.llm.eval([token])
                logprobs = self._next_logprobs()
            position += 1
        chosen = choices[remaining[0]]
        return None if chosen == ANSWER_CHOICE else chosen.removeprefix(CALL_CHOICE)

    @staticmethod
    def _pick(logprobs: list[float]) -> int:
        # The decision is the model's most likely choice whatever the temperature: sampling it would
        # make the same question call a function one time and not the next.
        return max(range(len(logprobs)), key=lambda i: logprobs[i])

    def _call(self, messages: list[dict[str, str]], spec: dict[str, Any]) -> FinishReason:
        """Decode the arguments of a call to ``spec`` under its schema's grammar, streaming them."""
        name, schema = str(spec["name"]), parameters(spec)
        call_messages, prefix = arguments_prompt(messages, spec)
        self.emit(ToolCallDelta(index=0, name=name))
        arguments, reason = self._generate(
            self._prompt(call_messages) + prefix,
            grammar=schema_grammar(schema),
            max_tokens=self.max_tokens or JSON_MAX_TOKENS,
            on_text=lambda t: self.emit(ToolCallDelta(index=0, arguments=t)),
        )
        if reason == "length":
            return "length"
        try:
            value = json.loads(arguments)
        except json.JSONDecodeError as exc:
            raise ProviderError(
                f"Constrained decoding produced invalid JSON arguments for {name}: {exc}"
            ) from exc
        if (problem := schema_violation(value, schema)) is not None:
            raise ProviderError(f"Arguments decoded for {name} do not fit its schema: {problem}")
        return "tool_calls"

    # -- llama.cpp ---------------------------------------------------------------------------------

    def _prompt(self, messages: list[dict[str, str]]) -> str:
        try:
            return self.loaded.formatter(messages=cast(Any, messages)).prompt
        except Exception as exc:  # template errors (e.g. roles it refuses) are the prompt's fault
            raise ProviderError(
                f"The model's chat template cannot render these messages: {exc}", code="invalid_prompt"
            ) from exc

    def _reset(self) -> None:
        reset: Callable[[], None] = self.llm.reset  # (untyped in llama-cpp-python)
        reset()

    def _tokens(self, text: str, *, special: bool = True) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def _evaluate(self, tokens: list[int]) -> npt.NDArray[np.float64]:
        """Evaluate ``tokens`` from a fresh state; the log-probabilities of the next token."""
        if len(tokens) >= self.loaded.n_ctx:
            raise ProviderError(
                f"The prompt is {len(tokens)} tokens; the model's context window is {self.loaded.n_ctx}.",
                code="invalid_prompt",
            )
        self._reset()
        self.llm.eval(tokens)
        return self._next_logprobs()

    def _next_logprobs(self) -> npt.NDArray[np.float64]:
        import llama_cpp
        import numpy as np

        pointer = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(self.llm.n_vocab(),)).astype(np.float64)
        top = logits.max()
        result: npt.NDArray[np.float64] = logits - (top + np.log(np.exp(logits - top).sum()))
        return result

    def _check_grammar(self, grammar: str) -> None:
        # llama-cpp-python hands a grammar that fails to parse to llama.cpp as a NULL sampler, which
        # crashes the process; parse it once here first.
        import llama_cpp

        sampler = llama_cpp.llama_sampler_init_grammar(self.llm._model.vocab, grammar.encode(), b"root")
        if not sampler:
            raise ProviderError("Internal error: a generated grammar does not parse.")
        llama_cpp.llama_sampler_free(sampler)

    def _generate(
        self,
        prompt: str,
        *,
        grammar: str | None,
        max_tokens: int | None,
        on_text: Callable[[str], None] | None,
        stops: list[str] | None = None,
    ) -> tuple[str, FinishReason]:
        """Decode one completion of ``prompt`` (fresh state), calling ``on_text`` per decoded piece;
        it ends at the first of ``stops`` (which the caller cuts from what it shows)."""
        import llama_cpp
        from llama_cpp.llama_grammar import LlamaGrammar

        llm = self.llm
        tokens = self._tokens(prompt)
        room = self.loaded.n_ctx - len(tokens)
        if room <= 0:
            raise ProviderError(
                f"The prompt is {len(tokens)} tokens; the model's context window is {self.loaded.n_ctx}.",
                code="invalid_prompt",
            )
        limit = min(room, max_tokens) if max_tokens else room
        if grammar is not None:
            self._check_grammar(grammar)
        self.prompt_tokens += len(tokens)

        # A fresh state per generation (no prompt-prefix reuse), so that the same request at
        # temperature 0 decodes the same tokens every time.
        self._reset()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces: list[str] = []
        reason: FinishReason = "length"
        generated = 0
        steps = llm.generate(
            tokens,
            temp=self.temperature,
            top_p=self.top_p,
            repeat_penalty=self.repeat_penalty if grammar is None else 1.0,
            reset=True,
            grammar=LlamaGrammar.from_string(grammar, verbose=False) if grammar is not None else None,
        )
        try:
            for token in steps:
                if self.stop.is_set():
                    raise Stopped
                if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                    reason = "stop"
                    break
                generated += 1
                self.completion_tokens += 1
                text = decoder.decode(llm.detokenize([token]))
                if text:
                    pieces.append(text)
                    if on_text is not None:
                        on_text(text)
                    if stops:
                        tail = "".join(pieces[-64:])
                        if any(stop in tail for stop in stops):
                            reason = "stop"
                            break
                if generated >= limit:
                    break
        finally:
            steps.close()
        # A character whose bytes were cut off by the token limit is dropped, not shown as U+FFFD.
        return "".join(pieces), reason
