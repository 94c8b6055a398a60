"""Bearer-token auth (routing and admin tokens), TLS, and tokens kept out of every log."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import secrets

import grpc
import pytest
from test_server_service import start

from routerl.cli import main
from routerl.client import RouterClient, RouterClientError
from routerl.descriptors.model import ModelDescriptor
from routerl.server.auth import TokenAuth, read_token
from routerl.server.config import ServerConfig
from routerl.server.proto import router_pb2 as pb

CODE = grpc.StatusCode


@pytest.fixture
def tokens(monkeypatch):
    routing, admin = "rt-" + secrets.token_urlsafe(24), "ad-" + secrets.token_urlsafe(24)
    monkeypatch.setenv("TEST_ROUTING_TOKEN", routing)
    monkeypatch.setenv("TEST_ADMIN_TOKEN", admin)
    return routing, admin


def stop(srv):
    srv.stop(0).wait()
    srv.close()


def code_of(fn):
    with pytest.raises(RouterClientError) as info:
        fn()
    return info.value


def test_tokens_gate_calls_with_the_documented_statuses(tmp_path, tokens, caplog, capsys):
    routing, admin = tokens
    caplog.set_level(logging.DEBUG)
    srv = start(tmp_path, auth_token_env="TEST_ROUTING_TOKEN", admin_token_env="TEST_ADMIN_TOKEN")
    target = f"127.0.0.1:{srv.port}"
    new = ModelDescriptor("authz-model", 0.1, 0.2)
    try:
        with RouterClient(target, timeout=5) as anon, RouterClient(target, timeout=5, token="wrong-" + routing) as wrong, \
                RouterClient(target, timeout=5, token=routing) as router_c, \
                RouterClient(target, timeout=5, token_env="TEST_ADMIN_TOKEN") as admin_c:
            assert anon.health() == "SERVING", "health checking stays open"
            for call in (lambda c: c.route("q"), lambda c: c.list_models(), lambda c: c.get_model("big"),
                         lambda c: c.register_model(new)):
                err = code_of(lambda: call(anon))
                assert err.code == CODE.UNAUTHENTICATED and "Bearer" in err.details
                assert code_of(lambda: call(wrong)).code == CODE.UNAUTHENTICATED

            assert router_c.route("q").model_id and router_c.get_model("big").id == "big"
            assert len(router_c.list_models()) == 3
            for write in (lambda: router_c.register_model(new), lambda: router_c.update_model(ModelDescriptor("big", 1, 1)),
                          lambda: router_c.remove_model("big")):
                err = code_of(write)
                assert err.code == CODE.PERMISSION_DENIED and "admin token" in err.details
            assert [m.id for m in router_c.list_models()] == ["big", "small", "mid"], "nothing was written"

            assert admin_c.register_model(new) == new
            assert admin_c.route("q", allow=["authz-model"]).model_id == "authz-model"
            admin_c.remove_model("authz-model")

            raw = anon.channel.unary_unary("/routerl.v1.Router/Route")
            for header in ("Basic " + routing, routing, "Bearer", "Bearer  ", "bearer " + routing + "x"):
                with pytest.raises(grpc.RpcError) as info:
                    raw(pb.RouteRequest(query="q").SerializeToString(), timeout=5, metadata=(("authorization", header),))
                assert info.value.code() == CODE.UNAUTHENTICATED, header
                assert routing not in (info.value.details() or "")
            ok = raw(pb.RouteRequest(query="q").SerializeToString(), timeout=5, metadata=(("authorization", "bearer " + routing),))
            assert ok, "the scheme is case-insensitive"

        code, _, err = _cli(capsys, "route", "q", "--target", target, "--token-env", "NO_SUCH_VAR_X")
        assert code == 2 and "NO_SUCH_VAR_X" in err
        code, out, _ = _cli(capsys, "route", "q", "--target", target, "--token-env", "TEST_ROUTING_TOKEN")
        assert code == 0 and out.split()[0] in {"big", "small", "mid"}
        code, _, err = _cli(capsys, "models", "remove", "big", "--target", target, "--token-env", "TEST_ROUTING_TOKEN")
        assert code == 2 and "PERMISSION_DENIED" in err
        code, _, err = _cli(capsys, "route", "q", "--target", target, "--token-env", "ROUTERL_TOKEN")
        assert code == 2 and "UNAUTHENTICATED" in err and "ROUTERL_TOKEN" in err

        metrics = srv.metrics.render().decode()
        assert 'routerl_errors_total{code="UNAUTHENTICATED",method="Route"}' in metrics
        assert 'routerl_errors_total{code="PERMISSION_DENIED",method="RegisterModel"}' in metrics
    finally:
        stop(srv)
    logs = caplog.text + capsys.readouterr().err
    assert "UNAUTHENTICATED" in logs and "PERMISSION_DENIED" in logs, "refusals are logged"
    for token in (routing, admin):
        assert token not in logs and token[3:] not in logs, "a token appeared in the logs"
    assert routing not in repr(srv.auth) and routing not in repr(srv.config)


def _cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_token_configuration_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("EMPTY_TOKEN", "  ")
    monkeypatch.setenv("SPACED_TOKEN", "two words")
    monkeypatch.setenv("GOOD_TOKEN", "s3cret-value")
    with pytest.raises(ValueError, match="UNSET_TOKEN_VAR is not set") as info:
        read_token("UNSET_TOKEN_VAR", what="routing token")
    with pytest.raises(ValueError, match="EMPTY_TOKEN"):
        read_token("EMPTY_TOKEN", what="routing token")
    with pytest.raises(ValueError, match="without spaces") as info:
        read_token("SPACED_TOKEN", what="routing token")
    assert "two words" not in str(info.value)
    path = tmp_path / "token"
    path.write_text("s3cret-value\n")
    assert read_token(path=str(path), what="admin token") == b"s3cret-value"
    with pytest.raises(FileNotFoundError):
        read_token(path=str(tmp_path / "none"), what="admin token")
    with pytest.raises(ValueError, match="must differ"):
        TokenAuth(b"same", b"same")
    with pytest.raises(ValueError, match="not both"):
        ServerConfig(auth_token_env="A", auth_token_file="b")
    with pytest.raises(ValueError, match="go together"):
        ServerConfig(tls_cert="x.pem")
    with pytest.raises(ValueError, match="GOOD_TOKEN2"):
        start(tmp_path, auth_token_env="GOOD_TOKEN2")
    only_admin = TokenAuth(None, b"adm")
    assert only_admin.check("Route", (("authorization", "Bearer adm"),)) == "admin"
    routing_only = TokenAuth(b"rt", None)
    from routerl.server.auth import AuthFailure

    with pytest.raises(AuthFailure) as refused:
        routing_only.check("RegisterModel", (("authorization", "Bearer rt"),))
    assert refused.value.code == CODE.PERMISSION_DENIED
    assert TokenAuth().check("RegisterModel", ()) is None, "no tokens: auth is off"


# -- TLS -----------------------------------------------------------------------------------------
def _write_certs(tmp_path):
    """A throwaway CA and a server certificate for localhost/127.0.0.1, signed by it (EC keys)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "routerl test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "server.pem", "key": tmp_path / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return paths


