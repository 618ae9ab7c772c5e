/*
 * SM2 signatures with SM3 (GB/T 32918.2, GM/T 0009) through the system's OpenSSL 3 EVP
 * interface (ADR 23). `cryptography` has no SM2; OpenSSL has had it since 1.1.1 and is what
 * the rest of the process already trusts for TLS, Ed25519 and P-256.
 *
 * Deliberately thin: keys go in and out as the raw forms docs/signing.md defines (a 32-byte
 * private scalar, a 65-byte uncompressed point), signatures as DER SEQUENCE { r, s }, and
 * everything about encodings, key ids and envelopes stays in Python (hub/crypto/sm2.py).
 * The distinguishing ID is always set explicitly (EVP_PKEY_CTX_set1_id), never left to the
 * library's default, which has changed between OpenSSL releases.
 *
 * An OpenSSL built without SM2 or SM3 (OPENSSL_NO_SM2, a FIPS-only provider set) still
 * imports this module: `unavailable()` says why, and sm2.py turns that into a clear error.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/opensslv.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <string.h>

#define SCALAR 32
#define POINT 65
#define CAPSULE "hub.crypto._sm2.key"
/* GB/T 32918.2's ENTL is a 16-bit count of bits. */
#define MAX_ID (0xFFFF / 8)

static EVP_MD *sm3;        /* fetched once: an implicit fetch per call costs more than SM3 */
static EC_GROUP *group;    /* the SM2 curve, for deriving public points */
static const char *missing; /* why SM2 cannot be used here, or NULL */

static PyObject *openssl_error(const char *what) {
    unsigned long code = ERR_get_error();
    char detail[256] = "no detail from OpenSSL";
    if (code != 0)
        ERR_error_string_n(code, detail, sizeof detail);
    ERR_clear_error();
    PyErr_Format(PyExc_ValueError, "%s: %s", what, detail);
    return NULL;
}

static int check_available(void) {
    if (missing != NULL) {
        PyErr_Format(PyExc_RuntimeError, "SM2 is not available: %s", missing);
        return 0;
    }
    return 1;
}

static void free_key(PyObject *capsule) {
    EVP_PKEY *pkey = PyCapsule_GetPointer(capsule, CAPSULE);
    EVP_PKEY_free(pkey);
}

static EVP_PKEY *key_of(PyObject *capsule) {
    return PyCapsule_GetPointer(capsule, CAPSULE);
}

/* An SM2 EVP_PKEY from a public point and, when `scalar` is not NULL, a private scalar. */
static EVP_PKEY *make_key(const unsigned char *scalar, const unsigned char *point) {
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    OSSL_PARAM *params = NULL;
    BIGNUM *priv = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    if (bld == NULL)
        goto done;
    if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "SM2", 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, POINT))
        goto done;
    if (scalar != NULL) {
        priv = BN_bin2bn(scalar, SCALAR, NULL);
        if (priv == NULL || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, priv))
            goto done;
    }
    params = OSSL_PARAM_BLD_to_param(bld);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "SM2", NULL);
    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1)
        goto done;
    if (EVP_PKEY_fromdata(ctx, &pkey, scalar ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params) !=
        1)
        pkey = NULL;
done:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_clear_free(priv);
    return pkey;
}

/* The uncompressed public point of `scalar`; 1 on success. Rejects 0 and scalars >= n - 1
 * (GB/T 32918.2 keys are in [1, n - 2]: d = n - 1 makes (1 + d) non-invertible). */
static int derive_point(const unsigned char *scalar, unsigned char *point) {
    int ok = 0;
    BN_CTX *bn = BN_CTX_new();
    BIGNUM *d = BN_bin2bn(scalar, SCALAR, NULL);
    BIGNUM *limit = BN_new();
    EC_POINT *pub = EC_POINT_new(group);
    if (bn == NULL || d == NULL || limit == NULL || pub == NULL)
        goto done;
    if (BN_copy(limit, EC_GROUP_get0_order(group)) == NULL || !BN_sub_word(limit, 1))
        goto done;
    if (BN_is_zero(d) || BN_cmp(d, limit) >= 0) {
        ok = -1;
        goto done;
    }
    if (!EC_POINT_mul(group, pub, d, NULL, NULL, bn) ||
        EC_POINT_point2oct(group, pub, POINT_CONVERSION_UNCOMPRESSED, point, POINT, bn) != POINT)
        goto done;
    ok = 1;
done:
    EC_POINT_free(pub);
    BN_free(limit);
    BN_clear_free(d);
    BN_CTX_free(bn);
    return ok;
}

