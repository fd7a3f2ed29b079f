"""Tests of the files an instance records in its data directory, and the names derived there."""

from __future__ import annotations

from pathlib import Path

from debusine.server.project import instance


def test_write_recorded_private_file_is_owner_only(tmp_path: Path) -> None:
    path = instance.write_recorded(tmp_path / "new", "token", "s3cret", private=True)
    assert path.read_text() == "s3cret\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert instance.read_recorded(tmp_path / "new", "token") == "s3cret"


def test_write_recorded_public_file_replaces_the_old_one(tmp_path: Path) -> None:
    instance.write_recorded(tmp_path, "redis-url", "redis://old/0")
    path = instance.write_recorded(tmp_path, "redis-url", "redis://new/0\n")
    assert path.read_text() == "redis://new/0\n"
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["redis-url"]  # no temporary left


def test_secret_key_is_generated_once(tmp_path: Path) -> None:
    key = instance.ensure_secret_key(tmp_path)
    assert len(key) >= 50
    assert (tmp_path / instance.SECRET_KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert instance.ensure_secret_key(tmp_path) == key


def test_database_name_differs_per_data_dir_and_is_stable(tmp_path: Path) -> None:
    first = instance.database_name_for(tmp_path / "a")
    assert first == instance.database_name_for(tmp_path / "a")
    assert first != instance.database_name_for(tmp_path / "b")
    assert first.startswith("debusine_")
    assert len(first) <= 63  # PostgreSQL's identifier limit


def test_with_database_name_keeps_server_and_options() -> None:
    url = "postgresql://u:p@db.example:5433/debusine?sslmode=require"
    assert (
        instance.with_database_name(url, "postgres")
        == "postgresql://u:p@db.example:5433/postgres?sslmode=require"
    )
    socket_url = "postgresql://postgres@/debusine?host=/tmp/pg"
    assert instance.parse_database_url(
        instance.with_database_name(socket_url, "other")
    ) == instance.DatabaseParameters(
        name="other", user="postgres", password="", host="/tmp/pg", port="", options={}
    )


def test_redact_url_hides_only_the_password() -> None:
    assert instance.redact_url("postgresql://u:pw@h:1/d") == "postgresql://u:***@h:1/d"
    assert instance.redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_empty_directory_settings_fall_back_to_their_default(tmp_path: Path) -> None:
    default = tmp_path / "store"
    assert instance.resolve_directory(Path(), default) == default
    assert instance.resolve_directory(Path("/srv/store"), default) == Path("/srv/store")
    assert instance.resolve_data_dir(Path()) == instance.default_data_dir()
    assert instance.resolve_data_dir(Path("relative")) == Path.cwd() / "relative"


def test_kombu_gets_unix_sockets_in_its_own_spelling() -> None:
    assert (
        instance.kombu_redis_url("unix:///run/redis/redis.sock?db=3")
        == "redis+socket:///run/redis/redis.sock?virtual_host=3"
    )
    assert (
        instance.kombu_redis_url("unix:///tmp/r.sock")
        == "redis+socket:///tmp/r.sock?virtual_host=0"
    )
    assert instance.kombu_redis_url("redis://127.0.0.1:6379/2") == "redis://127.0.0.1:6379/2"


def test_redis_key_prefix_is_the_data_dirs_own_for_a_development_stack(tmp_path: Path) -> None:
    assert instance.resolve_redis_key_prefix("mine", tmp_path) == "mine"
    assert instance.resolve_redis_key_prefix("", tmp_path) == instance.DEFAULT_REDIS_KEY_PREFIX
    instance.write_recorded(tmp_path, instance.REDIS_URL_FILE, "redis://127.0.0.1:6379/0")
    prefix = instance.resolve_redis_key_prefix("", tmp_path)
    # Shared by make run and debusine-admin on that data directory, and by no other.
    assert prefix == instance.database_name_for(tmp_path)
    assert prefix != instance.resolve_redis_key_prefix("", tmp_path / "other")


def test_only_a_socket_url_with_an_embedded_cluster_may_use_embedded_postgres(
    tmp_path: Path,
) -> None:
    pgdata = tmp_path / instance.EMBEDDED_POSTGRES_DIR
    socket_url = f"postgresql://postgres@/debusine?host={pgdata}"
    assert not instance.may_use_embedded_postgres(tmp_path, socket_url)  # no cluster
    pgdata.mkdir()
    (pgdata / "PG_VERSION").write_text("16\n")
    assert instance.may_use_embedded_postgres(tmp_path, socket_url)
    assert not instance.may_use_embedded_postgres(tmp_path, "postgresql://127.0.0.1:5432/x")
    assert not instance.may_use_embedded_postgres(tmp_path, "not a url")
