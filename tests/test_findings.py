"""The sentences about the shipped models are computed from metrics and state what they show."""

import pytest

from xmodality_lite import findings as fx

PAPER_LIKE = {  # Table 1 of the paper (TopCoW, 1000 DDPM steps): the pattern the book teaches
    r["model"]: {k: r[k] for k in ("mse", "mae", "psnr", "ssim", "fd")}
    for r in fx.PAPER_TABLE1 if r["sampler"] in ("N/A", "ddpm") and r["model"] != "dit"}


def test_paper_table1_is_the_papers():
    """Spot values of Table 1 (paper §4.1), and its shape: the U-Net once, three diffusion
    models with each sampler."""
    rows = {(r["model"], r["sampler"]): r for r in fx.PAPER_TABLE1}
    assert len(rows) == len(fx.PAPER_TABLE1) == 7
    assert rows["unet", "N/A"]["psnr"] == 19.306 and rows["uvit", "ddpm"]["psnr"] == 18.062
    assert rows["dit", "ddim"]["fd"] == 1.904 and rows["adm", "ddpm"]["ssim"] == 0.458
    assert fx.PAPER_STEPS == 1000


def test_paper_table_shows_the_paper_pattern():
    f = fx.findings(PAPER_LIKE)
    assert f.unet_rank == {"mse": 1, "mae": 1, "psnr": 1, "ssim": 1}
    assert f.best_diffusion == "adm" and f.beats_unet_fd == ["adm", "uvit"]
    assert f.paper_pattern
    text = fx.describe(f)
    assert "best on MSE" in text and "ADM and U-ViT are closer" in text
    assert text.endswith("This is the paper's pattern (§4.1, Table 1).")


def test_a_regression_that_wins_everything_is_not_the_pattern():
    worse_fd = {m: {**r, "fd": 20.0} for m, r in PAPER_LIKE.items() if m != "unet"}
    f = fx.findings({"unet": PAPER_LIKE["unet"], **worse_fd})
    assert f.beats_unet_fd == [] and not f.paper_pattern
    assert "No diffusion model beats the U-Net on the Fréchet distance" in fx.describe(f)
    assert "not yet the paper's pattern" in fx.describe(f)


def test_vessels_can_carry_the_pattern():
    worse_fd = {m: {**r, "fd": 20.0} for m, r in PAPER_LIKE.items() if m != "unet"}
    vessels = {"unet": {"vessel_dice": 0.1}, "adm": {"vessel_dice": 0.4},
               "uvit": {"vessel_dice": 0.05}}
    f = fx.findings({"unet": PAPER_LIKE["unet"], **worse_fd}, vessels)
    assert f.beats_unet_vessels == ["adm"] and f.paper_pattern
    assert "The ADM draws arteries" in fx.describe(f)


def test_ranks_follow_the_direction_of_each_metric():
    assert fx.rank({"a": 1.0, "b": 2.0}, "mse") == ["a", "b"]
    assert fx.rank({"a": 1.0, "b": 2.0}, "psnr") == ["b", "a"]


def test_slice_table_bolds_the_best_of_each_column():
    table = fx.slice_table(PAPER_LIKE).splitlines()
    assert table[0].startswith("| model | MSE ↓ | MAE ↓ | PSNR ↑ | SSIM ↑ | FD (stand-in) ↓")
    assert table[2].startswith("| U-Net | **0.02** | **0.067** | **19.3** | **0.528** | 10.5")
    assert "**0.919**" in table[4]


def test_findings_need_the_unet_and_a_diffusion_model():
    with pytest.raises(ValueError, match="U-Net"):
        fx.findings({"adm": PAPER_LIKE["adm"]})
    with pytest.raises(ValueError, match="diffusion"):
        fx.findings({"unet": PAPER_LIKE["unet"]})


def test_check_readme_replaces_only_the_block():
    record = {"slices": {"n": 3, "steps": 32, "metrics": PAPER_LIKE}, "training": {}}
    text = f"before\n{fx.SUMMARY_START}\nstale\n{fx.SUMMARY_END}\nafter\n"
    out = fx.check_readme(text, record)
    assert out.startswith("before\n") and out.endswith(f"{fx.SUMMARY_END}\nafter\n")
    assert "stale" not in out and "| U-Net |" in out
    assert fx.check_readme(out, record) == out  # idempotent
    with pytest.raises(ValueError, match="markers"):
        fx.check_readme("no block", record)


