"""The multi-turn rollout of tool calls (rollout/tools/turns.py) on token ids, with the real `python` tool in the
real sandbox and the tiny model's real tokenizer. The engine is scripted here (a test about the loop, not about
vLLM): each trajectory's turns are fixed token ids, so token identity, masks, call limits and void turns can be
checked exactly."""

import time
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from rollout.tools import ToolLimits, ToolResult, get_tool
from rollout.tools.turns import (
    Batched,
    TokenDrift,
    ToolSettings,
    Trajectory,
    Turn,
    TurnFormat,
    clip,
    code_of,
    lead_of,
    run_turns,
    take_turn,
)

TOK = AutoTokenizer.from_pretrained("models/tiny-moe-base")
FMT = TurnFormat()


def ids(text: str) -> list[int]:
    return TOK.encode(text, add_special_tokens=False)


def asking(text: str) -> list[int]:
    """`text` then "```output", its last token "t " (a merge of the tokenizer): the stop string ends inside it."""
    assert (text + "```outpu").endswith("```outpu")
    return ids(text + "```outpu") + ids("t ")


class Scripted:
    """The engine's part: hands out each trajectory's next turn, honouring the stop strings it is given (a turn that
    asks for a call when the stop is dropped runs on to its end, as vLLM would), and records every request."""

    def __init__(self, script: list[list[list[int]]]):
        self.script, self.requests, self.stops = [list(s) for s in script], [], []

    def __call__(self, requests, stops, budgets, keys):
        out = []
        for request, stop, budget in zip(requests, stops, budgets):
            i = next(k for k, s in enumerate(self.script) if request[: len(PROMPTS[k])] == PROMPTS[k])
            self.requests.append((i, list(request)))
            self.stops.append((i, list(stop)))
            turn = self.script[i].pop(0)
            fired = FMT.output_open in stop and FMT.output_open in TOK.decode(turn)
            out.append((Turn(turn[:budget], [-0.5] * len(turn[:budget]), "stop" if len(turn) <= budget else "length",
                             FMT.output_open if fired else None), 7))
        return out


PROMPTS = [ids("Q1: 12*34?\n"), ids("Q2: loop\n"), ids("Q3: calls\n"), ids("Q4: void\n")]


def settings(**kw) -> ToolSettings:
    return ToolSettings(**{"tool": get_tool("python"), "limits": ToolLimits(wall_s=3.0), "max_calls": 2, **kw})


def test_a_call_runs_and_every_trajectory_keeps_the_sampled_ids():
    first = asking("Let me compute.\n```python\nprint(12*34)\n```\n")
    loop = asking("```python\nwhile True: pass\n```\n")
    again = asking("```python\nprint(1)\n```\n")
    void = asking("```python\nprint(1)\n")  # the block is never closed
    script = [[first, ids("So 408.")], [loop, ids("It hangs.")], [again, again, again + ids("done")], [void]]
    engine = Scripted(script)
    t0 = time.monotonic()
    got = run_turns(PROMPTS, Batched(engine), TOK, settings(), 512).trajectories
    spent = time.monotonic() - t0

    a, b, c, d = got
    # the tool's output joined with mask 0 after the sampled ids, which are kept whole (the stop ended inside "t ")
    tool = ids("\n408" + FMT.output_close)
    assert a.ids == first + tool + ids("So 408.") and a.calls[0].text == "408\n" and a.calls[0].status == "ok"
    assert a.mask == [1] * len(first) + [0] * len(tool) + [1] * len(ids("So 408."))
    assert a.generated == len(first) + len(ids("So 408.")) and a.versions.count(-1) == len(tool)
    assert a.logprobs == [-0.5] * len(first) + [0.0] * len(tool) + [-0.5] * len(ids("So 408."))
    # every request after the first was the trajectory itself: the last request's prompt plus output is a.full
    last = [r for i, r in engine.requests if i == 0][-1]
    assert last + ids("So 408.") == a.full
    # `while True: pass` comes back as a timeout message within timeout_s + 1 s, and the rollout goes on
    assert b.calls[0].status == "timeout" and "ran past 3 s" in b.calls[0].text and b.finish_reason == "stop"
    assert spent < 3.0 + 1.0 + 3.0  # the hung call and the others ran at once
    # call number max_calls + 1 is not run: the third request had no stop string, and its code stayed text
    assert len(c.calls) == 2 and [s for i, s in engine.stops if i == 2] == [["```output"], ["```output"], []]
    assert c.ids[-len(ids("done")):] == ids("done") and c.finish_reason == "stop"
    # an unclosed block before the output opening is a void turn: no call, the trajectory ends
    assert d.void_turn and d.calls == [] and d.mask == [1] * len(void)


