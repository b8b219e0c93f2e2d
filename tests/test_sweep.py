"""The GPU recipe sweep: runs chosen on validation only, refits of fixed length, deadlines that say what they left out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY_SIZES

from marsrover import sweep
from marsrover.console import is_tensorflow_startup_line


@pytest.fixture
def tiny_data_dir(tiny_paths):
    return str(tiny_paths.root)


def test_a_run_on_train_keeps_the_epoch_with_the_best_validation_balanced_accuracy(tiny_data_dir):
    run = sweep.fit_run("improved", 42, data_dir=tiny_data_dir, batch_size=2)

    history = run["history"]["val_balanced_accuracy"]
    assert run["fit_on"] == "train" and len(history) == run["epochs"] == 15
    assert run["kept_epoch"] == int(np.argmax(history)) + 1
    assert run["val"]["balanced_accuracy"] == history[run["kept_epoch"] - 1]
    assert run["test"]["accuracy"] == run["history"]["test_accuracy"][run["kept_epoch"] - 1]
    assert len(run["val_p_surface"]) == TINY_SIZES["val"] and len(run["test_p_surface"]) == TINY_SIZES["test"]
    assert run["val_settled_balanced_accuracy"] == pytest.approx(np.mean(history[-sweep.LAST_EPOCHS:]), abs=1e-4)


def test_a_refit_trains_on_train_and_val_for_exactly_its_epochs_and_keeps_the_last(tiny_data_dir):
    run = sweep.fit_run("wider_40_epochs", 1, refit_epochs=2, data_dir=tiny_data_dir, batch_size=2)

    assert run["fit_on"] == "train+val" and run["epochs"] == run["kept_epoch"] == 2
    assert run["batch_norm_statistics"] == "recomputed over the fit images, weighted by instrument x label group"
    assert run["body_options"]["widths"] == [64, 128, 256, 512]
    assert "val" not in run and len(run["history"]["test_accuracy"]) == 2


def _run(recipe, seed, val_score, fit_on="train"):
    return {"recipe": recipe, "seed": seed, "fit_on": fit_on, "val": {"balanced_accuracy": val_score}}


def test_the_recipe_is_chosen_by_its_mean_over_seeds_among_recipes_that_ran_every_seed():
    runs = [_run("improved", 1, 0.90), _run("improved", 2, 0.94),
            _run("improved_40_epochs", 1, 0.93), _run("improved_40_epochs", 2, 0.92),
            _run("wider_40_epochs", 1, 0.99)]  # its second seed never ran

    assert sweep.chosen_recipe(runs, seeds=(1, 2)) == "improved_40_epochs"
    assert sweep.chosen_recipe([], seeds=(1, 2)) is None


def test_every_recipe_is_improved_with_its_named_changes_and_the_rest_of_improveds_recipe():
    from marsrover.models import get_spec

    improved = get_spec("improved")
    for recipe in sweep.SWEEP_RECIPES.values():
        spec = sweep.recipe_spec(recipe)
        assert spec.name == f"sweep-{recipe.name}" and spec.instrument_balance and spec.restore_best
        assert spec.schedule == improved.schedule and spec.batch_size == improved.batch_size
    larger = sweep.recipe_spec(sweep.SWEEP_RECIPES["larger_images_40_epochs"])
    wider = sweep.recipe_spec(sweep.SWEEP_RECIPES["wider_40_epochs"])
    assert (larger.image_size, larger.epochs, larger.body_options) == (192, 40, improved.body_options)
    assert wider.body_options == {**improved.body_options, "widths": (64, 128, 256, 512)}
    assert sweep.recipe_spec(sweep.SWEEP_RECIPES["improved"]).epochs == improved.epochs == 15


def test_jobs_past_the_deadline_are_listed_as_left_out_and_nothing_is_refitted(tiny_data_dir, tmp_path):
    document = sweep.run_sweep(tmp_path / "out", recipes=["improved"], seeds=(1, 2), workers=1, deadline_s=0,
                               commit="abc123", data_dir=tiny_data_dir)

    saved = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert saved["runs"] == [] and saved["chosen"] is None
    assert sorted(saved["left_out"]) == ["improved, seed 1: not started before the deadline",
                                         "improved, seed 2: not started before the deadline"]
    assert saved["environment"]["commit"] == "abc123" and document["seeds"] == [1, 2]


def test_unknown_recipes_are_named(tmp_path):
    with pytest.raises(KeyError, match="bigger"):
        sweep.run_sweep(tmp_path, recipes=["bigger"], seeds=(1,), workers=1, deadline_s=1, commit="x")


def test_the_chosen_recipe_is_refitted_on_train_and_val_for_the_median_of_its_best_epochs(tiny_data_dir, tmp_path,
                                                                                         capfd):
    document = sweep.run_sweep(tmp_path / "out", recipes=["improved"], seeds=(1,), workers=1, deadline_s=600,
                               commit="abc123", data_dir=tiny_data_dir, batch_size=2)

    # Each run is a process of its own (descriptor 2 inherited, so captured here): none prints the start-up lines.
    assert not [line for line in capfd.readouterr().err.splitlines() if is_tensorflow_startup_line(line)]

    trained, refitted = (next(run for run in document["runs"] if run["fit_on"] == fit_on)
                         for fit_on in ("train", "train+val"))
    assert document["chosen"] == "improved" and document["left_out"] == []
    assert document["refit_epochs"] == refitted["epochs"] == trained["kept_epoch"]
    assert set(document["summary"]) == {"improved (train)", "improved (train+val)"}
    assert document["summary"]["improved (train)"]["val_best_balanced_accuracy"]["mean"] == trained["val"][
        "balanced_accuracy"]


def test_refits_that_would_end_past_the_stop_are_left_out_and_the_choice_is_kept(tiny_data_dir, tmp_path):
    document = sweep.run_sweep(tmp_path / "out", recipes=["improved"], seeds=(1,), workers=1, deadline_s=600,
                               stop_s=0, commit="abc123", data_dir=tiny_data_dir, batch_size=2)

    saved = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [run["fit_on"] for run in saved["runs"]] == ["train"]
    assert saved["chosen"] == "improved" and saved["refit_epochs"] == saved["runs"][0]["kept_epoch"]
    assert len(saved["left_out"]) == 1 and saved["left_out"][0].startswith("improved refit on train+val: about")
    assert document["left_out"] == saved["left_out"]


def test_a_resumed_sweep_keeps_the_earlier_runs_on_train_that_match_and_goes_on_to_the_refit(tiny_data_dir, tmp_path):
    sweep.run_sweep(tmp_path / "first", recipes=["improved"], seeds=(1,), workers=1, deadline_s=600, stop_s=0,
                    commit="first-commit", data_dir=tiny_data_dir, batch_size=2)
    earlier = json.loads((tmp_path / "first" / "sweep.json").read_text())
    run = earlier["runs"][0]
    earlier["runs"] += [{**run, "fit_on": "train+val"}, {**run, "seed": 9}, {**run, "batch_size": 64}]
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))

    document = sweep.run_sweep(tmp_path / "second", recipes=["improved", "wider_40_epochs"], seeds=(1,), workers=1,
                               deadline_s=0, stop_s=600, commit="second-commit", data_dir=tiny_data_dir,
                               batch_size=2, resume=tmp_path / "earlier.json")

    assert document["runs"][0] == run  # kept as it was, not trained again
    assert [r["fit_on"] for r in document["runs"]] == ["train", "train+val"]
    resumed = document["resumed_from"]
    assert resumed["environment"]["commit"] == "first-commit" and document["environment"]["commit"] == "second-commit"
    assert resumed["runs_kept"] == 1 and resumed["runs_dropped"] == [
        "improved, seed 1 (train+val): a refit (refits follow this call's choice)",
        "improved, seed 9 (train): recipe or seed not asked for",
        "improved, seed 1 (train): trained otherwise (epochs, image size or batch size)"]
    assert resumed["left_out"] == earlier["left_out"] and resumed["arguments"]["deadline_s"] == 600
    assert document["left_out"] == ["wider_40_epochs, seed 1: not started before the deadline"]
    assert document["chosen"] == "improved" and document["arguments"]["resume"] == "earlier.json"


def _entry(test_accuracies, val_best=None):
    entry = {"seeds": list(range(len(test_accuracies))),
             "test_per_seed": [{"accuracy": a, "balanced_accuracy": a - 0.01} for a in test_accuracies],
             "test_of_average": {"accuracy": 0.9, "balanced_accuracy": 0.89}}
    if val_best:
        entry.update({"val_best_balanced_accuracy": {"mean": sum(val_best) / len(val_best), "min": min(val_best),
                                                     "max": max(val_best)},
                      "val_settled_balanced_accuracy_mean": 0.8, "kept_epochs": [3, 5],
                      "val_of_average": {"accuracy": 0.95, "balanced_accuracy": 0.94}})
    return entry


def _environment(commit):
    return {"keras_backend": "jax", "devices": ["gpu:0"], "versions": {"keras": "3"}, "commit": commit}


def _document(**changes):
    runs = [{"recipe": "improved", "seed": seed, "fit_on": fit_on, "epochs": epochs}
            for seed in (1, 2) for fit_on, epochs in (("train", 15), ("train+val", 4))]
    runs.append({"recipe": "wider_40_epochs", "seed": 1, "fit_on": "train", "epochs": 40})
    document = {"chosen": "improved", "refit_epochs": 4, "environment": _environment("c" * 40), "seeds": [1, 2],
                "recipes": {"improved": "", "wider_40_epochs": ""}, "runs": runs,
                "left_out": ["wider_40_epochs, seed 2: not started before the deadline"],
                "resumed_from": {"environment": _environment("b" * 40),  # an earlier call, itself resumed
                                 "left_out": ["wider_40_epochs, seed 2: not started before the deadline"],
                                 "resumed_from": {"environment": _environment("a" * 40), "left_out": []}},
                "summary": {"improved (train)": _entry([0.8, 0.9], val_best=[0.92, 0.96]),
                            "wider_40_epochs (train)": {**_entry([0.85], val_best=[0.97]), "seeds": [1],
                                                        "kept_epochs": [30]},
                            "improved (train+val)": _entry([0.93, 0.95])}}
    return {**document, **changes}


def test_the_summary_table_reads_validation_first_and_test_per_seed_and_of_the_average(tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(_document()))

    table = sweep.summary_table(path)

    assert list(table.index) == [("improved", "train"), ("wider_40_epochs", "train"), ("improved", "train+val")]
    assert list(table["chosen"]) == [True, False, True] and list(table["epochs trained"]) == [15, 40, 4]
    assert table.loc[("improved", "train"), "best epoch (seed: epoch)"] == "0: 3, 1: 5"
    assert table.loc[("improved", "train"), "val best BA, mean"] == pytest.approx(0.94)
    assert table.loc[("improved", "train"), "test acc, range over seeds"] == "0.800–0.900"
    assert sweep.summary_table(tmp_path / "missing.json").empty
    path.write_text(json.dumps(_document(summary={}, runs=[])))
    assert sweep.summary_table(path).empty


def test_the_caption_names_every_call_oldest_first_and_counts_each_missing_run_once(tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(_document()))

    caption = sweep.summary_caption(path)

    assert caption.index("code at aaaaaaa") < caption.index("code at bbbbbbb") < caption.index("code at ccccccc")
    assert "refitted on train+val for 4 epochs at 2 of 2 seeds" in caption
    assert "no result: `wider_40_epochs` at 1 of 2 seeds." in caption  # listed by both calls, counted once
    path.write_text(json.dumps(_document(chosen=None, runs=[])))
    assert "Nothing was chosen" in sweep.summary_caption(path)
    assert "not found" in sweep.summary_caption(tmp_path / "missing.json")


def test_the_committed_gpu_sweep_record_reads_as_the_notebook_says():
    record = sweep.config.PROJECT_ROOT / "reports" / "side_checks" / "sweep_gpu.json"

    table = sweep.summary_table(record)
    caption = sweep.summary_caption(record)

    assert table.index.get_level_values("fit on").tolist() == ["train"] * 4 + ["train+val"]
    assert table["chosen"].sum() == 2 and table.loc[("larger_images_40_epochs", "train+val"), "seeds"] == 5
    assert "Chosen on validation: `larger_images_40_epochs`" in caption
    assert "`closeup_zoom_40_epochs` at 5 of 5 seeds; `full_resolution_stem_40_epochs` at 5 of 5 seeds." in caption


def test_validation_is_checked_for_ranking_the_runs_on_train_as_the_test_split_does(tmp_path):
    def run(fit_on, val, test):
        return {"recipe": "improved", "seed": 1, "fit_on": fit_on, "val": {"accuracy": val, "balanced_accuracy": val},
                "test": {"accuracy": test, "balanced_accuracy": 1 - test}}

    path = tmp_path / "sweep.json"
    # test accuracy follows validation's order; test balanced accuracy reverses it; a refit has no say
    path.write_text(json.dumps({"runs": [run("train", 0.90, 0.70), run("train", 0.92, 0.80), run("train", 0.95, 0.85),
                                         run("train", 0.97, 0.86), run("train+val", 0.99, 0.10)]}))

    table = sweep.validation_against_test(path)

    assert list(table.index) == [("balanced accuracy", "accuracy"), ("balanced accuracy", "balanced accuracy"),
                                 ("accuracy", "accuracy"), ("accuracy", "balanced accuracy")]
    assert (table["runs"] == 4).all()
    assert table.loc[("balanced accuracy", "accuracy"), "Spearman rho"] == 1.0
    assert table.loc[("balanced accuracy", "balanced accuracy"), "Spearman rho"] == -1.0
    # 4 runs have 24 pairings, and 2 of them (this order and its reverse) are as extreme: p = 2/24, exactly
    assert table.loc[("balanced accuracy", "accuracy"), "p-value"] == pytest.approx(2 / 24, abs=1e-3)
    same = [run("train", 0.9, test) for test in (0.7, 0.8, 0.85)]  # validation cannot tell them apart
    path.write_text(json.dumps({"runs": same}))
    assert sweep.validation_against_test(path)["Spearman rho"].isna().all()  # undefined, not a number
    path.write_text(json.dumps({"runs": [run("train", 0.9, 0.7), run("train", 0.92, 0.8)]}))
    assert sweep.validation_against_test(path).empty  # too few runs to rank
    assert sweep.validation_against_test(tmp_path / "missing.json").empty
