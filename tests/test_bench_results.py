"""Benchmark results are kept per machine kind (``benchmarks.common``): a run on one CPU model
never replaces, nor merges rows into, another model's."""

from __future__ import annotations

import json
import os

# importing the benchmarks package turns the compilation cache off (os.environ) for the
# benchmarks' own processes: this worker, and what its later tests start, keep their setting
_SETTING = os.environ.get("XMODALITY_JAX_CACHE")
from benchmarks import common  # noqa: E402

if _SETTING is None:
    os.environ.pop("XMODALITY_JAX_CACHE", None)
else:
    os.environ["XMODALITY_JAX_CACHE"] = _SETTING

import pytest  # noqa: E402


@pytest.mark.parametrize("cpu, kind", [("Intel(R) Xeon(R) Processor", "intel-xeon-processor"),
                                       ("AMD EPYC 7B13", "amd-epyc-7b13"),
                                       ("Apple M2 (TM) Pro", "apple-m2-pro"), ("", "unknown")])
def test_machine_kind_is_a_file_name_slug_of_the_cpu_model(cpu, kind):
    assert common.machine_kind({"machine": {"cpu": cpu}}) == kind


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    cpu = {"model": "AMD EPYC"}
    monkeypatch.setattr(common, "_cpu_model", lambda: cpu["model"])
    return tmp_path, cpu


def test_a_run_on_another_cpu_keeps_the_previous_kinds_run(results):
    folder, cpu = results
    common.write_result("demo", {"rows": [1]})
    common.write_result("demo", {"rows": [2]})  # same kind: replaced, nothing archived
    assert sorted(p.name for p in folder.iterdir()) == ["demo.json"]
    assert common.read_result("demo")["rows"] == [2]

    cpu["model"] = "Intel(R) Xeon(R) Processor"
    assert common.read_result("demo") is None  # another kind's rows are not merged into ours
    common.write_result("demo", {"rows": [3]})
    assert sorted(p.name for p in folder.iterdir()) == ["demo.json", "demo@amd-epyc.json"]
    assert common.read_result("demo")["rows"] == [3]
    [kept] = common.other_machines("demo")
    assert kept["rows"] == [2] and kept["machine"]["cpu"] == "AMD EPYC"

    cpu["model"] = "AMD EPYC"  # back on the first kind: its archive is replaced by the newer run
    common.write_result("demo", {"rows": [4]})
    assert sorted(p.name for p in folder.iterdir()) == ["demo.json",
                                                        "demo@intel-xeon-processor.json"]
    assert json.loads((folder / "demo.json").read_text())["rows"] == [4]
    assert [r["rows"] for r in common.other_machines("demo")] == [[3]]