def test_decoding_and_encoding_again_trips_the_identity_check():
    # the policy sampled "t" and " " apart; the tokenizer's own encoding merges them into "t "
    sampled = ids("Le") + ids("t") + ids(" ") + ids("me")
    t = Trajectory(ids("Q: "))
    take_turn(t, t.full, Turn(sampled, [-1.0] * len(sampled), "stop"), 0)
    re_encoded = ids(TOK.decode(t.full))
    assert re_encoded != t.full and TOK.decode(re_encoded) == TOK.decode(t.full)
    with pytest.raises(TokenDrift, match="not the trajectory's"):
        take_turn(t, re_encoded, Turn(ids("x"), [-1.0], "stop"), 0)


def test_tool_output_is_cut_by_tokens_to_head_and_tail_and_to_the_room_left():
    assert clip(list(range(10)), 6, [-1]) == [0, 1, 2, -1, 8, 9]
    assert clip(list(range(4)), 6, [-1]) == [0, 1, 2, 3]
    script = [[asking("```python\nprint('x' * 400)\n```\n"), ids("end")]] + [[ids("a")]] * 3
    got = run_turns(PROMPTS, Batched(Scripted(script)), TOK, settings(max_output_tokens=20), 512).trajectories[0]
    tool = [x for x, m in zip(got.ids, got.mask) if m == 0]
    assert len(tool) == 20 and TOK.decode(tool).endswith("x" + FMT.output_close)
    # no room left after the call: the trajectory ends with finish reason "length", within max_model_len
    short = run_turns(PROMPTS, Batched(Scripted(script)), TOK, settings(),
                      len(PROMPTS[0]) + len(script[0][0]) + 5).trajectories[0]
    assert short.finish_reason == "length" and len(short.full) == len(PROMPTS[0]) + len(script[0][0]) + 5


def test_code_of_reads_the_last_closed_block():
    assert code_of("x\n```python\nprint(1)\n```\n```output", FMT) == "print(1)\n"
    assert code_of("```python\na=1\n```\n```python\nb=2\n```\n```output", FMT) == "b=2\n"
    assert code_of("```python\nprint(1)\n```output", FMT) is None  # unclosed
    assert code_of("no code\n```output", FMT) is None
    # the output block's body opens with a newline once: the turn's last token may hold it already
    assert lead_of("```python\n1\n```\n```output\n", FMT) == "" and lead_of("x```output", FMT) == "\n"
    assert lead_of("x```output ", FMT) == "\n"


def test_128_calls_that_sleep_1_s_take_about_4_s_at_concurrency_32():
    prompts = [ids(f"Q{i}\n") for i in range(128)]
    call = asking("```python\nimport time; time.sleep(1)\n```\n")

    def engine(requests, stops, budgets, keys):
        return [(Turn(call if stop else ids("ok"), [0.0] * len(call if stop else ids("ok")), "stop",
                      FMT.output_open if stop else None), 0) for stop in stops]

    t0 = time.monotonic()
    # the wall limit counts the sandbox's start too: 32 interpreters starting at once on 2 busy cores take seconds
    got = run_turns(prompts, Batched(engine), TOK,
                    settings(max_calls=1, concurrency=32, limits=ToolLimits(wall_s=10.0)), 512).trajectories
    spent = time.monotonic() - t0
    assert [t.calls[0].status for t in got] == ["ok"] * 128, [t.calls[0] for t in got if t.calls[0].status != "ok"][:3]
    assert spent < 40, spent  # about 4 s of sleeping in 4 waves of 32 (5.5 s measured); one after another, 128 s


