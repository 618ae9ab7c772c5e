"""The network PKI: what the certificates say, and how their files are written."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from adapters.sdk.reach import host_and_port
from hub.crypto import pki

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.create_ca(NOW)


def ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension:  # type: ignore[type-arg]
    return cert.extensions.get_extension_for_class(kind)


def test_the_ca_signs_leaves_only_and_lasts_ten_years(ca: pki.Issued) -> None:
    cert = ca.cert
    constraints = ext(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ext(cert, x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    assert isinstance(ca.key.curve, ec.SECP256R1)
    assert cert.not_valid_after_utc - NOW == timedelta(days=3650)
    assert cert.not_valid_before_utc < NOW, "backdated for peers whose clocks run behind"


def test_the_hub_certificate_names_its_hosts_for_server_auth(ca: pki.Issued) -> None:
    hub = pki.issue_server(ca, NOW, ["hub.stophub.test", "10.1.2.3", "::1"])
    hub.cert.verify_directly_issued_by(ca.cert)
    sans = ext(hub.cert, x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["hub.stophub.test"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("::1"),
    ]
    assert list(ext(hub.cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not ext(hub.cert, x509.BasicConstraints).value.ca
    assert hub.cert.not_valid_after_utc - NOW == timedelta(days=365)
    default = ext(pki.issue_server(ca, NOW).cert, x509.SubjectAlternativeName).value
    assert default.get_values_for_type(x509.DNSName) == ["localhost"]
    assert default.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    with pytest.raises(pki.PkiError):
        pki.issue_server(ca, NOW, [])


def test_a_client_certificate_names_its_institution_in_cn_and_san_uri(ca: pki.Issued) -> None:
    bank = pki.issue_client(ca, "BANKA", NOW, validity=timedelta(days=30))
    bank.cert.verify_directly_issued_by(ca.cert)
    cn = bank.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in cn] == ["BANKA"]
    uris = ext(bank.cert, x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:stophub:institution:BANKA"
    ]
    assert list(ext(bank.cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert bank.cert.not_valid_after_utc - NOW == timedelta(days=30)
    assert pki.institution_of(bank.cert) == "BANKA"


@pytest.mark.parametrize("code", ["", "BANK A", "BANKA/../x", "银行", "A:B"])
def test_only_institution_codes_get_a_certificate(ca: pki.Issued, code: str) -> None:
    with pytest.raises(pki.PkiError):
        pki.issue_client(ca, code, NOW)


def test_the_identity_is_the_one_san_uri_never_the_cn(ca: pki.Issued) -> None:
    assert pki.institution_of(pki.issue_server(ca, NOW).cert) is None, "DNS names only"
    assert pki.institution_of(ca.cert) is None, "no SAN at all"
    assert pki.institution_from_uris(["https://bank.example", "urn:stophub:institution:X"]) == "X"
    two = ["urn:stophub:institution:BANKA", "urn:stophub:institution:BANKB"]
    assert pki.institution_from_uris(two) is None, "one certificate, one institution"
    assert pki.institution_from_uris(["urn:stophub:institution:"]) is None
    assert pki.institution_from_uris([]) is None


def test_init_and_issue_write_files_once_with_private_keys_0600(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    ca, hub = pki.init(directory, NOW)
    assert {p.name for p in directory.iterdir()} == {
        "ca.pem",
        "ca.key",
        "hub-tls.pem",
        "hub-tls.key",
    }
    for name in ("ca.key", "hub-tls.key"):
        assert (directory / name).stat().st_mode & 0o777 == 0o600
    assert pki.load_ca(directory).cert == ca.cert
    server = pki.server_tls(directory)
    assert (server.ca, server.cert, server.key) == (ca.cert_pem, hub.cert_pem, hub.key_pem)

    with pytest.raises(FileExistsError):
        pki.init(directory, NOW)
    assert pki.load_ca(directory).cert == ca.cert, "the CA was not replaced"

    cert, key = pki.issue(directory, "PAYX", NOW)
    assert (cert.name, key.name) == ("payx-tls.pem", "payx-tls.key")
    assert key.stat().st_mode & 0o777 == 0o600
    issued = x509.load_pem_x509_certificate(cert.read_bytes())
    issued.verify_directly_issued_by(ca.cert)
    assert pki.institution_of(issued) == "PAYX"
    before = cert.read_bytes()
    with pytest.raises(FileExistsError):
        pki.issue(directory, "PAYX", NOW)
    assert cert.read_bytes() == before


def test_issue_to_another_directory_hands_over_a_whole_bundle(tmp_path: Path) -> None:
    pki.init(tmp_path / "pki", NOW)
    out = tmp_path / "for-banka"
    pki.issue(tmp_path / "pki", "BANKA", NOW, out_dir=out)
    assert {p.name for p in out.iterdir()} == {"ca.pem", "banka-tls.pem", "banka-tls.key"}
    tls = pki.client_tls(out, "BANKA", server_name="hub.stophub.test")
    assert tls.ca == (tmp_path / "pki" / "ca.pem").read_bytes()
    assert tls.server_name == "hub.stophub.test"
    pki.issue(tmp_path / "pki", "BANKB", NOW, out_dir=out)  # the same CA copy is fine

    pki.init(tmp_path / "other", NOW)
    with pytest.raises(pki.PkiError, match="another CA"):
        pki.issue(tmp_path / "other", "PAYX", NOW, out_dir=out)


def test_missing_material_is_named(tmp_path: Path) -> None:
    assert not pki.has_server_material(tmp_path)
    with pytest.raises(pki.PkiError, match=r"ca\.pem"):
        pki.server_tls(tmp_path)
    with pytest.raises(pki.PkiError, match=r"ca\.pem"):
        pki.issue(tmp_path, "BANKA", NOW)


def test_fingerprint_is_sha256_of_the_der_as_openssl_prints_it(ca: pki.Issued) -> None:
    printed = pki.fingerprint(ca.cert_pem)
    assert printed == pki.fingerprint(ca.cert)
    parts = printed.split(":")
    assert len(parts) == 32 and all(len(p) == 2 and p == p.upper() for p in parts)
    from cryptography.hazmat.primitives import hashes

    assert bytes.fromhex("".join(parts)) == ca.cert.fingerprint(hashes.SHA256())
    with pytest.raises(pki.PkiError):
        pki.fingerprint(b"not a certificate")


# ---- which names a server certificate holds (what the SDK says when TLS refuses the hub) -------


def test_a_server_certificate_names_exactly_its_hosts(ca: pki.Issued) -> None:
    cert = pki.issue_server(ca, NOW, ["hub.example.cn", "*.hub.test", "::1"]).cert
    assert pki.host_names(cert) == ["hub.example.cn", "*.hub.test", "::1"]
    for host in ("hub.example.cn", "HUB.Example.CN", "hub.example.cn.", "a.hub.test", "[::1]"):
        assert pki.names_host(cert, host), host
    for host in ("127.0.0.1", "example.cn", "x.hub.example.cn", "hub.test", "a.b.hub.test", "::2"):
        assert not pki.names_host(cert, host), host


@pytest.mark.parametrize(
    "target, address",
    [
        ("hub.example.cn:7443", ("hub.example.cn", 7443)),
        ("127.0.0.1:7443", ("127.0.0.1", 7443)),
        ("[::1]:7443", ("::1", 7443)),
        ("dns:///hub.example.cn:7443", ("hub.example.cn", 7443)),
        ("ipv4:127.0.0.1:7443", ("127.0.0.1", 7443)),
        ("hub.example.cn", ("hub.example.cn", 443)),
        ("unix:/run/stophub.sock", None),
        ("ipv4:10.0.0.1:7443,10.0.0.2:7443", None),
        ("::1", None),
    ],
)
def test_the_sdk_dials_the_host_and_port_of_a_target(
    target: str, address: tuple[str, int] | None
) -> None:
    assert host_and_port(target) == address
