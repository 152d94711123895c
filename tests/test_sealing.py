"""Secrets at rest (DESIGN principle 5): sealing, the master keyring, the key file."""

from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path

import pytest

from aliak.credentials import Secret
from aliak.errors import AliakError, InternalError, InvalidParameter
from aliak.sealing import (
    ENV_MASTER_KEY,
    KeyFile,
    MasterKeyring,
    SealingError,
    load_master_keyring,
    sealed_version,
)

KEY_ID = "LTAI5tExampleKeyId0001"
SECRET_TEXT = "s3cr3t-AccessKeySecret-0123456789abcdef"
# bytes whose standard base64 has '+' and '/', so both alphabets are exercised
AWKWARD_KEY = bytes([0xFB, 0xFF, 0xBF] * 10 + [0xFB, 0xFF])


def key_text(key: bytes) -> str:
    return base64.b64encode(key).decode()


def same_keyring(first: MasterKeyring, second: MasterKeyring) -> bool:
    """Equal versions, and each opens what the other sealed (MasterKeyring has no __eq__)."""
    if first.versions != second.versions or first.current_version != second.current_version:
        return False
    try:
        first.open_secret(KEY_ID, second.seal_secret(KEY_ID, Secret(SECRET_TEXT)))
        second.open_secret(KEY_ID, first.seal_secret(KEY_ID, Secret(SECRET_TEXT)))
    except SealingError:
        return False
    return True


def file_mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def keyring() -> MasterKeyring:
    return MasterKeyring.generate()


@pytest.fixture
def sealed(keyring: MasterKeyring) -> bytes:
    return keyring.seal_secret(KEY_ID, Secret(SECRET_TEXT))


# --- seal_secret / open_secret ----------------------------------------------------------------


def test_a_sealed_secret_opens_to_the_same_secret(keyring: MasterKeyring, sealed: bytes) -> None:
    opened = keyring.open_secret(KEY_ID, sealed)
    assert isinstance(opened, Secret)
    assert opened.reveal() == SECRET_TEXT


@pytest.mark.parametrize("text", ["", "x", "ünïcødé-秘密", "a" * 10_000])
def test_any_secret_text_round_trips(keyring: MasterKeyring, text: str) -> None:
    assert keyring.open_secret(KEY_ID, keyring.seal_secret(KEY_ID, Secret(text))).reveal() == text


def test_the_sealed_bytes_do_not_contain_the_secret(sealed: bytes) -> None:
    assert SECRET_TEXT.encode() not in sealed
    assert SECRET_TEXT[:8].encode() not in sealed
    assert base64.b64encode(SECRET_TEXT.encode()) not in sealed


def test_sealing_twice_gives_different_bytes(keyring: MasterKeyring) -> None:
    first = keyring.seal_secret(KEY_ID, Secret(SECRET_TEXT))
    second = keyring.seal_secret(KEY_ID, Secret(SECRET_TEXT))
    assert first != second
    assert first[5:17] != second[5:17]  # the nonce
    assert keyring.open_secret(KEY_ID, first) == keyring.open_secret(KEY_ID, second)


def test_the_sealed_format_is_versioned(keyring: MasterKeyring, sealed: bytes) -> None:
    assert sealed[0] == 1
    assert sealed_version(sealed) == keyring.current_version == 1
    assert len(sealed) == 1 + 4 + 12 + len(SECRET_TEXT.encode()) + 16


def test_opening_under_another_key_id_fails(keyring: MasterKeyring, sealed: bytes) -> None:
    with pytest.raises(SealingError) as caught:
        keyring.open_secret("LTAI5tExampleKeyId0002", sealed)
    error = caught.value
    assert isinstance(error, InternalError)
    assert isinstance(error, AliakError)
    assert error.http_status == 500
    assert error.code == "InternalError"


@pytest.mark.parametrize("other", ["", KEY_ID + " ", KEY_ID.lower(), KEY_ID[:-1]])
def test_the_key_id_is_bound_exactly(keyring: MasterKeyring, sealed: bytes, other: str) -> None:
    with pytest.raises(SealingError):
        keyring.open_secret(other, sealed)


def test_opening_with_another_keyring_fails(sealed: bytes) -> None:
    with pytest.raises(SealingError):
        MasterKeyring.generate().open_secret(KEY_ID, sealed)


