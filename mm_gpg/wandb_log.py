"""Weights & Biases, next to TensorBoard (`logging.wandb: {project, entity, mode, name}`; rank 0).

The run gets the resolved config, every metrics record (through MetricsLogger) and, at each
rollout step, the step's rollouts as a table (one row per completion). Its id is kept in the run
folder (`wandb_run_id`), so that a resumed run continues the same W&B run; W&B drops the records
a resumed run logs again for steps it already has. `mode: offline` writes under
`OUTPUT_DIR/wandb/` for a later `wandb sync`."""
from __future__ import annotations

import secrets
from pathlib import Path

from .config import Config, to_dict

ROLLOUT_COLUMNS = ["step", "kind", "group", "draw", "task", "question", "answer", "valid", "alpha", "completion",
                   "reward", "advantage", "finish_reason", "parse_failure", "image"]


def start_wandb(config: Config):
    """A W&B run for `config` (None when `logging.wandb` is empty)."""
    settings = config.logging.wandb
    if not settings:
        return None
    import wandb
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    id_file = out / "wandb_run_id"
    run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
    id_file.write_text(run_id + "\n")
    return wandb.init(project=settings["project"], entity=settings.get("entity"), name=settings.get("name"),
                      mode=settings.get("mode", "online"), dir=str(out), id=run_id, resume="allow",
                      config=to_dict(config))


def rollout_table(run, step: int, records: list[dict]) -> None:
    """Log one step's rollout records (train groups or held-out answers) as a W&B table."""
    import wandb
    table = wandb.Table(columns=ROLLOUT_COLUMNS)
    for r in records:
        image = r["images"][0] if r.get("images") else None
        for c in r["completions"]:
            table.add_data(step, r["kind"], r.get("group", r.get("index")), r.get("draw"), r["task"], r["question"],
                           str(r["answer"]), r.get("valid"), r.get("alpha"), c["text"], c["reward"], c.get("advantage"),
                           c["finish_reason"], c.get("parse_failure"), image)
    run.log({f"rollouts/{records[0]['kind'] if records else 'train'}": table}, step=step)
