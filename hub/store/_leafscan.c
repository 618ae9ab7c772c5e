/*
 * The innermost loop of `stophub audit verify` in C (ADR 18): for each raw audit_log row,
 * open the sealed detail (and payload) with AES-256-GCM, build the leaf data exactly as
 * hub/domain/auditleaf.py's leaf_bytes documents it, hash it (RFC 6962 leaf prefix) and
 * compare it with the stored leaf; and check the hub's tag on the row (HMAC-SHA256 of
 * auditleaf.tag_bytes under the derived key of its data key, hub/crypto/audittag.py).
 *
 * It is an accelerator, never a second definition: any row it cannot handle in the common
 * form (a value that does not open, an unknown key, an unusual type or time format, a leaf
 * that differs from the stored one, a tag that is missing, under an unknown key or wrong, a
 * row not placed or refused) is returned in `slow`, and the Python scan
 * (hub/store/auditscan.py) computes that row itself and names what is wrong with it. So the
 * findings come from one implementation, and this file only has to be right about rows that
 * verify; tests hold it to the Python leaf for random and hostile rows.
 *
 * The rows come from a database an attacker may have edited: every length is checked before
 * it is used, and nothing is trusted to be the type it should be.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

#define NONCE_BYTES 12
#define TAG_BYTES 16
#define SEALED_VERSION 1
#define ROW_COLUMNS 14
#define HMAC_BLOCK 64
/* Room before fields 3.. of a row in the buffer, where the leaf's (0x00, format, position)
 * or the tag's (format, empty position) first fields are written in turn: one buffer, no copy. */
#define ROOM 64

/* "stophub-audit/1" with its 4-byte length, after the 0x00 leaf prefix. */
static const unsigned char LEAF_HEAD[] = {0x00, 0, 0, 0, 15, 's', 't', 'o', 'p', 'h', 'u', 'b',
                                          '-',  'a', 'u', 'd', 'i', 't', '/', '1'};

/* "stophub-audit-tag/1" with its 4-byte length, then the empty position. */
static const unsigned char TAG_HEAD[] = {0,   0,   0,   19,  's', 't', 'o', 'p', 'h',
                                         'u', 'b', '-', 'a', 'u', 'd', 'i', 't', '-',
                                         't', 'a', 'g', '/', '1', 0,   0,   0,   0};

typedef struct {
    const char *id;
    Py_ssize_t id_len;
    EVP_CIPHER_CTX *ctx; /* the key schedule is set once; each value only sets its nonce */
} Key;

/* A derived tag key as HMAC-SHA256's two padded-key states (RFC 2104), hashed once: a tag
 * then costs copying them and hashing the data and the inner digest. */
typedef struct {
    const char *id;
    Py_ssize_t id_len;
    EVP_MD_CTX *inner, *outer;
} TagKey;

typedef struct {
    unsigned char *data;
    size_t len;
    size_t cap;
} Buffer;

static int buffer_reserve(Buffer *b, size_t extra) {
    if (extra > SIZE_MAX - b->len) return -1;
    size_t need = b->len + extra;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) return -1;
        cap *= 2;
    }
    unsigned char *grown = PyMem_Realloc(b->data, cap);
    if (grown == NULL) return -1;
    b->data = grown;
    b->cap = cap;
    return 0;
}

/* A field: its length as 4 bytes big-endian, then its bytes. */
static int put_field(Buffer *b, const void *data, size_t len) {
    if (len > 0xFFFFFFFFu) return -1;
    if (buffer_reserve(b, 4 + len) < 0) return -1;
    unsigned char *p = b->data + b->len;
    p[0] = (unsigned char)(len >> 24);
    p[1] = (unsigned char)(len >> 16);
    p[2] = (unsigned char)(len >> 8);
    p[3] = (unsigned char)len;
    if (len) memcpy(p + 4, data, len);
    b->len += 4 + len;
    return 0;
}

static int put_decimal(Buffer *b, long long value) {
    char text[32];
    int n = snprintf(text, sizeof text, "%lld", value);
    if (n < 0 || (size_t)n >= sizeof text) return -1;
    return put_field(b, text, (size_t)n);
}

/* Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static long long days_from_civil(long long y, unsigned m, unsigned d) {
    y -= m <= 2;
    const long long era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

static int days_in_month(long long y, unsigned m) {
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return 29;
    return days[m - 1];
}

static int micros_of(long long y, unsigned mo, unsigned d, unsigned h, unsigned mi, unsigned s,
                     unsigned us, long long *out) {
    if (y < 1 || y > 9999 || mo < 1 || mo > 12 || d < 1 || (int)d > days_in_month(y, mo) ||
        h > 23 || mi > 59 || s > 59 || us > 999999)
        return -1;
    long long seconds = days_from_civil(y, mo, d) * 86400LL + h * 3600LL + mi * 60LL + s;
    *out = seconds * 1000000LL + us;
    return 0;
}

static int digits(const char *p, int n, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    *out = v;
    return 0;
}

/* The form SQLAlchemy stores a naive UTC DateTime in SQLite: "YYYY-MM-DD HH:MM:SS[.ffffff]".
 * Any other form goes to the Python scan, which parses what datetime.fromisoformat parses. */
static int sqlite_micros(PyObject *at, long long *out) {
    if (!PyBytes_CheckExact(at)) return -1;
    const char *p = PyBytes_AS_STRING(at);
    Py_ssize_t n = PyBytes_GET_SIZE(at);
    if (n != 19 && n != 26) return -1;
    unsigned y, mo, d, h, mi, s, us = 0;
    if (digits(p, 4, &y) || p[4] != '-' || digits(p + 5, 2, &mo) || p[7] != '-' ||
        digits(p + 8, 2, &d) || p[10] != ' ' || digits(p + 11, 2, &h) || p[13] != ':' ||
        digits(p + 14, 2, &mi) || p[16] != ':' || digits(p + 17, 2, &s))
        return -1;
    if (n == 26 && (p[19] != '.' || digits(p + 20, 6, &us))) return -1;
    return micros_of(y, mo, d, h, mi, s, us, out);
}

/* psycopg's timestamptz: an aware datetime. Only timezone.utc is read here; any other zone
 * goes to the Python scan, which subtracts the epoch whatever the zone. */
static int postgres_micros(PyObject *at, long long *out) {
    if (!PyDateTime_CheckExact(at)) return -1;
    PyObject *zone = PyDateTime_DATE_GET_TZINFO(at);
    if (zone != PyDateTime_TimeZone_UTC) return -1;
    return micros_of(PyDateTime_GET_YEAR(at), PyDateTime_GET_MONTH(at), PyDateTime_GET_DAY(at),
                     PyDateTime_DATE_GET_HOUR(at), PyDateTime_DATE_GET_MINUTE(at),
                     PyDateTime_DATE_GET_SECOND(at), PyDateTime_DATE_GET_MICROSECOND(at), out);
}

/* A text column: UTF-8 bytes from SQLite (text_factory=bytes), str from PostgreSQL. */
static int text_of(PyObject *value, int sqlite, int optional, const char **data, Py_ssize_t *len) {
    if (optional && value == Py_None) {
        *data = "";
        *len = 0;
        return 0;
    }
    if (sqlite) {
        if (!PyBytes_CheckExact(value)) return -1;
        *data = PyBytes_AS_STRING(value);
        *len = PyBytes_GET_SIZE(value);
        return 0;
    }
    if (!PyUnicode_CheckExact(value)) return -1;
    *data = PyUnicode_AsUTF8AndSize(value, len);
    if (*data == NULL) {
        PyErr_Clear(); /* lone surrogates: the Python scan raises the encoding error */
        return -1;
    }
    return 0;
}

