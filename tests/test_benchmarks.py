"""The CPU speed benchmark (``benchmarks/cpu_speed.py``) at --quick size: it runs, its record
holds the provenance and the ratios as defined, its variant names are checked, a variant's thread
count holds only while it runs, and a failing ``torch.compile`` becomes a row that says so.
The numbers themselves are meaningless at this size and are not checked."""
import importlib
import json
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def cpu_speed(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its neighbour throughput.py
    return importlib.import_module("cpu_speed")


def by_variant(record):
    return {r["variant"]: r for r in record["rows"]}


def test_quick_run_writes_the_record(cpu_speed, tmp_path, monkeypatch):
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path))
    record = cpu_speed.main(["--quick", "--dataset", "synthetic",
                             "--variants", "engine,dataloader+w0"])
    written = json.loads((tmp_path / "results" / "bench" / "cpu_speed.json").read_text())
    assert written == json.loads(json.dumps(record, default=str))
    assert record["benchmark"] == "cpu_speed" and record["device"] == "cpu"
    assert record["cpu"] == cpu_speed.cpu_model()
    assert record["threads"] == torch.get_num_threads()
    assert record["torch_build"]["version"] == torch.__version__
    assert set(record["cpu_flags"]) == set(cpu_speed.CPU_FLAGS)
    assert record["batches"] == [16] and record["steps"] == 2 and record["repeats"] == 1
    rows = by_variant(record)
    assert set(rows) == {"engine", "dataloader+w0"}
    engine, loader = rows["engine"], rows["dataloader+w0"]
    for row in rows.values():
        assert row["batch"] == 16 and row["error"] is None and row["compile_s"] is None
        assert len(row["runs_img_s"]) == 1 and row["img_s"] == row["runs_img_s"][0] > 0
        assert row["first_step_s"] > 0
        assert row["dataloader_reference"] == "dataloader+w0"
    assert (engine["memory_format"], engine["precision"], engine["loader"]) == \
        ("channels_last", "fp32", "tensorloader")
    assert (loader["memory_format"], loader["loader"], loader["workers"]) == \
        ("contiguous", "dataloader", 0)
    assert engine["ratio_engine"] == 1.0 and loader["ratio_dataloader"] == 1.0
    assert engine["ratio_dataloader"] == engine["img_s"] / loader["img_s"]
    assert loader["ratio_engine"] == loader["img_s"] / engine["img_s"]


def test_variant_names(cpu_speed):
    V = cpu_speed.Variant
    parse = cpu_speed.parse_variant
    assert parse("engine") == V("engine")
    assert parse("compile+bf16+t1") == V("compile+bf16+t1", bf16=True, compiled=True, threads=1)
    assert parse("nchw+bf16") == V("nchw+bf16", channels_last=False, bf16=True)
    assert parse("dataloader+w2") == V("dataloader+w2", channels_last=False, workers=2)
    for bad, why in [("bf16+fp8", "unknown variant token 'fp8'"), ("bf16+bf16", "repeats"),
                     ("t0", "must be >= 1"), ("w2", "needs the dataloader token"),
                     ("dataloader", "dataloader\\+wN"), ("dataloader+bf16+w2", "nothing else")]:
        with pytest.raises(ValueError, match=why):
            parse(bad)


def test_bad_variants_are_refused_by_name(cpu_speed, capsys):
    with pytest.raises(SystemExit):
        cpu_speed.main(["--quick", "--dataset", "synthetic", "--variants", "engine,fp8"])
    assert "unknown variant token 'fp8'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cpu_speed.main(["--quick", "--dataset", "synthetic", "--variants", "engine,engine"])
    assert "distinct" in capsys.readouterr().err


def test_thread_count_holds_only_while_the_variant_runs(cpu_speed):
    default, seen = torch.get_num_threads(), []
    run = cpu_speed.Run(cpu_speed.parse_variant("engine+t1"), 16,
                        lambda: seen.append(torch.get_num_threads()))
    cpu_speed.attempt(run, run.step)
    assert seen == [1] and torch.get_num_threads() == default


def test_failed_compile_is_a_row_not_a_crash(cpu_speed, tmp_path, monkeypatch):
    def compile_without_compiler(model, **options):  # torch.compile fails on the first call, not before
        def call(x):
            raise RuntimeError("InductorError: no C++ compiler found\nmore detail")
        return call

    monkeypatch.setattr(torch, "compile", compile_without_compiler)
    record = cpu_speed.main(["--quick", "--dataset", "synthetic", "--variants",
                             "engine,compile+bf16", "--json", str(tmp_path / "r.json")])
    rows = by_variant(record)
    failed = rows["compile+bf16"]
    assert failed["error"] == ("torch.compile failed: RuntimeError: InductorError: no C++ "
                               "compiler found")
    assert failed["img_s"] is None and failed["ratio_engine"] is None
    assert failed["runs_img_s"] == [] and failed["compile_s"] is None
    assert rows["engine"]["error"] is None and rows["engine"]["img_s"] > 0
    assert rows["engine"]["ratio_dataloader"] is None  # no baseline was run


def test_a_failing_uncompiled_variant_raises(cpu_speed):
    def broken():
        raise RuntimeError("a bug")

    run = cpu_speed.Run(cpu_speed.parse_variant("bf16"), 16, broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cpu_speed.attempt(run, run.step)
