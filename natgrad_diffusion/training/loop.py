r"""The crater fine-tuning loop: sample → features → rewards → advantages → update, with logs and exact resume.

One *episode* (one policy update) on each process:

1. take the next ``batch_size / images_per_prompt`` training prompts (cycling through the prompt file) and sample
   ``images_per_prompt`` images each with the policy (seeds from the episode, the rank and ``seed``);
2. extract image features, **all-gather them over the processes**, and score the gathered set with the reward
   (:class:`~natgrad_diffusion.rewards.feature_reward.FeatureReward`); each process keeps the per-image rewards of its own
   images, so set-level rewards and their leave-one-out credits are those of the global batch;
3. advantages (critic + GAE, or per-prompt normalised rewards) and the TRPO / PPO update of
   :mod:`natgrad_diffusion.training.agents`, data-parallel over the processes;
4. rank 0 appends a CSV row (rewards, KL, step size, CG iterations and residual, line-search outcome, critic loss,
   batch metrics, timings), flushed at once; every ``grid_every`` episodes an image grid; every
   ``checkpoint_every`` episodes a checkpoint (:mod:`natgrad_diffusion.training.checkpoints`).

:func:`~natgrad_diffusion.training.run_setup.open_run` builds what a run is made of; :class:`Trainer` is the loop as an
object (:meth:`~Trainer.evaluate`, :meth:`~Trainer.restore`, :meth:`~Trainer.episode`, :meth:`~Trainer.close`);
:func:`train` runs both.

Run directory (``out``, :mod:`natgrad_diffusion.core.rundir`)::

    run.json              configuration, versions, seed, processes, feature extractor, reference (+ resumes)
    run.lock              held while a run is going (a second run into the directory refuses)
    train.csv             one row per episode (flushed per row; a resume drops rows after its checkpoint)
    checkpoint.pt         policy, critic, optimizers, stat tracker, RNG states of every rank (atomic replace,
                          SHA-256 checksum)
    policy/               the policy in its own format (:func:`natgrad_diffusion.sampling.policies.load_policy`) and the
                          manifest of its files' digests
    grids/episode_*.png   training batches, one row per prompt
    evaluation.md/.json   pretrained model vs initial policy vs fine-tuned policy on the eval prompts
    eval_*.png            the evaluation images of each row (eval_comparison.png: real | pretrained | fine-tuned)
    plots/training_curves.png   reward, KL, metrics against the episode

A run starts only in a new or empty folder, continues its own run (``resume``) or replaces it (``overwrite``,
which removes only the files listed above): :func:`natgrad_diffusion.core.rundir.check_run_dir` decides before the
model is loaded, and a folder that is not a run is never written to.

**Exact resume.**  Sampling seeds are a function of the episode, so ``N`` episodes in one go and ``k`` + resume +
``N − k`` produce the same CSV rows (timing columns aside) and the same weights.

**Processes.**  Under ``torchrun`` (``WORLD_SIZE > 1``) :func:`train` initialises ``torch.distributed`` (NCCL on
GPUs, gloo on CPUs), checks that every rank was started with the same settings, each rank samples its own
``batch_size`` images with its own seeds, and only rank 0 writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from ..core.config import TRAINING, TrainingConfig, config_dict
from ..core.errors import TrainingError
from ..core.integrity import IntegrityError, verify_manifest
from ..core.logs import CSVLogger, read_csv, update_metadata
from ..core.processes import (
    Processes,
    barrier,
    check_same_settings,
    setup_processes,
)
from ..core.rundir import (
    CSV_FILE,
    POLICY_DIR,
    grid_image,
)
from ..evaluation.metrics import batch_metrics, table_columns
from ..evaluation.plots import plot_run, save_image_grid
from ..rewards.feature_reward import images_uint8
from ..sampling.policies import DiffusionPolicy, load_policy
from .checkpoints import export_policy, restore, save_checkpoint
from .checks import parse_mode, prepare_config
from .episode_log import CSV_COLUMNS, kl_from_start, policy_std, update_columns
from .run_setup import SEED_STRIDE, RunInputs, make_agent, open_run

__all__ = ["TrainResult", "Trainer", "load_policy_from_run", "make_agent", "run_prepared", "train"]


@dataclass
class TrainResult:
    """What :func:`train` returns (on every rank; ``rows`` and ``evaluation`` are complete on rank 0).

    Attributes:
        run_dir: the run directory.
        config: the configuration that ran.
        episodes: episodes completed (including those before a resume).
        rows: the CSV rows of the whole run (as written, strings).
        evaluation: ``{"pretrained" | "initial policy" | "fine-tuned": metrics}`` (empty without evaluation).
        policy: the trained policy; components: the model it samples with.
        feature_extractor: the extractor's metadata (``pretrained`` says whether real weights were used).
        columns: the ``(key, label)`` columns of the evaluation table (:func:`~natgrad_diffusion.evaluation.metrics.table_columns`).
        best_prompt: the baseline's best fixed prompt (``None`` when not evaluated).
    """

    run_dir: Path
    config: TrainingConfig
    episodes: int
    rows: list[dict[str, str]] = field(default_factory=list)
    evaluation: dict[str, dict[str, float]] = field(default_factory=dict)
    policy: DiffusionPolicy | None = None
    components: Any = None
    feature_extractor: dict[str, Any] = field(default_factory=dict)
    columns: list[tuple[str, str]] = field(default_factory=list)
    best_prompt: str | None = None


class Trainer:
    """The fine-tuning loop of one run, as an object: :meth:`evaluate` (the before/after table), :meth:`restore`
    (the checkpoint's state and the CSV log), :meth:`episode` (one update and its CSV row), :meth:`run`,
    :meth:`close`.

    Everything the run is made of comes in ``inputs`` (:func:`~natgrad_diffusion.training.run_setup.open_run`); the loop's own
    state (samples so far, wall time, the CSV log) is set here and changed only by :meth:`restore` and
    :meth:`episode`.  Use :func:`train`, which also initialises the processes and sets the threads.
    """

    def __init__(
        self,
        config: TrainingConfig,
        procs: Processes,
        inputs: RunInputs,
        stack: ExitStack,
        *,
        progress: bool = True,
        say: Callable[[str], None] = print,
    ) -> None:
        self.config, self.procs, self.inputs = config, procs, inputs
        self.progress, self.say = progress, say
        self.run_dir = Path(config.out)
        self.stack = stack  # what the run holds (its lock, the CSV file), released by close() or on an error
        self.episodes_done = inputs.start_episode
        self.samples, self.wall_before, self.t_loop = 0, 0.0, time.perf_counter()
        self.csv: CSVLogger | None = None  # opened by restore()

    # ------------------------------------------------------------------ evaluation
    @property
    def evaluation(self) -> dict[str, dict[str, float]]:
        """The evaluation rows so far (empty without evaluation)."""
        return self.inputs.evaluator.rows if self.inputs.evaluator is not None else {}

    def evaluate(self, when: str) -> None:
        """``when="before"``: the pretrained model, the baselines and the initial policy (reused on resume);
        ``"after"``: the fine-tuned policy, ``evaluation.md`` and the real | pretrained | fine-tuned grid
        (:class:`~natgrad_diffusion.evaluation.run_evaluation.RunEvaluation`).  Rank 0 only."""
        if self.inputs.evaluator is None:
            return
        if when == "before":
            self.inputs.evaluator.before(
                self.inputs.agent.policy, resumed=self.inputs.payload is not None, say=self.say
            )
        else:
            self.inputs.evaluator.after(self.inputs.agent.policy, say=self.say)

    # ------------------------------------------------------------------ the loop
    def restore(self) -> None:
        """Put the checkpoint's state into the agent (resume; ``policy/`` is exported again from it, since a run
        killed during an export may have left an older one) and open the CSV log."""
        if self.inputs.payload is not None:
            restore(self.inputs.agent, self.inputs.payload, self.procs)
            self.samples, self.wall_before = int(self.inputs.payload["samples"]), float(self.inputs.payload["wall_s"])
            if self.procs.main:
                export_policy(self.inputs.agent.policy, self.run_dir / POLICY_DIR)
        else:
            self.samples, self.wall_before = 0, 0.0
        keep = self.inputs.start_episode if self.inputs.payload else None
        self.csv = CSVLogger(self.run_dir / CSV_FILE, CSV_COLUMNS, keep_through=keep, enabled=self.procs.main)
        self.stack.callback(self.csv.close)
        self.t_loop = time.perf_counter()
        self.episodes_done = self.inputs.start_episode

    def _episode_prompts(self, episode: int) -> list[str]:
        per_episode = self.config.batch_size // self.config.images_per_prompt
        start = (episode - 1) * per_episode
        return [self.inputs.prompts[(start + j) % len(self.inputs.prompts)] for j in range(per_episode)]

    def episode(self, episode: int) -> dict[str, Any]:
        """Episode ``episode`` (1-based): sample, score, update, log, grid and checkpoint; returns the CSV row."""
        c, p, reward_fn = self.config, self.procs, self.inputs.reward_fn
        t0 = time.perf_counter()
        seed = c.seed * SEED_STRIDE + ((episode - 1) * p.world + p.rank) * c.batch_size
        rollout = self.inputs.agent.collect(self._episode_prompts(episode), seed=seed)
        t1 = time.perf_counter()
        stats = self.inputs.agent.update(rollout)
        t2 = time.perf_counter()
        self.samples += c.batch_size * p.world
        checkpoint = episode % c.checkpoint_every == 0 or episode == c.episodes
        rewards = reward_fn.last["rewards"]  # the gathered batch
        row: dict[str, Any] = {
            "episode": episode,
            "samples": self.samples,
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std(unbiased=False)),
            "reward_value": reward_fn.last["value"],
            **update_columns(stats, p),
            "kl_start": kl_from_start(self.inputs.agent, rollout.decisions, p) if checkpoint else None,
            "policy_std": policy_std(self.inputs.agent.policy),
            "guidance_mean": float(rollout.trajectory.guidance_scale.float().mean()),
            "eta_mean": float(rollout.trajectory.eta.float().mean()),
            **batch_metrics(
                reward_fn.last["features"],
                reward_fn.last["prompts"],
                self.inputs.reference,
                self.inputs.bandwidth,
                c.vendi_kernel,
            ),
            "time_sample_s": t1 - t0 - reward_fn.last["seconds"],
            "time_reward_s": reward_fn.last["seconds"],
            "time_update_s": t2 - t1,
            "time_episode_s": time.perf_counter() - t0,
            "wall_s": self.wall_before + time.perf_counter() - self.t_loop,
        }
        assert self.csv is not None, "restore() opens the CSV log before the first episode"
        self.csv.log(row)
        if p.main and (episode % c.grid_every == 0 or episode == c.episodes):
            grid = self.run_dir / grid_image(episode)
            save_image_grid(images_uint8(rollout.trajectory.images_float()), grid, ncols=c.images_per_prompt, scale=3)
        if checkpoint:
            save_checkpoint(self.run_dir, self.inputs.agent, c, episode, p, samples=self.samples, wall_s=row["wall_s"])
        self.episodes_done = episode
        return row

    def run(self) -> None:
        """The episodes from the checkpoint's (or 1) to ``config.episodes``, with a progress bar."""
        from tqdm.auto import tqdm

        c = self.config
        bar = tqdm(
            total=c.episodes, initial=min(self.inputs.start_episode, c.episodes), disable=not self.progress,
            desc=f"{parse_mode(c.mode).name} {c.algorithm.upper()} {c.reward}", unit="ep", dynamic_ncols=True,
        )  # fmt: skip
        with bar:
            for episode in range(self.inputs.start_episode + 1, c.episodes + 1):
                row = self.episode(episode)
                bar.update(1)
                bar.set_postfix(reward=f"{row['reward_value']:.4g}", kl=f"{row['kl'] or 0:.2g}", refresh=False)
        if self.inputs.start_episode >= c.episodes and self.inputs.payload is not None:
            self.say(
                f"{self.run_dir} already has {self.inputs.start_episode} episodes (asked for {c.episodes}): nothing to train"
            )

    def close(self, seconds: float) -> TrainResult:
        """Export the policy, evaluate the fine-tuned policy, plot, finish ``run.json``; release the run directory."""
        p = self.procs
        if self.csv is not None:
            self.csv.close()
        if p.main and not (self.run_dir / POLICY_DIR).exists():
            export_policy(self.inputs.agent.policy, self.run_dir / POLICY_DIR)
        self.evaluate("after")
        if p.main:
            if read_csv(self.run_dir / CSV_FILE):
                plot_run(self.run_dir)
            update_metadata(
                self.run_dir, finished=time.strftime("%Y-%m-%d %H:%M:%S"), episodes=self.episodes_done, seconds=seconds
            )
        barrier(p)
        self.stack.close()
        return TrainResult(
            run_dir=self.run_dir,
            config=self.config,
            episodes=max(self.inputs.start_episode, min(self.config.episodes, self.episodes_done)),
            rows=read_csv(self.run_dir / CSV_FILE) if p.main else [],
            evaluation=self.evaluation,
            policy=self.inputs.agent.policy,
            components=self.inputs.components,
            feature_extractor=dict(self.inputs.extractor.metadata),
            columns=table_columns(self.inputs.evaluator.spaces) if self.inputs.evaluator is not None else [],
            best_prompt=self.inputs.evaluator.best_prompt if self.inputs.evaluator is not None else None,
        )


