/*
 * The fold of `stophub audit verify` in C (ADR 18): appending packed leaf hashes to a compact
 * range (hub/domain/merkle.py, CompactRange.extend_packed), one interior node hash
 * SHA-256(0x01 || left || right) per leaf on average. In Python each of those hashes is a
 * few object allocations and calls, and the fold runs in the one process that receives every
 * worker's leaves: at a million entries it was a fifth of a verification's CPU.
 *
 * Same function as the Python loop, nothing more: merkle.py falls back to that loop where this
 * was not built, and tests/unit/test_merkle.py holds the two equal for any sizes and ranges.
 * The subtree roots stay on a C stack (at most 64: one per bit of the size) while the leaves
 * are folded; only the roots left at the end become Python objects.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <openssl/evp.h>
#include <string.h>

#define HASH 32
#define MAX_NODES 64

PyDoc_STRVAR(fold_doc,
             "fold(nodes, size, packed, start, end)\n"
             "--\n\n"
             "Append leaves start .. end - 1 of `packed` (32 bytes each) to the compact range\n"
             "of a tree of `size` leaves whose subtree roots, largest first, are the list\n"
             "`nodes` (32-byte bytes each). The list is updated in place; returns the new size.");

static EVP_MD *sha256;

static PyObject *fold(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *nodes;
    unsigned long long size;
    Py_buffer packed;
    Py_ssize_t start, end;
    if (!PyArg_ParseTuple(args, "O!Ky*nn", &PyList_Type, &nodes, &size, &packed, &start, &end))
        return NULL;
    PyObject *result = NULL;
    unsigned char stack[MAX_NODES][HASH];
    unsigned char block[1 + 2 * HASH];
    Py_ssize_t depth = PyList_GET_SIZE(nodes);
    if (start < 0 || end < start || end > packed.len / HASH) {
        PyErr_SetString(PyExc_ValueError, "fold: leaves start .. end are not all in `packed`");
        goto done;
    }
    if (depth != (Py_ssize_t)__builtin_popcountll(size) ||
        (unsigned long long)(end - start) > ~0ULL - size) {
        PyErr_SetString(PyExc_ValueError, "fold: `nodes` is not the range of `size` leaves");
        goto done;
    }
    for (Py_ssize_t i = 0; i < depth; i++) {
        PyObject *node = PyList_GET_ITEM(nodes, i);
        if (!PyBytes_Check(node) || PyBytes_GET_SIZE(node) != HASH) {
            PyErr_SetString(PyExc_ValueError, "fold: every node is 32 bytes");
            goto done;
        }
        memcpy(stack[i], PyBytes_AS_STRING(node), HASH);
    }
    /* One context, the digest fetched once: OpenSSL 3's one-shot SHA256() fetches it anew
     * for every call, which cost more than the hashing itself. */
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const unsigned char *leaf = (const unsigned char *)packed.buf + start * HASH;
    block[0] = 0x01;
    for (Py_ssize_t n = start; n < end; n++, leaf += HASH) {
        unsigned char node[HASH];
        memcpy(node, leaf, HASH);
        /* Merge with the subtrees the new leaf completes: one per trailing 1-bit of size. */
        for (unsigned long long s = size; s & 1; s >>= 1) {
            depth--;
            memcpy(block + 1, stack[depth], HASH);
            memcpy(block + 1 + HASH, node, HASH);
            if (EVP_DigestInit_ex(ctx, sha256, NULL) != 1 ||
                EVP_DigestUpdate(ctx, block, sizeof block) != 1 ||
                EVP_DigestFinal_ex(ctx, node, NULL) != 1) {
                EVP_MD_CTX_free(ctx);
                PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not hash with SHA-256");
                goto done;
            }
        }
        memcpy(stack[depth++], node, HASH);
        size++;
    }
    EVP_MD_CTX_free(ctx);
    PyObject *fresh = PyList_New(depth);
    if (fresh == NULL) goto done;
    for (Py_ssize_t i = 0; i < depth; i++) {
        PyObject *node = PyBytes_FromStringAndSize((const char *)stack[i], HASH);
        if (node == NULL) {
            Py_DECREF(fresh);
            goto done;
        }
        PyList_SET_ITEM(fresh, i, node);
    }
    int replaced = PyList_SetSlice(nodes, 0, PyList_GET_SIZE(nodes), fresh);
    Py_DECREF(fresh);
    if (replaced == 0) result = PyLong_FromUnsignedLongLong(size);
done:
    PyBuffer_Release(&packed);
    return result;
}

static PyMethodDef methods[] = {
    {"fold", fold, METH_VARARGS, fold_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "hub.domain._merklefold",
    "The audit tree's fold in C (ADR 18); hub/domain/merkle.py uses it where it was built.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__merklefold(void) {
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (sha256 == NULL) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL has no SHA-256");
        return NULL;
    }
    return PyModule_Create(&module);
}
