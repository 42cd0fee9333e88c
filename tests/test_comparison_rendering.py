"""components/comparison_{stats,figures,rendering}.py: the report's numbers, words and files.

The expected numbers are worked out by hand from the synthetic accuracies below; the t
quantile for 2 degrees of freedom is t(0.975, 2) = 4.302653, and a two-sided p-value with
2 degrees of freedom is 1 - |t| / sqrt(t^2 + 2). What the seeds can tell apart: 3 paired seeds
whose differences spread by s detect 5.6535 * s / sqrt(3) with 80% power (the noncentral t's
noncentrality at 2 degrees of freedom; tests/test_comparison_power.py checks it against the
closed-form integral), and an effect of 1 s needs 10 seeds (the published paired-t size).
"""

import base64
import io
import json
import re

import pytest
from PIL import Image

from components.comparison import rendering
from components.comparison.stats import RunResult, compare

STEPS_PER_EPOCH = 50


def history(method, seed, final_gap=None, epochs=2):
    """Two epochs of 10 and 11 + seed seconds; passes: 1 per step plain, else 2."""
    per_step = 1 if method == "plain" else 2
    records = []
    for epoch in range(1, epochs + 1):
        record = {
            "epoch": epoch,
            "loss": 1.0 / epoch + seed / 100,
            "val_accuracy": 0.5 + epoch / 10 + seed / 100,
            "learning_rate": 0.1 / epoch,
            "seconds": 10.0 if epoch == 1 else 11.0 + seed,
            "steps": STEPS_PER_EPOCH * epoch,
            "passes": STEPS_PER_EPOCH * epoch * per_step,
        }
        if final_gap is not None:
            record.update(surrogate_gap=final_gap * epoch / epochs, rho=0.04 / epoch)
        records.append(record)
    return {"method": method, "config": {}, "epochs": records}


def run(method, seed, accuracy, gap=None, per_class=None, extra=None):
    return RunResult(
        method=method,
        seed=seed,
        eval_accuracy=accuracy,
        per_class_accuracy=per_class or {},
        history=history(method, seed, gap),
        extra_metrics=extra or {},
    )


