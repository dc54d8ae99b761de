"""The trainer's side of asynchronous RL: :class:`AsyncRollouts` dispatches prompts to the rollout
workers, takes their scored groups as they finish, hands the trainer a batch of fresh groups per
step and publishes new weights. It has the same methods as the synchronous source
(:class:`prorl.trainer.rollouts.SyncRollouts`), so the controller does not know which it drives.

Where prompts come from: the trainer's own :class:`PromptSampler` (checkpointed with the run), so
the data order, retirement and domain weights are the synchronous mode's. A prompt whose group
cannot be trained (too stale, a reset, a stage change, a dead worker) is *returned*: it is
dispatched again before any new draw. At a checkpoint the prompts that are out (returned, in
flight, or finished but not yet trained) are saved with the run state and dispatched first after
``--resume``: in-flight samples are discarded, never lost, and no prompt is drawn twice.
"""

from __future__ import annotations

import itertools
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, Listener, wait
from typing import Callable, Iterable

from prorl.asyncrl import channel
from prorl.asyncrl.staleness import may_dispatch, split_fresh, staleness_metrics
from prorl.asyncrl.worker import WorkItem
from prorl.config import Config, to_dict
from prorl.data.dataset import PromptSampler
from prorl.rewards.scorer import RewardScorer
from prorl.rollout.base import SamplingParams
from prorl.trainer import faults
from prorl.trainer.rollout_step import Group, RewardShaping, RolloutStats, StepExperience, judged_scores, make_group


class WorkersLost(RuntimeError):
    """Every rollout worker has gone: the run cannot continue."""


@dataclass
class _Worker:
    index: int
    conn: Connection
    proc: subprocess.Popen | None  # None: started elsewhere
    alive: bool = True
    outstanding: int = 0  # items sent and not yet answered
    version: int = -1  # newest weights it confirmed (ready / validation / group)


@dataclass
class _Pending:
    example_index: int
    worker: int
    sampling: SamplingParams


