"""TrustRegionConfig: one frozen, validated object; every bad value is a one-line error naming its field."""

from dataclasses import FrozenInstanceError, fields

import pytest

from natgrad.config import TrustRegionConfig, make_config

BAD = [
    dict(max_kl=0.0), dict(max_kl=-1.0), dict(max_kl=float("nan")), dict(max_kl=float("inf")), dict(damping=-0.1),
    dict(cg_iters=0), dict(cg_iters=2.5), dict(cg_rtol=-1.0), dict(cg_atol=float("nan")), dict(backtrack_iters=0),
    dict(backtrack_coeff=1.0), dict(backtrack_coeff=0.0), dict(accept_ratio=-1.0), dict(fvp_method="nope"),
    dict(line_search="no"), dict(adaptive=1), dict(grow=0.5), dict(shrink=1.5),
]  # fmt: skip


@pytest.mark.parametrize("kw", BAD, ids=[f"{k}={v}" for d in BAD for k, v in d.items()])
def test_bad_values_name_their_field(kw):
    name = next(iter(kw))
    with pytest.raises((ValueError, TypeError), match=name) as info:
        TrustRegionConfig(**kw)
    assert "\n" not in str(info.value)


def test_frozen_with_defaults_written_once_and_a_help_per_field():
    cfg = TrustRegionConfig()
    with pytest.raises(FrozenInstanceError):
        cfg.max_kl = 0.1  # type: ignore[misc]
    assert cfg.as_dict() == {f.name: f.default for f in fields(TrustRegionConfig)}
    for f in fields(TrustRegionConfig):
        assert len(f.metadata["help"].split()) >= 3, f.name  # the command line's help lives beside the field


def test_make_config_overrides_keeps_an_unchanged_config_and_names_unknown_keys():
    base = TrustRegionConfig(max_kl=0.05)
    assert make_config(base) is base  # passed whole: not rebuilt, not checked again
    assert make_config(base, cg_iters=3) == TrustRegionConfig(max_kl=0.05, cg_iters=3)
    assert make_config(use_line_search=False).line_search is False  # the kept alias
    with pytest.raises(TypeError, match="maxkl"):
        make_config(maxkl=0.1)
    with pytest.raises(TypeError, match="TrustRegionConfig"):
        make_config({"max_kl": 0.1})  # type: ignore[arg-type]
