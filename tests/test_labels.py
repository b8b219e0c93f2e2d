import pytest

from marsrover import labels


def test_the_table_covers_all_25_msl_classes_in_order():
    table = labels.label_table()
    assert list(table["msl_class"]) == list(range(25))
    assert set(table["label_name"]) == {"Rover", "Surface"}


def test_surface_is_exactly_drill_holes_ground_and_horizon():
    assert labels.SURFACE_CLASS_NAMES == {"drill holes", "ground", "horizon"}
    assert [labels.binary_label(i) for i in (5, 8, 9)] == [labels.SURFACE] * 3


@pytest.mark.parametrize("msl_class", [0, 4, 11, 20, 22, 24])
def test_every_other_class_is_rover(msl_class):
    assert labels.binary_label(msl_class) == labels.ROVER


@pytest.mark.parametrize("bad", [-1, 25, "8", 8.0])
def test_unknown_class_ids_are_refused_by_name(bad):
    with pytest.raises(KeyError, match="unknown MSL class id"):
        labels.binary_label(bad)


def test_class_names_from_the_archive_must_match_the_table():
    names = {class_id: name for class_id, name, _, _ in labels.MSL_CLASSES}
    labels.check_class_names(names)
    with pytest.raises(ValueError, match="ground"):
        labels.check_class_names({**names, 8: "gravel"})
