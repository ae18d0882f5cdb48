"""The final model is written before the final evaluation (issue 16): an evaluation that fails
(here one raising ZeroDivisionError, as `eval.samples=0` once did) never loses the trained model."""
from __future__ import annotations

import pytest
from transformers import AutoConfig

from test_distributed import build_trainer


def test_a_failing_final_evaluation_leaves_the_final_model_on_disk(tiny_model_dir, dist, tmp_path):
    trainer = build_trainer(dist, tiny_model_dir, tmp_path, steps=1)
    calls = []

    def evaluator(engine, step):
        calls.append(step)
        return {} if len(calls) == 1 else 1 / 0  # the evaluation after training fails

    trainer.evaluator = evaluator
    trainer.config.eval.before_training = True
    with pytest.raises(ZeroDivisionError):
        trainer.fit(final_dir=tmp_path / "final")
    assert calls == [0, 1]
    assert trainer.final_path == tmp_path / "final"
    assert (tmp_path / "final" / "model.safetensors").is_file()
    assert AutoConfig.from_pretrained(tmp_path / "final").model_type == "qwen2_vl"
