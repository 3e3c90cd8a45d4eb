"""Replies decoded together: up to ``parallel`` sequences share the loaded model's context.

One :class:`Scheduler` per loaded model runs in a daemon thread while there is work, as
llama-server's slots do:

- each reply (a :class:`Job`) gets a **slot**: a sequence id of the context, with its own KV
  cells (``n_ctx`` per slot, see :func:`offgrid_nb.engine.load_model`), its own sampler chain
  (temperature, seed) and its own stop strings and ``max_tokens``;
- every step is **one** ``llama_decode`` over a ``llama_batch`` whose tokens carry their slot's
  ``seq_id``: one new token of each generating slot, then prompt tokens of admitted slots up to
  the batch size (**chunked** prompts: a long prompt takes several steps, and the other slots
  keep generating meanwhile);
- new jobs are admitted between steps (**continuous batching**); beyond the slots they queue,
  first come first served, up to the ``max_queue`` setting (then :class:`ServerBusyError`); a
  job that waits longer than ``queue_timeout`` is refused the same way, and a cancelled one
  leaves the queue at once;
- **embeddings** (an :class:`EmbedJob`) use the same context: between steps, one text at a
  time in a free slot, ahead of the queued replies, with ``llama_set_embeddings`` switched on
  for that decode alone (the context pools as the model says, else by the mean, see
  :func:`offgrid_nb.engine.load_model`), so a chat model embeds without a second load;
- a slot keeps its tokens in the KV cache after its reply, and a new prompt goes to the free
  slot whose cache it mostly shares (else to the least recently used), so a chat's next turn
  evaluates only its new tokens (``llama_memory_seq_rm`` drops the rest);
- a prompt longer than the slot's context fails that job only.

The scheduler holds the model shared (:class:`offgrid_nb.engine.ModelLock`); when someone
waits to hold it alone (a benchmark, a model swap), it admits no new job, lets the running
ones finish and lets go; it comes back after. Jobs still queued when the model was freed are
handed back to be submitted to the next one.

Greedy (temperature 0) sampling of one slot alone gives exactly what llama-cpp-python's
``Llama.create_completion`` gives; the samplers at other temperatures are its chain (top-k 40,
typical 1, top-p 0.95, min-p 0.05, temperature, seeded draw).
"""

from __future__ import annotations

import ctypes
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import get_settings
from .engine import LoadedModel
from .errors import ContextOverflowError, GenerationError, InvalidArgumentError, ServerBusyError
from .llama_backend import greedy_token, llama_cpp, logits_row
from .structured import grammar_sampler

# llama.cpp's llama_token_data: {llama_token id; float logit; float p}
_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])

Prompt = Callable[[LoadedModel], tuple[list[int], list[str]]]


@dataclass(eq=False)
class Job:
    """One reply to generate, and what the scheduler reports of it.

    ``events`` carries ``("text", str)``, then ``("end", None)``, or ``("error", exc)``, or
    ``("moved", None)`` (the model was freed before the job started: submit it again).
    """

    prompt: Prompt
    max_tokens: int
    temperature: float
    seed: int | None
    stop_at_control: bool = True
    grammar: str | None = None  # GBNF the reply must match (see offgrid_nb.structured)
    cancelled: threading.Event = field(default_factory=threading.Event)
    events: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)
    finish_reason: str = "cancelled"
    prompt_tokens: int = 0
    prompt_tokens_evaluated: int = 0
    completion_tokens: int = 0
    submitted: float = 0.0
    first_token: float | None = None
    last_token: float | None = None
    scheduler: Scheduler | None = None  # where it was submitted last

    def cancel(self) -> None:
        """Stop it, from any thread: a queued job leaves the queue now, a running one frees
        its slot at the next step."""
        self.cancelled.set()
        if self.scheduler is not None and self.scheduler.withdraw(self):
            self.events.put(("end", None))


@dataclass(eq=False)
class EmbedJob:
    """Texts to embed with a loaded model's context; ``events`` gets ``("done", (vectors,
    tokens))``, ``("error", exc)`` or ``("moved", None)`` (as :class:`Job`)."""

    texts: list[str]
    normalize: bool = True
    events: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)
    done: list[tuple[np.ndarray, int]] = field(default_factory=list)  # (vector, tokens) so far