def train(
    config: TrainingConfig = TRAINING,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    explicit: Iterable[str] | None = None,
) -> TrainResult:
    """Run (or resume) the fine-tuning job of ``config``; see the module docstring.

    Args:
        config: the job (``config.test_mode`` applies :data:`~natgrad_diffusion.core.config.TEST_MODE` first).
        resume: continue from ``config.out/checkpoint.pt`` (a fresh start when there is none); configuration fields
            that define the experiment must match the checkpoint's, ``episodes`` may grow.
        overwrite: replace an existing run in ``config.out`` instead of refusing.
        progress: show a progress bar (rank 0).
        log: where rank 0's messages go (``None``: silent).
        explicit: the fields the user set, which test mode leaves alone (``None``: those that differ from the
            defaults).

    Raises:
        TrainingError: bad configuration or inputs, or another run holding ``config.out`` (one-line message).
    """
    return run_prepared(
        prepare_config(config, explicit), resume=resume, overwrite=overwrite, progress=progress, log=log
    )


def run_prepared(
    config: TrainingConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> TrainResult:
    """:func:`train` for a ``config`` from :func:`~natgrad_diffusion.training.checks.prepare_config` (checked there, once; the
    command line checks before it imports torch, then calls this)."""
    start = time.perf_counter()
    procs, initialised_here = setup_processes()
    say = (log or (lambda _msg: None)) if procs.main else (lambda _msg: None)
    threads_before = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        differing = check_same_settings(config_dict(config), procs)
        if differing:
            raise TrainingError(f"the processes were started with different settings ({', '.join(differing)})")
        return _run(config, procs, resume=resume, overwrite=overwrite, progress=progress and procs.main, say=say,
                    start=start)  # fmt: skip
    finally:
        torch.set_num_threads(threads_before)
        if initialised_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def _run(
    config: TrainingConfig, procs: Processes, *, start: float, resume: bool, overwrite: bool, progress: bool,
    say: Callable[[str], None],
) -> TrainResult:  # fmt: skip
    stack = ExitStack()
    try:
        inputs = open_run(config, procs, stack, resume=resume, overwrite=overwrite, say=say)
        trainer = Trainer(config, procs, inputs, stack, progress=progress, say=say)
        trainer.evaluate("before")
        barrier(procs)
        trainer.restore()
        trainer.run()
        result = trainer.close(time.perf_counter() - start)
    except BaseException:
        stack.close()  # the lock and the CSV file
        raise
    barrier(procs)  # no rank tears the group down while another still communicates
    return result


def load_policy_from_run(run_dir: str | Path, components: Any) -> DiffusionPolicy:
    """The policy exported to ``run_dir/policy`` (``LORA_UNET`` injects it into ``components.unet``), its files
    checked against its manifest first.

    Raises:
        TrainingError: no policy, or a damaged one (one line naming the file and how to export it again).
    """
    path = Path(run_dir) / POLICY_DIR
    again = f"delete {path} and run `natgrad-diffusion train --resume --out {run_dir}` to export it again"
    if not path.is_dir():
        raise TrainingError(f"{path} not found: not a run directory, or no checkpoint written yet")
    try:
        verify_manifest(path)
    except IntegrityError as exc:
        raise TrainingError(f"{exc}: {again}") from None
    try:
        return load_policy(path, components)
    except (ValueError, OSError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TrainingError(f"cannot load the policy in {path} ({reason}): {again}") from None