def test_any_single_flipped_byte_fails(keyring: MasterKeyring, sealed: bytes) -> None:
    for index in range(len(sealed)):
        for mask in (0x01, 0x80, 0xFF):
            tampered = bytearray(sealed)
            tampered[index] ^= mask
            with pytest.raises(SealingError):
                keyring.open_secret(KEY_ID, bytes(tampered))


def test_a_truncated_blob_fails(keyring: MasterKeyring, sealed: bytes) -> None:
    for length in range(len(sealed)):
        with pytest.raises(SealingError):
            keyring.open_secret(KEY_ID, sealed[:length])


def test_an_extended_blob_fails(keyring: MasterKeyring, sealed: bytes) -> None:
    with pytest.raises(SealingError):
        keyring.open_secret(KEY_ID, sealed + b"\x00")


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x01",
        b"garbage",
        b"\x00" * 64,
        b"\x02" + b"\x00\x00\x00\x01" + b"\x00" * 40,  # unknown format byte
        b"\x01" + b"\x00\x00\x00\x00" + b"\x00" * 40,  # version 0
        b"\x01" + b"\xff\xff\xff\xff" + b"\x00" * 40,  # a version nobody holds
        b"gAAAAABlZ2V0LWZlcm5ldC10b2tlbi1sb29rcy1saWtlLXRoaXM=",  # a Fernet-like token
    ],
    ids=repr,
)
def test_a_foreign_format_blob_fails_with_sealing_error(
    keyring: MasterKeyring, blob: bytes
) -> None:
    with pytest.raises(SealingError):
        keyring.open_secret(KEY_ID, blob)


@pytest.mark.parametrize("blob", ["\x01" * 40, None, 12345], ids=repr)
def test_a_non_bytes_blob_fails_with_sealing_error(keyring: MasterKeyring, blob: object) -> None:
    with pytest.raises(SealingError):
        keyring.open_secret(KEY_ID, blob)  # type: ignore[arg-type]


def test_sealing_errors_never_carry_the_secret(keyring: MasterKeyring, sealed: bytes) -> None:
    with pytest.raises(SealingError) as caught:
        keyring.open_secret("another-key-id", sealed)
    for text in (str(caught.value), repr(caught.value), str(caught.value.to_dict())):
        assert SECRET_TEXT not in text


# --- MasterKeyring ---------------------------------------------------------------------------------


def test_from_text_reads_one_standard_base64_key_as_version_one() -> None:
    ring = MasterKeyring.from_text(key_text(AWKWARD_KEY))
    assert "+" in key_text(AWKWARD_KEY)
    assert "/" in key_text(AWKWARD_KEY)
    assert ring.versions == (1,)
    assert ring.current_version == 1


def test_from_text_reads_urlsafe_base64_and_surrounding_whitespace_alike() -> None:
    standard = MasterKeyring.from_text(key_text(AWKWARD_KEY))
    urlsafe = MasterKeyring.from_text(f"  {base64.urlsafe_b64encode(AWKWARD_KEY).decode()}\n")
    assert same_keyring(standard, urlsafe)


def test_from_text_reads_the_multi_version_form() -> None:
    one, two = os.urandom(32), os.urandom(32)
    ring = MasterKeyring.from_text(f"1:{key_text(one)},2:{key_text(two)}")
    assert ring.versions == (1, 2)
    assert ring.current_version == 2
    sealed = ring.seal_secret(KEY_ID, Secret(SECRET_TEXT))
    assert sealed_version(sealed) == 2
    old = MasterKeyring({1: one}).seal_secret(KEY_ID, Secret(SECRET_TEXT))
    assert ring.open_secret(KEY_ID, old).reveal() == SECRET_TEXT


def test_from_text_accepts_newlines_and_spaces_between_entries() -> None:
    one, two = os.urandom(32), os.urandom(32)
    by_commas = MasterKeyring.from_text(f"1:{key_text(one)},2:{key_text(two)}")
    by_lines = MasterKeyring.from_text(f"\n 1 : {key_text(one)} \n2:{key_text(two)}\n\n")
    assert same_keyring(by_commas, by_lines)


