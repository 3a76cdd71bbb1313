#!/usr/bin/python3
"""bb_tls — database.tls (CA, client certificate and key, verify_server) against a TLS mariadbd.

The test makes its own PKI with openssl (a CA, a server certificate for
localhost/127.0.0.1, a client certificate, and an unrelated second CA), starts
mariadbd with ssl_ca/ssl_cert/ssl_key, and creates users that REQUIRE SSL and
REQUIRE X509.  A connection that cannot be verified is TEMP, never an answer.
Run: SOCKMAPD=build/sockmapd tests/bb_tls.py [test-name-or-glob ...]
"""

import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F401,F403

pytestmark = pytest.mark.slow  # a PKI and a TLS MariaDB of its own

SSL_USER, SSL_PASSWORD = "tlsuser", "tlspw"      # REQUIRE SSL
X509_USER, X509_PASSWORD = "certuser", "certpw"  # REQUIRE X509: a client certificate signed by the CA
FOUND = ("recipient", "postmaster@example.org", fixture_reply("recipient", "postmaster@example.org"))

_pki = {}
_db = {}


def openssl(*args, cwd):
    r = subprocess.run([require_tool("openssl")] + list(args), cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=scaled(30))
    if r.returncode != 0:
        raise AssertionError("openssl %s failed: %s" % (" ".join(args[:2]), r.stdout.decode(errors="replace")))


def make_ca(d, name, cn):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".pem", "-days", "2", "-subj", "/CN=" + cn,
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=d)


def make_cert(d, name, ca, cn, san, usage):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn, cwd=d)
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=%s\n" % usage)
        if san:
            f.write("subjectAltName=%s\n" % san)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
            "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", ext, cwd=d)


def pki():
    """Paths of the test PKI, made once per suite."""
    if not _pki:
        d = tmpdir("pki")
        make_ca(d, "ca", "sockmapd test CA")
        make_ca(d, "otherca", "unrelated CA")
        make_cert(d, "server", "ca", "localhost", "DNS:localhost,IP:127.0.0.1", "serverAuth")
        make_cert(d, "elsewhere", "ca", "elsewhere.example", "DNS:elsewhere.example", "serverAuth")
        make_cert(d, "client", "ca", X509_USER, "", "clientAuth")
        make_cert(d, "otherclient", "otherca", X509_USER, "", "clientAuth")
        # The server reads the files it was started with; FLUSH SSL re-reads them.
        shutil.copy(os.path.join(d, "server.pem"), os.path.join(d, "live.pem"))
        shutil.copy(os.path.join(d, "server.key"), os.path.join(d, "live.key"))
        for name in os.listdir(d):
            _pki[name] = os.path.join(d, name)
    return _pki


def server():
    if "db" not in _db:
        p = pki()
        db = MariaDB(fixtures=True, name="tls", extra_args=[
            "--ssl-ca=" + p["ca.pem"], "--ssl-cert=" + p["live.pem"], "--ssl-key=" + p["live.key"]]).keep_for_suite()
        db.start()
        have = sql_rows(db, "SHOW GLOBAL VARIABLES LIKE 'have_ssl';")
        eq(have[0]["Value"] if have else None, "YES", "mariadbd TLS enabled")
        stmts = []
        for user, pw, req in ((SSL_USER, SSL_PASSWORD, "SSL"), (X509_USER, X509_PASSWORD, "X509")):
            stmts.append("CREATE USER '%s'@'%%' IDENTIFIED BY '%s' REQUIRE %s;" % (user, pw, req))
            stmts.append("GRANT SELECT ON dbmail.* TO '%s'@'%%';" % user)
        db.sql("\n".join(stmts))
        _db["db"] = db
    return _db["db"]


def config(user, password, tls=None, host=None):
    db = server()
    database = {"username": user, "password": password, "connect_timeout": 2, "read_timeout": 3,
                "write_timeout": 3, "retry_interval": 0}
    if tls is not None:
        database["tls"] = tls
    return temp_config(base_config(host or db, database=database))


def ssl_accepts(db):
    return int(sql_rows(db, "SHOW GLOBAL STATUS LIKE 'Ssl_accepts';")[0]["Value"])


def lookup(cfg):
    m, k, _ = FOUND
    rc, out, err = run_pipe(cfg, encode("%s %s" % (m, k)) + encode("recipient nobody@example.org"), timeout=20)
    got = decode_stream(out)
    eq(len(got), 2, "a reply per request")
    return got


def expect_answers(cfg, label):
    eq(lookup(cfg), [FOUND[2], b"NOTFOUND "], label)