def test_best_vessels_is_the_diffusion_model_with_the_highest_vessel_dice():
    from xmodality_lite.findings import findings

    row = {"mse": 0.02, "mae": 0.1, "psnr": 17.0, "ssim": 0.5, "fd": 0.3}
    slices = {"unet": {**row, "ssim": 0.6}, "uvit": {**row, "ssim": 0.55}, "dit": row}
    vessels = {"unet": {"vessel_dice": 0.07}, "uvit": {"vessel_dice": 0.02},
               "dit": {"vessel_dice": 0.20}}
    f = findings(slices, vessels)
    assert f.best_diffusion == "uvit" and f.best_vessels == "dit"
    assert findings(slices).best_vessels == "uvit"  # no vessels scored: the best by SSIM


def _paper_record():
    """A record with both tables: DDIM-32 ``slices`` in which the ADM is best by SSIM, and a
    paper-protocol ``table1`` whose DDPM rows make the U-ViT best."""
    ddim32 = {**PAPER_LIKE, "adm": {**PAPER_LIKE["adm"], "ssim": 0.5}}
    rows = [{**r, "fd_extractor": "standin"} for r in fx.PAPER_TABLE1]
    rows = [{**r, "ssim": 0.47} if (r["model"], r["sampler"]) == ("uvit", "ddpm") else r
            for r in rows]
    return {"slices": {"n": 3, "steps": 32, "metrics": ddim32},
            "table1": {"n": 3, "steps": 1000, "seed": 0, "seconds": 60.0, "rows": rows},
            "training": {}}


def test_findings_read_the_paper_protocol_ddpm_rows_when_recorded():
    record = _paper_record()
    assert fx.headline_slices(record)["uvit"]["ssim"] == 0.47
    assert set(fx.headline_slices(record)) == {"unet", "adm", "uvit", "dit"}
    assert fx.record_findings(record).best_diffusion == "uvit"
    del record["table1"]
    assert fx.record_findings(record).best_diffusion == "adm"  # older records: the DDIM slices


def test_table1_markdown_bolds_the_best_row_and_sets_the_paper_beside_it():
    rows = [{**r, "fd_extractor": "standin"} for r in fx.PAPER_TABLE1]
    table = fx.table1_markdown(rows).splitlines()
    assert table[0] == ("| model | sampler | MSE ↓ | MAE ↓ | PSNR ↑ | SSIM ↑ | FD (stand-in) ↓ "
                        "| paper PSNR | paper SSIM |")
    assert len(table) == 2 + 7
    assert table[2] == ("| U-Net | – | **0.02** | **0.067** | **19.31** | **0.528** | 10.5 "
                        "| 19.31 | 0.528 |")
    assert table[5].startswith("| DiT | DDPM |") and "**0.816**" in table[5]
    ours = [{**rows[0], "model": "unet", "psnr": 25.0}, {**rows[2], "sampler": "euler"}]
    assert fx.table1_markdown(ours).splitlines()[3].endswith("| – | – |")  # no paper row


def test_readme_summary_leads_with_the_paper_protocol_table():
    text = fx.readme_summary(_paper_record())
    assert "Table 1 as the paper ran it: 3 held-out test slices" in text
    assert "1000 sampling steps with DDPM and with DDIM" in text
    assert text.index("| paper PSNR |") < text.index("The lessons sample with DDIM 32 steps")
    assert "The best diffusion model by SSIM is the U-ViT" in text


@pytest.mark.parametrize(("low", "high", "p", "n", "verdict"), [
    (-0.01, 0.2, 0.5, 8, "the interval contains 0"),
    (0.05, 0.2, 0.25, 3, "cannot give p below 2/2^3 = 0.250"),
    (0.05, 0.2, 0.0078125, 8, "the interval excludes 0 and the sign-flip test agrees"),
])
def test_paired_verdict_says_what_the_interval_and_p_allow(low, high, p, n, verdict):
    row = {"model": "dit", "reference": "unet", "metric": "vessel_dice", "difference": 0.13,
           "low": low, "high": high, "p_value": p, "n": n}
    text = fx.paired_verdict(row)
    assert text.startswith(f"Paired over the same {n} patients, DiT − U-Net vessel Dice: "
                           f"Δ = +0.130 [{low:+.3f}, {high:+.3f}], p = {p:.3f}: ")
    assert verdict in text
