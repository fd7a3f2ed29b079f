"""
Web pages of collections: a workspace's collections, and one collection's active items (name,
category, what it points at, data). `debian:environments` shows its tarballs and images by
codename, architecture, variant and backend; `debian:suite` its source and binary packages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from debusine.server.db.models import Collection, CollectionItem
from debusine.server.web.access import visible_workspace

#: A collection page lists at most this many items (`?name=` narrows them).
ITEM_LIMIT = 500

#: The item data columns shown for the categories with a view of their own.
CATEGORY_COLUMNS = {
    "debian:environments": ["codename", "architecture", "variant", "backend", "format"],
    "debian:suite": ["package", "version", "architecture", "component", "section"],
}


@require_safe
def collection_list(request: HttpRequest, scope: str, workspace: str) -> HttpResponse:
    """`GET /<scope>/<workspace>/collection/`: the workspace's collections and their sizes."""
    workspace_object = visible_workspace(request, scope, workspace)
    collections = (
        Collection.objects.filter(workspace=workspace_object)
        .annotate(active=Count("child_items", filter=Q(child_items__removed_at__isnull=True)))
        .order_by("category", "name")[:ITEM_LIMIT]
    )
    return render(
        request,
        "web/collections.html",
        {"workspace": workspace_object, "collections": collections},
    )


@dataclass
class ItemRow:
    item: CollectionItem
    columns: list[str]
    data: str


@require_safe
def collection_detail(
    request: HttpRequest, scope: str, workspace: str, category: str, name: str
) -> HttpResponse:
    """`GET /<scope>/<workspace>/collection/<category>/<name>/`: its active items."""
    workspace_object = visible_workspace(request, scope, workspace)
    collection = Collection.objects.filter(
        workspace=workspace_object, category=category, name=name
    ).first()
    if collection is None:
        raise Http404(f"No collection {name}@{category}")
    items = CollectionItem.objects.filter(
        parent_collection=collection, removed_at__isnull=True
    ).select_related("collection")
    search = request.GET.get("name", "").strip()[:200].replace("\x00", "")
    if search:
        items = items.filter(name__icontains=search)
    columns = CATEGORY_COLUMNS.get(collection.category, [])
    rows = []
    for item in items.order_by("category", "name")[: ITEM_LIMIT + 1]:
        data: dict[str, Any] = item.data if isinstance(item.data, dict) else {}
        rows.append(
            ItemRow(
                item,
                [str(data.get(column) or "") for column in columns],
                json.dumps(data, sort_keys=True),
            )
        )
    return render(
        request,
        "web/collection.html",
        {
            "workspace": workspace_object,
            "collection": collection,
            "columns": columns,
            "rows": rows[:ITEM_LIMIT],
            "more": len(rows) > ITEM_LIMIT,
            "search": search,
            "collection_data": json.dumps(collection.data, indent=2, sort_keys=True),
        },
    )
