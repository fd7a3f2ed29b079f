"""
`debian:suite` collections: the source and binary packages of one suite.

Source packages are items named `{name}_{version}` with data package, version, component and
section; binary packages are named `{package}_{version}_{architecture}` with data srcpkg_name,
srcpkg_version, package, version, architecture, component, section and priority. Component,
section and priority come from the variables given when adding, else from the package's own
fields (component `main` when its section names none).

Lookups: `source:NAME` and `binary:NAME_ARCH` (highest version), `source-version:NAME_VERSION`,
`binary-version:NAME_VERSION_ARCH`.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from debusine.server.collections.base import (
    CollectionLookupError,
    CollectionManager,
    ItemAdditionError,
)
from debusine.server.db.models import Artifact, CollectionItem

SOURCE_PACKAGE = "debian:source-package"
BINARY_PACKAGE = "debian:binary-package"

_VERSION = re.compile(r"^(?:(\d+):)?(.+?)(?:-([^-]+))?$")


def _order(char: str) -> int:
    # dpkg's ordering of the non-digit parts: '~' before everything, even the end of the string,
    # then letters, then other characters.
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(left: str, right: str) -> int:
    """Compare upstream versions or revisions as dpkg does."""
    i = j = 0
    while i < len(left) or j < len(right):
        # Non-digit run, character by character.
        while (i < len(left) and not left[i].isdigit()) or (
            j < len(right) and not right[j].isdigit()
        ):
            a = _order(left[i]) if i < len(left) and not left[i].isdigit() else 0
            b = _order(right[j]) if j < len(right) and not right[j].isdigit() else 0
            if a != b:
                return -1 if a < b else 1
            if i < len(left) and not left[i].isdigit():
                i += 1
            if j < len(right) and not right[j].isdigit():
                j += 1
        # Digit run, as numbers.
        start_i, start_j = i, j
        while i < len(left) and left[i].isdigit():
            i += 1
        while j < len(right) and right[j].isdigit():
            j += 1
        a_num = int(left[start_i:i] or "0")
        b_num = int(right[start_j:j] or "0")
        if a_num != b_num:
            return -1 if a_num < b_num else 1
    return 0


def compare_versions(left: str, right: str) -> int:
    """-1, 0 or 1 as Debian version `left` sorts before, equal to or after `right`."""
    left_match, right_match = _VERSION.match(left), _VERSION.match(right)
    if left_match is None or right_match is None:
        return (left > right) - (left < right)
    left_epoch, right_epoch = int(left_match[1] or 0), int(right_match[1] or 0)
    if left_epoch != right_epoch:
        return -1 if left_epoch < right_epoch else 1
    return _compare_part(left_match[2], right_match[2]) or _compare_part(
        left_match[3] or "", right_match[3] or ""
    )


def _component_of(section: str | None) -> str:
    if section and "/" in section:
        return section.split("/", 1)[0]
    return "main"


def _required(data: dict[str, Any], key: str, artifact: Artifact) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ItemAdditionError(f"artifact {artifact.pk} has no {key!r} in its data")
    return value


def _compare_item_versions(left: CollectionItem, right: CollectionItem) -> int:
    return compare_versions(str(left.data["version"]), str(right.data["version"]))


class DebianSuiteManager(CollectionManager):
    """Manages `debian:suite` collections."""

    CATEGORY = "debian:suite"
    ARTIFACT_CATEGORIES = frozenset({SOURCE_PACKAGE, BINARY_PACKAGE})

    def item_for_artifact(
        self, artifact: Artifact, variables: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        data = artifact.data
        if artifact.category == SOURCE_PACKAGE:
            name = _required(data, "name", artifact)
            version = _required(data, "version", artifact)
            section = variables.get("section") or (data.get("dsc_fields") or {}).get("Section")
            item = {
                "package": name,
                "version": version,
                "component": variables.get("component") or _component_of(section),
                "section": section,
            }
            return f"{name}_{version}", item
        fields = data.get("deb_fields") or {}
        package = _required(fields, "Package", artifact)
        version = _required(fields, "Version", artifact)
        architecture = _required(fields, "Architecture", artifact)
        section = variables.get("section") or fields.get("Section")
        item = {
            "srcpkg_name": _required(data, "srcpkg_name", artifact),
            "srcpkg_version": _required(data, "srcpkg_version", artifact),
            "package": package,
            "version": version,
            "architecture": architecture,
            "component": variables.get("component") or _component_of(section),
            "section": section,
            "priority": variables.get("priority") or fields.get("Priority"),
        }
        return f"{package}_{version}_{architecture}", item

    def lookup_segment(self, kind: str, argument: str) -> CollectionItem | None:
        items = self.active_items().filter(child_type="a").select_related("artifact")
        if kind == "source":
            items = items.filter(category=SOURCE_PACKAGE, data__package=argument)
        elif kind == "source-version":
            name, _, version = argument.partition("_")
            items = items.filter(
                category=SOURCE_PACKAGE, data__package=name, data__version=version
            )
        elif kind == "binary":
            name, _, architecture = argument.partition("_")
            items = items.filter(
                category=BINARY_PACKAGE, data__package=name, data__architecture=architecture
            )
        elif kind == "binary-version":
            parts = argument.split("_")
            if len(parts) != 3:
                raise CollectionLookupError(
                    f"invalid binary-version lookup {argument!r}: expected NAME_VERSION_ARCH"
                )
            items = items.filter(
                category=BINARY_PACKAGE,
                data__package=parts[0],
                data__version=parts[1],
                data__architecture=parts[2],
            )
        else:
            return super().lookup_segment(kind, argument)
        # A suite holds few versions of one package: sorting them here is cheap.
        found: list[CollectionItem] = sorted(
            items, key=functools.cmp_to_key(_compare_item_versions)
        )
        return found[-1] if found else None
