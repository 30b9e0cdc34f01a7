import pytest

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.families import FamilyMap, normalize_code


@pytest.mark.parametrize("code,family", [
    ("de", "germanic"), ("pt-BR", "romance"), ("pt_BR", "romance"), ("zh-CN", "sino_tibetan"),
    ("zh_Hans_CN", "sino_tibetan"), ("RU", "slavic"), ("hin", "indic"), ("ta", "dravidian"), ("ja", "japonic"),
    ("ko", "koreanic"), ("tr", "turkic"), ("fi", "uralic"), ("he", "semitic"), ("id", "austronesian"),
])
def test_builtin_table_maps_iso_and_bcp47_codes(code, family):
    assert FamilyMap.builtin().family_of(code) == family


def test_unknown_code_names_the_code_and_the_fix():
    with pytest.raises(ConfigError) as err:
        FamilyMap.builtin().family_of("xx-YY")
    assert "'xx-YY'" in str(err.value) and "--families" in str(err.value) and "xx-yy" in str(err.value)


def test_bad_code_is_rejected():
    with pytest.raises(ConfigError, match="not an ISO 639"):
        normalize_code("en us")


def test_yaml_overrides_and_extends_builtin(tmp_path):
    f = tmp_path / "fam.yaml"
    f.write_text("families:\n  iberian: [es, pt, ca]\n  mine: [qaa]\n")
    fm = FamilyMap.from_yaml(f)
    assert fm.family_of("es") == "iberian" and fm.family_of("pt-BR") == "iberian"
    assert fm.family_of("fr") == "romance" and fm.family_of("qaa") == "mine"


def test_yaml_shape_errors(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("germanic: [de]\n")
    with pytest.raises(ConfigError, match="families:"):
        FamilyMap.from_yaml(f)
    with pytest.raises(ConfigError, match="does not exist"):
        FamilyMap.from_yaml(tmp_path / "missing.yaml")
    f.write_text("families:\n  a: [de]\n  b: [de]\n")
    with pytest.raises(ConfigError, match="both"):
        FamilyMap.from_yaml(f)


def test_group_sorts_languages_by_family():
    assert FamilyMap.builtin().group(["ru", "de", "en", "uk"]) == {"germanic": ["de", "en"], "slavic": ["ru", "uk"]}