/* Open `VERSION | len(key id) | key id | nonce | ciphertext | tag` into `out`. */
static int open_sealed(PyObject *value, const Key *keys, Py_ssize_t nkeys, const unsigned char *aad,
                       int aad_len, Buffer *out) {
    if (!PyBytes_CheckExact(value)) return -1;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(value);
    Py_ssize_t n = PyBytes_GET_SIZE(value);
    if (n < 2 || p[0] != SEALED_VERSION) return -1;
    Py_ssize_t id_len = p[1];
    Py_ssize_t body = 2 + id_len + NONCE_BYTES;
    if (n < body + TAG_BYTES) return -1;
    const Key *key = NULL;
    for (Py_ssize_t i = 0; i < nkeys; i++) {
        if (keys[i].id_len == id_len && memcmp(keys[i].id, p + 2, (size_t)id_len) == 0) {
            key = &keys[i];
            break;
        }
    }
    if (key == NULL) return -1;
    Py_ssize_t text_len = n - body - TAG_BYTES;
    if (text_len > INT_MAX) return -1;
    out->len = 0;
    if (buffer_reserve(out, (size_t)text_len + 1) < 0) return -1;
    EVP_CIPHER_CTX *ctx = key->ctx;
    int written = 0, last = 0;
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, p + 2 + id_len) != 1) return -1;
    if (EVP_DecryptUpdate(ctx, NULL, &written, aad, aad_len) != 1) return -1;
    if (text_len > 0 &&
        EVP_DecryptUpdate(ctx, out->data, &written, p + body, (int)text_len) != 1)
        return -1;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_BYTES,
                            (void *)(p + body + text_len)) != 1)
        return -1;
    if (EVP_DecryptFinal_ex(ctx, out->data + written, &last) != 1) return -1;
    out->len = (size_t)text_len;
    return 0;
}

static const char HEX[] = "0123456789abcdef";

/* SHA-256 fetched once (module init): OpenSSL 3's one-shot SHA256() fetches the algorithm
 * anew at every call, which cost more than hashing a leaf. */
static EVP_MD *sha256_md;

static int sha256_into(EVP_MD_CTX *ctx, const void *data, size_t len, unsigned char *out) {
    return EVP_DigestInit_ex(ctx, sha256_md, NULL) == 1 &&
                   EVP_DigestUpdate(ctx, data, len) == 1 &&
                   EVP_DigestFinal_ex(ctx, out, NULL) == 1
               ? 0
               : -1;
}

typedef struct {
    const Key *keys;
    Py_ssize_t nkeys;
    const TagKey *tag_keys;
    Py_ssize_t ntag_keys;
    EVP_MD_CTX *work;
    const unsigned char *detail_aad;
    int detail_aad_len;
    const unsigned char *payload_aad;
    int payload_aad_len;
    int sqlite;
    Buffer leaf, clear;
} Scan;

/* One placed row's leaf into `leaf` (32 bytes) and its tag checked: 0 when both verify, 1 when
 * the leaf verifies and the row carries no tag, -1 for the Python scan to take it. */
