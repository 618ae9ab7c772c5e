"""Issue 24: signing keys that never leave a certified module, through the `Signer` port's
PKCS#11 adapter (hub/crypto/pkcs11.py), against SoftHSM in a token made in a temporary
directory. The hub signs its answers and checkpoints with a key in the token and a member's
SDK verifies them; a member's SDK signs with its own token key named in identity.toml and the
hub accepts it; the keys cannot be read out; a wrong PIN, a missing key, a key that could be
exported are each one line that says what to do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pkcs11
import pytest
from click.testing import CliRunner
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from adapters.sdk.identity import (
    IDENTITY_FILE,
    SIGNING_KEY,
    IdentityError,
    load_identity,
    write_identity,
)
from hub.cli import main
from hub.crypto import pki
from hub.crypto.envelope import header_of
from hub.crypto.keys import PrivateKey
from hub.crypto.pkcs11 import Pkcs11Config, Pkcs11Signer, generate_key, open_session
from hub.crypto.public import public_key_from_file
from hub.crypto.signer import Signer, SignerError, load_signer
from hub.crypto.signing import ECDSA_P256, ED25519, signing_input, verify_signature
from hub.domain.institutions import HUB_CODE
from hub.service.admin import NewKey, Registry
from hub.system.clock import ManualClock
from stophub.v1 import envelope_pb2
from tests.e2e.conftest import start_network, tls_for
from tests.e2e.wire_helpers import report

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN = "stophub-test"
PIN = "246810"
SO_PIN = "13579135"

pytestmark = pytest.mark.skipif(
    shutil.which("softhsm2-util") is None or not Path(MODULE).exists(),
    reason="softhsm2 is not installed (apt-get install softhsm2; .ci/run installs it)",
)


@dataclass(frozen=True)
class Token:
    """A SoftHSM token in a temporary directory, and how to name keys in it."""

    directory: Path
    pin_file: Path
    env: dict[str, str]

    def uri(self, label: str, *, pin_source: str | None = None) -> str:
        source = pin_source or f"file:{self.pin_file}"
        return f"pkcs11:token={TOKEN};object={label}?module-path={MODULE}&pin-source={source}"

    def config(self, label: str) -> Pkcs11Config:
        return Pkcs11Config.from_uri(self.uri(label))


@pytest.fixture(scope="session")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Token]:
    """One token for the session: SoftHSM reads SOFTHSM2_CONF once, when a process first
    loads it, so every test of this process shares the configuration made here."""
    directory = tmp_path_factory.mktemp("softhsm")
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = false\n"
    )
    saved = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            TOKEN,
            "--pin",
            PIN,
            "--so-pin",
            SO_PIN,
        ],
        check=True,
        capture_output=True,
    )
    pin_file = directory / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    try:
        yield Token(directory, pin_file, {**os.environ, "SOFTHSM2_CONF": str(conf)})
    finally:
        if saved is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = saved


def stophub(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("algorithm", [ED25519, ECDSA_P256])
def test_a_key_made_in_the_token_signs_and_cannot_leave_it(
    token: Token, tmp_path: Path, algorithm: str
) -> None:
    label = f"made-{algorithm}"
    pub = tmp_path / "key.pub"
    code, out = stophub(
        "keys", "generate", "--out", token.uri(label), "--algorithm", algorithm, "--pub", str(pub)
    )
    assert code == 0, out
    assert "not extractable" in out and PIN not in out
    registered_algorithm, public_key = public_key_from_file(pub.read_bytes())
    signer = load_signer(token.uri(label))
    assert isinstance(signer, Signer) and isinstance(signer, Pkcs11Signer)
    assert (signer.algorithm, signer.public_key) == (algorithm, public_key)
    assert registered_algorithm == algorithm and signer.key_id in out
    data = b"stophub.envelope.v1\x00 signed in the token"
    signature = signer.sign(data)
    assert verify_signature(algorithm, public_key, signature, data)
    assert not verify_signature(algorithm, public_key, signature, data + b"!")
    # `keys public` shows the same public key, from the token alone.
    code, shown = stophub("keys", "public", token.uri(label))
    assert code == 0 and public_key_from_file(shown.split("key id")[0].encode()) == (
        algorithm,
        public_key,
    )

    # Nothing reads the private key out: not its value, not wrapped under another key.
    with open_session(token.config(label)) as session:
        private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        assert private[Attribute.SENSITIVE] and not private[Attribute.EXTRACTABLE]
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            private[Attribute.VALUE]
        wrapping = session.generate_key(KeyType.AES, 256, template={Attribute.WRAP: True})
        with pytest.raises(pkcs11.exceptions.KeyUnextractable):
            wrapping.wrap_key(private, mechanism=Mechanism.AES_KEY_WRAP_PAD)
        wrapping.destroy()


def test_a_key_is_never_overwritten(token: Token, tmp_path: Path) -> None:
    generate_key(token.config("once"), ED25519)
    code, out = stophub(
        "keys", "generate", "--out", token.uri("once"), "--pub", str(tmp_path / "x.pub")
    )
    assert code == 1 and "has a key labelled 'once' already" in out, out
    assert not (tmp_path / "x.pub").exists()
    code, out = stophub("keys", "generate", "--out", token.uri("other"))
    assert code == 2 and "--pub" in out


def test_a_key_that_could_leave_the_token_is_refused(token: Token) -> None:
    with open_session(token.config("exportable")) as session:
        domain = session.create_domain_parameters(
            KeyType.EC,
            {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )
        domain.generate_keypair(
            store=True,
            label="exportable",
            private_template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False},
        )
    with pytest.raises(SignerError, match="can be exported"):
        load_signer(token.uri("exportable"))


def test_refusals_are_one_line(token: Token, tmp_path: Path) -> None:
    generate_key(token.config("refusals"), ECDSA_P256)
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("000000\n")
    cases = {
        token.uri("refusals", pin_source=f"file:{wrong}"): "wrong PIN for PKCS#11 token",
        token.uri("nokey"): "has no private key labelled 'nokey'",
        token.uri("refusals").replace(TOKEN, "elsewhere"): "no token labelled 'elsewhere'",
        token.uri("refusals", pin_source="env:STOPHUB_TEST_NO_SUCH_PIN"): "holds no PIN",
        token.uri("refusals").replace(MODULE, "/nonexistent/lib.so"): "cannot load the PKCS#11",
        token.uri("refusals") + "&pin-value=" + PIN: "pin-value puts the PIN on the command",
    }
    for uri, says in cases.items():
        code, out = stophub("keys", "public", uri)
        assert code == 1, out
        assert out.startswith("Error: ") and out.count("\n") == 1, out
        assert says in out, out
        assert f"pin-value={PIN}" not in out


def test_a_wrong_pin_stops_serve_before_anything_starts(token: Token, tmp_path: Path) -> None:
    """In a fresh process (the token not yet logged in): the token's own refusal, one line,
    and no database made."""
    generate_key(token.config("served"), ED25519)
    env = {**token.env, "STOPHUB_TEST_HSM_PIN": "999999"}
    db = tmp_path / "hub.db"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub.cli",
            "serve",
            "--db",
            f"sqlite:///{db}",
            "--insecure-plaintext",
            "--address",
            "127.0.0.1:0",
            "--hub-key",
            token.uri("served", pin_source="env:STOPHUB_TEST_HSM_PIN"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"Error: wrong PIN for PKCS#11 token '{TOKEN}' (from $STOPHUB_TEST_HSM_PIN); the token "
        "locks after a few wrong tries"
    ], done.stderr
    assert "999999" not in done.stderr and not db.exists()


async def test_the_hub_and_a_member_sign_with_token_keys(
    token: Token, tmp_path: Path, clock: ManualClock
) -> None:
    hub_signer = generate_key(token.config("hub-signing"), ECDSA_P256)
    member_signer = generate_key(token.config("banka-signing"), ED25519)
    network = await start_network(tmp_path, clock, hub_key=load_signer(token.uri("hub-signing")))
    try:
        # The hub registered the token's public key as its own.
        with network.store(read_only=True) as uow:
            hub = uow.institutions.get(HUB_CODE)
            assert hub is not None and hub.key(hub_signer.key_id) is not None
        Registry(network.store, clock).add_key(
            "BANKA", NewKey(member_signer.algorithm, member_signer.public_key), operator="test"
        )
        # BANKA's identity directory names its token key instead of a key file.
        folder = tmp_path / "banka"
        write_identity(
            folder, "BANKA", PrivateKey.generate(), network.tls_of("BANKA"), network.hub_public_key
        )
        (folder / SIGNING_KEY).unlink()
        with (folder / IDENTITY_FILE).open("a") as f:
            f.write(
                f'\n[pkcs11]\nmodule = "{MODULE}"\ntoken = "{TOKEN}"\nkey = "banka-signing"\n'
                f'pin_file = "{token.pin_file}"\n'
            )
        identity = load_identity(folder)
        assert isinstance(identity.key, Pkcs11Signer)
        assert identity.key.key_id == member_signer.key_id
        client = identity.client(network.target, clock=clock)
        try:
            # Signed in BANKA's token, checked by the hub; the answer signed in the hub's
            # token, checked by the SDK against the pinned hub key.
            case = await client.create_report(report(clock.now(), (500_000,)))
            assert case.case_id
            envelope, checkpoint = await client.get_log_checkpoint(fresh=True)
            assert envelope.key_id == hub_signer.key_id and checkpoint.tree_size > 0
            assert verify_signature(
                ECDSA_P256, hub_signer.public_key, envelope.signature, _signed(envelope)
            )
        finally:
            await client.close()
        # Rotating away from the token key: it vouches for the hub's next key, from the token.
        code, out = stophub("keys", "generate", "--out", str(tmp_path / "next.key"))
        assert code == 0, out
        code, out = stophub(
            *("keys", "endorse-hub", "--old", token.uri("hub-signing")),
            *("--new", str(tmp_path / "next.pub"), "--db", network.database_url),
        )
        assert code == 0, out
        assert f"endorsed by hub key {hub_signer.key_id}" in out
    finally:
        await network.server.stop(0.5)
        network.store.dispose()


def _signed(envelope: envelope_pb2.Envelope) -> bytes:
    return signing_input(header_of(envelope), envelope.body)


def test_identity_toml_refusals(token: Token, tmp_path: Path) -> None:
    folder = tmp_path / "id"
    write_identity(folder, "BANKB", PrivateKey.generate(), _any_tls(), PrivateKey.generate())
    with (folder / IDENTITY_FILE).open("a") as f:
        f.write(f'\n[pkcs11]\nmodule = "{MODULE}"\ntoken = "{TOKEN}"\nkey = "k"\npin = "1"\n')
    with pytest.raises(IdentityError, match=r"both signing\.key and a \[pkcs11\] key"):
        load_identity(folder)
    (folder / SIGNING_KEY).unlink()
    with pytest.raises(IdentityError, match="never write the PIN itself"):
        load_identity(folder)


def _any_tls() -> pki.TlsConfig:
    now = datetime.now(UTC)
    ca = pki.create_ca(now)
    return tls_for(ca, pki.issue_client(ca, "BANKB", now))


def test_the_port_does_not_care_where_the_key_is(token: Token, tmp_path: Path) -> None:
    """A key file and a token key are both a Signer named by one string."""
    path = tmp_path / "soft.key"
    code, out = stophub("keys", "generate", "--out", str(path))
    assert code == 0, out
    generate_key(token.config("either"), ECDSA_P256)
    for spec in (str(path), token.uri("either")):
        signer = load_signer(spec)
        assert verify_signature(
            signer.algorithm, signer.public_key, signer.sign(b"same port"), b"same port"
        )
    with pytest.raises(SignerError, match="no signing key at"):
        load_signer(tmp_path / "missing.key")