# plain: mean 0.81, std 0.01. sam - plain per seed: +0.03, +0.02, +0.01 (mean 0.02, std 0.01,
# t = 3.4641, p = 0.0742). gsam - plain: +0.05, +0.06, +0.04 (mean 0.05, std 0.01,
# t = 8.6603, p = 0.0131); gsam: mean 0.86, std sqrt(0.0003) = 0.017321.
THREE_SEEDS = [
    run("plain", 1, 0.80, per_class={"0": 0.70, "1": 0.90}),
    run("plain", 2, 0.82, per_class={"0": 0.72, "1": 0.92}),
    run("plain", 3, 0.81, per_class={"0": 0.74, "1": 0.88}),
    run("sam", 1, 0.83, gap=0.010, per_class={"0": 0.80, "1": 0.86}),
    run("sam", 2, 0.84, gap=0.012, per_class={"0": 0.81, "1": 0.87}),
    run("sam", 3, 0.82, gap=0.014, per_class={"0": 0.82, "1": 0.82}),
    run("gsam", 1, 0.85, gap=0.005, per_class={"0": 0.80, "1": 0.90}),
    run("gsam", 2, 0.88, gap=0.006, per_class={"0": 0.86, "1": 0.90}),
    run("gsam", 3, 0.85, gap=0.007, per_class={"0": 0.80, "1": 0.90}),
]
# Training time: 10 + (11 + seed) seconds, mean over seeds 1..3 = 23.0 s.
EXPECTED_TABLE = [
    [
        "method",
        "eval accuracy (mean ± std)",
        "n",
        "95% CI",
        "gain over plain [95% CI]",
        "p (paired t)",
        "final surrogate gap",
        "training time",
        "forward-backward passes",
        "perturbed steps",
    ],
    # 0.81 -+ 4.302653 * 0.01 / sqrt(3) = 0.81 -+ 0.024841
    ["plain", "0.8100 ± 0.0100", "3", "[0.7852, 0.8348]", "—", "—", "—", "23.0 s", "100", "—"],
    [
        "sam",
        "0.8300 ± 0.0100",
        "3",
        "[0.8052, 0.8548]",
        "+0.0200 [-0.0048, +0.0448]",
        "0.074",
        "0.012",
        "23.0 s",
        "200",
        "100.0%",
    ],
    # 0.86 -+ 4.302653 * 0.017321 / sqrt(3) = 0.86 -+ 0.043027
    [
        "gsam",
        "0.8600 ± 0.0173",
        "3",
        "[0.8170, 0.9030]",
        "+0.0500 [+0.0252, +0.0748]",
        "0.013",
        "0.006",
        "23.0 s",
        "200",
        "100.0%",
    ],
]
# Both gains' differences spread by s = 0.01 (1 point): 5.6535 * 1 / sqrt(3) = 3.26 points.
EXPECTED_SIGNIFICANCE = [
    "sam vs plain: +0.0200 (95% CI [-0.0048, +0.0448]) over 3 paired seeds; paired t-test "
    "p = 0.074: not significant at 5%, and differences below 3.26 points cannot be told apart "
    "with 3 seeds; about 10 seeds would tell apart 1.00 points.",
    "gsam vs plain: +0.0500 (95% CI [+0.0252, +0.0748]) over 3 paired seeds; paired t-test "
    "p = 0.013: significant at 5%; with 3 seeds, differences of 3.26 points or more are told "
    "apart (80% power).",
]
EXPECTED_POWER_TABLE = (
    [
        "method",
        "paired seeds with plain",
        "std of paired differences (points)",
        "detectable difference (points, 80% power)",
        "seeds to tell apart 1.00 points",
    ],
    [["sam", "3", "1.00", "3.26", "10"], ["gsam", "3", "1.00", "3.26", "10"]],
)
# The winner's gains. gsam - sam per seed: +0.02, +0.04, +0.03 (mean 0.03, std 0.01,
# t = 5.1962, p = 0.0351).
EXPECTED_MARGINS = [
    EXPECTED_SIGNIFICANCE[1],
    "gsam vs sam: +0.0300 (95% CI [+0.0052, +0.0548]) over 3 paired seeds; paired t-test "
    "p = 0.035: significant at 5%; with 3 seeds, differences of 3.26 points or more are told "
    "apart (80% power).",
]


def test_three_seeds_give_the_expected_table_gains_and_winner():
    comparison = compare(THREE_SEEDS)
    header, rows = rendering.results_table(comparison)
    assert [header, *rows] == EXPECTED_TABLE
    assert rendering.significance_lines(comparison) == EXPECTED_SIGNIFICANCE
    assert rendering.power_table(comparison) == EXPECTED_POWER_TABLE
    assert rendering.margin_lines(comparison) == EXPECTED_MARGINS
    assert rendering.winner_lines(comparison) == [
        "Winner: gsam, mean eval accuracy 0.8600.",
        rendering.WINNER_RULE,
        "best_model: gsam seed 2 (eval accuracy 0.8800).",
    ]
    assert rendering.per_class_table(comparison) == (
        ["class", "plain", "sam", "gsam"],
        [["0", "0.7200", "0.8100", "0.8200"], ["1", "0.9000", "0.8500", "0.9000"]],
    )


