"""`calprompt toy ...`: commands of the embedded toy world (thin: parse, call `calprompt.toy`, print)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

toy_app = typer.Typer(name="toy", no_args_is_help=True)


@toy_app.callback()
def toy() -> None:
    """The embedded toy world and its tiny CLIP."""  # a callback keeps `pretrain` a sub-command on its own


@toy_app.command("pretrain")
def pretrain_command(
    out: Path = typer.Option(..., "--out", help="Directory for the checkpoint and the resumable state."),
    steps: int | None = typer.Option(
        None, "--steps", min=1, help="Total steps; the default recipe's stages are scaled to it (default: full recipe)."
    ),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed", min=0),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
    workers: int = typer.Option(1, "--workers", min=0, help="Data-generation worker processes (0: in the loop)."),
    log_every: int = typer.Option(50, "--log-every", min=1),
    checkpoint_every: int = typer.Option(200, "--checkpoint-every", min=1),
    evaluate: str | None = typer.Option(
        None,
        "--eval",
        help="Comma-separated toy datasets to evaluate zero-shot at the end (default: all of them; '' for none).",
    ),
) -> None:
    """Pretrain the toy CLIP contrastively (resumes from OUT/state); writes OUT/toy_clip.safetensors + .json."""
    from calprompt.toy.downstream import TOY_DATASETS
    from calprompt.toy.pretrain import DEFAULT_RECIPE, pretrain, scale_recipe

    evaluate = ",".join(TOY_DATASETS) if evaluate is None else evaluate

    stages = DEFAULT_RECIPE if steps is None else scale_recipe(DEFAULT_RECIPE, steps)
    result = pretrain(
        out,
        stages,
        batch_size=batch_size,
        seed=seed,
        device=device,
        num_workers=workers,
        log_every=log_every,
        checkpoint_every=checkpoint_every,
        eval_datasets=[name.strip() for name in evaluate.split(",") if name.strip()],
    )
    typer.echo(f"checkpoint: {result.checkpoint} ({result.steps} steps, {result.seconds:.0f} s this session)")
    typer.echo(json.dumps({"zero_shot_test": result.zero_shot}, indent=2))
