"""The multi-turn rollout of tool-integrated reasoning, on token ids.

The format is plain text, for base models (ToRL, ZeroTIR): the policy writes a fenced block (`` ```python ``), closes
it, and opens an output block (`` ```output ``); the engine stops on that opening, the code runs in a tool, and the
output block ("\\n<output>\\n```\\n") is appended; generation resumes. After `max_calls` calls the stop is dropped and
further code is not run.

Token in, token out: the ids the engine sampled are kept verbatim (only the code is decoded, to run it), the tool's
output is encoded once, and every turn is checked: the request's prompt ids plus its output ids must equal the
trajectory's ids (`TokenDrift` otherwise, an error, not a warning), and the mask (1: the policy sampled the token,
0: a tool wrote it) sums to the number of sampled tokens. That holds when a stop string ends inside a token: the
token is kept whole.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from rollout.tools import Tool, ToolLimits, ToolResult, call_tool, get_tool
from rollout.types import ToolSpec


class TokenDrift(AssertionError):
    """A trajectory's ids differ from what the engine was given and sampled: the trainer would score a sequence
    the policy never produced."""


@dataclass(frozen=True)
class TurnFormat:
    """How a call is written: the block that holds the code, and the output block the engine stops on."""

    code_open: str = "```python\n"
    code_close: str = "```"
    output_open: str = "```output"  # the stop string: the policy asks for the output here
    output_close: str = "\n```\n"


@dataclass(frozen=True)
class Turn:
    """One engine request's answer: the sampled ids, their logprobs, and why it stopped ("stop" with the stop
    string that fired, or "length")."""

    token_ids: Sequence[int]
    logprobs: Sequence[float]
    finish_reason: str
    stop_reason: str | None = None


@dataclass
class Trajectory:
    prompt_ids: list[int]
    key: int = 0  # its index in the call (its requests' seeds)
    ids: list[int] = field(default_factory=list)  # everything after the prompt: sampled and tool tokens
    mask: list[int] = field(default_factory=list)  # 1: sampled by the policy, 0: written by a tool
    logprobs: list[float] = field(default_factory=list)  # the engine's, 0.0 on tool tokens
    versions: list[int] = field(default_factory=list)  # the weight version of each sampled token (-1 on tool tokens)
    calls: list[ToolResult] = field(default_factory=list)
    finish_reason: str = ""
    void_turn: bool = False  # a turn that asked for output with no complete code block before it

    @property
    def full(self) -> list[int]:
        return self.prompt_ids + self.ids

    @property
    def generated(self) -> int:
        return sum(self.mask)


def take_turn(t: Trajectory, request: Sequence[int], turn: Turn, version: int) -> None:
    """Appends a sampled turn after checking that the engine was given exactly the trajectory's ids."""
    if list(request) != t.full:
        raise TokenDrift(f"the engine was given {len(request)} ids that are not the trajectory's {len(t.full)}")
    t.ids += turn.token_ids
    t.mask += [1] * len(turn.token_ids)
    t.logprobs += turn.logprobs
    t.versions += [version] * len(turn.token_ids)
    check(t, list(request) + list(turn.token_ids))


def check(t: Trajectory, engine_ids: Sequence[int]) -> None:
    """The identity the trainer relies on, after every turn: `engine_ids` (the last request's prompt ids plus its
    output ids) equal the trajectory's, and the mask counts the sampled tokens."""
    if list(engine_ids) != t.full:
        raise TokenDrift(f"the trajectory's ids differ from the engine's at position "
                         f"{next((i for i, (a, b) in enumerate(zip(engine_ids, t.full)) if a != b), min(len(engine_ids), len(t.full)))}")
    if not len(t.ids) == len(t.mask) == len(t.logprobs) == len(t.versions):
        raise TokenDrift(f"per-token records disagree: {len(t.ids)} ids, {len(t.mask)} mask, {len(t.logprobs)} logprobs")


def code_of(text: str, fmt: TurnFormat) -> str | None:
    """The code of the last complete block in a turn that stopped on the output opening (which may end inside the
    turn's last token, so text can follow it), or None: a void turn."""
    stop = text.rfind(fmt.output_open)
    body = (text[:stop] if stop >= 0 else text).rstrip()
    if not body.endswith(fmt.code_close):
        return None
    start = body.rfind(fmt.code_open, 0, len(body) - len(fmt.code_close))
    if start < 0:
        return None
    return body[start + len(fmt.code_open): len(body) - len(fmt.code_close)]