def test_perturbed_steps_are_the_passes_beyond_one_per_step():
    """gsam-k5 ran the perturbed pass on 10 of its 50 steps per epoch (passes 60 per epoch);
    gsam-auto's seeds spent 12% and 14% of their steps on it: the column shows their mean."""
    runs = []
    shares = [("gsam-k5", 1, 0.2), ("gsam-k5", 2, 0.2), ("gsam-auto", 1, 0.12), ("gsam-auto", 2, 0.14)]
    for method, seed, share in shares:
        result = run(method, seed, 0.8)
        for record in result.history["epochs"]:
            record["passes"] = round(record["steps"] * (1 + share))
        runs.append(result)
    comparison = compare(runs)
    _, rows = rendering.results_table(comparison)
    assert [(row[0], row[-1]) for row in rows] == [("gsam-k5", "20.0%"), ("gsam-auto", "13.0%")]
    assert comparison.to_dict()["runs"][2]["perturbed_fraction"] == pytest.approx(0.12)


def test_the_markdown_report_holds_the_table_settings_and_figures():
    files = rendering.report_files(
        compare(THREE_SEEDS), {"budget": "equal-compute", "epochs": 2, "label noise": 0.3}
    )
    report = files["report.md"].decode()
    for line in EXPECTED_TABLE:
        assert f"| {' | '.join(line)} |" in report
    for sentence in EXPECTED_SIGNIFICANCE + EXPECTED_MARGINS:
        assert f"- {sentence}" in report
    assert f"### {rendering.POWER_TITLE}" in report
    header, rows = EXPECTED_POWER_TABLE
    for line in [header, *rows]:
        assert f"| {' | '.join(line)} |" in report
    assert rendering.POWER_NOTE in report
    assert "- budget: equal-compute\n- epochs: 2\n- label noise: 0.3" in report
    assert rendering.WINNER_RULE in report
    for name in ("eval_accuracy", "training_loss", "surrogate_gap", "rho_and_learning_rate"):
        assert f"]({name}.png)" in report
        assert f"{name}.png" in files


def test_one_seed_claims_no_significance():
    comparison = compare([run("plain", 1, 0.80), run("gsam", 1, 0.83, gap=0.004)])
    _, rows = rendering.results_table(comparison)
    assert rows == [
        ["plain", "0.8000", "1", "—", "—", "—", "—", "22.0 s", "100", "—"],
        ["gsam", "0.8300", "1", "—", "+0.0300", "—", "0.004", "22.0 s", "200", "100.0%"],
    ]
    assert rendering.significance_lines(comparison) == [
        "gsam vs plain: +0.0300 on one seed (seed 1); no significance can be claimed from a "
        "single seed, and no detectable difference can be computed: one seed has no spread."
    ]
    assert rendering.power_table(comparison)[1] == [["gsam", "1", "—", "—", "—"]]
    assert comparison.winner.method == "gsam"


def test_a_tie_to_four_decimals_goes_to_the_cheaper_method():
    # 0.83996 and 0.84004 both round to 0.8400; plain trains with half the passes.
    comparison = compare([run("sam", 1, 0.84004, gap=0.01), run("plain", 1, 0.83996)])
    assert comparison.winner.method == "plain"
    assert rendering.winner_lines(comparison)[:3] == [
        "Winner: plain, mean eval accuracy 0.8400.",
        "It ties with sam at 0.8400 to 4 decimals and wins the tie because it needs fewer "
        "forward-backward passes (100 against sam 200).",
        "The tie with sam is only a lack of power: with one seed no detectable difference can "
        "be computed.",
    ]


# plain and sam both average 0.81; sam - plain per seed: +0.01, -0.01, 0 (std 0.01).
SPREAD_TIE = [
    run("plain", 1, 0.80),
    run("plain", 2, 0.82),
    run("plain", 3, 0.81),
    run("sam", 1, 0.81, gap=0.01),
    run("sam", 2, 0.81, gap=0.01),
    run("sam", 3, 0.81, gap=0.01),
]
TIE = (
    "It ties with sam at 0.8100 to 4 decimals and wins the tie because it needs fewer "
    "forward-backward passes (100 against sam 200)."
)