class _Text:
    """A slot's text: bytes in, pieces out, cut at the first stop string (in the list's order,
    as ``create_completion`` cuts), holding back what may be the start of one."""

    def __init__(self, stops: list[str]) -> None:
        self.data = b""
        self.stops = stops
        self.sent = 0

    def add(self, piece: bytes) -> tuple[str, bool]:
        """The text that can be sent now, and whether a stop string ended the reply."""
        self.data += piece
        text = self.data.decode("utf-8", errors="ignore")  # an unfinished character waits
        found = [stop for stop in self.stops if stop in text]
        if found:
            return self._send(text, text.index(found[0])), True
        held = max(
            (k for stop in self.stops for k in range(1, len(stop)) if text.endswith(stop[:k])),
            default=0,
        )
        return self._send(text, len(text) - held), False

    def rest(self) -> str:
        """What was held back, at the end of a reply not ended by a stop string."""
        text = self.data.decode("utf-8", errors="ignore")
        return self._send(text, len(text))

    def _send(self, text: str, end: int) -> str:
        piece = text[self.sent : max(end, self.sent)]
        self.sent = max(end, self.sent)
        return piece


@dataclass
class _Slot:
    """One sequence of the context: the tokens its KV cache holds and the job it serves."""

    seq: int
    cached: list[int] = field(default_factory=list)
    job: Job | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens still to evaluate
    next_token: int | None = None  # sampled, to evaluate in the next step
    sampler: Any = None
    grammar: Any = None  # llama.cpp's grammar sampler, when the job has a grammar
    text: _Text | None = None
    max_tokens: int = 0
    used: float = 0.0  # when it last took a job (the least recent is reused first)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _best_slot(free: list[_Slot], tokens: list[int]) -> _Slot:
    """The free slot whose cache ``tokens`` reuse most of (a chat's own slot), else the least
    recently used one (an empty one first): a shared system prompt alone is not worth another
    conversation's cache."""
    shared = {id(slot): _common_prefix(slot.cached, tokens) for slot in free}
    reusable = [slot for slot in free if slot.cached and shared[id(slot)] * 2 >= len(slot.cached)]
    if reusable:
        return max(reusable, key=lambda slot: shared[id(slot)])
    return min(free, key=lambda slot: slot.used)


def _sampler(temperature: float, seed: int | None) -> Any:
    """llama-cpp-python's sampler chain for these options (its penalties are off by default)."""
    lib = llama_cpp()
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    if temperature == 0:
        links = [lib.llama_sampler_init_greedy()]
    else:
        links = [
            lib.llama_sampler_init_top_k(40),
            lib.llama_sampler_init_typical(1.0, 1),
            lib.llama_sampler_init_top_p(0.95, 1),
            lib.llama_sampler_init_min_p(0.05, 1),
            lib.llama_sampler_init_temp(temperature),
            lib.llama_sampler_init_dist(lib.LLAMA_DEFAULT_SEED if seed is None else seed),
        ]
    for link in links:
        lib.llama_sampler_chain_add(chain, link)
    return chain


