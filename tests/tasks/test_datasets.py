"""Real datasets from local files (the ``dataset`` task): GSM8K and MATH layouts in parquet and JSONL
through Hugging Face ``datasets``, answer extraction, column renames, one-line errors; the chat
template and system prompt options."""

from __future__ import annotations

import json
import os
import runpy
from pathlib import Path

import pytest

from entropic_tune.config import TaskConfig, load_config
from entropic_tune.errors import UserError
from entropic_tune.tasks import build_task
from entropic_tune.tasks.layouts import load_layout

datasets = pytest.importorskip("datasets")

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "entropic_tune" / "data" / "samples"

MATH_ROWS = [
    {"problem": "Simplify $\\frac{2}{4}$.", "solution": "Divide: $\\boxed{\\frac{1}{2}}$."},
    {"problem": "Rationalise $1/\\sqrt{2}$.", "solution": "So $\\boxed{\\frac{\\sqrt{2}}{2}}$ "
     "(not \\boxed{2})... finally \\boxed{\\dfrac{\\sqrt{2}}{2}}"},
    {"problem": "Solve $x^2=4$, $x>0$.", "solution": "$x=\\boxed{2}$"},
    {"problem": "Which set?", "solution": "It is $\\boxed{\\{1,\\{2,3\\}\\}}$."},
]
GSM8K_ROWS = [
    {"question": "Tom has 3 and gets 4. How many?", "answer": "3+4 = <<3+4=7>>7\n#### 7"},
    {"question": "A shop sells 1000 pens and 250 more.", "answer": "1000+250=1250\n#### 1,250"},
    {"question": "Half of 5?", "answer": "5/2=2.5\n#### 2.5"},
]


def write(rows: list[dict], path: Path) -> Path:
    """``rows`` as parquet (through datasets) or JSONL, by the suffix."""
    if path.suffix == ".parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_gsm8k_layout_loads_and_extracts_the_answer_after_hashes(tmp_path: Path, suffix: str) -> None:
    problems = load_layout(write(GSM8K_ROWS, tmp_path / f"g{suffix}"), "task.path")
    assert [p.prompt for p in problems] == [r["question"] for r in GSM8K_ROWS]
    assert [p.answer for p in problems] == ["7", "1,250", "2.5"]
    assert [p.solution for p in problems] == [r["answer"] for r in GSM8K_ROWS]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_math_layout_loads_the_last_boxed_answer_with_nested_braces(tmp_path: Path, suffix: str) -> None:
    problems = load_layout(write(MATH_ROWS, tmp_path / f"m{suffix}"), "task.path")
    assert [p.answer for p in problems] == ["\\frac{1}{2}", "\\dfrac{\\sqrt{2}}{2}", "2", "\\{1,\\{2,3\\}\\}"]
    assert problems[1].solution == MATH_ROWS[1]["solution"]
    # an answer column wins over the boxed answer (MATH-500's layout)
    with_answer = [{**r, "answer": a} for r, a in zip(MATH_ROWS, ["0.5", "1/sqrt(2)", "2", "S"], strict=True)]
    assert [p.answer for p in load_layout(write(with_answer, tmp_path / f"a{suffix}"), "k")] == \
        ["0.5", "1/sqrt(2)", "2", "S"]


def test_the_shipped_sample_loads_in_both_formats_and_matches_its_generator() -> None:
    script = runpy.run_path(str(ROOT / "scripts" / "make_sample_data.py"))
    expected = script["gsm8k_layout"](script["make_rows"]())
    for name in ("gsm8k_sample.parquet", "gsm8k_sample.jsonl"):
        task = build_task(TaskConfig(name="dataset", path=str(SAMPLES / name)))
        problems = task._train + task.eval_problems()
        assert [p.prompt for p in problems] == [r["question"] for r in expected]
        assert [p.solution for p in problems] == [r["answer"] for r in expected]
        assert all(task.reward(p, p.solution) == 1.0 for p in problems)
        assert all(task.reward(p, f"#### {int(p.answer) + 1}") == 0.0 for p in problems)
        assert len(task.eval_problems()) == 64


def test_dataset_task_rewards_math_answers_with_math_verify(tmp_path: Path) -> None:
    pytest.importorskip("math_verify")
    path = write(MATH_ROWS * 2, tmp_path / "m.parquet")
    task = build_task(TaskConfig(name="dataset", path=str(path), eval_size=2))
    first = task._train[0]
    assert first.answer == "\\frac{1}{2}"
    assert task.reward(first, "so \\boxed{0.5}") == 1.0
    assert task.reward(first, "so \\boxed{0.33}") == 0.0


def test_column_renames_and_explicit_layout(tmp_path: Path) -> None:
    rows = [{"q": r["question"], "sol": r["answer"]} for r in GSM8K_ROWS]
    path = write(rows, tmp_path / "renamed.jsonl")
    with pytest.raises(UserError, match="match no layout"):
        load_layout(path, "task.path")
    problems = load_layout(path, "task.path", "gsm8k", ("q", "sol", None))
    assert [p.answer for p in problems] == ["7", "1,250", "2.5"]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_missing_column_is_one_line_naming_column_and_file(tmp_path: Path, suffix: str) -> None:
    rows = [{"question": r["question"], "solution": r["answer"]} for r in GSM8K_ROWS]
    path = write(rows, tmp_path / f"bad{suffix}")
    with pytest.raises(UserError) as info:
        load_layout(path, "task.path", "gsm8k")
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "no column 'answer'" in message
    assert "columns: question, solution" in message


