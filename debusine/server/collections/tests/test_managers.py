"""Tests of the `debian:environments` and `debian:suite` collection managers."""

from __future__ import annotations

from typing import Any

import pytest

from debusine.server.collections import (
    CollectionLookupError,
    CollectionManager,
    DebianEnvironmentsManager,
    DebianSuiteManager,
    ItemAdditionError,
)
from debusine.server.collections.debian_suite import compare_versions
from debusine.server.db.models import Artifact, Collection, CollectionItem
from debusine.testing.playground import Playground

pytestmark = pytest.mark.django_db


def tarball(playground: Playground, codename: str = "bookworm", arch: str = "amd64") -> Artifact:
    return playground.create_artifact(
        category="debian:system-tarball",
        data={
            "filename": "system.tar.xz",
            "vendor": "debian",
            "codename": codename,
            "mirror": "http://deb.debian.org/debian",
            "variant": "buildd",
            "pkglist": {},
            "architecture": arch,
            "with_dev": True,
            "with_init": False,
        },
    )


def collection(playground: Playground, category: str, name: str = "debian") -> Collection:
    return Collection.objects.create(name=name, category=category, workspace=playground.workspace)


def source(playground: Playground, name: str, version: str) -> Artifact:
    return playground.create_artifact(
        category="debian:source-package",
        data={"name": name, "version": version, "type": "dpkg", "dsc_fields": {}},
    )


def binary(
    playground: Playground, package: str, version: str, arch: str, **fields: Any
) -> Artifact:
    return playground.create_artifact(
        category="debian:binary-package",
        data={
            "srcpkg_name": "hello",
            "srcpkg_version": version,
            "deb_fields": {
                "Package": package,
                "Version": version,
                "Architecture": arch,
                **fields,
            },
            "deb_control_files": ["control"],
        },
    )


def test_environment_item_name_and_data(playground: Playground) -> None:
    manager = CollectionManager.for_collection(collection(playground, "debian:environments"))
    assert isinstance(manager, DebianEnvironmentsManager)

    plain = manager.add_artifact(tarball(playground))
    for_sbuild = manager.add_artifact(
        tarball(playground), variables={"variant": "sbuild", "codename": "stable"}
    )

    assert plain.name == "tarball:bookworm:amd64"
    assert plain.data == {
        "codename": "bookworm",
        "architecture": "amd64",
        "variant": None,
        "backend": None,
        "format": "tarball",
    }
    assert for_sbuild.name == "tarball:stable:amd64:sbuild:"
    assert (for_sbuild.data["codename"], for_sbuild.data["variant"]) == ("stable", "sbuild")
    assert plain.parent_category == "debian:environments"


def test_adding_an_environment_replaces_the_active_one(playground: Playground) -> None:
    manager = CollectionManager.for_collection(collection(playground, "debian:environments"))
    old = manager.add_artifact(tarball(playground))
    new = manager.add_artifact(tarball(playground))

    old.refresh_from_db()
    assert old.removed_at is not None
    assert new.removed_at is None
    assert manager.lookup("name:tarball:bookworm:amd64") == new
    with pytest.raises(ItemAdditionError, match="already has an item"):
        manager.add_artifact(tarball(playground), replace=False)


def test_environment_refuses_other_categories(playground: Playground) -> None:
    manager = CollectionManager.for_collection(collection(playground, "debian:environments"))
    with pytest.raises(ItemAdditionError, match="debian:source-package"):
        manager.add_artifact(source(playground, "hello", "1.0-1"))
    assert not CollectionItem.objects.exists()


def test_environment_match_returns_the_newest_match(playground: Playground) -> None:
    manager = CollectionManager.for_collection(collection(playground, "debian:environments"))
    generic = manager.add_artifact(tarball(playground))
    sbuild = manager.add_artifact(tarball(playground), variables={"variant": "sbuild"})
    manager.add_artifact(tarball(playground, arch="arm64"))
    manager.add_artifact(tarball(playground, codename="trixie"))

    assert manager.lookup("match:codename=bookworm:architecture=amd64") == sbuild
    assert manager.lookup("match:codename=bookworm:architecture=amd64:variant=") == generic
    assert manager.lookup("match:codename=bookworm:variant=sbuild:format=tarball") == sbuild
    # Items made for no particular backend suit every backend.
    assert manager.lookup("match:codename=bookworm:architecture=amd64:backend=unshare") == sbuild
    assert manager.lookup("match:codename=bookworm:format=image") is None
    assert manager.lookup("match:codename=sid") is None
    with pytest.raises(CollectionLookupError, match="unknown match filter 'flavour'"):
        manager.lookup("match:flavour=vanilla")
    with pytest.raises(CollectionLookupError, match="no 'source' lookup"):
        manager.lookup("source:hello")


def test_suite_items(playground: Playground) -> None:
    manager = CollectionManager.for_collection(collection(playground, "debian:suite", "sid"))
    assert isinstance(manager, DebianSuiteManager)

    src = manager.add_artifact(
        source(playground, "hello", "1.0-1"), variables={"section": "devel"}
    )
    deb = manager.add_artifact(
        binary(playground, "hello", "1.0-1", "amd64", Section="contrib/devel", Priority="optional")
    )

    assert src.name == "hello_1.0-1"
    assert src.data == {
        "package": "hello",
        "version": "1.0-1",
        "component": "main",
        "section": "devel",
    }
    assert deb.name == "hello_1.0-1_amd64"
    assert deb.data == {
        "srcpkg_name": "hello",
        "srcpkg_version": "1.0-1",
        "package": "hello",
        "version": "1.0-1",
        "architecture": "amd64",
        "component": "contrib",
        "section": "contrib/devel",
        "priority": "optional",
    }


def test_suite_lookups_pick_the_highest_version(playground: Playground) -> None:
    manager = CollectionManager.for_collection(collection(playground, "debian:suite", "sid"))
    newest = manager.add_artifact(source(playground, "hello", "1.10-1"))
    manager.add_artifact(source(playground, "hello", "1.9-1"))
    manager.add_artifact(source(playground, "hello", "1.10~rc1-1"))
    deb = manager.add_artifact(binary(playground, "hello", "1.10-1", "amd64"))
    manager.add_artifact(binary(playground, "hello", "1.2-1", "amd64"))

    assert manager.lookup("source:hello") == newest
    assert manager.lookup("source-version:hello_1.9-1") is not None
    assert manager.lookup("source-version:hello_2.0-1") is None
    assert manager.lookup("binary:hello_amd64") == deb
    assert manager.lookup("binary-version:hello_1.10-1_amd64") == deb
    assert manager.lookup("binary:hello_arm64") is None
    assert manager.lookup("name:hello_1.9-1") is not None


def test_suite_refuses_incomplete_data(playground: Playground) -> None:
    manager = CollectionManager.for_collection(collection(playground, "debian:suite", "sid"))
    broken = playground.create_artifact(category="debian:source-package", data={"name": "x"})
    with pytest.raises(ItemAdditionError, match="no 'version'"):
        manager.add_artifact(broken)


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("1.0-1", "1.0-2", -1),
        ("1.10", "1.9", 1),
        ("1.0~rc1", "1.0", -1),
        ("1:0.9", "2.0", 1),
        ("1.0+b1", "1.0", 1),
        ("1.0-1", "1.0-1", 0),
    ],
)
def test_compare_versions(left: str, right: str, expected: int) -> None:
    assert compare_versions(left, right) == expected