def test_a_tie_the_seeds_cannot_resolve_is_only_a_lack_of_power():
    comparison = compare(SPREAD_TIE)
    assert comparison.winner.method == "plain"
    assert rendering.winner_lines(comparison)[1:3] == [
        TIE,
        "The tie with sam is only a lack of power: differences below 3.26 points cannot be told "
        "apart with 3 seeds; about 10 seeds would tell apart 1.00 points.",
    ]
    assert rendering.margin_lines(comparison) == [
        "plain vs sam: +0.0000 (95% CI [-0.0248, +0.0248]) over 3 paired seeds; paired t-test "
        "p = 1.000: not significant at 5%, and differences below 3.26 points cannot be told "
        "apart with 3 seeds; about 10 seeds would tell apart 1.00 points."
    ]


def test_a_tie_with_power_for_the_target_says_so():
    # Seeking 5 points, 3 seeds that tell apart 3.26 are enough.
    comparison = compare(SPREAD_TIE, target_difference=0.05)
    assert rendering.winner_lines(comparison)[1:3] == [
        TIE,
        "The tie with sam is not only a lack of power: with 3 seeds, differences of 3.26 points "
        "or more are told apart (80% power).",
    ]
    assert rendering.significance_lines(comparison) == [
        "sam vs plain: +0.0000 (95% CI [-0.0248, +0.0248]) over 3 paired seeds; paired t-test "
        "p = 1.000: not significant at 5%; with 3 seeds, differences of 3.26 points or more are "
        "told apart (80% power), so a true difference of 5.00 points would most likely have "
        "shown."
    ]
    assert rendering.power_table(comparison) == (
        [*EXPECTED_POWER_TABLE[0][:-1], "seeds to tell apart 5.00 points"],
        [["sam", "3", "1.00", "3.26", "3"]],
    )


def test_no_sentence_calls_a_failed_test_a_tie_or_a_match():
    for target in (0.01, 0.05):
        for runs in (THREE_SEEDS, SPREAD_TIE):
            comparison = compare(runs, target_difference=target)
            lines = rendering.significance_lines(comparison) + rendering.margin_lines(comparison)
            assert not [line for line in lines if re.search(r"\b(ties?|match(es)?)\b", line)]


def test_a_tie_at_equal_cost_goes_to_the_method_listed_first():
    comparison = compare(
        [run("plain", 1, 0.80), run("sam", 1, 0.84, gap=0.01), run("gsam", 1, 0.84, gap=0.01)]
    )
    assert comparison.winner.method == "sam"
    assert rendering.winner_lines(comparison)[1] == (
        "It ties with gsam at 0.8400 to 4 decimals and wins the tie because it is listed first "
        "among methods with as few forward-backward passes."
    )


# Sharpness of each run's model. plain: eigenvalues 10, 14 (mean 12, std sqrt(8) = 2.828),
# gaps 0.3, 0.5 (mean 0.4, std sqrt(0.02) = 0.1414); gsam: 6, 8 (mean 7, std sqrt(2) = 1.414),
# 0.1, 0.2 (mean 0.15, std sqrt(0.005) = 0.07071). sam has none of them.
SHARPNESS_RUNS = [
    run("plain", 1, 0.80, extra={"top eigenvalue": 10.0, "loss increase": 0.3}),
    run("plain", 2, 0.81, extra={"top eigenvalue": 14.0, "loss increase": 0.5}),
    run("sam", 1, 0.82, gap=0.01),
    run("gsam", 1, 0.82, gap=0.01, extra={"top eigenvalue": 6.0, "loss increase": 0.1}),
    run("gsam", 2, 0.83, gap=0.01, extra={"top eigenvalue": 8.0, "loss increase": 0.2}),
]
EXPECTED_MEASURES = (
    ["method", "top eigenvalue", "loss increase"],
    [
        ["plain", "12 ± 2.828", "0.4 ± 0.1414"],
        ["sam", "—", "—"],
        ["gsam", "7 ± 1.414", "0.15 ± 0.07071"],
    ],
)