def test_tls_with_token(tmp_path, tokens, capsys):
    routing, _ = tokens
    certs = _write_certs(tmp_path)
    srv = start(tmp_path, tls_cert=str(certs["cert"]), tls_key=str(certs["key"]), auth_token_env="TEST_ROUTING_TOKEN")
    target = f"127.0.0.1:{srv.port}"
    try:
        with RouterClient(target, timeout=5, tls_ca=certs["ca"], token=routing) as c:
            assert c.route("over TLS").model_id in {"big", "small", "mid"}
            assert c.health() == "SERVING"
        with RouterClient(target, timeout=5, tls_ca=certs["ca"]) as c:
            assert code_of(lambda: c.route("q")).code == CODE.UNAUTHENTICATED
        with RouterClient(target, timeout=1.5, token=routing) as plain:
            assert code_of(lambda: plain.route("q")).code == CODE.UNAVAILABLE, "plaintext is refused"
        with RouterClient(target, timeout=1.5, tls=True, token=routing) as untrusted:
            assert code_of(lambda: untrusted.route("q")).code == CODE.UNAVAILABLE, "an unknown CA is refused"
        code, out, _ = _cli(capsys, "route", "q", "--target", target, "--tls-ca", str(certs["ca"]), "--token-env", "TEST_ROUTING_TOKEN")
        assert code == 0 and out.split()[0] in {"big", "small", "mid"}
    finally:
        stop(srv)
    with pytest.raises(ValueError, match="not PEM"):
        (tmp_path / "bad.pem").write_text("nope")
        start(tmp_path, tls_cert=str(tmp_path / "bad.pem"), tls_key=str(certs["key"]))
    # a key that is not the certificate's (or the two swapped) is named as such, before the registry is made
    from routerl.server.app import RouterServer
    from routerl.server.config import ServerConfig

    (tmp_path / "other").mkdir()
    other = _write_certs(tmp_path / "other")
    for cert, key in ((certs["cert"], other["key"]), (certs["key"], certs["cert"])):
        db = tmp_path / f"never-{cert.name}.db"
        with pytest.raises(ValueError, match="do not make a pair"):
            RouterServer(ServerConfig(port=0, db=str(db), router="descriptor-score", tls_cert=str(cert), tls_key=str(key)))
        assert not db.exists()
