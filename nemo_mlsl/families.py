"""Language codes → language families: a built-in table, overridable by YAML.

Codes are matched in ISO 639-1/3 or BCP-47 form (``pt-BR``, ``pt_BR``, ``zh-Hans-CN``): the full tag
first, then its primary subtag, so ``pt-BR`` belongs wherever ``pt`` does unless mapped itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping

import yaml

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.userfiles import read_yaml


def normalize_code(code: str) -> str:
    """Canonical form of a language tag: lower case, ``-`` separators, no surrounding space."""
    tag = code.strip().replace("_", "-").lower()
    if not tag or any(not part.isalnum() for part in tag.split("-")):
        raise ConfigError(f"language code {code!r} is not an ISO 639 / BCP-47 tag (e.g. 'de', 'pt-BR', 'zh_CN')")
    return tag


@dataclass(frozen=True)
class FamilyMap:
    """A mapping from language tags to family names."""

    table: Mapping[str, str]

    @classmethod
    def from_families(cls, families: Mapping[str, Iterable[str]]) -> "FamilyMap":
        table: dict[str, str] = {}
        for family, codes in families.items():
            if not isinstance(codes, (list, tuple)):
                raise ConfigError(f"families.{family} must be a list of language codes, got {codes!r}")
            for code in codes:
                tag = normalize_code(str(code))
                if tag in table and table[tag] != family:
                    raise ConfigError(f"language {tag!r} is listed under both {table[tag]!r} and {family!r}")
                table[tag] = str(family)
        return cls(table)

    @classmethod
    def builtin(cls) -> "FamilyMap":
        text = resources.files("nemo_mlsl").joinpath("tables/families.yaml").read_text()
        return cls.from_families(yaml.safe_load(text)["families"])

    @classmethod
    def from_yaml(cls, path: str | Path, base: "FamilyMap | None" = None) -> "FamilyMap":
        """Load ``{families: {name: [codes]}}``; entries override ``base`` (default: the built-in table)."""
        path = Path(path)
        doc = read_yaml(path, "families file", "'families: {family: [codes, ...]}'")
        if not isinstance(doc.get("families"), dict):
            raise ConfigError(f"{path}: expected a mapping 'families: {{family: [codes, ...]}}'")
        override = cls.from_families(doc["families"])
        merged = dict((base or cls.builtin()).table)
        merged.update(override.table)
        return cls(merged)

    def family_of(self, code: str) -> str:
        tag = normalize_code(code)
        if tag in self.table:
            return self.table[tag]
        primary = tag.split("-")[0]
        if primary in self.table:
            return self.table[primary]
        raise ConfigError(
            f"unknown language code {code!r}: it is in no family. Map it in a families YAML, e.g. "
            f"'families: {{my_family: [{tag}]}}', and pass it with --families FILE.yaml"
        )

    def families(self) -> list[str]:
        return sorted(set(self.table.values()))

    def group(self, codes: Iterable[str]) -> dict[str, list[str]]:
        """Family → sorted language codes, for the given codes only."""
        out: dict[str, list[str]] = {}
        for code in codes:
            out.setdefault(self.family_of(code), []).append(code)
        return {fam: sorted(langs) for fam, langs in sorted(out.items())}