class Scheduler:
    """The slots of one loaded model and the thread that decodes them (see the module doc)."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self._slots = [_Slot(seq) for seq in range(loaded.parallel)]
        self._queue: list[Job] = []
        self._embeds: list[EmbedJob] = []
        settings = get_settings()  # once: it reads the HF token file, too slow per request
        self.max_queue, self.queue_timeout = settings.max_queue, settings.queue_timeout
        self._cond = threading.Condition()
        self._running = False
        self._lib = llama_cpp()
        self._vocab = loaded.llama._model.vocab
        self._n_vocab = self._lib.llama_vocab_n_tokens(self._vocab)
        self._n_batch = loaded.llama.n_batch
        self._cells: np.ndarray | None = None  # candidates for grammar resampling
        self._control: np.ndarray | None = None  # see _markup_tokens
        self._unified = bool(loaded.llama.context_params.kv_unified)  # one KV stream

    def status(self) -> dict[str, int]:
        """``{"parallel", "busy", "queued"}``: slots, slots serving a job, jobs waiting
        (replies and embeddings)."""
        with self._cond:
            busy = sum(slot.job is not None for slot in self._slots)
            queued = len(self._queue) + len(self._embeds)
            return {"parallel": len(self._slots), "busy": busy, "queued": queued}

    def submit(self, job: Job) -> None:
        """Queue ``job``; its events arrive on ``job.events``.

        Raises:
            ServerBusyError: ``max_queue`` jobs wait already.
        """
        if not job.submitted:
            job.submitted = time.perf_counter()  # kept when it moves to a reloaded model
        with self._cond:
            if self.loaded.closed:
                job.events.put(("moved", None))
                return
            if len(self._queue) >= self.max_queue:
                raise ServerBusyError(
                    f"{len(self._queue)} replies are waiting for {self.loaded.name}",
                    hint="retry in a moment (the queue bound is OFFGRID_MAX_QUEUE)",
                )
            job.scheduler = self
            self._queue.append(job)
            self._wake()

    def submit_embedding(self, job: EmbedJob) -> None:
        """Queue ``job`` ahead of the queued replies; its result arrives on ``job.events``."""
        with self._cond:
            if self.loaded.closed:
                job.events.put(("moved", None))
                return
            self._embeds.append(job)
            self._wake()

    def withdraw(self, job: Job) -> bool:
        """Take ``job`` out of the queue if it is still waiting there (else it has a slot)."""
        with self._cond:
            if job in self._queue:
                self._queue.remove(job)
                return True
            return False

    def _wake(self) -> None:
        """Start the decoding thread if it is not running (the caller holds ``_cond``)."""
        if not self._running:
            self._running = True
            threading.Thread(target=self._run, name="offgrid-slots", daemon=True).start()

    def _run(self) -> None:
        batch = self._lib.llama_batch_init(self._n_batch, 0, 1)
        try:
            while True:
                with self.loaded.lock.shared():  # waits while a benchmark holds the model
                    if self.loaded.closed:
                        break
                    self._serve(batch)
                with self._cond:
                    if not self._queue and not self._embeds:
                        self._running = False  # a later submit starts a new thread
                        return
        except Exception as exc:  # a bug here must not leave replies waiting forever
            for slot in self._slots:
                if slot.job is not None:
                    self._finish(slot, "error", GenerationError(f"Generation failed: {exc!r}"))
            self._hand_back()  # they start again in a new thread
            raise
        finally:
            self._lib.llama_batch_free(batch)
        self._hand_back()

    def _hand_back(self) -> None:
        """Queued jobs go back to be submitted again (to the next model's scheduler when this
        one was freed)."""
        with self._cond:
            for job in [*self._queue, *self._embeds]:
                job.events.put(("moved", None))
            self._queue.clear()
            self._embeds.clear()
            self._running = False

    def _serve(self, batch: Any) -> None:
        """Step until no slot is busy and nothing can be admitted."""
        while True:
            self._embed_next(batch)
            self._admit()
            for slot in self._slots:
                if slot.job is not None and slot.job.cancelled.is_set():
                    self._finish(slot, "cancelled")
            busy = [slot for slot in self._slots if slot.job is not None]
            if not busy:
                if self._embeds and not self.loaded.lock.exclusive_waiting:
                    continue  # more texts to embed in the free slots
                return
            self._step(busy, batch)

    def _embed_next(self, batch: Any) -> None:
        """Embed one queued text in a free slot (one decode, embeddings on for it alone)."""
        with self._cond:
            free = [slot for slot in self._slots if slot.job is None]
            if not self._embeds or not free or self.loaded.lock.exclusive_waiting:
                return
            job = self._embeds[0]
        slot = min(free, key=lambda slot: slot.used)
        done = job.done
        try:
            done.append(self._embed_one(slot, job.texts[len(done)], job.normalize, batch))
        except Exception as exc:  # raised again in the caller's thread
            with self._cond:
                self._embeds.remove(job)
            job.events.put(("error", exc))
            return
        if len(done) == len(job.texts):
            with self._cond:
                self._embeds.remove(job)
            vectors = np.stack([vector for vector, _ in done])
            job.events.put(("done", (vectors, sum(count for _, count in done))))

    def _embed_one(
        self, slot: _Slot, text: str, normalize: bool, batch: Any
    ) -> tuple[np.ndarray, int]:
        """The pooled vector of ``text`` in ``slot``'s sequence (truncated to one batch, as
        llama-cpp-python's ``embed(truncate=True)`` does; decoded in the scheduler's
        ``batch``), and its token count."""
        lib, llama = self._lib, self.loaded.llama
        tokens = self.loaded.tokenize(text, add_bos=True, special=False)
        tokens = tokens[: min(self._n_batch, self.loaded.n_ctx)]
        memory = lib.llama_get_memory(llama.ctx)
        lib.llama_memory_seq_rm(memory, slot.seq, -1, -1)
        slot.cached = []  # the slot's cache is gone: the next reply there starts afresh
        lib.llama_set_embeddings(llama.ctx, True)
        try:
            for i, token in enumerate(tokens):
                batch.token[i], batch.pos[i], batch.logits[i] = token, i, True
                batch.n_seq_id[i], batch.seq_id[i][0] = 1, slot.seq
            batch.n_tokens = len(tokens)
            if lib.llama_decode(llama.ctx, batch) != 0:
                raise GenerationError("llama.cpp failed to embed a text")
            pooled = lib.llama_get_embeddings_seq(llama.ctx, slot.seq)
            if not pooled:
                raise GenerationError(f"{self.loaded.name} gives no pooled embeddings")
            n_embd = lib.llama_model_n_embd(llama.model)
            vector = np.ctypeslib.as_array(pooled, shape=(n_embd,)).astype(np.float32)
        finally:
            lib.llama_set_embeddings(llama.ctx, False)
            lib.llama_memory_seq_rm(memory, slot.seq, -1, -1)
        if normalize:
            norm = float(np.linalg.norm(vector))
            vector = vector / norm if norm > 0 else vector
        return vector, len(tokens)

    def _admit(self) -> None:
        while not self.loaded.lock.exclusive_waiting:
            with self._cond:
                free = [slot for slot in self._slots if slot.job is None]
                if not free or not self._queue:
                    return
                job = self._queue.pop(0)
            if job.cancelled.is_set():
                job.events.put(("end", None))
                continue
            try:
                tokens, stops = job.prompt(self.loaded)
                if not tokens:
                    raise InvalidArgumentError("Empty prompt", hint="give some text to continue")
                if len(tokens) >= self.loaded.n_ctx:
                    raise ContextOverflowError(
                        f"The prompt is too long: {len(tokens)} tokens with a context of "
                        f"{self.loaded.n_ctx} per slot",
                        hint="shorten it, or use a larger context (n_ctx / --ctx)",
                    )
            except Exception as exc:  # raised again in the reply's thread
                job.events.put(("error", exc))
                continue
            self._start(_best_slot(free, tokens), job, tokens, stops)

    def _start(self, slot: _Slot, job: Job, tokens: list[int], stops: list[str]) -> None:
        """Give ``job`` the slot: keep the KV cache of the shared prefix, drop the rest."""
        grammar = None
        if job.grammar is not None:
            try:
                grammar = grammar_sampler(self._vocab, job.grammar)
            except InvalidArgumentError as exc:  # the slot stays free
                job.events.put(("error", exc))
                return
        keep = min(_common_prefix(slot.cached, tokens), len(tokens) - 1)  # one to evaluate
        memory = self._lib.llama_get_memory(self.loaded.llama.ctx)
        if not self._lib.llama_memory_seq_rm(memory, slot.seq, keep, -1):
            self._lib.llama_memory_seq_rm(memory, slot.seq, -1, -1)
            keep = 0
        with self._cond:
            slot.job, slot.used = job, time.perf_counter()
        slot.cached, slot.pending = tokens[:keep], tokens[keep:]
        slot.next_token = None
        slot.sampler = _sampler(job.temperature, job.seed)
        slot.grammar = grammar
        slot.text = _Text(stops)
        slot.max_tokens = min(job.max_tokens, self.loaded.n_ctx - len(tokens))
        job.prompt_tokens, job.prompt_tokens_evaluated = len(tokens), len(slot.pending)

    def _step(self, busy: list[_Slot], batch: Any) -> None:
        """One ``llama_decode``: each generating slot's token, prompt chunks with what the batch
        has left, in the order of the slots' sequence ids; sample."""
        rows: list[tuple[_Slot, int]] = []  # slots sampled after the decode, at their row
        n = 0

        def add(slot: _Slot, token: int, logits: bool) -> None:
            nonlocal n
            batch.token[n], batch.pos[n] = token, len(slot.cached)
            batch.n_seq_id[n], batch.seq_id[n][0], batch.logits[n] = 1, slot.seq, logits
            slot.cached.append(token)
            if logits:
                rows.append((slot, n))
            n += 1

        filling = self._gaps(busy)  # seq -> the position of its throwaway token
        left = self._n_batch - len(filling) - sum(slot.next_token is not None for slot in busy)
        for slot in self._slots:
            if slot.seq in filling:  # after what its KV stream holds, removed after the decode
                batch.token[n], batch.pos[n], batch.logits[n] = 0, filling[slot.seq], False
                batch.n_seq_id[n], batch.seq_id[n][0] = 1, slot.seq
                n += 1
            elif slot.job is not None and slot.next_token is not None:
                add(slot, slot.next_token, True)
                slot.next_token = None
            elif slot.job is not None:
                take = slot.pending[:left]
                del slot.pending[: len(take)]
                left -= len(take)
                for i, token in enumerate(take):
                    add(slot, token, i == len(take) - 1 and not slot.pending)
        batch.n_tokens = n
        failed = self._lib.llama_decode(self.loaded.llama.ctx, batch) != 0
        memory = self._lib.llama_get_memory(self.loaded.llama.ctx)
        for seq, pos in filling.items():
            if not self._lib.llama_memory_seq_rm(memory, seq, pos, -1):  # a recurrent state
                self._lib.llama_memory_seq_rm(memory, seq, -1, -1)
                self._slots[seq].cached = []
        if failed:
            for slot in busy:
                slot.cached.clear()  # its KV cache is unknown now
                error = GenerationError("llama.cpp failed to decode a batch")
                self._finish(slot, "error", error)
            return
        for slot, row in rows:
            if slot.grammar is None:
                self._sampled(slot, self._pick(slot, row))
            else:
                self._sampled_in_grammar(slot, row)

    def _pick(self, slot: _Slot, row: int) -> int:
        """The token ``slot``'s sampler chain picks from the logits at ``row`` (at temperature
        0 the greedy pick, without the chain: its ``accept`` does nothing there)."""
        ctx, job = self.loaded.llama.ctx, slot.job
        assert job is not None
        if job.temperature == 0:
            return greedy_token(ctx, row, self._n_vocab)
        return self._lib.llama_sampler_sample(slot.sampler, ctx, row)

    def _gaps(self, busy: list[_Slot]) -> dict[int, int]:
        """Free slots between busy ones, each to get one throwaway token this step (by sequence
        id: the position after what its KV stream holds): with a stream per slot, llama.cpp
        decodes only a run of consecutive sequence ids in one pass over the weights (replies
        in slots 0 and 3 took two passes a step, a third fewer tokens/s)."""
        if self._unified or len(busy) < 2:
            return {}
        memory = self._lib.llama_get_memory(self.loaded.llama.ctx)
        gaps = {}
        for slot in self._slots[busy[0].seq : busy[-1].seq]:
            pos = self._lib.llama_memory_seq_pos_max(memory, slot.seq) + 1
            if slot.job is None and pos < self.loaded.n_ctx:
                gaps[slot.seq] = pos
        return gaps

    def _sampled_in_grammar(self, slot: _Slot, row: int) -> None:
        """Sample as llama.cpp's ``common_sampler_sample`` does with a grammar: the chain's
        token, checked against the grammar alone (one candidate: cheap on a 262k vocabulary);
        only when the grammar rejects it, the grammar over all candidates, then the chain.
        The token is accepted into the grammar once, and only one the grammar allowed
        (llama.cpp aborts the process on anything else)."""
        lib = self._lib
        token = self._pick(slot, row)
        if self._markup(token) or not self._grammar_allows(slot.grammar, token):
            candidates = self._candidates(row)
            lib.llama_sampler_apply(slot.grammar, ctypes.byref(candidates))
            lib.llama_sampler_apply(slot.sampler, ctypes.byref(candidates))
            chosen = candidates.data[candidates.selected] if candidates.selected >= 0 else None
            if chosen is None or chosen.logit == -math.inf:
                error = GenerationError("The grammar allows no next token")
                self._finish(slot, "error", error)
                return
            token = chosen.id
        if not self._lib.llama_vocab_is_eog(self._vocab, token):
            lib.llama_sampler_accept(slot.grammar, token)
        self._sampled(slot, token)

    def _grammar_allows(self, grammar: Any, token: int) -> bool:
        lib = self._lib
        single = lib.llama_token_data(token, 1.0, 0.0)
        one = lib.llama_token_data_array(ctypes.pointer(single), 1, -1, False)
        lib.llama_sampler_apply(grammar, ctypes.byref(one))
        return single.logit != -math.inf

    def _markup_tokens(self) -> np.ndarray:
        """Control tokens that do not end a reply: a grammar may match their text
        (``<s>`` in a JSON string), but a reply stops at them, so a constrained reply never
        picks them."""
        if self._control is None:
            lib, vocab = self._lib, self._vocab
            self._control = np.array(
                [lib.llama_vocab_is_control(vocab, t) and not lib.llama_vocab_is_eog(vocab, t)
                 for t in range(self._n_vocab)], dtype=bool,
            )  # fmt: skip
        return self._control

    def _markup(self, token: int) -> bool:
        return bool(self._markup_tokens()[token])

    def _candidates(self, row: int) -> Any:
        """Every token with its logit at ``row``, as a ``llama_token_data_array`` (numpy fills
        it: a Python loop over 262k tokens would cost more than the decode)."""
        lib, n_vocab = self._lib, self._n_vocab
        if self._cells is None or len(self._cells) != n_vocab:
            self._cells = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self._cells["id"] = np.arange(n_vocab, dtype=np.int32)  # the samplers sort in place
        self._cells["logit"] = logits_row(self.loaded.llama.ctx, row, n_vocab)
        self._cells["logit"][self._markup_tokens()] = -np.inf
        self._cells["p"] = 0.0
        data = self._cells.ctypes.data_as(ctypes.POINTER(lib.llama_token_data))
        return lib.llama_token_data_array(data, n_vocab, -1, False)

    def _sampled(self, slot: _Slot, token: int) -> None:
        job, text = slot.job, slot.text
        assert job is not None
        assert text is not None
        job.completion_tokens += 1
        job.last_token = time.perf_counter()
        job.first_token = job.first_token or job.last_token
        lib = self._lib
        if lib.llama_vocab_is_eog(self._vocab, token) or (
            job.stop_at_control and lib.llama_vocab_is_control(self._vocab, token)
        ):
            self._finish(slot, "stop")
            return
        piece, stopped = text.add(self._piece(token))
        if piece:
            job.events.put(("text", piece))
        if stopped:
            self._finish(slot, "stop", flush=False)
        elif job.completion_tokens >= slot.max_tokens:
            self._finish(slot, "length")
        else:
            slot.next_token = token

    def _piece(self, token: int) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        n = self._lib.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        if n < 0:  # a longer piece: llama.cpp says how long
            buffer = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        return buffer.raw[:n]

    def _finish(
        self, slot: _Slot, reason: str, error: Exception | None = None, *, flush: bool = True
    ) -> None:
        """End the slot's job (its tokens stay in the KV cache for the next prompt)."""
        job = slot.job
        assert job is not None
        if flush and slot.text is not None and error is None:
            rest = slot.text.rest()
            if rest:
                job.events.put(("text", rest))
        job.finish_reason = reason
        self._lib.llama_sampler_free(slot.sampler)
        if slot.grammar is not None:
            self._lib.llama_sampler_free(slot.grammar)
        slot.sampler, slot.grammar, slot.text = None, None, None
        slot.next_token, slot.pending = None, []
        with self._cond:
            slot.job = None
        job.events.put(("error", error) if error else ("end", None))


