"""The CSV row of an update: every update column comes from StepInfo (TRPO) or PPO's statistics, nothing else."""

from dataclasses import fields

from natgrad.trust_region import StepInfo
from natgrad_diffusion.core.processes import Processes
from natgrad_diffusion.training.episode_log import CSV_COLUMNS, UPDATE_COLUMNS, update_columns


def test_every_update_column_is_a_field_of_stepinfo_and_of_the_csv():
    names = {f.name for f in fields(StepInfo)}
    assert set(UPDATE_COLUMNS) <= names and set(UPDATE_COLUMNS) <= set(CSV_COLUMNS)
    assert len(set(CSV_COLUMNS)) == len(CSV_COLUMNS)


def test_trpo_and_ppo_statistics_fill_their_columns():
    one = Processes()
    trpo = {"policy": {"kl": 0.01, "accepted": True, "cg_iterations": 6, "step_size": 0.3}, "critic_loss": None}
    row = update_columns(trpo, one)
    assert row["kl"] == 0.01 and row["accepted"] is True and row["cg_iterations"] == 6 and row["step_size"] == 0.3
    assert row["ppo_loss"] is None and row["clip_fraction"] is None and row["critic_loss"] is None
    ppo = {"policy": {"kl": 0.2, "clip_fraction": 0.1, "loss": -0.5}, "critic_loss": 1.5}
    row = update_columns(ppo, one)
    assert (row["kl"], row["clip_fraction"], row["ppo_loss"], row["critic_loss"]) == (0.2, 0.1, -0.5, 1.5)
    assert all(row[k] is None for k in UPDATE_COLUMNS)  # PPO has no trust-region statistics