def test_the_engine_decodes_other_trajectories_while_a_call_runs():
    """One answer's call sleeps 2 s; the others call and answer meanwhile, so the engine waits (idle) only while the
    slow call is the last one left, not for all the calls of a round."""
    slow = asking("```python\nimport time; time.sleep(2)\n```\n")
    quick = asking("```python\nprint(1)\n```\n")
    script = [[slow, ids("a")], [quick, quick, ids("b")], [quick, ids("c")], [ids("d")]]
    engine = Scripted(script)
    sent = []

    def timed(*args):
        sent.append((time.monotonic(), [next(k for k, p in enumerate(PROMPTS) if r[: len(p)] == p) for r in args[0]]))
        return engine(*args)

    t0 = time.monotonic()
    rollout = run_turns(PROMPTS, Batched(timed), TOK, settings(limits=ToolLimits(wall_s=10.0)), 512)
    spent = time.monotonic() - t0
    a, b = rollout.trajectories[:2]
    assert [c.status for c in a.calls] == ["ok"] and [c.status for c in b.calls] == ["ok", "ok"]
    a_resumed = next(t for t, keys in sent if 0 in keys and t > sent[0][0])
    b_done = max(t for t, keys in sent if 1 in keys)
    assert b_done < a_resumed  # b's two calls and its last turn came back while a's call still slept
    # idle: the time with every open trajectory waiting on a call, at least the sleep's tail, less than all of it
    assert 1.0 < rollout.engine_idle_s < spent


def test_a_tool_that_raises_becomes_text():
    def broken(code, limits):
        raise RuntimeError("boom")

    script = [[asking("```python\n1\n```\n"), ids("a")]] + [[ids("a")]] * 3
    got = run_turns(PROMPTS, Batched(Scripted(script)), TOK, settings(tool=broken), 512).trajectories[0]
    assert got.calls == [ToolResult("tool error: RuntimeError: boom", "failed")]


# ---- the code reward's attacks, through the tool: the policy's code sees what a graded program sees

HELDOUT = "rl/tasks/code/data/heldout.jsonl"


@pytest.mark.parametrize("code, said", [
    (f"print(open({str(Path(HELDOUT).resolve())!r}).read()[:50])", "FileNotFoundError"),  # the hidden tests
    ("import socket\ns = socket.create_connection(('1.1.1.1', 80), timeout=1)", "OSError"),  # no network
    ("import os\nprint(os.environ.get('PURERL_TOOL_SECRET', 'unset'))", "unset"),
    (f"import os\nprint(os.path.exists({str(Path.cwd())!r}), os.path.exists('/home'))", "False False"),  # the host's files
    ("import os\nwhile True:\n    os.fork()", ""),  # a fork bomb meets the process limit, and is over at once
], ids=["hidden-tests", "network", "environment", "root", "fork-bomb"])
def test_the_code_reward_attacks_fail_through_the_tool(code, said, monkeypatch):
    monkeypatch.setenv("PURERL_TOOL_SECRET", "s3cret")
    result = get_tool("python")(code, ToolLimits(wall_s=5.0))
    assert said in result.text and "s3cret" not in result.text and result.wall_s < 5.0 + 1.0, result
    assert Path(HELDOUT).read_text().startswith("{")  # the negative: the host reads it


def test_a_file_written_by_the_tool_stays_in_the_sandbox(tmp_path):
    target = tmp_path / "escaped"
    result = get_tool("python")(f"open({str(target)!r}, 'w').write('x')\nprint('wrote')", ToolLimits())
    assert not target.exists(), result


def test_a_tool_of_your_own_by_dotted_path(monkeypatch):
    """A third-party package's tool (tests/plugin_example), named `module:function` in the config, as verifiers are."""
    from rl.config import load_config

    monkeypatch.syspath_prepend(str(Path(__file__).parent / "plugin_example"))
    name = "purerl_plugin_example.tools:word_count"
    assert load_config("configs/tiny.yaml", [f"rollout.tools.name={name}"]).rollout.tools.name == name
    script = [[asking("```python\nthree words here\n```\n"), ids("a")]] + [[ids("a")]] * 3
    got = run_turns(PROMPTS, Batched(Scripted(script)), TOK, settings(tool=get_tool(name)), 512).trajectories[0]
    assert got.calls == [ToolResult("3\n", "ok")]