PyDoc_STRVAR(unavailable_doc,
             "unavailable()\n--\n\nWhy SM2 with SM3 cannot be used with this OpenSSL, or None.");

static PyObject *unavailable(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    if (missing == NULL)
        Py_RETURN_NONE;
    return PyUnicode_FromString(missing);
}

PyDoc_STRVAR(sm3_doc, "sm3(data)\n--\n\nThe SM3 hash (GB/T 32905) of `data`: 32 bytes.");

static PyObject *sm3_hash(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data;
    unsigned char out[32];
    unsigned int len = 0;
    if (!check_available() || !PyArg_ParseTuple(args, "y*", &data))
        return NULL;
    int ok = EVP_Digest(data.buf, (size_t)data.len, out, &len, sm3, NULL);
    PyBuffer_Release(&data);
    if (ok != 1 || len != sizeof out)
        return openssl_error("SM3");
    return PyBytes_FromStringAndSize((const char *)out, sizeof out);
}

PyDoc_STRVAR(generate_doc, "generate()\n--\n\nA new random private scalar (32 bytes).");

static PyObject *generate(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    if (!check_available())
        return NULL;
    unsigned char scalar[SCALAR];
    BIGNUM *priv = NULL;
    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "SM2");
    if (pkey == NULL || EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &priv) != 1 ||
        BN_bn2binpad(priv, scalar, SCALAR) != SCALAR) {
        EVP_PKEY_free(pkey);
        BN_clear_free(priv);
        return openssl_error("SM2 key generation");
    }
    EVP_PKEY_free(pkey);
    BN_clear_free(priv);
    PyObject *result = PyBytes_FromStringAndSize((const char *)scalar, SCALAR);
    OPENSSL_cleanse(scalar, SCALAR);
    return result;
}

PyDoc_STRVAR(public_point_doc,
             "public_point(scalar)\n--\n\nThe 65-byte uncompressed public point of a private "
             "scalar; ValueError outside [1, n - 2].");

static PyObject *public_point(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer scalar;
    unsigned char point[POINT];
    if (!check_available() || !PyArg_ParseTuple(args, "y*", &scalar))
        return NULL;
    int ok = -1;
    if (scalar.len == SCALAR)
        ok = derive_point(scalar.buf, point);
    PyBuffer_Release(&scalar);
    if (ok < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "an SM2 private key is a 32-byte scalar in [1, n - 2]");
        return NULL;
    }
    if (ok == 0)
        return openssl_error("SM2 public point");
    return PyBytes_FromStringAndSize((const char *)point, POINT);
}

PyDoc_STRVAR(private_key_doc,
             "private_key(scalar)\n--\n\nA signing key (an opaque handle) for a 32-byte "
             "private scalar.");

static PyObject *private_key(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer scalar;
    unsigned char point[POINT];
    if (!check_available() || !PyArg_ParseTuple(args, "y*", &scalar))
        return NULL;
    int ok = -1;
    EVP_PKEY *pkey = NULL;
    if (scalar.len == SCALAR) {
        ok = derive_point(scalar.buf, point);
        if (ok == 1)
            pkey = make_key(scalar.buf, point);
    }
    PyBuffer_Release(&scalar);
    if (ok < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "an SM2 private key is a 32-byte scalar in [1, n - 2]");
        return NULL;
    }
    if (pkey == NULL)
        return openssl_error("SM2 private key");
    PyObject *capsule = PyCapsule_New(pkey, CAPSULE, free_key);
    if (capsule == NULL)
        EVP_PKEY_free(pkey);
    return capsule;
}

PyDoc_STRVAR(public_key_doc,
             "public_key(point)\n--\n\nA verifying key (an opaque handle) for a 65-byte "
             "uncompressed point; ValueError if it is not a point of the SM2 curve.");

static PyObject *public_key(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer point;
    if (!check_available() || !PyArg_ParseTuple(args, "y*", &point))
        return NULL;
    EVP_PKEY *pkey = NULL;
    int shape = point.len == POINT && ((const unsigned char *)point.buf)[0] == 0x04;
    if (shape)
        pkey = make_key(NULL, point.buf);
    PyBuffer_Release(&point);
    if (!shape) {
        PyErr_SetString(PyExc_ValueError,
                        "an SM2 public key is an uncompressed point: 65 bytes, 0x04 first");
        return NULL;
    }
    if (pkey == NULL)
        return openssl_error("not a point of the SM2 curve");
    PyObject *capsule = PyCapsule_New(pkey, CAPSULE, free_key);
    if (capsule == NULL)
        EVP_PKEY_free(pkey);
    return capsule;
}