def clip(ids: list[int], max_tokens: int, marker: list[int]) -> list[int]:
    """At most `max_tokens` of `ids`: the head and the tail, `marker` between them, when it is too long."""
    if len(ids) <= max_tokens:
        return ids
    room = max(0, max_tokens - len(marker))
    head = room - room // 2
    return ids[:head] + marker[: max_tokens - room] + (ids[len(ids) - room // 2:] if room // 2 else [])


def output_text(result: ToolResult, fmt: TurnFormat, lead: str = "\n") -> str:
    """The output block's rest after its opening: `lead` (the newline after the opening, unless the turn's last
    token already held it), the output, the closing."""
    return lead + result.text.rstrip("\n") + fmt.output_close


def lead_of(text: str, fmt: TurnFormat) -> str:
    """"" when what the turn sampled after the output opening (the rest of the token the stop ended in) already
    holds the newline that opens the block's body, else "\n"."""
    after = text[text.rfind(fmt.output_open) + len(fmt.output_open):]
    return "" if after.endswith("\n") else "\n"


@dataclass(frozen=True)
class ToolSettings:
    tool: Tool
    limits: ToolLimits = ToolLimits()
    fmt: TurnFormat = TurnFormat()
    max_calls: int = 4
    max_output_tokens: int = 256
    concurrency: int = 8


def settings_of(spec: ToolSpec) -> ToolSettings:
    """The loop's settings from a Sampling's ToolSpec (the tool looked up by name)."""
    fmt = TurnFormat(spec.code_open, spec.code_close, spec.output_open, spec.output_close)
    return ToolSettings(get_tool(spec.name), ToolLimits(spec.timeout_s, spec.cpu_s, spec.memory_mb), fmt,
                        max_calls=spec.max_calls, max_output_tokens=spec.max_output_tokens, concurrency=spec.concurrency)


Generate = Callable[[list[list[int]], list[list[str]], list[int], list[int]], list[tuple[Turn, int]]]
"""(requests, each request's extra stop strings, its token budget, its trajectory's key) -> (turn, weight version)
each: an engine that answers a batch at once (wrapped in Batched)."""


class Engine(Protocol):
    """The engine's part of the loop, request by request: `submit` queues a trajectory's next turn (its ids, extra
    stop strings and token budget), `step` advances the engine and returns the turns that finished, as (key, turn,
    weight version); `busy` while any is unfinished. Turns are submitted while others decode."""

    def submit(self, key: int, request: list[int], stop: list[str], budget: int) -> None: ...

    def step(self) -> list[tuple[int, Turn, int]]: ...

    @property
    def busy(self) -> bool: ...


class Batched:
    """An Engine over a Generate function: each step answers every turn queued since the last (scripted engines)."""

    def __init__(self, generate: Generate):
        self.generate, self.queue = generate, []

    def submit(self, key: int, request: list[int], stop: list[str], budget: int) -> None:
        self.queue.append((key, request, stop, budget))

    @property
    def busy(self) -> bool:
        return bool(self.queue)

    def step(self) -> list[tuple[int, Turn, int]]:
        queue, self.queue = self.queue, []
        keys, requests, stops, budgets = (list(x) for x in zip(*queue))
        return [(k, turn, v) for k, (turn, v) in zip(keys, self.generate(requests, stops, budgets, keys))]


@dataclass(frozen=True)
class Budget:
    """How long a trajectory may grow: the engine's `max_model_len` (prompt and answer), and `max_new_tokens` for
    the answer (sampled and tool tokens alike)."""

    max_model_len: int
    max_new_tokens: int | None = None

    def room(self, t: Trajectory) -> int:
        room = self.max_model_len - len(t.full)
        return room if self.max_new_tokens is None else min(room, self.max_new_tokens - len(t.ids))


@dataclass
class ToolRollout:
    trajectories: list[Trajectory]
    engine_idle_s: float  # how long the engine had nothing to decode while calls ran


@dataclass
class Call:
    """A call under way: its trajectory, the output's lead, and when a worker began it (empty while queued)."""

    trajectory: Trajectory
    lead: str
    future: concurrent.futures.Future
    began: list[float]


def run_turns(prompts: list[list[int]], engine: Engine, tokenizer, s: ToolSettings, budget: Budget | int,
              ) -> ToolRollout:
    """One trajectory per prompt, generated turn by turn until every trajectory has ended (a stop without a call,
    `max_calls` reached, a void turn, or no room left: "length"). A turn that asks for a call has its call run in a
    pool of `s.concurrency` threads while the engine decodes the other trajectories; when the call returns, its
    output joins the trajectory and its next turn is submitted. `budget`: a Budget, or the engine's max_model_len."""
    budget = budget if isinstance(budget, Budget) else Budget(budget)
    trajectories = [Trajectory(list(p), key=i) for i, p in enumerate(prompts)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=s.concurrency, thread_name_prefix="purerl-tool") as pool:
        loop = TurnLoop(engine, pool, tokenizer, s, budget)
        for t in trajectories:
            loop.send(t)
        while engine.busy or loop.calls:
            if engine.busy:
                for key, turn, version in engine.step():
                    loop.on_turn(trajectories[key], turn, version)
            loop.collect(block=not engine.busy)
    return ToolRollout(trajectories, loop.idle_s)


class TurnLoop:
    """The loop's state: what each trajectory last sent the engine, the calls under way, the engine's idle time."""

    def __init__(self, engine: Engine, pool: concurrent.futures.Executor, tokenizer, s: ToolSettings, budget: Budget):
        self.engine, self.pool, self.tokenizer, self.s, self.budget = engine, pool, tokenizer, s, budget
        self.marker = tokenizer.encode("\n...\n", add_special_tokens=False)
        self.sent: dict[int, list[int]] = {}
        self.calls: list[Call] = []
        self.idle_s = 0.0

    def send(self, t: Trajectory) -> None:
        """Submits the trajectory's next turn, or ends it with "length" when it has no room left."""
        room = self.budget.room(t)
        if room <= 0:
            t.finish_reason = "length"
            return
        self.sent[t.key] = t.full
        self.engine.submit(t.key, t.full, [self.s.fmt.output_open] if len(t.calls) < self.s.max_calls else [], room)

    def on_turn(self, t: Trajectory, turn: Turn, version: int) -> None:
        """A finished turn: appended (checked); its call started, or the trajectory ended (void, or no call)."""
        take_turn(t, self.sent[t.key], turn, version)
        if turn.finish_reason != "stop" or turn.stop_reason != self.s.fmt.output_open:
            t.finish_reason = turn.finish_reason
            return
        text = self.tokenizer.decode(turn.token_ids)
        code = code_of(text, self.s.fmt)
        if code is None:
            t.finish_reason, t.void_turn = "stop", True
            return
        began: list[float] = []
        future = self.pool.submit(_timed_call, self.s.tool, code, self.s.limits, began)
        self.calls.append(Call(t, lead_of(text, self.s.fmt), future, began))

    def collect(self, block: bool) -> None:
        """Appends the output of every call that returned (or was given up on, 1 s past its wall limit) and submits
        its trajectory's next turn. `block`: the engine has nothing to decode; wait for the first call (idle time)."""
        give_up = self.s.limits.wall_s + 1.0
        if block and self.calls:
            now = time.monotonic()
            wait = min((c.began[0] + give_up - now for c in self.calls if c.began), default=give_up)
            concurrent.futures.wait([c.future for c in self.calls], timeout=max(wait, 0.0),
                                    return_when=concurrent.futures.FIRST_COMPLETED)
            self.idle_s += time.monotonic() - now
        for c in list(self.calls):
            if c.future.done():
                result = c.future.result()
            elif c.began and time.monotonic() > c.began[0] + give_up:
                result = ToolResult(f"TimeoutError: the code ran past {self.s.limits.wall_s:g} s", "timeout",
                                    time.monotonic() - c.began[0])
            else:
                continue
            self.calls.remove(c)
            append_output(c.trajectory, result, c.lead, self)
            if not c.trajectory.finish_reason:
                self.send(c.trajectory)


def _timed_call(tool: Tool, code: str, limits: ToolLimits, began: list[float]) -> ToolResult:
    began.append(time.monotonic())
    return call_tool(tool, code, limits)


def append_output(t: Trajectory, result: ToolResult, lead: str, loop: TurnLoop) -> None:
    """The call's output block (cut to `max_output_tokens`, and to the room left) joins the trajectory with mask 0;
    no room left after it ends the trajectory with "length"."""
    t.calls.append(result)
    ids = clip(loop.tokenizer.encode(output_text(result, loop.s.fmt, lead), add_special_tokens=False),
               loop.s.max_output_tokens, loop.marker)
    room = max(0, loop.budget.room(t))
    t.ids += ids[:room]
    t.mask += [0] * len(ids[:room])
    t.logprobs += [0.0] * len(ids[:room])
    t.versions += [-1] * len(ids[:room])
    if len(ids) >= room:
        t.finish_reason = "length"
