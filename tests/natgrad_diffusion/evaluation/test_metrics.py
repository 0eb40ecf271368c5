"""The before/after table."""

from natgrad_diffusion.evaluation.metrics import format_metrics_table


def test_format_metrics_table_with_std():
    rows = {"a": {"mmd2": 0.0123, "fid": 4.5, "vendi": 1.2}, "b": {"mmd2": 1.5e-5, "fid": 3.0, "vendi": 2.0}}
    table = format_metrics_table(rows, std={"a": {"mmd2": 0.001, "fid": 0.5, "vendi": 0.01}})
    lines = table.splitlines()
    assert len(lines) == 4 and lines[2].startswith("| a | 0.0123 ± 0.001 | 4.5 ± 0.5 | 1.2 ± 0.01 |")
    assert "1.50e-05" in lines[3] and "nan" in lines[3]