static int leaf_of_row(Scan *scan, PyObject *const *row, long long entry_id, long long index,
                       unsigned char *leaf) {
    long long when;
    if ((scan->sqlite ? sqlite_micros(row[1], &when) : postgres_micros(row[1], &when)) < 0)
        return -1;
    const char *text[5];
    Py_ssize_t text_len[5];
    for (int i = 0; i < 5; i++) { /* kind, actor, message_id, case_id, order_id */
        if (text_of(row[2 + i], scan->sqlite, i >= 3, &text[i], &text_len[i]) < 0) return -1;
    }
    char digest_hex[2 * SHA256_DIGEST_LENGTH];
    size_t digest_len = 0;
    if (row[7] != Py_None) {
        if (open_sealed(row[7], scan->keys, scan->nkeys, scan->payload_aad,
                        scan->payload_aad_len, &scan->clear) < 0)
            return -1;
        unsigned char digest[SHA256_DIGEST_LENGTH];
        if (sha256_into(scan->work, scan->clear.data, scan->clear.len, digest) < 0) return -1;
        for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
            digest_hex[2 * i] = HEX[digest[i] >> 4];
            digest_hex[2 * i + 1] = HEX[digest[i] & 15];
        }
        digest_len = sizeof digest_hex;
    }
    if (open_sealed(row[8], scan->keys, scan->nkeys, scan->detail_aad, scan->detail_aad_len,
                    &scan->clear) < 0)
        return -1;
    Buffer *b = &scan->leaf;
    b->len = 0;
    if (buffer_reserve(b, ROOM) < 0) return -1;
    b->len = ROOM;
    if (put_decimal(b, entry_id) || put_decimal(b, when)) return -1;
    for (int i = 0; i < 5; i++) {
        if (put_field(b, text[i], (size_t)text_len[i])) return -1;
    }
    if (put_field(b, scan->clear.data, scan->clear.len) ||
        put_field(b, digest_hex, digest_len))
        return -1;
    /* The leaf: 0x00, the format and the position, before the fields. */
    char place[24];
    int place_len = snprintf(place, sizeof place, "%lld", index);
    if (place_len < 0 || (size_t)place_len >= sizeof place) return -1;
    size_t head = sizeof LEAF_HEAD + 4 + (size_t)place_len;
    unsigned char *p = b->data + ROOM - head;
    memcpy(p, LEAF_HEAD, sizeof LEAF_HEAD);
    p += sizeof LEAF_HEAD;
    p[0] = p[1] = p[2] = 0;
    p[3] = (unsigned char)place_len;
    memcpy(p + 4, place, (size_t)place_len);
    if (sha256_into(scan->work, b->data + ROOM - head, b->len - ROOM + head, leaf) < 0) return -1;
    PyObject *stored = row[10];
    if (!PyBytes_CheckExact(stored) || PyBytes_GET_SIZE(stored) != SHA256_DIGEST_LENGTH ||
        memcmp(PyBytes_AS_STRING(stored), leaf, SHA256_DIGEST_LENGTH) != 0)
        return -1; /* the Python scan names what differs */
    if (row[11] == Py_None && row[12] == Py_None) return 1; /* untagged: Python judges where */
    /* The tag: the format and an empty position, before the same fields. */
    const char *kid;
    Py_ssize_t kid_len;
    if (text_of(row[11], scan->sqlite, 0, &kid, &kid_len) < 0) return -1;
    PyObject *tag = row[12];
    if (!PyBytes_CheckExact(tag) || PyBytes_GET_SIZE(tag) != SHA256_DIGEST_LENGTH) return -1;
    const TagKey *key = NULL;
    for (Py_ssize_t i = 0; i < scan->ntag_keys; i++) {
        if (scan->tag_keys[i].id_len == kid_len &&
            memcmp(scan->tag_keys[i].id, kid, (size_t)kid_len) == 0) {
            key = &scan->tag_keys[i];
            break;
        }
    }
    if (key == NULL) return -1;
    unsigned char inner[SHA256_DIGEST_LENGTH], made[SHA256_DIGEST_LENGTH];
    unsigned int n = 0;
    memcpy(b->data + ROOM - sizeof TAG_HEAD, TAG_HEAD, sizeof TAG_HEAD);
    if (EVP_MD_CTX_copy_ex(scan->work, key->inner) != 1 ||
        EVP_DigestUpdate(scan->work, b->data + ROOM - sizeof TAG_HEAD,
                         b->len - ROOM + sizeof TAG_HEAD) != 1 ||
        EVP_DigestFinal_ex(scan->work, inner, &n) != 1 ||
        EVP_MD_CTX_copy_ex(scan->work, key->outer) != 1 ||
        EVP_DigestUpdate(scan->work, inner, sizeof inner) != 1 ||
        EVP_DigestFinal_ex(scan->work, made, &n) != 1)
        return -1;
    if (CRYPTO_memcmp(PyBytes_AS_STRING(tag), made, sizeof made) != 0) return -1;
    return 0;
}

static int int64_of(PyObject *value, long long *out) {
    if (!PyLong_CheckExact(value)) return -1;
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || (*out == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return -1;
    }
    return 0;
}

static void free_keys(Key *keys, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) EVP_CIPHER_CTX_free(keys[i].ctx);
    PyMem_Free(keys);
}

static void free_tag_keys(TagKey *keys, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        EVP_MD_CTX_free(keys[i].inner);
        EVP_MD_CTX_free(keys[i].outer);
    }
    PyMem_Free(keys);
}

/* The HMAC-SHA256 states of a 32-byte key: SHA-256 after (key ^ 0x36..) and (key ^ 0x5c..). */
static int tag_key_init(TagKey *key, const unsigned char *secret) {
    unsigned char pad[HMAC_BLOCK];
    const EVP_MD *md = sha256_md;
    key->inner = EVP_MD_CTX_new();
    key->outer = EVP_MD_CTX_new();
    if (key->inner == NULL || key->outer == NULL) return -1;
    memset(pad, 0x36, sizeof pad);
    for (int i = 0; i < 32; i++) pad[i] ^= secret[i];
    if (EVP_DigestInit_ex(key->inner, md, NULL) != 1 ||
        EVP_DigestUpdate(key->inner, pad, sizeof pad) != 1)
        return -1;
    memset(pad, 0x5c, sizeof pad);
    for (int i = 0; i < 32; i++) pad[i] ^= secret[i];
    int ok = EVP_DigestInit_ex(key->outer, md, NULL) == 1 &&
             EVP_DigestUpdate(key->outer, pad, sizeof pad) == 1;
    OPENSSL_cleanse(pad, sizeof pad);
    return ok ? 0 : -1;
}