def test_extra_metrics_get_a_table_of_mean_and_std_over_seeds():
    comparison = compare(SHARPNESS_RUNS)
    assert rendering.measures_table(comparison) == EXPECTED_MEASURES
    assert rendering.results_table(comparison)[0] == EXPECTED_TABLE[0]
    files = rendering.report_files(comparison, {})
    report = files["report.md"].decode()
    assert f"## {rendering.MEASURES_TITLE}" in report
    header, rows = EXPECTED_MEASURES
    for line in [header, *rows]:
        assert f"| {' | '.join(line)} |" in report
    page = files["report.html"].decode()
    assert "<tr><td>gsam</td><td>7 ± 1.414</td><td>0.15 ± 0.07071</td></tr>" in page
    methods = json.loads(files["results.json"])["methods"]
    plain = methods[0]["extra_metrics"]["top eigenvalue"]
    assert (plain["mean"], plain["n"]) == (12.0, 2)
    assert plain["std"] == pytest.approx(8**0.5, rel=1e-12)
    assert methods[1]["extra_metrics"] == {}
    lines = rendering.terminal_summary(comparison).splitlines()
    table = lines[lines.index(rendering.MEASURES_TITLE) + 1 :][:5]
    assert [re.split(r"\s{2,}", line.strip()) for line in table[:1] + table[2:]] == [
        header,
        *rows,
    ]


def test_without_extra_metrics_there_is_no_measures_table():
    comparison = compare(THREE_SEEDS)
    assert rendering.measures_table(comparison) is None
    assert rendering.MEASURES_TITLE not in rendering.terminal_summary(
        comparison
    )
    report = rendering.report_files(comparison, {})["report.md"].decode()
    assert rendering.MEASURES_TITLE not in report


def test_the_pngs_decode_at_their_size():
    files = rendering.report_files(compare(THREE_SEEDS), {})
    pngs = {name: data for name, data in files.items() if name.endswith(".png")}
    assert len(pngs) == 4
    for data in pngs.values():
        image = Image.open(io.BytesIO(data))
        image.load()
        assert (image.format, image.size) == ("PNG", (800, 450))


def test_the_html_is_self_contained_and_holds_the_table_and_images():
    files = rendering.report_files(compare(THREE_SEEDS), {"budget": "equal-epochs"})
    page = files["report.html"].decode()
    assert "<tr>" + "".join(f"<th>{cell}</th>" for cell in EXPECTED_TABLE[0]) + "</tr>" in page
    for line in EXPECTED_TABLE[1:]:
        assert "<tr>" + "".join(f"<td>{cell}</td>" for cell in line) + "</tr>" in page
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert sorted(base64.b64decode(data) for data in embedded) == sorted(
        data for name, data in files.items() if name.endswith(".png")
    )
    outside_images = re.sub(r'"data:image/png;base64,[^"]+"', '""', page)
    assert "//" not in outside_images
    assert "http" not in outside_images
    assert re.findall(r"(?:src|href)=", outside_images) == ["src="] * 4


def test_results_json_holds_every_run_and_the_winner():
    files = rendering.report_files(compare(THREE_SEEDS), {"seeds": 3})
    results = json.loads(files["results.json"])
    assert results["settings"] == {"seeds": 3}
    margins = results["winner"].pop("margins")
    assert results["winner"] == {
        "method": "gsam",
        "seed": 2,
        "eval_accuracy": 0.88,
        "tied_with": [],
    }
    assert [(r["method"], r["seed"], r["eval_accuracy"]) for r in results["runs"]] == [
        (r.method, r.seed, r.eval_accuracy) for r in THREE_SEEDS
    ]
    gsam = results["methods"][2]
    assert gsam["gain"]["significant"] is True
    assert gsam["gain"]["p_value"] == pytest.approx(1 - 75**0.5 / 77**0.5)
    assert results["target_difference"] == 0.01
    power = gsam["gain"]["power"]
    assert (power["seeds"], power["seeds_needed"], power["powered"]) == (3, 10, False)
    assert power["std"] == pytest.approx(0.01)
    assert power["detectable_difference"] == pytest.approx(0.0326, abs=5e-5)
    assert [margin["reference"] for margin in margins] == ["plain", "sam"]
    assert margins[1]["gain"]["mean"] == pytest.approx(0.03)
    assert margins[1]["p_value"] == pytest.approx(1 - 27**0.5 / 29**0.5)


