"""How a key in a PKCS#11 token is named (hub/crypto/pkcs11.py, docs/signing-keys.md): the
pkcs11: URI and identity.toml's [pkcs11] table, with the PIN only ever from a file or an
environment variable. No token needed: tests/e2e/test_pkcs11_signer.py uses SoftHSM."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.crypto.pkcs11 import Pkcs11Config, Pkcs11Error
from hub.crypto.signer import is_pkcs11

SO = "/usr/lib/softhsm/libsofthsm2.so"


def test_a_uri_names_module_token_key_and_where_the_pin_is() -> None:
    config = Pkcs11Config.from_uri(
        f"pkcs11:token=Hub%20HSM;object=hub-signing;type=private?module-path={SO}"
        "&pin-source=file:/run/secrets/hsm-pin"
    )
    assert config == Pkcs11Config(SO, "Hub HSM", "hub-signing", Path("/run/secrets/hsm-pin"))
    assert Pkcs11Config.from_uri(config.uri()) == config
    env = Pkcs11Config.from_uri(f"pkcs11:token=t;object=k?module-path={SO}&pin-source=env:PIN")
    assert env.pin_env == "PIN" and env.pin_file is None
    assert env.read_pin({"PIN": "1234"}) == "1234"
    rfc8089 = Pkcs11Config.from_uri(
        f"pkcs11:token=t;object=k?module-path={SO}&pin-source=file:///etc/pin"
    )
    assert rfc8089.pin_file == Path("/etc/pin")
    assert is_pkcs11(config.uri()) and not is_pkcs11("var/hub.key")


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        (f"pkcs11:token=t;object=k?module-path={SO}&pin-value=1234", "pin-value puts the PIN"),
        (f"pkcs11:token=t;object=k?module-path={SO}", "give the PIN's source"),
        ("pkcs11:token=t;object=k?pin-source=env:P", "no module given"),
        (f"pkcs11:object=k?module-path={SO}&pin-source=env:P", "no token given"),
        (f"pkcs11:token=t;id=%01?module-path={SO}&pin-source=env:P", "id not understood"),
        (f"pkcs11:token=t;object=k;type=public?module-path={SO}&pin-source=env:P", "private"),
        (f"pkcs11:token=t;token=u;object=k?module-path={SO}&pin-source=env:P", "given twice"),
        (f"pkcs11:token;object=k?module-path={SO}&pin-source=env:P", "not NAME=VALUE"),
    ],
)
def test_uris_that_cannot_be_used_say_why(uri: str, says: str) -> None:
    with pytest.raises(Pkcs11Error, match=says) as err:
        Pkcs11Config.from_uri(uri)
    assert "1234" not in str(err.value)


def test_the_pin_file_and_variable_are_read_and_checked(tmp_path: Path) -> None:
    pin = tmp_path / "pin"
    pin.write_text("4321\n")
    assert Pkcs11Config(SO, "t", "k", pin_file=pin).read_pin() == "4321"
    pin.write_text("")
    with pytest.raises(Pkcs11Error, match="holds no PIN"):
        Pkcs11Config(SO, "t", "k", pin_file=pin).read_pin()
    with pytest.raises(Pkcs11Error, match="cannot read the PIN file"):
        Pkcs11Config(SO, "t", "k", pin_file=tmp_path / "none").read_pin()
    with pytest.raises(Pkcs11Error, match=r"\$NOPE holds no PIN"):
        Pkcs11Config(SO, "t", "k", pin_env="NOPE").read_pin({})
    with pytest.raises(Pkcs11Error, match="one file or one environment variable"):
        Pkcs11Config(SO, "t", "k", pin_file=pin, pin_env="P")


def test_the_identity_table(tmp_path: Path) -> None:
    table = {"module": SO, "token": "banka", "key": "banka-signing", "pin_file": "hsm.pin"}
    config = Pkcs11Config.from_mapping(table, "identity.toml", tmp_path)
    assert config.pin_file == tmp_path / "hsm.pin" and config.key == "banka-signing"
    with pytest.raises(Pkcs11Error, match="never write the PIN itself"):
        Pkcs11Config.from_mapping({**table, "pin": "1234"}, "identity.toml", tmp_path)
    with pytest.raises(Pkcs11Error, match="slot not understood"):
        Pkcs11Config.from_mapping({**table, "slot": 1}, "identity.toml", tmp_path)
    with pytest.raises(Pkcs11Error, match=r"identity\.toml: .*no key given"):
        Pkcs11Config.from_mapping({**table, "key": ""}, "identity.toml", tmp_path)