def expect_temp(cfg, label, logged=None):
    """Every lookup TEMP; `logged`: text the log must show as the reason (the database's own words)."""
    for reply in lookup(cfg):
        ok(status_word(reply) in (b"TEMP", b"TIMEOUT"), "%s: answered %r" % (label, reply))
    if logged:
        contains(read_log(cfg), logged, label + ": reason in the log")


@test(timeout=120)
def tls_verified_with_client_certificate():
    p = pki()
    db = server()
    before = ssl_accepts(db)
    expect_answers(config(X509_USER, X509_PASSWORD, {"ca": p["ca.pem"], "cert": p["client.pem"],
                                                      "key": p["client.key"], "verify_server": True}),
                   "REQUIRE X509 user, CA + client certificate, server verified")
    ok(ssl_accepts(db) > before, "the server counted no TLS handshake")


@test
def tls_ca_only_for_require_ssl_user():
    p = pki()
    expect_answers(config(SSL_USER, SSL_PASSWORD, {"ca": p["ca.pem"], "verify_server": True}),
                   "REQUIRE SSL user, CA only")


@test
def tls_by_host_name_matches_certificate():
    p = pki()
    db = server()
    expect_answers(config(SSL_USER, SSL_PASSWORD, {"ca": p["ca.pem"], "verify_server": True},
                          host="localhost:%d" % db.port), "host given as localhost")


@test
def tls_wrong_ca_is_temp():
    p = pki()
    cfg = config(X509_USER, X509_PASSWORD, {"ca": p["otherca.pem"], "cert": p["client.pem"],
                                             "key": p["client.key"], "verify_server": True})
    expect_temp(cfg, "server certificate from another CA", "TLS/SSL error")
    # Connector/C checks the chain whenever a CA is given, verify_server or not.
    expect_temp(config(X509_USER, X509_PASSWORD, {"ca": p["otherca.pem"], "cert": p["client.pem"],
                                                   "key": p["client.key"], "verify_server": False}),
                "server certificate from another CA, verify_server false", "TLS/SSL error")
    rc, out, err = run_pipe(cfg, b"", args=["--query", FOUND[0], FOUND[1]], timeout=20)
    eq(rc, 75, "--query exit status (%r %r)" % (out, err))


@test
def tls_client_certificate_from_another_ca_is_temp():
    p = pki()
    expect_temp(config(X509_USER, X509_PASSWORD, {"ca": p["ca.pem"], "cert": p["otherclient.pem"],
                                                   "key": p["otherclient.key"], "verify_server": True}),
                "client certificate the server does not trust", "cannot connect")


@test
def tls_require_x509_without_client_certificate_is_temp():
    p = pki()
    expect_temp(config(X509_USER, X509_PASSWORD, {"ca": p["ca.pem"], "verify_server": True}),
                "REQUIRE X509 user without a client certificate", "Access denied")


@test
def plain_connection_to_require_ssl_user_is_temp():
    expect_temp(config(SSL_USER, SSL_PASSWORD), "no tls section, REQUIRE SSL user", "Access denied")
    expect_temp(config(X509_USER, X509_PASSWORD), "no tls section, REQUIRE X509 user", "Access denied")
    # The same server still serves plain connections to users that allow them.
    expect_answers(config(MariaDB.APP_USER, MariaDB.APP_PASSWORD), "plain, ordinary user")


@test
def tls_host_name_mismatch_is_temp_unless_verify_off():
    p = pki()
    db = server()

    def use(name):
        shutil.copy(p[name + ".pem"], p["live.pem"])
        shutil.copy(p[name + ".key"], p["live.key"])
        db.sql("FLUSH SSL;")

    use("elsewhere")
    defer(use, "server")
    expect_temp(config(SSL_USER, SSL_PASSWORD, {"ca": p["ca.pem"], "verify_server": True}),
                "certificate for elsewhere.example, verify_server true", "TLS/SSL error")
    # verify_server false: encrypted, but the name is not checked.
    expect_answers(config(SSL_USER, SSL_PASSWORD, {"ca": p["ca.pem"], "verify_server": False}),
                   "certificate for elsewhere.example, verify_server false")


@test
def tls_missing_files_are_temp():
    p = pki()
    missing = os.path.join(tmpdir("nofiles"), "none.pem")
    for label, tls in (("missing CA", {"ca": missing, "verify_server": True}),
                       ("missing client key", {"ca": p["ca.pem"], "cert": p["client.pem"], "key": missing})):
        expect_temp(config(X509_USER, X509_PASSWORD, tls), label, "cannot connect")


if __name__ == "__main__":
    main()