_schedulers: dict[int, Scheduler] = {}  # by id() of the loaded model, while it is loaded
_schedulers_lock = threading.Lock()


def scheduler(loaded: LoadedModel) -> Scheduler:
    """The scheduler of ``loaded`` (one per loaded model; those of freed models are dropped)."""
    with _schedulers_lock:
        for key in [key for key, s in _schedulers.items() if s.loaded.closed]:
            del _schedulers[key]
        if id(loaded) not in _schedulers:
            _schedulers[id(loaded)] = Scheduler(loaded)
        return _schedulers[id(loaded)]


def model_status(loaded: LoadedModel) -> dict[str, int]:
    """The slots of one loaded model: ``{"parallel", "busy", "queued"}`` (its ``parallel``
    and zeros before its first reply)."""
    current = _schedulers.get(id(loaded))
    if current is None or current.loaded is not loaded:
        return {"parallel": loaded.parallel, "busy": 0, "queued": 0}
    return current.status()


def slots_status() -> dict[str, int]:
    """The slots of every loaded model together: ``{"parallel", "busy", "queued",
    "max_queue"}`` (``max_queue``: the bound of each model's queue)."""
    total = {"parallel": 0, "busy": 0, "queued": 0}
    for current in list(_schedulers.values()):
        if not current.loaded.closed:
            for key, value in current.status().items():
                total[key] += value
    return {**total, "max_queue": get_settings().max_queue}