def test_the_terminal_table_aligns_the_same_cells():
    comparison = compare(THREE_SEEDS)
    text = rendering.terminal_summary(comparison)
    summary_file = rendering.report_files(comparison, {})["summary.txt"]
    assert summary_file.decode() == text + "\n"
    lines = text.splitlines()
    assert [re.split(r"\s{2,}", line.strip()) for line in lines[:1] + lines[2:5]] == [
        EXPECTED_TABLE[0],
        *EXPECTED_TABLE[1:],
    ]
    starts = [0]
    for previous, title in zip(EXPECTED_TABLE[0], EXPECTED_TABLE[0][1:]):
        starts.append(lines[0].index(title, starts[-1] + len(previous)))
    for line, cells in zip(lines[2:5], EXPECTED_TABLE[1:]):
        assert [line[start : start + len(cell)] for start, cell in zip(starts, cells)] == cells
    assert EXPECTED_SIGNIFICANCE[1] in lines
    power = lines[lines.index(rendering.POWER_TITLE) + 1 :][:4]
    header, rows = EXPECTED_POWER_TABLE
    assert [re.split(r"\s{2,}", line.strip()) for line in power[:1] + power[2:]] == [
        header,
        *rows,
    ]
    assert lines[-3:] == [
        "Winner: gsam (mean eval accuracy 0.8600); best_model: seed 2 (0.8800).",
        *[f"  {line}" for line in EXPECTED_MARGINS],
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(eval_accuracy=1.5), "eval_accuracy of plain seed 1 must be a number in \\[0, 1\\]"),
        (dict(history={"epochs": []}), "history of plain seed 1 must hold at least one epoch"),
        (dict(seed="1"), "seed must be an integer"),
        (dict(per_class_accuracy={"3": -0.1}), "per_class_accuracy\\['3'\\] of plain seed 1"),
        (dict(extra_metrics={"sharpness": "high"}), "extra_metrics\\['sharpness'\\]"),
    ],
)
def test_bad_run_results_are_errors_naming_the_field(change, message):
    fields = dict(
        method="plain",
        seed=1,
        eval_accuracy=0.8,
        per_class_accuracy={},
        history=history("plain", 1),
    )
    with pytest.raises(ValueError, match=message):
        RunResult(**{**fields, **change})


def test_a_run_given_twice_is_an_error():
    with pytest.raises(ValueError, match="runs holds plain seed 1 twice"):
        compare([run("plain", 1, 0.8), run("plain", 1, 0.7)])


def test_the_same_gain_on_every_seed_is_significant_and_no_gain_is_not():
    # 0.84 - 0.80 and 0.86 - 0.82 differ by float rounding only.
    same_gain = compare(
        [run("plain", 1, 0.80), run("plain", 2, 0.82), run("gsam", 1, 0.84), run("gsam", 2, 0.86)]
    )
    assert same_gain.methods[1].gain.p_value == 0.0
    assert rendering.significance_lines(same_gain)[0].endswith(
        "p < 0.001: significant at 5%; the 2 paired differences are equal: any difference is "
        "told apart."
    )
    no_gain = compare(
        [run("plain", 1, 0.80), run("plain", 2, 0.82), run("gsam", 1, 0.80), run("gsam", 2, 0.82)]
    )
    assert no_gain.methods[1].gain.p_value == 1.0
    assert rendering.significance_lines(no_gain)[0].endswith(
        "p = 1.000: not significant at 5%; the 2 paired differences are equal: any difference "
        "is told apart, so a true difference of 1.00 points would most likely have shown."
    )