PyDoc_STRVAR(hash_rows_doc,
             "hash_rows(rows, sqlite, keys, detail_aad, payload_aad, tag_keys)\n"
             "--\n\n"
             "Leaves of raw audit_log rows (id, recorded_at, kind, actor, message_id, case_id,\n"
             "order_id, payload, detail, log_index, leaf_hash, tag_key, tag, refused_at), and\n"
             "their tags checked. `keys` maps a data key id (bytes) to its 32-byte key, `tag_keys`\n"
             "a data key id to its 32-byte derived tag key. Returns (ids, indexes, leaves, slow,\n"
             "untagged): ids and indexes as native int64 bytes (-1: not placed), 32 bytes of leaf\n"
             "per row (zeros where not placed or slow), the positions of rows the Python scan must\n"
             "compute itself, and those of rows whose leaf verifies and that carry no tag.");

static PyObject *hash_rows(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *rows, *key_map, *tag_map;
    int sqlite;
    Py_buffer detail_aad, payload_aad;
    if (!PyArg_ParseTuple(args, "O!pO!y*y*O!", &PyList_Type, &rows, &sqlite, &PyDict_Type,
                          &key_map, &detail_aad, &payload_aad, &PyDict_Type, &tag_map))
        return NULL;
    PyObject *result = NULL, *ids = NULL, *indexes = NULL, *leaves = NULL, *slow = NULL;
    PyObject *untagged = NULL;
    Scan scan = {0};
    Key *keys = NULL;
    Py_ssize_t nkeys = 0;
    TagKey *tag_keys = NULL;
    Py_ssize_t ntag_keys = 0;
    if (detail_aad.len > INT_MAX || payload_aad.len > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "associated data too long");
        goto done;
    }
    keys = PyMem_Calloc((size_t)PyDict_Size(key_map) + 1, sizeof(Key));
    if (keys == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    PyObject *kid, *kval;
    Py_ssize_t pos = 0;
    while (PyDict_Next(key_map, &pos, &kid, &kval)) {
        if (!PyBytes_Check(kid) || !PyBytes_Check(kval) || PyBytes_GET_SIZE(kval) != 32) {
            PyErr_SetString(PyExc_ValueError, "keys: bytes key id -> 32-byte key");
            goto done;
        }
        EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
        if (ctx == NULL || EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_BYTES, NULL) != 1 ||
            EVP_DecryptInit_ex(ctx, NULL, NULL, (const unsigned char *)PyBytes_AS_STRING(kval),
                               NULL) != 1) {
            EVP_CIPHER_CTX_free(ctx);
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not set up AES-256-GCM");
            goto done;
        }
        keys[nkeys].id = PyBytes_AS_STRING(kid);
        keys[nkeys].id_len = PyBytes_GET_SIZE(kid);
        keys[nkeys].ctx = ctx;
        nkeys++;
    }
    tag_keys = PyMem_Calloc((size_t)PyDict_Size(tag_map) + 1, sizeof(TagKey));
    scan.work = EVP_MD_CTX_new();
    if (tag_keys == NULL || scan.work == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    pos = 0;
    while (PyDict_Next(tag_map, &pos, &kid, &kval)) {
        if (!PyBytes_Check(kid) || !PyBytes_Check(kval) || PyBytes_GET_SIZE(kval) != 32) {
            PyErr_SetString(PyExc_ValueError, "tag_keys: bytes key id -> 32-byte key");
            goto done;
        }
        tag_keys[ntag_keys].id = PyBytes_AS_STRING(kid);
        tag_keys[ntag_keys].id_len = PyBytes_GET_SIZE(kid);
        int failed = tag_key_init(&tag_keys[ntag_keys],
                                  (const unsigned char *)PyBytes_AS_STRING(kval));
        ntag_keys++; /* freed below whatever happened */
        if (failed) {
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not set up HMAC-SHA256");
            goto done;
        }
    }
    scan.tag_keys = tag_keys;
    scan.ntag_keys = ntag_keys;
    scan.keys = keys;
    scan.nkeys = nkeys;
    scan.detail_aad = detail_aad.buf;
    scan.detail_aad_len = (int)detail_aad.len;
    scan.payload_aad = payload_aad.buf;
    scan.payload_aad_len = (int)payload_aad.len;
    scan.sqlite = sqlite;

    Py_ssize_t n = PyList_GET_SIZE(rows);
    ids = PyBytes_FromStringAndSize(NULL, n * 8);
    indexes = PyBytes_FromStringAndSize(NULL, n * 8);
    leaves = PyBytes_FromStringAndSize(NULL, n * SHA256_DIGEST_LENGTH);
    slow = PyList_New(0);
    untagged = PyList_New(0);
    if (ids == NULL || indexes == NULL || leaves == NULL || slow == NULL || untagged == NULL)
        goto done;
    int64_t *id_out = (int64_t *)PyBytes_AS_STRING(ids);
    int64_t *index_out = (int64_t *)PyBytes_AS_STRING(indexes);
    unsigned char *leaf_out = (unsigned char *)PyBytes_AS_STRING(leaves);
    memset(leaf_out, 0, (size_t)n * SHA256_DIGEST_LENGTH);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        long long entry_id = 0, index = -1;
        int done_row = -1; /* 0: verified, 1: verified and untagged, -1: to the Python scan */
        if (PyTuple_CheckExact(row) && PyTuple_GET_SIZE(row) == ROW_COLUMNS &&
            int64_of(PyTuple_GET_ITEM(row, 0), &entry_id) == 0) {
            PyObject *place = PyTuple_GET_ITEM(row, 9);
            /* A row not placed (waiting, or forged) or refused: Python judges its tag. */
            if (place != Py_None && PyTuple_GET_ITEM(row, 13) == Py_None &&
                int64_of(place, &index) == 0)
                done_row = leaf_of_row(&scan, &PyTuple_GET_ITEM(row, 0), entry_id, index,
                                       leaf_out + i * SHA256_DIGEST_LENGTH);
        }
        id_out[i] = entry_id;
        index_out[i] = index;
        if (done_row != 0) {
            if (done_row < 0) memset(leaf_out + i * SHA256_DIGEST_LENGTH, 0, SHA256_DIGEST_LENGTH);
            PyObject *at = PyLong_FromSsize_t(i);
            if (at == NULL || PyList_Append(done_row < 0 ? slow : untagged, at) < 0) {
                Py_XDECREF(at);
                goto done;
            }
            Py_DECREF(at);
        }
    }
    result = PyTuple_Pack(5, ids, indexes, leaves, slow, untagged);
