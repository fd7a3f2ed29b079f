"""
`debian:environments` collections: the system tarballs (and images) tasks run in.

One collection per vendor (`debian@debian:environments`). An item is named
`{format}:{codename}:{architecture}`, plus `:{variant}:{backend}` when either is set, and its
data holds codename, architecture, variant, backend and format. Adding an environment replaces
the active one of the same name; older ones stay as history.

`match:KEY=VALUE:...` finds the newest active item matching every filter: `format` (tarball or
image), `codename`, `architecture`, `variant` (empty: items without a variant) and `backend`
(items made for that backend, or for any backend).
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q

from debusine.server.collections.base import (
    CollectionLookupError,
    CollectionManager,
    ItemAdditionError,
)
from debusine.server.db.models import Artifact, CollectionItem

SYSTEM_TARBALL = "debian:system-tarball"
SYSTEM_IMAGE = "debian:system-image"

#: Item format of each artifact category.
FORMATS = {SYSTEM_TARBALL: "tarball", SYSTEM_IMAGE: "image"}

#: Keys a `match:` segment (or a `lookup__KEY` filter) may use.
MATCH_KEYS = ("format", "codename", "architecture", "variant", "backend")


def parse_match_filters(argument: str) -> dict[str, str]:
    """`codename=bookworm:architecture=amd64` as a dict; CollectionLookupError if malformed."""
    filters: dict[str, str] = {}
    for part in argument.split(":"):
        key, equals, value = part.partition("=")
        if not equals or not key:
            raise CollectionLookupError(f"invalid match filter {part!r}: expected KEY=VALUE")
        filters[key] = value
    return filters


def _unset_or(key: str, value: str | None) -> Q:
    """Items whose `key` is `value`, or unset (null) when `value` is empty."""
    if not value:
        return Q(**{f"data__{key}": None}) | Q(**{f"data__{key}__isnull": True})
    return Q(**{f"data__{key}": value})


class DebianEnvironmentsManager(CollectionManager):
    """Manages `debian:environments` collections."""

    CATEGORY = "debian:environments"
    ARTIFACT_CATEGORIES = frozenset(FORMATS)

    def item_for_artifact(
        self, artifact: Artifact, variables: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """
        Name and data of an environment. `variables` may set `codename` (else the artifact's),
        `variant` (what the environment is for, e.g. a task name) and `backend`.
        """
        codename = variables.get("codename") or artifact.data.get("codename")
        architecture = artifact.data.get("architecture")
        if not codename or not architecture:
            raise ItemAdditionError(
                f"artifact {artifact.pk} has no codename or architecture in its data"
            )
        variant = variables.get("variant") or None
        backend = variables.get("backend") or None
        format_ = FORMATS[artifact.category]
        parts = [format_, str(codename), str(architecture)]
        if variant is not None or backend is not None:
            parts += [variant or "", backend or ""]
        data = {
            "codename": codename,
            "architecture": architecture,
            "variant": variant,
            "backend": backend,
            "format": format_,
        }
        return ":".join(parts), data

    def filters_condition(self, filters: dict[str, str]) -> Q:
        """Item conditions for `match:` filters (see the module docstring)."""
        condition = Q(child_type="a")
        for key, value in filters.items():
            if key == "format":
                categories = [cat for cat, fmt in FORMATS.items() if fmt == value]
                if not categories:
                    raise CollectionLookupError(f"unknown environment format {value!r}")
                condition &= Q(category__in=categories)
            elif key in ("codename", "architecture"):
                condition &= Q(**{f"data__{key}": value})
            elif key == "variant":
                condition &= _unset_or("variant", value)
            elif key == "backend":
                # An environment not made for a particular backend suits them all.
                suits = _unset_or("backend", "")
                condition &= suits | _unset_or("backend", value) if value else suits
            else:
                raise CollectionLookupError(
                    f"unknown match filter {key!r} (known: {', '.join(MATCH_KEYS)})"
                )
        return condition

    def lookup_segment(self, kind: str, argument: str) -> CollectionItem | None:
        if kind != "match":
            return super().lookup_segment(kind, argument)
        condition = self.filters_condition(parse_match_filters(argument))
        item: CollectionItem | None = (
            self.active_items()
            .filter(condition)
            .select_related("artifact")
            .order_by("-created_at", "-id")
            .first()
        )
        return item

    def lookup_filter(self, key: str, value: Any) -> Q:
        if key not in MATCH_KEYS or not isinstance(value, str):
            return super().lookup_filter(key, value)
        return self.filters_condition({key: value})