def _first_event(job: Job, deadline: float) -> tuple[str, Any]:
    """The job's first event; :class:`ServerBusyError` if it is still queued at ``deadline``."""
    while True:
        try:
            return job.events.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            current = job.scheduler
            if current is not None and current.withdraw(job):
                raise ServerBusyError(
                    f"No slot of {current.loaded.name} came free in {current.queue_timeout:g} s",
                    hint="retry in a moment (the wait bound is OFFGRID_QUEUE_TIMEOUT)",
                ) from None
            deadline = math.inf  # it has a slot now: its events come


def run(load: Callable[[], LoadedModel], job: Job) -> Iterator[str]:
    """Submit ``job`` to the scheduler of the model ``load()`` gives; yield its text pieces.

    Raises what the job failed with (``ContextOverflowError``...), and
    :class:`ServerBusyError` when the queue is full or the job waited longer than the
    ``queue_timeout`` setting. Closing the iterator cancels the job: it leaves the queue, or
    its slot is free at the next step.
    """
    deadline = None  # the first scheduler's queue_timeout after the first submit
    try:
        while True:
            current = scheduler(load())
            current.submit(job)
            deadline = deadline or time.monotonic() + current.queue_timeout
            kind, value = _first_event(job, deadline)
            while kind == "text":
                yield value
                kind, value = job.events.get()
            if kind == "error":
                raise value
            if kind == "end":
                return
    finally:
        job.cancel()  # a no-op after its end; else it leaves the queue or its slot


def embed_with(
    loaded: LoadedModel, texts: list[str], *, normalize: bool = True
) -> tuple[np.ndarray, int]:
    """``texts`` embedded with ``loaded``'s own context (submitted again with ``loaded.again()``
    if it was freed meanwhile): one vector per text, and the token count."""
    job = EmbedJob(texts, normalize)
    while True:
        scheduler(loaded).submit_embedding(job)
        kind, value = job.events.get()
        if kind == "error":
            raise value
        if kind == "done":
            return value
        job.done.clear()
        loaded = loaded.again()