/* A digest-sign or digest-verify context over SM3 with the distinguishing ID set. */
static int start(EVP_MD_CTX **mctx, EVP_PKEY_CTX **pctx, EVP_PKEY *pkey, const Py_buffer *id,
                 int signing) {
    *mctx = EVP_MD_CTX_new();
    *pctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (*mctx == NULL || *pctx == NULL)
        return 0;
    if (EVP_PKEY_CTX_set1_id(*pctx, id->buf, (size_t)id->len) <= 0)
        return 0;
    /* The context stays ours (freed after the EVP_MD_CTX), as SM2(7) shows. */
    EVP_MD_CTX_set_pkey_ctx(*mctx, *pctx);
    if (signing)
        return EVP_DigestSignInit(*mctx, NULL, sm3, NULL, pkey) == 1;
    return EVP_DigestVerifyInit(*mctx, NULL, sm3, NULL, pkey) == 1;
}

PyDoc_STRVAR(sign_doc,
             "sign(key, id, data)\n--\n\nThe SM2 signature with SM3 of `data` under the "
             "distinguishing ID `id`: DER SEQUENCE { r, s }. Randomised.");

static PyObject *sign(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *capsule;
    Py_buffer id, data;
    if (!check_available() || !PyArg_ParseTuple(args, "Oy*y*", &capsule, &id, &data))
        return NULL;
    PyObject *result = NULL;
    EVP_PKEY *pkey = key_of(capsule);
    if (pkey == NULL)
        goto release;
    if (id.len < 1 || id.len > MAX_ID) {
        PyErr_SetString(PyExc_ValueError, "the distinguishing ID is 1 to 8191 bytes");
        goto release;
    }
    unsigned char sig[80]; /* DER of two integers of at most 33 bytes: at most 72 */
    size_t siglen = sizeof sig;
    EVP_MD_CTX *mctx = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = start(&mctx, &pctx, pkey, &id, 1) &&
         EVP_DigestSign(mctx, sig, &siglen, data.buf, (size_t)data.len) == 1;
    Py_END_ALLOW_THREADS
    EVP_MD_CTX_free(mctx);
    EVP_PKEY_CTX_free(pctx);
    if (!ok)
        openssl_error("SM2 signing");
    else
        result = PyBytes_FromStringAndSize((const char *)sig, (Py_ssize_t)siglen);
release:
    PyBuffer_Release(&id);
    PyBuffer_Release(&data);
    return result;
}

PyDoc_STRVAR(verify_doc,
             "verify(key, id, signature, data)\n--\n\nWhether `signature` (DER) is a valid SM2 "
             "signature with SM3 of `data` under the distinguishing ID `id`.");

static PyObject *verify(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *capsule;
    Py_buffer id, sig, data;
    if (!check_available() || !PyArg_ParseTuple(args, "Oy*y*y*", &capsule, &id, &sig, &data))
        return NULL;
    PyObject *result = NULL;
    EVP_PKEY *pkey = key_of(capsule);
    if (pkey == NULL)
        goto release;
    if (id.len < 1 || id.len > MAX_ID) {
        PyErr_SetString(PyExc_ValueError, "the distinguishing ID is 1 to 8191 bytes");
        goto release;
    }
    EVP_MD_CTX *mctx = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    int started, verdict = 0;
    Py_BEGIN_ALLOW_THREADS
    started = start(&mctx, &pctx, pkey, &id, 0);
    if (started)
        verdict = EVP_DigestVerify(mctx, sig.buf, (size_t)sig.len, data.buf, (size_t)data.len);
    Py_END_ALLOW_THREADS
    EVP_MD_CTX_free(mctx);
    EVP_PKEY_CTX_free(pctx);
    if (!started) {
        openssl_error("SM2 verification");
        goto release;
    }
    /* 0 is a wrong signature, < 0 a malformed one: both are simply not valid. */
    ERR_clear_error();
    result = PyBool_FromLong(verdict == 1);
release:
    PyBuffer_Release(&id);
    PyBuffer_Release(&sig);
    PyBuffer_Release(&data);
    return result;
}