@pytest.mark.parametrize(
    ("rows", "layout", "needle"),
    [
        ([{"question": "q", "answer": "7"}], "gsm8k", "row 0: column 'answer' has no '#### <answer>'"),
        ([{"problem": "p", "solution": "no box"}], "math", "row 0: column 'solution' has no \\boxed"),
        ([{"problem": "p", "solution": "\\boxed{1"}], "math", "has no \\boxed"),
        ([{"question": "", "answer": "#### 1"}], "gsm8k", "row 0: column 'question' must be a non-empty"),
    ],
)
def test_bad_rows_are_one_line_errors(tmp_path: Path, rows: list[dict], layout: str, needle: str) -> None:
    path = write(rows, tmp_path / "rows.jsonl")
    with pytest.raises(UserError, match=needle.replace("\\", "\\\\").replace("(", "\\(")) as info:
        load_layout(path, "task.path", layout)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_layout(tmp_path / "nope.parquet", "task.path")
    with pytest.raises(UserError, match=r"must end in \.parquet, \.jsonl or \.json"):
        load_layout(write(GSM8K_ROWS, tmp_path / "data.csv"), "task.path")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not a parquet file")
    with pytest.raises(UserError, match="cannot be read as parquet") as info:
        load_layout(broken, "task.eval_path")
    assert "\n" not in str(info.value) and "task.eval_path" in str(info.value)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="empty.jsonl"):
        load_layout(empty, "task.path")


def test_loading_is_offline_and_leaves_the_environment_as_it_was(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    seen: list[tuple[str | None, bool]] = []
    real = datasets.load_dataset

    def spy(*args: object, **kwargs: object) -> object:
        seen.append((os.environ.get("HF_DATASETS_OFFLINE"), datasets.config.HF_DATASETS_OFFLINE))
        assert kwargs["cache_dir"] and Path(str(kwargs["cache_dir"])).is_dir()
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", spy)
    load_layout(write(GSM8K_ROWS, tmp_path / "g.jsonl"), "task.path")
    assert seen == [("1", True)]
    assert "HF_DATASETS_OFFLINE" not in os.environ


def test_config_keys_and_cross_checks() -> None:
    cfg = load_config({"task.name": "dataset", "task.path": "x.parquet", "task.layout": "math",
                       "task.answer_column": "final"})
    assert cfg.task.layout == "math" and cfg.task.answer_column == "final"
    with pytest.raises(UserError, match="task.layout: 'gsm' is not allowed"):
        load_config({"task.layout": "gsm"})
    with pytest.raises(UserError, match="task.path: is required when task.name is 'dataset'"):
        load_config({"task.name": "dataset"})
    with pytest.raises(UserError, match="task.chat_template: true needs a model with a chat template"):
        load_config({"task.chat_template": True})
    with pytest.raises(UserError, match="task.system_prompt: needs model.path"):
        load_config({"task.system_prompt": "Think step by step."})


def test_chat_template_and_system_prompt_in_encode_prompt() -> None:
    from entropic_tune.model.policy import Policy, build_char_tokenizer, use_chat_template

    tokenizer = build_char_tokenizer("abcdefghijklmnopqrstuvwxyz :.<>|\n")
    with pytest.raises(UserError, match="task.chat_template: true, but the tokenizer in 'tiny' has no"):
        use_chat_template(TaskConfig(chat_template=True), tokenizer, "tiny")
    assert use_chat_template(TaskConfig(), tokenizer, "tiny") is False
    plain = Policy(model=None, tokenizer=tokenizer, device=None, system_prompt="be brief")  # type: ignore[arg-type]
    assert plain.decode(plain.encode_prompt("add")) == "be brief\n\nadd"
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}|{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    assert use_chat_template(TaskConfig(), tokenizer, "tiny") is True
    assert use_chat_template(TaskConfig(chat_template=False), tokenizer, "tiny") is False
    chat = Policy(model=None, tokenizer=tokenizer, device=None, use_chat_template=True,  # type: ignore[arg-type]
                  system_prompt="be brief")
    assert chat.decode(chat.encode_prompt("add")) == "<system>be brief|<user>add|<assistant>"
    chat.system_prompt = None
    assert chat.decode(chat.encode_prompt("add")) == "<user>add|<assistant>"


@pytest.mark.slow
def test_a_local_model_trains_on_the_shipped_sample_with_its_chat_template_and_a_system_prompt(
        tmp_path, fast_config, capsys) -> None:
    """End to end: GSM8K-layout parquet, a local HF folder whose tokenizer has a chat template, a
    system prompt; the prompts the trainer samples from carry both, and the length check warns."""
    import string

    import transformers

    from entropic_tune.engines.native.trainer import Trainer
    from entropic_tune.model.limits import check_limits
    from entropic_tune.model.policy import build_char_tokenizer

    tok = build_char_tokenizer(string.printable)
    tok.chat_template = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id))
    model.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    cfg = load_config({**fast_config, "model.path": str(tmp_path / "hf"), "task.name": "dataset",
                       "task.path": str(SAMPLES / "gsm8k_sample.parquet"), "task.chat_template": True,
                       "task.system_prompt": "Answer after ####.", "rollout.max_new_tokens": 16})
    check_limits(cfg)
    assert "entropic-tune: warning: rollout.max_new_tokens=16 cuts" in capsys.readouterr().err
    trainer = Trainer(cfg)
    policy = trainer.policy
    assert policy.use_chat_template and policy.system_prompt == "Answer after ####."
    text = policy.decode(policy.encode_prompt("Q?"))
    assert text == "<system>Answer after ####.\n<user>Q?\n<assistant>"
    rows = [trainer.step() for _ in range(2)]
    assert all(r["actor/entropy"] > 0 for r in rows)