def test_to_text_and_from_text_round_trip(keyring: MasterKeyring) -> None:
    rotated = keyring.with_new_key().with_new_key()
    restored = MasterKeyring.from_text(rotated.to_text())
    assert restored.versions == (1, 2, 3)
    assert restored.to_text() == rotated.to_text()
    assert same_keyring(restored, rotated)
    assert same_keyring(MasterKeyring.from_text(keyring.to_text()), keyring)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n",
        "not base64 at all!!",
        key_text(os.urandom(16)),  # too short
        key_text(os.urandom(33)),  # too long
        key_text(os.urandom(32)).rstrip("="),  # padding missing
        "1:",
        "1:" + key_text(os.urandom(31)),
        "x:" + key_text(os.urandom(32)),
        "0:" + key_text(os.urandom(32)),
        "-1:" + key_text(os.urandom(32)),
        "1:" + key_text(os.urandom(32)) + ",junk",
        "1:" + key_text(os.urandom(32)) + ";2:" + key_text(os.urandom(32)),
        "ключ",
    ],
    ids=lambda text: repr(text[:24]),
)
def test_bad_keyring_text_is_refused_as_invalid_parameter(text: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        MasterKeyring.from_text(text)
    assert caught.value.code == "InvalidParameter"
    assert caught.value.http_status == 400


@pytest.mark.parametrize("text", [None, b"key", 42], ids=repr)
def test_non_text_keyring_input_is_refused(text: object) -> None:
    with pytest.raises(InvalidParameter):
        MasterKeyring.from_text(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "keys",
    [{}, {1: b"short"}, {0: os.urandom(32)}, {2**32: os.urandom(32)}, {1: "x" * 32}],
    ids=["empty", "short-key", "version-0", "version-too-big", "str-key"],
)
def test_a_keyring_refuses_bad_keys(keys: dict[int, object]) -> None:
    with pytest.raises(InvalidParameter):
        MasterKeyring(keys)  # type: ignore[arg-type]


def test_with_new_key_seals_with_the_new_version_and_still_opens_the_old(
    keyring: MasterKeyring, sealed: bytes
) -> None:
    rotated = keyring.with_new_key()
    assert rotated.versions == (1, 2)
    assert rotated.current_version == 2
    assert keyring.versions == (1,)  # the original is unchanged
    fresh = rotated.seal_secret(KEY_ID, Secret(SECRET_TEXT))
    assert sealed_version(fresh) == 2
    assert rotated.open_secret(KEY_ID, sealed).reveal() == SECRET_TEXT
    assert rotated.open_secret(KEY_ID, fresh).reveal() == SECRET_TEXT


def test_the_old_keyring_cannot_open_what_the_new_version_sealed(keyring: MasterKeyring) -> None:
    fresh = keyring.with_new_key().seal_secret(KEY_ID, Secret(SECRET_TEXT))
    with pytest.raises(SealingError):
        keyring.open_secret(KEY_ID, fresh)


def test_a_keyring_without_the_old_version_cannot_open_old_blobs(
    keyring: MasterKeyring, sealed: bytes
) -> None:
    rotated = keyring.with_new_key()
    trimmed = rotated.without_versions_below(2)
    assert trimmed.versions == (2,)
    with pytest.raises(SealingError) as caught:
        trimmed.open_secret(KEY_ID, sealed)
    assert caught.value.http_status == 500
    fresh = rotated.seal_secret(KEY_ID, Secret(SECRET_TEXT))
    assert trimmed.open_secret(KEY_ID, fresh).reveal() == SECRET_TEXT


def test_with_new_key_adds_a_fresh_random_key(keyring: MasterKeyring) -> None:
    first = MasterKeyring.from_text(keyring.with_new_key().to_text())
    second = MasterKeyring.from_text(keyring.with_new_key().to_text())
    fresh = first.seal_secret(KEY_ID, Secret(SECRET_TEXT))
    with pytest.raises(SealingError):
        second.open_secret(KEY_ID, fresh)


def test_repr_and_str_do_not_reveal_the_key() -> None:
    ring = MasterKeyring({1: AWKWARD_KEY}).with_new_key()
    keys = [AWKWARD_KEY, base64.urlsafe_b64decode(ring.to_text().splitlines()[1][2:])]
    for shown in (repr(ring), str(ring), f"{ring}", f"{ring!r}"):
        assert "versions=[1, 2]" in shown
        for key in keys:
            assert base64.b64encode(key).decode() not in shown
            assert base64.urlsafe_b64encode(key).decode() not in shown
            assert base64.b64encode(key).decode()[:16] not in shown
            assert key.hex() not in shown
            assert repr(key) not in shown


def test_errors_about_key_text_do_not_echo_it() -> None:
    text = "1:" + key_text(os.urandom(31))
    with pytest.raises(InvalidParameter) as caught:
        MasterKeyring.from_text(text)
    assert text[2:] not in str(caught.value)
    assert text[2:] not in repr(caught.value)


# --- KeyFile ----------------------------------------------------------------------------------------


def test_load_or_create_creates_the_file_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    ring = KeyFile(path).load_or_create()
    assert path.exists()
    assert file_mode(path) == 0o600
    assert same_keyring(MasterKeyring.from_text(path.read_text("ascii")), ring)


def test_load_or_create_is_0600_even_under_a_permissive_umask(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    previous = os.umask(0)
    try:
        KeyFile(path).load_or_create()
    finally:
        os.umask(previous)
    assert file_mode(path) == 0o600


def test_load_or_create_returns_the_same_keyring_on_a_second_call(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    first = KeyFile(path).load_or_create()
    again = KeyFile(path).load_or_create()
    same_instance_again = KeyFile(path)
    same_instance_again.load_or_create()
    assert same_keyring(first, again)
    assert same_keyring(first, same_instance_again.load_or_create())
    assert first.to_text() == again.to_text()


def test_load_of_a_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        KeyFile(tmp_path / "absent.key").load()


def test_the_loser_of_a_creation_race_uses_the_winners_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Forced interleaving: the loser finds no file, and the winner creates and writes the
    # whole file before the loser tries its own exclusive create.
    path = tmp_path / "master.key"
    generate = MasterKeyring.generate
    winner: dict[str, MasterKeyring] = {}

    def generate_while_a_rival_wins() -> MasterKeyring:
        if not winner:
            winner["pending"] = generate()
            winner["ring"] = KeyFile(path).load_or_create()
        return generate()

    monkeypatch.setattr(MasterKeyring, "generate", staticmethod(generate_while_a_rival_wins))
    loser = KeyFile(path).load_or_create()
    assert same_keyring(loser, winner["ring"])
    assert same_keyring(loser, KeyFile(path).load())


def test_two_racing_load_or_create_calls_end_with_the_same_keyring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Forced interleaving: the rival starts while the winner is between creating the file
    # and writing the key into it (the winner serialises the keyring exactly then).
    path = tmp_path / "master.key"
    to_text = MasterKeyring.to_text
    winner_thread = threading.current_thread()
    rival_done = threading.Event()
    results: dict[str, object] = {}

    def rival() -> None:
        try:
            results["rival"] = KeyFile(path).load_or_create()
        except Exception as error:  # recorded, asserted on below
            results["rival"] = error
        finally:
            rival_done.set()

    def to_text_while_a_rival_starts(self: MasterKeyring) -> str:
        if threading.current_thread() is winner_thread and "started" not in results:
            results["started"] = True
            threading.Thread(target=rival, daemon=True).start()
            # bounded, so an implementation where the rival waits for us cannot deadlock
            rival_done.wait(timeout=2)
        return to_text(self)

    monkeypatch.setattr(MasterKeyring, "to_text", to_text_while_a_rival_starts)
    mine = KeyFile(path).load_or_create()
    assert rival_done.wait(timeout=5)
    monkeypatch.undo()
    rival_ring = results["rival"]
    assert isinstance(rival_ring, MasterKeyring), rival_ring
    assert same_keyring(mine, rival_ring)
    assert same_keyring(mine, KeyFile(path).load())


def test_a_group_or_world_readable_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    KeyFile(path).load_or_create()
    for mode in (0o644, 0o640, 0o604, 0o660):
        path.chmod(mode)
        for call in (KeyFile(path).load, KeyFile(path).load_or_create):
            with pytest.raises(AliakError) as caught:
                call()
            error = caught.value
            assert isinstance(error, InvalidParameter)
            assert error.parameter == "MasterKeyFile"
            assert "chmod 600" in str(error)
            assert str(path) in str(error)
            assert path.read_text("ascii").split(":", 1)[1].strip() not in str(error)


def test_a_refused_key_file_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    KeyFile(path).load_or_create()
    before = path.read_bytes()
    path.chmod(0o644)
    with pytest.raises(InvalidParameter):
        KeyFile(path).load_or_create()
    assert path.read_bytes() == before
    assert file_mode(path) == 0o644


def test_an_owner_only_key_file_with_mode_0400_loads(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    ring = KeyFile(path).load_or_create()
    path.chmod(0o400)
    assert same_keyring(KeyFile(path).load(), ring)


def test_an_empty_key_file_is_refused_with_sealing_error(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.touch(mode=0o600)
    path.chmod(0o600)
    with pytest.raises(SealingError):
        KeyFile(path).load_or_create()


def test_save_replaces_the_file_atomically_and_keeps_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    key_file = KeyFile(path)
    original = key_file.load_or_create()
    before_inode = os.stat(path).st_ino
    rotated = original.with_new_key()
    with path.open("r", encoding="ascii") as reader_of_the_old_file:
        key_file.save(rotated)
        # an atomic replace: a reader that had the file open still sees the whole old key
        assert reader_of_the_old_file.read() == original.to_text()
    assert os.stat(path).st_ino != before_inode
    assert file_mode(path) == 0o600
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["master.key"]
    assert same_keyring(KeyFile(path).load(), rotated)
    assert same_keyring(KeyFile(path).load_or_create(), rotated)


def test_save_creates_a_missing_file_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    ring = MasterKeyring.generate()
    KeyFile(path).save(ring)
    assert file_mode(path) == 0o600
    assert same_keyring(KeyFile(path).load(), ring)


def test_key_file_repr_shows_the_path_but_not_the_key(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    key_file = KeyFile(path)
    ring = key_file.load_or_create()
    assert str(path) in repr(key_file)
    assert ring.to_text().split(":", 1)[1].strip() not in repr(key_file)


# --- load_master_keyring -----------------------------------------------------------------------------


def test_an_explicit_keyring_wins_over_the_environment_and_the_key_file(tmp_path: Path) -> None:
    explicit = MasterKeyring.generate()
    environ = {ENV_MASTER_KEY: key_text(os.urandom(32))}
    ring, key_file = load_master_keyring(
        explicit, key_file=tmp_path / "master.key", environ=environ
    )
    assert ring is explicit
    assert key_file is None
    assert not (tmp_path / "master.key").exists()


def test_an_explicit_text_or_bytes_key_wins_over_the_environment(tmp_path: Path) -> None:
    raw = os.urandom(32)
    environ = {ENV_MASTER_KEY: key_text(os.urandom(32))}
    from_text, file_a = load_master_keyring(
        key_text(raw), key_file=tmp_path / "a.key", environ=environ
    )
    from_bytes, file_b = load_master_keyring(raw, key_file=tmp_path / "b.key", environ=environ)
    assert (file_a, file_b) == (None, None)
    assert same_keyring(from_text, MasterKeyring({1: raw}))
    assert same_keyring(from_bytes, MasterKeyring({1: raw}))
    assert not same_keyring(from_text, MasterKeyring.from_text(environ[ENV_MASTER_KEY]))


def test_the_environment_wins_over_the_key_file(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    on_disk = KeyFile(path).load_or_create()
    env_text = f"1:{key_text(os.urandom(32))}\n2:{key_text(os.urandom(32))}"
    ring, key_file = load_master_keyring(key_file=path, environ={ENV_MASTER_KEY: env_text})
    assert key_file is None
    assert ring.versions == (1, 2)
    assert same_keyring(ring, MasterKeyring.from_text(env_text))
    assert not same_keyring(ring, on_disk)


def test_the_environment_is_used_without_creating_a_key_file(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    load_master_keyring(key_file=path, environ={ENV_MASTER_KEY: key_text(os.urandom(32))})
    assert not path.exists()


def test_the_key_file_is_used_when_nothing_else_is_given(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    ring, key_file = load_master_keyring(key_file=path, environ={})
    assert isinstance(key_file, KeyFile)
    assert key_file.path == path
    assert file_mode(path) == 0o600
    again, _ = load_master_keyring(key_file=path, environ={"UNRELATED": "x"})
    assert same_keyring(ring, again)


def test_an_empty_environment_variable_falls_through_to_the_key_file(tmp_path: Path) -> None:
    ring, key_file = load_master_keyring(
        key_file=tmp_path / "master.key", environ={ENV_MASTER_KEY: ""}
    )
    assert key_file is not None
    assert same_keyring(ring, key_file.load())


def test_a_bad_environment_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameter):
        load_master_keyring(key_file=tmp_path / "master.key", environ={ENV_MASTER_KEY: "nope"})


def test_no_source_at_all_is_refused() -> None:
    with pytest.raises(AliakError) as caught:
        load_master_keyring(environ={})
    assert isinstance(caught.value, InvalidParameter)
    assert ENV_MASTER_KEY in str(caught.value)
