"""Public code-dataset formats (HumanEval, MBPP, APPS/TACO, CodeContests, PRIME/verl ground truths): each fixture
in tests/data/formats/ is in its dataset's exact layout. A canonical solution scores 1 through the sandbox, a
wrong one 0, and a malformed row stops the load with its file, row and key."""

import json

import pytest

from rewards import get_verifier
from rewards.code.spec import to_spec
from rl.data import load_prompts
from rl.data.prompts import DatasetError

FIXTURES = "tests/data/formats"
CODE = get_verifier("code")


def fenced(src: str) -> str:
    return f"<think> ok </think> <answer> ```python\n{src}\n``` </answer>"



CASES = {  # format -> (fixture, data_source, [(right program, wrong program) per row])
    "humaneval": ("humaneval.jsonl", "code", None),  # right: the row's own prompt + canonical_solution
    "mbpp": ("mbpp.jsonl", "code", [("def min_of_three(a, b, c):\n    return min(a, b, c)", "def min_of_three(a, b, c):\n    return max(a, b, c)"),
                                    ("def count_vowels(s):\n    return sum(c in 'aeiou' for c in s)", "def count_vowels(s):\n    return len(s) // 2")]),
    "apps": ("apps.jsonl", "code", [("a, b = map(int, input().split())\nprint(a + b)", "a, b = map(int, input().split())\nprint(a - b)"),
                                    ("class Solution:\n    def maxGap(self, nums):\n        best, low = 0, float('inf')\n"
                                     "        for x in nums:\n            best, low = max(best, x - low), min(low, x)\n        return best",
                                     "class Solution:\n    def maxGap(self, nums):\n        return max(nums) - min(nums)")]),
    "codecontests": ("codecontests.jsonl", "code", [("print(2 * int(input()))", "print(int(input()) + 2)")]),
    "verl": ("verl_code.parquet", "codecontests", [("print(int(input()) ** 2)", "print(int(input()) + 10)"),
                                                   ("def triple(x):\n    return 3 * x", "def triple(x):\n    return x + 20")]),
}


def programs(fmt, rows):
    if fmt != "humaneval":
        return CASES[fmt][2]
    gutted = "    return None\n"  # the signature and docstring kept, the body gone
    return [(r.prompt + r.info["canonical_solution"], r.prompt + gutted) for r in rows]


@pytest.mark.parametrize("fmt", list(CASES))
def test_a_canonical_solution_scores_one_and_a_wrong_one_zero(fmt):
    name, source, _ = CASES[fmt]
    rows = load_prompts(f"{FIXTURES}/{name}", format=fmt)
    assert rows[0].data_source == source
    pairs = programs(fmt, rows)
    assert len(pairs) == len(rows)
    for row, (right, wrong) in zip(rows, pairs):
        good, bad = CODE(fenced(right), row.answer, time_limit_s=5.0), CODE(fenced(wrong), row.answer, time_limit_s=5.0)
        assert (good.score, good.status) == (1.0, "ok"), (fmt, row.index, good)
        assert (bad.score, bad.status) == (0.0, "wrong"), (fmt, row.index, bad)


def test_each_format_reads_the_tests_it_holds():
    apps = load_prompts(f"{FIXTURES}/apps.jsonl", format="apps")
    assert json.loads(apps[0].answer) == {"kind": "stdio", "cases": [{"input": "1 2\n", "output": "3\n"},
                                                                     {"input": "10 -3\n", "output": "7\n"}]}
    assert json.loads(apps[1].answer)["fn_name"] == "maxGap" and "Start from this code" in apps[1].prompt
    cc = json.loads(load_prompts(f"{FIXTURES}/codecontests.jsonl", format="codecontests")[0].answer)
    assert [c["input"] for c in cc["cases"]] == ["3\n", "0\n", "-4\n", "1000000\n"]  # public, private, generated
    mbpp = json.loads(load_prompts(f"{FIXTURES}/mbpp.jsonl", format="mbpp")[1].answer)
    assert mbpp["entry_point"] == "count_vowels" and mbpp["test"].startswith("WORD = 'education'")
    verl = load_prompts(f"{FIXTURES}/verl_code.parquet", format="verl")
    assert [r.data_source for r in verl] == ["codecontests", "apps"]


def test_apps_wrapped_call_outputs_count_either_way():
    spec = to_spec({"fn_name": "f", "inputs": [[1], [2]], "outputs": [[2], 4]})  # APPS writes both forms
    assert CODE(fenced("def f(x):\n    return 2 * x"), spec, time_limit_s=5.0).score == 1.0
    assert CODE(fenced("def f(x):\n    return [2 * x]"), spec, time_limit_s=5.0).score == 0.5  # [4] is not 4


def write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("fmt,row,key,says", [
    ("humaneval", {"prompt": "def f():\n", "test": "def check(c): pass", "entry_point": "not a name"}, "test", "entry_point"),
    ("humaneval", {"prompt": "def f():\n", "entry_point": "f"}, "test", "has no 'test'"),
    ("mbpp", {"text": "t", "test_list": []}, "test_list", "non-empty list"),
    ("mbpp", {"text": "t", "test_list": ["print(1)"]}, "test_list", "assert name"),
    ("apps", {"question": "q", "input_output": "{not json"}, "input_output", "not JSON"),
    ("apps", {"question": "q", "input_output": json.dumps({"inputs": ["1\n"], "outputs": []})}, "input_output", "as many outputs"),
    ("apps", {"question": "q", "input_output": json.dumps({"fn_name": "f", "inputs": [1], "outputs": [1]})}, "input_output",
     "list of arguments"),
    ("codecontests", {"description": "d", "public_tests": {"input": [], "output": []}}, "public_tests", "at least one"),
    ("verl", {"prompt": [{"role": "user", "content": "q"}], "data_source": "apps",
              "reward_model": {"ground_truth": json.dumps({"inputs": ["1"], "outputs": [1]})}}, "reward_model.ground_truth",
     "stdio output must be text"),
])
def test_a_malformed_code_row_names_file_row_and_key(tmp_path, fmt, row, key, says):
    good = {"humaneval": {"prompt": "def f():\n", "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"},
            "mbpp": {"text": "t", "test_list": ["assert f() == 1"]},
            "apps": {"question": "q", "input_output": json.dumps({"inputs": ["1\n"], "outputs": ["1\n"]})},
            "codecontests": {"description": "d", "public_tests": {"input": ["1\n"], "output": ["1\n"]}},
            "verl": {"prompt": [{"role": "user", "content": "q"}], "data_source": "apps",
                     "reward_model": {"ground_truth": json.dumps({"inputs": ["1\n"], "outputs": ["1\n"]})}}}[fmt]
    path = write(tmp_path / "bad.jsonl", [good, row])
    with pytest.raises(DatasetError, match=rf"bad\.jsonl: row 1, key '{key}'") as e:
        load_prompts(path, format=fmt)
    assert says in str(e.value)
    assert len(load_prompts(write(tmp_path / "ok.jsonl", [good]), format=fmt)) == 1