done:
    Py_XDECREF(ids);
    Py_XDECREF(indexes);
    Py_XDECREF(leaves);
    Py_XDECREF(slow);
    Py_XDECREF(untagged);
    if (keys) free_keys(keys, nkeys);
    if (tag_keys) free_tag_keys(tag_keys, ntag_keys);
    EVP_MD_CTX_free(scan.work);
    /* Both buffers held opened personal data (the leaf bytes carry the detail in clear). */
    if (scan.leaf.data) OPENSSL_cleanse(scan.leaf.data, scan.leaf.cap);
    PyMem_Free(scan.leaf.data);
    if (scan.clear.data) OPENSSL_cleanse(scan.clear.data, scan.clear.cap);
    PyMem_Free(scan.clear.data);
    PyBuffer_Release(&detail_aad);
    PyBuffer_Release(&payload_aad);
    return result;
}

static PyMethodDef methods[] = {
    {"hash_rows", hash_rows, METH_VARARGS, hash_rows_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "hub.store._leafscan",
    "The audit verification's per-row loop in C (ADR 18); hub/store/auditscan.py uses it.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__leafscan(void) {
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (sha256_md == NULL) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL has no SHA-256");
        return NULL;
    }
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddStringConstant(m, "OPENSSL_VERSION", OpenSSL_version(OPENSSL_VERSION)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