PyDoc_STRVAR(private_from_der_doc,
             "private_from_der(der)\n--\n\nThe private scalar of a DER private key (PKCS#8 or "
             "SEC1) on the SM2 curve; ValueError for anything else.");

static PyObject *private_from_der(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer der;
    if (!check_available() || !PyArg_ParseTuple(args, "y*", &der))
        return NULL;
    const unsigned char *p = der.buf;
    EVP_PKEY *pkey = d2i_AutoPrivateKey(NULL, &p, (long)der.len);
    int whole = pkey != NULL && p == (const unsigned char *)der.buf + der.len;
    PyBuffer_Release(&der);
    if (pkey == NULL)
        return openssl_error("not a DER private key");
    char name[64] = "";
    BIGNUM *priv = NULL;
    unsigned char scalar[SCALAR];
    PyObject *result = NULL;
    if (!whole) {
        PyErr_SetString(PyExc_ValueError, "trailing bytes after the private key");
    } else if (!EVP_PKEY_is_a(pkey, "SM2") &&
               !(EVP_PKEY_is_a(pkey, "EC") &&
                 EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, name,
                                                sizeof name, NULL) == 1 &&
                 strcmp(name, "SM2") == 0)) {
        PyErr_SetString(PyExc_ValueError, "not a private key on the SM2 curve");
    } else if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &priv) != 1 ||
               BN_bn2binpad(priv, scalar, SCALAR) != SCALAR) {
        openssl_error("SM2 private scalar");
    } else {
        result = PyBytes_FromStringAndSize((const char *)scalar, SCALAR);
        OPENSSL_cleanse(scalar, SCALAR);
    }
    ERR_clear_error();
    BN_clear_free(priv);
    EVP_PKEY_free(pkey);
    return result;
}

PyDoc_STRVAR(private_to_pem_doc,
             "private_to_pem(key)\n--\n\nThe key as unencrypted PKCS#8 PEM (id-ecPublicKey, "
             "curve SM2), as `openssl genpkey -algorithm SM2` writes it.");

static PyObject *private_to_pem(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *capsule;
    if (!check_available() || !PyArg_ParseTuple(args, "O", &capsule))
        return NULL;
    EVP_PKEY *pkey = key_of(capsule);
    if (pkey == NULL)
        return NULL;
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL || PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) != 1) {
        BIO_free(bio);
        return openssl_error("SM2 private key to PEM");
    }
    char *text;
    long len = BIO_get_mem_data(bio, &text);
    PyObject *result = PyBytes_FromStringAndSize(text, len);
    BIO_free(bio);
    return result;
}

static PyMethodDef methods[] = {
    {"unavailable", unavailable, METH_NOARGS, unavailable_doc},
    {"sm3", sm3_hash, METH_VARARGS, sm3_doc},
    {"generate", generate, METH_NOARGS, generate_doc},
    {"public_point", public_point, METH_VARARGS, public_point_doc},
    {"private_key", private_key, METH_VARARGS, private_key_doc},
    {"public_key", public_key, METH_VARARGS, public_key_doc},
    {"sign", sign, METH_VARARGS, sign_doc},
    {"verify", verify, METH_VARARGS, verify_doc},
    {"private_from_der", private_from_der, METH_VARARGS, private_from_der_doc},
    {"private_to_pem", private_to_pem, METH_VARARGS, private_to_pem_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_sm2", "SM2 with SM3 through OpenSSL's EVP interface (ADR 23).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__sm2(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddStringConstant(m, "OPENSSL_VERSION", OpenSSL_version(OPENSSL_VERSION)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    sm3 = EVP_MD_fetch(NULL, "SM3", NULL);
    group = EC_GROUP_new_by_curve_name(NID_sm2);
    EVP_SIGNATURE *signature = EVP_SIGNATURE_fetch(NULL, "SM2", NULL);
    EVP_PKEY_CTX *probe = EVP_PKEY_CTX_new_from_name(NULL, "SM2", NULL);
    if (sm3 == NULL)
        missing = "this OpenSSL has no SM3 digest (built without it, or its provider is not "
                  "loaded)";
    else if (group == NULL || probe == NULL)
        missing = "this OpenSSL has no SM2 curve or key type";
    else if (signature == NULL)
        missing = "this OpenSSL has no SM2 signature implementation";
    EVP_SIGNATURE_free(signature);
    EVP_PKEY_CTX_free(probe);
    ERR_clear_error();
    return m;
}
