"""docs/rewards.md, section "Add a verifier": its example and its test template run as written."""
import importlib.util
import os
import re

from rewards.scorer import resolve_specs

REWARDS_DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "rewards.md")


def test_rewards_doc_example_and_template_run(tmp_path, monkeypatch):
    doc = open(REWARDS_DOC, encoding="utf-8").read()
    text = doc.split("\n## Add a verifier\n", 1)[1].split("\n## ", 1)[0]
    example, template = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(example.strip().splitlines()) <= 12  # "a complete ten-line example"
    (tmp_path / "my_rewards").mkdir()
    (tmp_path / "my_rewards" / "short_answer.py").write_text(example)
    (tmp_path / "doc_template_test.py").write_text(template)
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("doc_template_test", tmp_path / "doc_template_test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.test_short_answer()
    # the YAML snippet's specs are valid
    specs = [{"name": "accuracy", "weight": 1.0}, {"name": "format_r1", "weight": 0.5},
             {"fn": "my_rewards/short_answer.py:short_answer", "weight": 0.2}]
    assert [s["component"] for s in resolve_specs(specs)] == ["accuracy", "format", "short_answer"]
