"""A rollout worker: its own process, its own engine (hf or vllm) and reward scorer, generating and
scoring the prompts the trainer sends while the trainer trains.

Generation runs in *segments* of ``rollout.async_segment_tokens`` tokens per sequence over every
active sequence (a small continuous batch: a finished group leaves, a queued one joins at the
next segment). Between segments the worker applies the newest weights the trainer has published;
an unfinished response then continues under them (a partial rollout), each token tagged with the
version that produced it and its sampling log-prob, so the trainer can bound staleness and correct
the off-policy part. New weights arrive on a background thread (the broadcast fills staging
buffers while the engine keeps generating) and are copied into the engine at the next boundary.

Started by the trainer (``rollout.async_workers``) or by hand on another machine
(``prorl rollout-worker --connect HOST:PORT``); both run :func:`run_worker`. The worker exits when
its control connection closes (the trainer stopped or died), so no orphan outlives a run.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Client, Connection

import torch

from prorl.asyncrl import channel
from prorl.data.dataset import Example
from prorl.rollout.base import Completion, SamplingParams
from prorl.trainer.rollout_step import verifier_item


@dataclass
class WorkItem:
    """One prompt to sample a group for (sent by the trainer)."""

    item_id: int
    prompt_ids: list[int]
    row: dict  # what the verifier needs: data_source, ability, reward_model.ground_truth, extra_info
    sampling: SamplingParams


@dataclass
class _Seq:
    prompt_ids: list[int]
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    done: bool = False
    truncated: bool = False


@dataclass
class _Active:
    item: WorkItem
    seqs: list[_Seq]
    gen_s: float = 0.0  # its share of the engine's seconds (a segment's time split over the groups in it)


class RolloutWorker:
    """The worker's loop: control messages, weight swaps and segments of generation, in turn."""

    def __init__(self, conn: Connection, hello: dict):
        from prorl.config import from_dict
        from prorl.models.policy import load_tokenizer
        from prorl.rewards.scorer import RewardScorer
        from prorl.rollout import make_engine
        from prorl.trainer.precision import engine_dtype

        self.conn, self.index = conn, hello["index"]
        torch.set_num_threads(hello["threads"])
        torch.manual_seed(hello["seed"])  # the hf engine samples from torch's global generator
        self.cfg = cfg = from_dict(hello["config"])
        self.tokenizer = tok = load_tokenizer(hello["model_path"])
        self.device = hello["device"]
        self.engine = make_engine(cfg.rollout, hello["model_path"], eos_token_id=tok.eos_token_id,
                                  pad_token_id=tok.pad_token_id, dtype=engine_dtype(cfg, self.device), device=self.device,
                                  seed=hello["seed"], report_logprobs=True)
        self.scorer = RewardScorer.from_config(cfg.reward)
        self.meta, self.timeout_s = hello["meta"], hello["timeout_s"]
        self.store = channel.make_store(*hello["store"], is_master=False, timeout_s=self.timeout_s)
        self.staging = channel.allocate(self.meta, self.device)
        self.group = None  # the trainer <-> this worker weight group, made at the first publication
        self.version = -1  # the weights the engine samples from
        self._new_version: int | None = None  # received into staging, not yet applied
        self._lock = threading.Lock()
        self.inbox: queue.Queue = queue.Queue()
        self.queued: list[WorkItem] = []
        self.active: list[_Active] = []
        self._reader = threading.Thread(target=self._read, name="prorl-worker-control", daemon=True)

    # ------------------------------------------------------------------ control thread
    def _read(self) -> None:
        """Receive control messages; a weight publication is received here, into the staging buffers."""
        try:
            while True:
                kind, body = self.conn.recv()
                if kind == "weights":
                    with self._lock:
                        if self.group is None:
                            self.group = channel.weight_group(self.store, worker=self.index, rank=1,
                                                              timeout_s=self.timeout_s, device=self.device)
                        channel.receive_weights(self.group, self.staging)
                        self._new_version = body["version"]
                    self.inbox.put(("weights_ready", body["version"]))
                else:
                    self.inbox.put((kind, body))
        except (EOFError, OSError) as e:
            _exit(0, f"rollout worker {self.index}: the trainer closed the connection ({e!r}); exiting")
        except Exception:
            self._send("error", traceback.format_exc())
            _exit(1, f"rollout worker {self.index}: failed")

    def _send(self, kind: str, body) -> None:
        try:
            self.conn.send((kind, body))
        except (EOFError, OSError) as e:
            _exit(0, f"rollout worker {self.index}: the trainer closed the connection ({e!r}); exiting")

    # ------------------------------------------------------------------ main loop
    def run(self) -> None:
        self._reader.start()
        self._wait_for_first_weights()
        self._send("ready", {"version": self.version})
        while True:
            self._apply_weights()
            self._handle_messages(block=not self.active and not self.queued)
            self._apply_weights()  # (weights may have come with the messages: start new work on them)
            self._admit()
            if self.active:
                self._segment()
                self._finish_groups()

    def _wait_for_first_weights(self) -> None:
        while self._new_version is None:
            self._handle_messages(block=True)
        self._apply_weights()

    def _apply_weights(self) -> None:
        with self._lock:
            if self._new_version is None:
                return
            self.engine.load_weights(zip((m[0] for m in self.meta), self.staging))
            self.version, self._new_version = self._new_version, None

    def _handle_messages(self, *, block: bool) -> None:
        while True:
            try:
                kind, body = self.inbox.get(timeout=0.5) if block else self.inbox.get_nowait()
            except queue.Empty:
                if block:
                    continue
                return
            block = False
            if kind == "work":
                self.queued.extend(body)
            elif kind == "abort":  # a reset or a stage change: what is queued or half-done is void
                self.queued.clear()
                self.active.clear()
            elif kind == "configure":
                self._configure(body)
            elif kind == "validate":
                self._apply_weights()
                self._validate(body)
            elif kind == "stop":
                self.scorer.close()
                os._exit(0)

    def _configure(self, config: dict) -> None:
        from prorl.config import from_dict
        from prorl.rewards.scorer import RewardScorer

        new = from_dict(config)
        self.engine.configure(new.rollout)
        if RewardScorer.settings(new.reward) != RewardScorer.settings(self.cfg.reward):
            self.scorer.close()
            self.scorer = RewardScorer.from_config(new.reward)
        self.cfg = new

    def _validate(self, body: dict) -> None:
        from prorl.trainer.evaluate import sample_and_score

        examples = [Example(row, ids) for ids, row in body["examples"]]
        records = sample_and_score(self.engine, self.tokenizer, self.scorer, examples, n=body["n"],
                                   temperature=body["temperature"], top_p=body["top_p"],
                                   max_new_tokens=body["max_new_tokens"])
        self._send("validation", {"req_id": body["req_id"], "records": _plain(records), "version": self.version})

    # ------------------------------------------------------------------ generation
    def _admit(self) -> None:
        """Start queued groups while the active sequences fit in one engine batch (at least one group)."""
        limit = self.cfg.rollout.max_batch_size
        while self.queued:
            n = self.queued[0].sampling.n
            live = sum(1 for a in self.active for s in a.seqs if not s.done)
            if self.active and live + n > limit:
                break
            item = self.queued.pop(0)
            self.active.append(_Active(item, [_Seq(list(item.prompt_ids)) for _ in range(item.sampling.n)]))

    def _segment(self) -> None:
        """Generate up to one segment for every unfinished sequence (grouped by sampling settings)."""
        seg, t0 = self.cfg.rollout.async_segment_tokens, time.perf_counter()
        by_params: dict[tuple, list[_Seq]] = {}
        for a in self.active:
            sp = a.item.sampling
            for s in a.seqs:
                if not s.done:
                    by_params.setdefault((sp.temperature, sp.top_p, sp.max_new_tokens), []).append(s)
        for (temperature, top_p, max_new), seqs in by_params.items():
            room = max(max_new - len(s.tokens) for s in seqs)
            outs = self.engine.generate([s.prompt_ids + s.tokens for s in seqs], n=1, temperature=temperature,
                                        top_p=top_p, max_new_tokens=min(seg, room) if seg else room)
            for s, (c,) in zip(seqs, outs):
                k = min(len(c.token_ids), max_new - len(s.tokens))
                s.tokens += c.token_ids[:k]
                s.logprobs += (c.logprobs or [0.0] * k)[:k]
                s.versions += [self.version] * k
                if not c.truncated and k == len(c.token_ids):  # ended with EOS within its budget
                    s.done = True
                elif len(s.tokens) >= max_new:
                    s.done = s.truncated = True
        share = (time.perf_counter() - t0) / len(self.active)
        for a in self.active:
            a.gen_s += share

    def _finish_groups(self) -> None:
        """Score the groups whose every sequence is done and send them to the trainer."""
        done = [a for a in self.active if all(s.done for s in a.seqs)]
        if not done:
            return
        self.active = [a for a in self.active if a not in done]
        items = [verifier_item(Example(a.item.row, a.item.prompt_ids),
                               self.tokenizer.decode(s.tokens, skip_special_tokens=True)) for a in done for s in a.seqs]
        t0 = time.perf_counter()
        verdicts = self.scorer.score(items)
        t_score = time.perf_counter() - t0
        i = 0
        for a in done:
            n = len(a.seqs)
            comps = [Completion(s.tokens, s.truncated, s.logprobs, s.versions) for s in a.seqs]
            self._send("group", {"item_id": a.item.item_id, "completions": comps, "verdicts": verdicts[i:i + n],
                                 "gen_s": a.gen_s, "score_s": t_score / len(done),
                                 "worker": self.index})
            i += n


def _exit(code: int, why: str) -> None:
    """Leave at once (daemon threads, engine state: nothing to clean up that the OS does not)."""
    print(why, file=sys.stderr, flush=True)
    os._exit(code)


def _plain(records) -> dict:
    """Nested defaultdicts -> plain dicts (picklable without the lambdas)."""
    return {k: _plain(v) if isinstance(v, dict) else v for k, v in records.items()}


def run_worker(address: str, *, authkey: bytes | None = None) -> None:
    """Connect to the trainer at ``address`` (HOST:PORT), take its handshake, and serve until it goes."""
    host, port = channel.parse_address(address)
    key = authkey or channel.authkey(required=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = Client((host, port), authkey=key)
            break
        except (ConnectionRefusedError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    conn.send(("join", {"pid": os.getpid()}))
    kind, hello = conn.recv()
    if kind != "hello":
        raise RuntimeError(f"expected the trainer's hello, got {kind!r}")
    try:
        worker = RolloutWorker(conn, hello)
    except Exception:
        conn.send(("error", traceback.format_exc()))
        raise
    worker.run()