class AsyncRollouts:
    """Rollout workers in their own processes, fed with prompts and weights by the trainer."""

    WEIGHT_PASSES_AT_START = 2  # the metadata pass and the first publication (other torchrun ranks join both)
    FIXED_KEYS = ("rollout.mode", "rollout.async_workers", "rollout.async_remote_workers", "rollout.async_listen",
                  "rollout.async_worker_threads", "rollout.async_timeout_s")

    def __init__(self, cfg: Config, *, model_path: str, sampler: PromptSampler, weights: Callable[[], Iterable],
                 version: int, worker_threads: int, device: str, log: Callable[..., None] = print,
                 returned: Iterable[int] = ()):
        r = cfg.rollout
        self.cfg, self.sampler, self.log = cfg, sampler, log
        self.version, self.timeout_s, self.device = version, r.async_timeout_s, device
        self.returned: list[int] = list(returned)  # prompts to dispatch again before new draws
        self.pending: dict[int, _Pending] = {}
        self.ready: list[Group] = []
        self.stats = RolloutStats()
        self._ids = itertools.count()
        self._keep_rate = 1.0  # dynamic sampling's recent keep rate (an average over about two batches)
        self._counts = {"dropped_stale": 0, "returned": 0, "flushed": 0}
        self._validations: dict[int, dict] = {}
        self._timing = {"timing_s/gen": 0.0, "timing_s/reward": 0.0}  # workers' seconds for this step's arrivals
        self._inbox: queue.Queue = queue.Queue()
        self._groups: dict[int, object] = {}  # worker index -> its weight group with the trainer
        self._judged_by = (SamplingParams.for_training(r), RewardScorer.settings(cfg.reward))
        host, port = channel.parse_address(r.async_listen)
        self._key = channel.authkey(required=r.async_remote_workers > 0)
        self._listener = Listener((host, port), authkey=self._key)
        self._store = channel.make_store(host, 0, is_master=True, timeout_s=self.timeout_s)
        address = f"{host}:{self._listener.address[1]}"
        self.workers: list[_Worker] = []
        procs = [self._spawn(address, worker_threads) for _ in range(r.async_workers)]
        if r.async_remote_workers:
            log(f"waiting for {r.async_remote_workers} remote rollout worker(s): "
                f"prorl rollout-worker --connect {address}  (with {channel.AUTHKEY_ENV} set)")
        self._meta = channel.weights_meta(weights())
        self._accept(procs, r.async_workers + r.async_remote_workers, model_path, worker_threads)
        threading.Thread(target=self._read, name="prorl-rollout-inbox", daemon=True).start()
        self.publish(weights, version=version)
        self._wait_ready()

    # ------------------------------------------------------------------ workers
    def _spawn(self, address: str, threads: int) -> subprocess.Popen:
        env = {**os.environ, channel.AUTHKEY_ENV: self._key.decode(), "OMP_NUM_THREADS": str(threads)}
        return subprocess.Popen([sys.executable, "-m", "prorl", "rollout-worker", "--connect", address], env=env)

    def _accept(self, procs: list, count: int, model_path: str, threads: int) -> None:
        """Take each worker's connection and send it the handshake; a local worker that exits first,
        or too long a wait, is an error that names what happened."""
        sock = self._listener._listener._socket  # the listening socket: poll it, to notice dead local workers
        sock.settimeout(1.0)
        deadline = time.monotonic() + self.timeout_s
        for index in range(count):
            while True:
                try:
                    conn = self._listener.accept()
                    break
                except (socket.timeout, TimeoutError):
                    if len(procs) == count and all(p.poll() is not None for p in procs):
                        codes = [p.returncode for p in procs]
                        raise WorkersLost(f"the rollout workers exited before connecting (exit codes {codes}); "
                                          "their errors are above") from None
                    if time.monotonic() > deadline:
                        raise WorkersLost(f"only {index} of {count} rollout workers connected within "
                                          f"rollout.async_timeout_s={self.timeout_s} s") from None
            if not conn.poll(self.timeout_s):
                raise WorkersLost("a rollout worker connected but never introduced itself")
            kind, info = conn.recv()  # ("join", {"pid"}): which local process this is (connections arrive in any order)
            proc = next((p for p in procs if p.pid == info["pid"]), None) if kind == "join" else None
            seed = self.cfg.trainer.seed + 7919 * (index + 1) + 100_003 * self.version
            conn.send(("hello", {"index": index, "config": to_dict(self.cfg), "model_path": model_path,
                                 "store": (self._store.host, self._store.port), "meta": self._meta, "threads": threads,
                                 "seed": seed, "device": self.device, "timeout_s": self.timeout_s}))
            self.workers.append(_Worker(index, conn, proc))

    def _read(self) -> None:
        """Background: drain every worker's connection into the inbox, so a worker never blocks on a
        full socket while the trainer updates; a closed connection is reported as ``dead``."""
        conns = {w.conn: w for w in self.workers}
        while conns:
            for conn in wait(list(conns), timeout=1.0):
                w = conns[conn]
                try:
                    self._inbox.put((w.index, *conn.recv()))
                except (EOFError, OSError) as e:
                    del conns[conn]
                    self._inbox.put((w.index, "dead", repr(e)))

    def _wait_ready(self) -> None:
        waiting = {w.index for w in self.workers}
        deadline = time.monotonic() + self.timeout_s
        while waiting:
            idx, kind, body = self._next_message(deadline, "the rollout workers to load their engines")
            if kind == "ready":
                waiting.discard(idx)
            self._handle(idx, kind, body, step=0)

    def live(self) -> list[_Worker]:
        return [w for w in self.workers if w.alive]

    # ------------------------------------------------------------------ weights
    def publish(self, weights: Callable[[], Iterable], *, version: int) -> float:
        """Stream the current weights (as version ``version``) to every live worker; returns seconds.
        A worker whose link fails during the broadcast is lost; the others get the full set."""
        self.version = version
        t0 = time.perf_counter()
        self._reap(grace_s=0.0)  # a worker that died since the last look is not sent to
        live = self.live()
        if not live:
            for _ in weights():  # keep FSDP ranks in step even with nobody to send to
                pass
            raise WorkersLost("every rollout worker has died; see their errors above")
        for w in live:
            self._send(w, "weights", {"version": version})
        for w in self.live():
            if w.index not in self._groups:  # the worker joins when it reads the message above
                self._groups[w.index] = channel.weight_group(self._store, worker=w.index, rank=0,
                                                             timeout_s=self.timeout_s, device=self.device)
        _, failed = channel.broadcast_weights({w.index: self._groups[w.index] for w in self.live()}, weights(),
                                              self._meta)
        for idx, err in failed.items():
            self._groups.pop(idx, None)
            self._lose(self.workers[idx], f"failed to receive the weights ({err})")
        if not self.live():
            raise WorkersLost("every rollout worker has died; see their errors above")
        return time.perf_counter() - t0

    def _reap(self, grace_s: float) -> None:
        """Mark workers whose process or connection has ended as dead (waiting up to ``grace_s``)."""
        deadline = time.monotonic() + grace_s
        while True:
            for w in self.workers:
                if w.alive and w.proc is not None and w.proc.poll() is not None:
                    self._lose(w, f"exited with code {w.proc.returncode}")
            self._drain()  # everything already received (a "dead" notice among it), then up to the grace period
            if time.monotonic() >= deadline:
                return
            time.sleep(0.2)

    # ------------------------------------------------------------------ one step's batch
    def collect(self, *, step: int, cfg: Config) -> StepExperience:
        """Block until ``actor.train_batch_size`` fresh groups are ready (dispatching as staleness
        allows meanwhile), take them, and dispatch ahead for the next steps before returning. As in
        the synchronous mode, after ``algo.max_gen_rounds`` batches' worth of generated groups the
        step trains on what there is."""
        t0 = time.perf_counter()
        self.cfg = cfg
        B, K = cfg.actor.train_batch_size, cfg.rollout.max_staleness
        sampling = SamplingParams.for_training(cfg.rollout)
        trained_at = self.version  # the weights this batch is trained at (= step - 1 unless a step had no update)
        self._drain()  # what arrived during the update counts in this step's metrics
        while True:
            fresh, stale = split_fresh(self.ready, version=trained_at, max_staleness=K)
            if stale:  # the guarantee: nothing older than K versions is trained on
                self._counts["dropped_stale"] += len(stale)
                self._give_back([self.sampler.index(g.example) for g in stale])
            self.ready = fresh
            if len(self.ready) >= B or self.stats.m["dynamic_sampling/generated_groups"] >= cfg.algo.max_gen_rounds * B:
                break
            self._dispatch(sampling, batch_groups=B, max_staleness=K, steps_ahead=0)
            idx, kind, body = self._next_message(time.monotonic() + self.timeout_s, "a rollout group")
            self._handle(idx, kind, body, step=step)
        faults.point("generation")
        batch, self.ready = self.ready[:B], self.ready[B:]
        for g in batch:  # recorded when trained (a checkpoint's out-standing prompts are not yet counted)
            self.sampler.record(self.sampler.index(g.example), judged_scores(g))
        t_wait = time.perf_counter() - t0
        self._dispatch(sampling, batch_groups=B, max_staleness=K, steps_ahead=1)  # work for the update's duration
        m = self.stats.metrics(kept=len(batch), wanted=B, rounds=1)
        self.stats = RolloutStats()
        m |= staleness_metrics(batch, version=trained_at)
        m |= {f"async/{k}": float(v) for k, v in self._counts.items()}  # since the last batch
        self._counts = dict.fromkeys(self._counts, 0)
        m |= {"async/version": float(trained_at), "async/ready_groups": float(len(self.ready)),
              "async/inflight_groups": float(len(self.pending)), "async/workers": float(len(self.live())),
              "async/version_lag": float(trained_at - min((w.version for w in self.live()), default=trained_at)),
              "timing_s/wait_rollouts": t_wait}
        m |= self._timing
        self._timing = {"timing_s/gen": 0.0, "timing_s/reward": 0.0}
        return StepExperience(batch, sampling, m)

    def _dispatch(self, sampling: SamplingParams, *, batch_groups: int, max_staleness: int, steps_ahead: int) -> None:
        """Send prompts while :func:`may_dispatch` allows. The keep rate is the recent one, floored at
        1 / algo.max_gen_rounds (a step never generates more than that many batches' worth), so a
        hard start cannot send the workers thousands of prompts that go stale once it gets easier."""
        keep_rate = max(self._keep_rate, 1.0 / self.cfg.algo.max_gen_rounds)
        sends: dict[int, list[WorkItem]] = {}
        while self.live():
            ahead = len(self.ready) + keep_rate * len(self.pending)
            if not may_dispatch(queued_ahead=ahead, batch_groups=batch_groups, steps_ahead=steps_ahead,
                                max_staleness=max_staleness):
                break
            index = self.returned.pop(0) if self.returned else self.sampler.index(self.sampler.next())
            ex = self.sampler.examples[index]
            w = min(self.live(), key=lambda w: w.outstanding)
            item_id = next(self._ids)
            self.pending[item_id] = _Pending(index, w.index, sampling)
            w.outstanding += 1
            sends.setdefault(w.index, []).append(WorkItem(item_id, list(ex.prompt_ids), _verifier_row(ex.row), sampling))
        for idx, items in sends.items():
            self._send(self.workers[idx], "work", items)

    def _drain(self) -> None:
        """Handle every message already received, without waiting."""
        while True:
            try:
                self._handle(*self._inbox.get_nowait(), step=self.version + 1)
            except queue.Empty:
                return

    def _next_message(self, deadline: float, what: str) -> tuple:
        while True:
            try:
                return self._inbox.get(timeout=1.0)
            except queue.Empty:
                self._reap(grace_s=0.0)
                if not self.live():
                    raise WorkersLost("every rollout worker has died; see their errors above") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no message from the rollout workers for rollout.async_timeout_s="
                                       f"{self.timeout_s} s while waiting for {what}") from None

    def _handle(self, idx: int, kind: str, body, *, step: int) -> None:
        """One worker message; a group is shaped with the reward config at ``step`` (the step being collected)."""
        w = self.workers[idx]
        if kind == "group":
            w.outstanding = max(0, w.outstanding - 1)  # (a flush zeroed it: late answers)
            p = self.pending.pop(body["item_id"], None)
            if p is None:  # voided by a flush while it was generated
                return
            comps = body["completions"]
            w.version = max(w.version, max((v for c in comps for v in (c.versions or ())), default=-1))
            g, shaped = make_group(self.sampler.examples[p.example_index], comps, body["verdicts"],
                                   sampling=p.sampling, shaping=RewardShaping.from_config(self.cfg.reward, step))
            self.stats.add(g, shaped)
            self._timing["timing_s/gen"] += body["gen_s"]
            self._timing["timing_s/reward"] += body["score_s"]
            kept = self.stats.keep([g], self.cfg.algo.dynamic_sampling)
            alpha = 1.0 / (2 * self.cfg.actor.train_batch_size)
            self._keep_rate += alpha * (len(kept) - self._keep_rate)
            if not kept:  # dynamic sampling dropped it: judged now, as the synchronous mode does
                self.sampler.record(p.example_index, judged_scores(g))
            self.ready += kept
        elif kind == "ready":
            w.version = body["version"]
        elif kind == "validation":
            w.version = body["version"]
            self._validations[body["req_id"]] = body
        elif kind == "error":
            self.log(f"rollout worker {idx} failed:\n{body}")
            self._lose(w, "failed (traceback above)")
        elif kind == "dead":
            code = None
            if w.proc is not None:
                try:
                    code = w.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            self._lose(w, f"closed its connection ({body}" + (f", exit code {code})" if code is not None else ")"))

    def _lose(self, w: _Worker, why: str) -> None:
        if not w.alive:
            return
        w.alive = False
        if w.proc is not None and w.proc.poll() is None:
            w.proc.kill()  # alive but unusable (its link failed): it would only compete for the cores
        lost = [i for i, p in self.pending.items() if p.worker == w.index]
        self._give_back([self.pending.pop(i).example_index for i in lost])
        self.log(f"rollout worker {w.index} {why}; {len(lost)} prompt(s) it held go to the others, "
                 f"{len(self.live())} worker(s) left")

    def _give_back(self, indices: list[int]) -> None:
        self.returned[:0] = indices
        self._counts["returned"] += len(indices)

    def _send(self, w: _Worker, kind: str, body) -> None:
        try:
            w.conn.send((kind, body))
        except (OSError, EOFError):
            self._lose(w, "could not be reached")

    # ------------------------------------------------------------------ validation, resets, stages
    def evaluate(self, examples, *, n: int, temperature: float, top_p: float, max_new_tokens: int) -> list[dict]:
        """Validation records from the workers at the current weights (each takes a share)."""
        live = self.live()
        shares = [examples[i::len(live)] for i in range(len(live))]
        reqs = {}
        for w, share in zip(live, shares):
            req_id = next(self._ids)
            reqs[req_id] = w
            self._send(w, "validate", {"req_id": req_id, "examples": [(list(e.prompt_ids), e.row) for e in share],
                                       "n": n, "temperature": temperature, "top_p": top_p,
                                       "max_new_tokens": max_new_tokens})
        deadline = time.monotonic() + self.timeout_s
        while not all(r in self._validations or not reqs[r].alive for r in reqs):
            self._handle(*self._next_message(deadline, "a validation"), step=self.version + 1)
        if not all(r in self._validations for r in reqs):  # a worker died with a share: redo it on the others
            missing = [e for r, w in reqs.items() if r not in self._validations for e in shares[live.index(w)]]
            done = [self._validations.pop(r)["records"] for r in reqs if r in self._validations]
            return done + self.evaluate(missing, n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
        return [self._validations.pop(r)["records"] for r in reqs]

    def flush(self, cause: str) -> int:
        """Void every group not yet trained (a rollback changed the policy, or a stage the sampling):
        their prompts are returned, the workers drop what they hold. Returns how many were voided."""
        voided = [g_idx for g_idx in (self.sampler.index(g.example) for g in self.ready)] + \
            [p.example_index for p in self.pending.values()]
        self.ready, self.pending = [], {}
        for w in self.live():
            w.outstanding = 0
            self._send(w, "abort", None)
        self._give_back(voided)
        self._counts["flushed"] += len(voided)
        return len(voided)

    def configure(self, cfg: Config) -> None:
        """A new stage: the workers take its config; when it samples or scores differently, the groups
        drawn under the old stage's settings are voided (a batch has one group size and temperature)."""
        judged_by = (SamplingParams.for_training(cfg.rollout), RewardScorer.settings(cfg.reward))
        if judged_by != self._judged_by:
            self.flush("stage change")
        self.cfg, self._judged_by = cfg, judged_by
        for w in self.live():
            self._send(w, "configure", to_dict(cfg))

    def outstanding_prompts(self) -> list[int]:
        """Prompts drawn and not yet trained (returned, in flight, ready), in the order to redo them."""
        return [self.sampler.index(g.example) for g in self.ready] + \
            [p.example_index for p in self.pending.values()] + list(self.returned)

    def close(self) -> None:
        for w in self.workers:
            if w.alive:
                self._send(w, "stop", None)
        for w in self.workers:
            if w.proc is not None:
                try:
                    w.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    w.proc.kill()
            w.alive = False
        self._listener.close()


def _verifier_row(row: dict) -> dict:
    return {k: row[k] for k in ("data_source", "ability", "reward_model", "extra_info") if k in row}


def default_threads(cfg: Config, trainer_procs: int = 1) -> tuple[int, int]:
    """(threads per trainer process, threads per local worker): the cores shared evenly unless set."""
    cores = os.cpu_count() or 1
    r = cfg.rollout
    per_worker = r.async_worker_threads or max(1, cores // (r.async_workers + trainer_procs))
    trainer = max(1, (cores - per_worker * r.async_workers) // trainer_procs)
    if cfg.trainer.threads:
        trainer = min(cfg.trainer.threads, trainer)
    return trainer, per_worker


