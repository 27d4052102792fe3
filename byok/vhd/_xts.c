/*
 * Optional accelerator for byok.vhd.xts: AES-XTS over consecutive 512-byte sectors with the
 * dm-crypt "plain" tweak (uint32_le(sector mod 2^32) || 12 zero bytes), one XTS data unit per
 * sector: byte-identical to vhd-util's one OpenSSL AES-XTS call per sector.
 *
 * XTS is C_j = E_K1(P_j ^ T_j) ^ T_j with T_j = E_K2(tweak)·alpha^j. Four implementations,
 * the fastest the CPU has chosen at run time ("impl" names it):
 * - "vaes512", x86-64 with VAES, VPCLMULQDQ and AVX-512 (BW): as "vaes" below with 512-bit
 *   registers, four AES blocks per instruction, a whole sector in eight registers: 1.27x the
 *   speed of "vaes" on this project's 2-core VMs (AVX-512 and AMX, Sapphire Rapids class;
 *   bench/vhd_encrypt.py prints both), as Linux's xts-aes-vaes-avx10_512 (commit "crypto:
 *   x86/aes-xts - wire up VAES + AVX10/512 implementation", 2024) is faster than its 256-bit
 *   sibling on such CPUs; Linux skips it on older Intel models that lower their clock for
 *   512-bit work (Ice Lake, Tiger Lake), which this choice does not know about;
 * - "vaes", x86-64 with VAES and VPCLMULQDQ (AVX2): two AES blocks per instruction, which
 *   doubles the AES throughput of the cores that have it (Zen 3/4, Ice Lake and later); the
 *   tweaks of a sector are T_0·alpha^k for k = 0..31, computed eight 256-bit registers at a
 *   time by shifting and folding the carried-out bits back with one carry-less multiply by
 *   x^7 + x^2 + x + 1, as Linux's aes-xts-avx-x86_64.S does;
 * - "aesni", x86-64 with AES-NI: the whole data unit in registers, eight blocks
 *   interleaved per AES round and the tweak doubled in SSE registers, as OpenSSL's own
 *   aesni_xts code does, but without its per-call set-up (one EVP call per 512-byte sector
 *   spends about half its time re-initialising the IV);
 * - "openssl", elsewhere, per chunk of sectors: one AES-ECB call under K2 for every sector's
 *   T_0, the T_j computed here, XOR, one OpenSSL AES-ECB call under K1 over the chunk, XOR.
 * All give identical output; the GIL is released. `is_zero` tells all-zero blocks apart.
 *
 * Both read their input under a SIGBUS guard: the input may be a mapped file, and reading a
 * page of a mapping that lies past the end of the file raises SIGBUS (mmap(2), "Errors"),
 * which would kill the process when the file shrinks meanwhile. A fault at an address inside
 * the input of the current call in the current thread raises `BusError` instead; any other
 * SIGBUS goes to the handler that was installed before (see `on_sigbus`).
 *
 * Built by setup.py as an optional extension: when it is missing, byok.vhd.xts falls back to
 * its NumPy implementation (and byok.vhd.reader maps nothing).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define XTS_NI 1
#include <immintrin.h>
#define NI_TARGET __attribute__((target("aes,sse4.1")))
#define VAES_TARGET __attribute__((target("avx2,vaes,vpclmulqdq,aes,sse4.1")))
#define VAES512_TARGET \
    __attribute__((target("avx512f,avx512bw,avx2,vaes,vpclmulqdq,aes,sse4.1")))
#endif

#define SECTOR 512

#define CHUNK_SECTORS 64 /* 32 KiB of tweaks: stays in L1/L2 */

#define MAX_ROUNDS 14

/* ---- SIGBUS guard ------------------------------------------------------------------------ */

typedef struct {
    sigjmp_buf env;
    const unsigned char *lo, *hi; /* the guarded input */
} Guard;

static __thread Guard *current_guard; /* set only around a guarded read, in its thread */
static struct sigaction previous_bus;  /* the SIGBUS disposition before our first handler */
static int installed;
static PyObject *BusError;

/* SIGBUS is synchronous: it runs in the faulting thread, and si_addr is the faulting address
 * (sigaction(2)). A fault inside the guarded input jumps back to GUARDED_READ (leaving a
 * handler by siglongjmp is allowed for a synchronous signal: glibc manual, "Longjmp in
 * Handler"). Any other fault is given back to the disposition found first (e.g.
 * faulthandler's, or the default): restored, it gets the fault when the access runs again
 * on return. Not calling it from here avoids a loop with a handler installed after ours that
 * hands faults back to ours. */
static void
on_sigbus(int signum, siginfo_t *info, void *context)
{
    Guard *guard = current_guard;
    const unsigned char *addr = info->si_addr;
    (void)signum;
    (void)context;
    if (guard != NULL && addr >= guard->lo && addr < guard->hi) {
        siglongjmp(guard->env, 1);
    }
    sigaction(SIGBUS, &previous_bus, NULL);
}

/* Make on_sigbus the SIGBUS handler (again, if another one, e.g. faulthandler's, replaced
 * it). Called with the GIL held, so one thread at a time. */
static int
install_guard(void)
{
    struct sigaction now, ours;
    if (sigaction(SIGBUS, NULL, &now) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if ((now.sa_flags & SA_SIGINFO) && now.sa_sigaction == on_sigbus) {
        return 0;
    }
    memset(&ours, 0, sizeof(ours));
    ours.sa_sigaction = on_sigbus;
    ours.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&ours.sa_mask);
    if (sigaction(SIGBUS, &ours, NULL) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (!installed) {
        previous_bus = now;
        installed = 1;
    }
    return 0;
}

/* Run STATEMENT (which must not hold the GIL or allocate) with reads of [lo, lo+len) guarded;
 * FAULTED becomes 1 if one of them raised SIGBUS. The signal fences keep the compiler from
 * moving the input's loads outside the guarded span. */
#define GUARDED_READ(guard, lo_, len, faulted, STATEMENT)          \
    do {                                                           \
        (guard).lo = (lo_);                                        \
        (guard).hi = (lo_) + (len);                                \
        (faulted) = 0;                                             \
        if (sigsetjmp((guard).env, 1) == 0) {                      \
            current_guard = &(guard);                              \
            __atomic_signal_fence(__ATOMIC_SEQ_CST);               \
            STATEMENT;                                             \
            __atomic_signal_fence(__ATOMIC_SEQ_CST);               \
        } else {                                                   \
            (faulted) = 1;                                         \
        }                                                          \
        current_guard = NULL;                                      \
    } while (0)

static PyObject *
bus_error(void)
{
    PyErr_SetString(BusError, "the input is a mapped file that shrank: reading it raised SIGBUS");
    return NULL;
}

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *enc;   /* AES-ECB under K1, encrypt */
    EVP_CIPHER_CTX *dec;   /* AES-ECB under K1, decrypt */
    EVP_CIPHER_CTX *tweak; /* AES-ECB under K2, encrypt */
    int busy;
    const char *impl;      /* an entry of IMPLS: "openssl", or one using the key schedules */
    int rounds;            /* 10 (AES-128) or 14 (AES-256) */
    unsigned char ks_enc[(MAX_ROUNDS + 1) * 16];   /* K1, encryption */
    unsigned char ks_dec[(MAX_ROUNDS + 1) * 16];   /* K1, equivalent inverse cipher */
    unsigned char ks_tweak[(MAX_ROUNDS + 1) * 16]; /* K2, encryption */
} XtsObject;

static PyObject *
openssl_error(const char *what)
{
    char reason[256] = "unknown error";
    unsigned long code = ERR_get_error();
    if (code != 0) {
        ERR_error_string_n(code, reason, sizeof(reason));
    }
    ERR_clear_error();
    PyErr_Format(PyExc_RuntimeError, "OpenSSL %s failed: %s", what, reason);
    return NULL;
}

#ifdef XTS_NI
/* AES key expansion with AESKEYGENASSIST (Intel AES-NI white paper, Gueron 2010). */
NI_TARGET static __m128i
expand_step(__m128i key, __m128i assist)
{
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    return _mm_xor_si128(key, assist);
}

#define EXPAND128(k, rcon) expand_step((k), _mm_shuffle_epi32(_mm_aeskeygenassist_si128((k), (rcon)), 0xff))

NI_TARGET static void
expand_key(const unsigned char *key, int bits, unsigned char *out)
{
    __m128i ks[MAX_ROUNDS + 1];
    if (bits == 128) {
        ks[0] = _mm_loadu_si128((const __m128i *)key);
        ks[1] = EXPAND128(ks[0], 0x01);
        ks[2] = EXPAND128(ks[1], 0x02);
        ks[3] = EXPAND128(ks[2], 0x04);
        ks[4] = EXPAND128(ks[3], 0x08);
        ks[5] = EXPAND128(ks[4], 0x10);
        ks[6] = EXPAND128(ks[5], 0x20);
        ks[7] = EXPAND128(ks[6], 0x40);
        ks[8] = EXPAND128(ks[7], 0x80);
        ks[9] = EXPAND128(ks[8], 0x1b);
        ks[10] = EXPAND128(ks[9], 0x36);
    } else {
        ks[0] = _mm_loadu_si128((const __m128i *)key);
        ks[1] = _mm_loadu_si128((const __m128i *)(key + 16));
#define EXPAND256(i, rcon)                                                                    \
    ks[i] = expand_step(ks[i - 2],                                                            \
                        _mm_shuffle_epi32(_mm_aeskeygenassist_si128(ks[i - 1], rcon), 0xff)); \
    if (i < 14)                                                                               \
        ks[i + 1] = expand_step(ks[i - 1],                                                    \
                                _mm_shuffle_epi32(_mm_aeskeygenassist_si128(ks[i], 0), 0xaa));
        EXPAND256(2, 0x01)
        EXPAND256(4, 0x02)
        EXPAND256(6, 0x04)
        EXPAND256(8, 0x08)
        EXPAND256(10, 0x10)
        EXPAND256(12, 0x20)
        EXPAND256(14, 0x40)
#undef EXPAND256
    }
    for (int i = 0; i <= (bits == 128 ? 10 : 14); i++) {
        _mm_storeu_si128((__m128i *)(out + 16 * i), ks[i]);
    }
}

/* Round keys of the equivalent inverse cipher, for AESDEC. */
NI_TARGET static void
inverse_key(const unsigned char *enc, int rounds, unsigned char *dec)
{
    _mm_storeu_si128((__m128i *)dec, _mm_loadu_si128((const __m128i *)(enc + 16 * rounds)));
    for (int i = 1; i < rounds; i++) {
        __m128i k = _mm_loadu_si128((const __m128i *)(enc + 16 * (rounds - i)));
        _mm_storeu_si128((__m128i *)(dec + 16 * i), _mm_aesimc_si128(k));
    }
    _mm_storeu_si128((__m128i *)(dec + 16 * rounds), _mm_loadu_si128((const __m128i *)enc));
}

/* T·alpha in GF(2^128), T a little-endian 128-bit number (IEEE 1619). */
NI_TARGET static inline __m128i
mul_alpha(__m128i t)
{
    __m128i carry = _mm_shuffle_epi32(_mm_srai_epi32(t, 31), 0x93);
    carry = _mm_and_si128(carry, _mm_set_epi32(1, 1, 1, 0x87));
    return _mm_xor_si128(_mm_slli_epi32(t, 1), carry);
}

#define LANES 8

/* b[j] = AES rounds 1..rounds of b[j] under round keys k, for the LANES registers of b, with
 * the given round and last-round intrinsics (encryption or decryption, 128 or 256 bits). */
#define AES_LANES(b, k, rounds, round_fn, last_fn)        \
    do {                                                  \
        for (int r_ = 1; r_ < (rounds); r_++) {           \
            _Pragma("GCC unroll 8")                       \
            for (int j_ = 0; j_ < LANES; j_++) {          \
                (b)[j_] = round_fn((b)[j_], (k)[r_]);     \
            }                                             \
        }                                                 \
        _Pragma("GCC unroll 8")                           \
        for (int j_ = 0; j_ < LANES; j_++) {              \
            (b)[j_] = last_fn((b)[j_], (k)[(rounds)]);    \
        }                                                 \
    } while (0)

/* n sectors from src to dst (same pointer or disjoint), all in registers. */
NI_TARGET static void
ni_sectors(const XtsObject *self, int encrypt, const unsigned char *src, unsigned char *dst,
           Py_ssize_t n, uint32_t first)
{
    const int rounds = self->rounds;
    const unsigned char *data_keys = encrypt ? self->ks_enc : self->ks_dec;
    __m128i k[MAX_ROUNDS + 1], kt[MAX_ROUNDS + 1];
    for (int r = 0; r <= rounds; r++) {
        k[r] = _mm_loadu_si128((const __m128i *)(data_keys + 16 * r));
        kt[r] = _mm_loadu_si128((const __m128i *)(self->ks_tweak + 16 * r));
    }
    for (Py_ssize_t s = 0; s < n; s++) {
        const __m128i *in = (const __m128i *)(src + s * SECTOR);
        __m128i *out = (__m128i *)(dst + s * SECTOR);
        __m128i t = _mm_xor_si128(_mm_cvtsi32_si128((int)(first + (uint32_t)s)), kt[0]);
        for (int r = 1; r < rounds; r++) {
            t = _mm_aesenc_si128(t, kt[r]);
        }
        t = _mm_aesenclast_si128(t, kt[rounds]);
        for (int g = 0; g < SECTOR / 16; g += LANES) {
            __m128i tw[LANES], b[LANES];
#pragma GCC unroll 8
            for (int j = 0; j < LANES; j++) {
                tw[j] = t;
                b[j] = _mm_xor_si128(_mm_xor_si128(_mm_loadu_si128(in + g + j), t), k[0]);
                t = mul_alpha(t);
            }
            if (encrypt) {
                AES_LANES(b, k, rounds, _mm_aesenc_si128, _mm_aesenclast_si128);
            } else {
                AES_LANES(b, k, rounds, _mm_aesdec_si128, _mm_aesdeclast_si128);
            }
#pragma GCC unroll 8
            for (int j = 0; j < LANES; j++) {
                _mm_storeu_si128(out + g + j, _mm_xor_si128(b[j], tw[j]));
            }
        }
    }
}

/* Each 128-bit lane of t times alpha^k (1 <= k <= 57): both 64-bit halves shift left by k,
 * the bits leaving the low half enter the high half, those leaving the high half are reduced
 * (x^128 = x^7 + x^2 + x + 1) into the low half by one carry-less multiply. */
VAES_TARGET static inline __m256i
mul_alpha_k(__m256i t, int k)
{
    const __m256i poly = _mm256_set_epi64x(0, 0x87, 0, 0x87);
    __m256i carried = _mm256_srli_epi64(t, 64 - k);
    __m256i reduced = _mm256_clmulepi64_epi128(carried, poly, 0x01);
    carried = _mm256_bslli_epi128(carried, 8);
    return _mm256_xor_si256(_mm256_xor_si256(_mm256_slli_epi64(t, k), carried), reduced);
}

#define TWEAK_BATCH (2 * LANES) /* sectors whose T_0 are computed together, two per register */

/* As ni_sectors, two blocks per register: a sector is two halves of eight registers. */
VAES_TARGET static void
vaes_sectors(const XtsObject *self, int encrypt, const unsigned char *src, unsigned char *dst,
             Py_ssize_t n, uint32_t first)
{
    const int rounds = self->rounds;
    const unsigned char *data_keys = encrypt ? self->ks_enc : self->ks_dec;
    __m256i k[MAX_ROUNDS + 1], kt[MAX_ROUNDS + 1];
    for (int r = 0; r <= rounds; r++) {
        k[r] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(data_keys + 16 * r)));
        kt[r] = _mm256_broadcastsi128_si256(
            _mm_loadu_si128((const __m128i *)(self->ks_tweak + 16 * r)));
    }
    for (Py_ssize_t done = 0; done < n; done += TWEAK_BATCH) {
        Py_ssize_t count = n - done < TWEAK_BATCH ? n - done : TWEAK_BATCH;
        __m256i t0[LANES];
#pragma GCC unroll 8
        for (int i = 0; i < LANES; i++) {
            uint32_t s = first + (uint32_t)(done + 2 * i); /* wraps mod 2^32: plain IV */
            t0[i] = _mm256_xor_si256(_mm256_set_epi32(0, 0, 0, (int)(s + 1), 0, 0, 0, (int)s),
                                     kt[0]);
        }
        AES_LANES(t0, kt, rounds, _mm256_aesenc_epi128, _mm256_aesenclast_epi128);
        for (Py_ssize_t s = 0; s < count; s++) {
            __m128i t = (s & 1) ? _mm256_extracti128_si256(t0[s / 2], 1)
                                : _mm256_castsi256_si128(t0[s / 2]);
            __m256i tw[LANES];
            tw[0] = _mm256_set_m128i(mul_alpha(t), t); /* T_0, T_1 */
#pragma GCC unroll 8
            for (int j = 1; j < LANES; j++) {
                tw[j] = mul_alpha_k(tw[0], 2 * j); /* T_2j, T_2j+1 */
            }
            for (int half = 0; half < 2; half++) {
                const __m256i *in = (const __m256i *)(src + (done + s) * SECTOR + half * 256);
                __m256i *out = (__m256i *)(dst + (done + s) * SECTOR + half * 256);
                __m256i b[LANES];
                if (half) {
#pragma GCC unroll 8
                    for (int j = 0; j < LANES; j++) {
                        tw[j] = mul_alpha_k(tw[j], 2 * LANES);
                    }
                }
#pragma GCC unroll 8
                for (int j = 0; j < LANES; j++) {
                    b[j] = _mm256_xor_si256(_mm256_xor_si256(_mm256_loadu_si256(in + j), tw[j]),
                                            k[0]);
                }
                if (encrypt) {
                    AES_LANES(b, k, rounds, _mm256_aesenc_epi128, _mm256_aesenclast_epi128);
                } else {
                    AES_LANES(b, k, rounds, _mm256_aesdec_epi128, _mm256_aesdeclast_epi128);
                }
#pragma GCC unroll 8
                for (int j = 0; j < LANES; j++) {
                    _mm256_storeu_si256(out + j, _mm256_xor_si256(b[j], tw[j]));
                }
            }
        }
    }
}

/* Each 128-bit lane of t times alpha^k (1 <= k <= 57): mul_alpha_k, four lanes a register. */
VAES512_TARGET static inline __m512i
mul_alpha_k4(__m512i t, int k)
{
    const __m512i poly = _mm512_set_epi64(0, 0x87, 0, 0x87, 0, 0x87, 0, 0x87);
    __m512i carried = _mm512_srli_epi64(t, 64 - k);
    __m512i reduced = _mm512_clmulepi64_epi128(carried, poly, 0x01);
    carried = _mm512_bslli_epi128(carried, 8);
    return _mm512_xor_si512(_mm512_xor_si512(_mm512_slli_epi64(t, k), carried), reduced);
}

#define TWEAK_BATCH4 (4 * LANES) /* sectors whose T_0 are computed together, four per register */

/* As vaes_sectors, four blocks per register: a sector is eight registers. */
VAES512_TARGET static void
vaes512_sectors(const XtsObject *self, int encrypt, const unsigned char *src, unsigned char *dst,
                Py_ssize_t n, uint32_t first)
{
    const int rounds = self->rounds;
    const unsigned char *data_keys = encrypt ? self->ks_enc : self->ks_dec;
    __m512i k[MAX_ROUNDS + 1], kt[MAX_ROUNDS + 1];
    for (int r = 0; r <= rounds; r++) {
        k[r] = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(data_keys + 16 * r)));
        kt[r] = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(self->ks_tweak + 16 * r)));
    }
    for (Py_ssize_t done = 0; done < n; done += TWEAK_BATCH4) {
        Py_ssize_t count = n - done < TWEAK_BATCH4 ? n - done : TWEAK_BATCH4;
        __m512i t0[LANES];
        __m128i firsts[TWEAK_BATCH4];
#pragma GCC unroll 8
        for (int i = 0; i < LANES; i++) {
            uint32_t s = first + (uint32_t)(done + 4 * i); /* wraps mod 2^32: plain IV */
            t0[i] = _mm512_xor_si512(_mm512_set_epi32(0, 0, 0, (int)(s + 3), 0, 0, 0, (int)(s + 2),
                                                      0, 0, 0, (int)(s + 1), 0, 0, 0, (int)s),
                                     kt[0]);
        }
        AES_LANES(t0, kt, rounds, _mm512_aesenc_epi128, _mm512_aesenclast_epi128);
        for (int i = 0; i < LANES; i++) {
            _mm512_storeu_si512(firsts + 4 * i, t0[i]);
        }
        for (Py_ssize_t s = 0; s < count; s++) {
            __m128i t = firsts[s], t1 = mul_alpha(t), t2 = mul_alpha(t1), t3 = mul_alpha(t2);
            const __m512i *in = (const __m512i *)(src + (done + s) * SECTOR);
            __m512i *out = (__m512i *)(dst + (done + s) * SECTOR);
            __m512i tw[LANES], b[LANES];
            tw[0] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set_m128i(t1, t)),
                                       _mm256_set_m128i(t3, t2), 1); /* T_0 .. T_3 */
#pragma GCC unroll 8
            for (int j = 1; j < LANES; j++) {
                tw[j] = mul_alpha_k4(tw[0], 4 * j); /* T_4j .. T_4j+3 */
            }
#pragma GCC unroll 8
            for (int j = 0; j < LANES; j++) {
                b[j] = _mm512_xor_si512(_mm512_xor_si512(_mm512_loadu_si512(in + j), tw[j]), k[0]);
            }
            if (encrypt) {
                AES_LANES(b, k, rounds, _mm512_aesenc_epi128, _mm512_aesenclast_epi128);
            } else {
                AES_LANES(b, k, rounds, _mm512_aesdec_epi128, _mm512_aesdeclast_epi128);
            }
#pragma GCC unroll 8
            for (int j = 0; j < LANES; j++) {
                _mm512_storeu_si512(out + j, _mm512_xor_si512(b[j], tw[j]));
            }
        }
    }
}

static int
have_aesni(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("aes") && __builtin_cpu_supports("sse4.1");
}

static int
have_vaes(void)
{
    return have_aesni() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("vaes") &&
           __builtin_cpu_supports("vpclmulqdq");
}

static int
have_vaes512(void)
{
    return have_vaes() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}
#endif

static const char *const IMPLS[] = {"vaes512", "vaes", "aesni", "openssl"}; /* fastest first */

/* `wanted` (NULL: the fastest) if this CPU runs it, else NULL. */
static const char *
best_impl(const char *wanted)
{
    int first = 3;
#ifdef XTS_NI
    first = have_vaes512() ? 0 : have_vaes() ? 1 : have_aesni() ? 2 : 3;
#endif
    if (wanted == NULL) {
        return IMPLS[first];
    }
    for (int i = first; i < 4; i++) {
        if (strcmp(wanted, IMPLS[i]) == 0) {
            return IMPLS[i];
        }
    }
    return NULL;
}

static void
Xts_dealloc(XtsObject *self)
{
    EVP_CIPHER_CTX_free(self->enc);
    EVP_CIPHER_CTX_free(self->dec);
    EVP_CIPHER_CTX_free(self->tweak);
    OPENSSL_cleanse(self->ks_enc, sizeof(self->ks_enc));
    OPENSSL_cleanse(self->ks_dec, sizeof(self->ks_dec));
    OPENSSL_cleanse(self->ks_tweak, sizeof(self->ks_tweak));
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Xts_init(XtsObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"key", "impl", NULL};
    Py_buffer key;
    const char *wanted = NULL;
    const EVP_CIPHER *cipher;
    const unsigned char *k;
    Py_ssize_t half;
    int ok;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*|z:Xts", kwlist, &key, &wanted)) {
        return -1;
    }
    self->impl = best_impl(wanted);
    if (self->impl == NULL) {
        PyBuffer_Release(&key);
        PyErr_Format(PyExc_ValueError, "AES-XTS implementation %s is not available here", wanted);
        return -1;
    }
    if (key.len == 64) {
        cipher = EVP_aes_256_ecb();
    } else if (key.len == 32) {
        cipher = EVP_aes_128_ecb();
    } else {
        PyBuffer_Release(&key);
        PyErr_Format(PyExc_ValueError, "AES-XTS key must be 32 or 64 bytes, got %zd", key.len);
        return -1;
    }
    EVP_CIPHER_CTX_free(self->enc);
    EVP_CIPHER_CTX_free(self->dec);
    EVP_CIPHER_CTX_free(self->tweak);
    self->enc = EVP_CIPHER_CTX_new();
    self->dec = EVP_CIPHER_CTX_new();
    self->tweak = EVP_CIPHER_CTX_new();
    if (self->enc == NULL || self->dec == NULL || self->tweak == NULL) {
        PyBuffer_Release(&key);
        PyErr_NoMemory();
        return -1;
    }
    k = key.buf;
    half = key.len / 2;
    ok = EVP_CipherInit_ex(self->enc, cipher, NULL, k, NULL, 1) == 1 &&
         EVP_CipherInit_ex(self->dec, cipher, NULL, k, NULL, 0) == 1 &&
         EVP_CipherInit_ex(self->tweak, cipher, NULL, k + half, NULL, 1) == 1;
#ifdef XTS_NI
    if (ok && strcmp(self->impl, "openssl") != 0) {
        int bits = (int)half * 8;
        self->rounds = bits == 128 ? 10 : 14;
        expand_key(k, bits, self->ks_enc);
        inverse_key(self->ks_enc, self->rounds, self->ks_dec);
        expand_key(k + half, bits, self->ks_tweak);
    }
#endif
    PyBuffer_Release(&key);
    if (!ok) {
        openssl_error("AES-XTS key setup");
        return -1;
    }
    EVP_CIPHER_CTX_set_padding(self->enc, 0);
    EVP_CIPHER_CTX_set_padding(self->dec, 0);
    EVP_CIPHER_CTX_set_padding(self->tweak, 0);
    return 0;
}

static inline uint64_t
load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline void
store64(unsigned char *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

/* dst[k] = a[k] ^ b[k] over len bytes (a multiple of 16). */
static void
xor_into(unsigned char *dst, const unsigned char *a, const unsigned char *b, size_t len)
{
    for (size_t k = 0; k < len; k += 8) {
        store64(dst + k, load64(a + k) ^ load64(b + k));
    }
}

/*
 * Process n sectors from src to dst (same pointer or disjoint) with the K1 ECB context `data`.
 * Returns 0 or -1 (OpenSSL). Byte order: XTS blocks are little-endian 128-bit numbers, so on
 * little-endian hosts the low word is bytes 0..7 (checked in PyInit__xts).
 */
static int
run_sectors(XtsObject *self, EVP_CIPHER_CTX *data, const unsigned char *src, unsigned char *dst,
            Py_ssize_t n, uint32_t first)
{
    unsigned char tweak_in[CHUNK_SECTORS * 16];
    unsigned char tweak0[CHUNK_SECTORS * 16 + 16];
    unsigned char tweaks[CHUNK_SECTORS * SECTOR];
    int outl;

    memset(tweak_in, 0, sizeof(tweak_in));
    for (Py_ssize_t done = 0; done < n; done += CHUNK_SECTORS) {
        Py_ssize_t count = n - done < CHUNK_SECTORS ? n - done : CHUNK_SECTORS;
        size_t bytes = (size_t)count * SECTOR;
        const unsigned char *in = src + done * SECTOR;
        unsigned char *out = dst + done * SECTOR;
        for (Py_ssize_t i = 0; i < count; i++) {
            uint32_t sector = first + (uint32_t)(done + i); /* wraps mod 2^32: plain IV */
            tweak_in[16 * i] = (unsigned char)sector;
            tweak_in[16 * i + 1] = (unsigned char)(sector >> 8);
            tweak_in[16 * i + 2] = (unsigned char)(sector >> 16);
            tweak_in[16 * i + 3] = (unsigned char)(sector >> 24);
        }
        if (EVP_EncryptUpdate(self->tweak, tweak0, &outl, tweak_in, (int)(16 * count)) != 1 ||
            outl != 16 * count) {
            return -1;
        }
        for (Py_ssize_t i = 0; i < count; i++) {
            uint64_t lo = load64(tweak0 + 16 * i), hi = load64(tweak0 + 16 * i + 8);
            unsigned char *t = tweaks + i * SECTOR;
            for (int j = 0; j < SECTOR / 16; j++) {
                store64(t + 16 * j, lo);
                store64(t + 16 * j + 8, hi);
                uint64_t carry = (uint64_t)0 - (hi >> 63);
                hi = (hi << 1) | (lo >> 63);
                lo = (lo << 1) ^ (carry & 0x87);
            }
        }
        xor_into(out, in, tweaks, bytes);
        if (EVP_CipherUpdate(data, out, &outl, out, (int)bytes) != 1 || (size_t)outl != bytes) {
            return -1;
        }
        xor_into(out, out, tweaks, bytes);
    }
    return 0;
}

/* len bytes (whole sectors) from s to d with the implementation chosen; 0 or -1 (OpenSSL). */
static int
run_impl(XtsObject *self, int encrypt, const unsigned char *s, unsigned char *d, Py_ssize_t len,
         unsigned long long first)
{
    uint32_t first32 = (uint32_t)(first & 0xFFFFFFFFu);
#ifdef XTS_NI
    if (self->impl == IMPLS[0]) {
        vaes512_sectors(self, encrypt, s, d, len / SECTOR, first32);
        return 0;
    }
    if (self->impl == IMPLS[1]) {
        vaes_sectors(self, encrypt, s, d, len / SECTOR, first32);
        return 0;
    }
    if (self->impl == IMPLS[2]) {
        ni_sectors(self, encrypt, s, d, len / SECTOR, first32);
        return 0;
    }
#endif
    return run_sectors(self, encrypt ? self->enc : self->dec, s, d, len / SECTOR, first32);
}

static PyObject *
Xts_run(XtsObject *self, PyObject *args, int encrypt)
{
    Py_buffer src, dst;
    unsigned long long first;
    volatile int rc; /* read after a siglongjmp: kept in memory */
    int faulted;
    Guard guard;
    const unsigned char *s;
    unsigned char *d;

    if (self->enc == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Xts object is not initialised");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*w*K", &src, &dst, &first)) {
        return NULL;
    }
    if (src.len % SECTOR != 0) {
        PyErr_Format(PyExc_ValueError, "data length %zd is not a multiple of %d", src.len,
                     SECTOR);
        goto fail;
    }
    if (dst.len < src.len) {
        PyErr_Format(PyExc_ValueError, "output buffer holds %zd bytes, need %zd", dst.len,
                     src.len);
        goto fail;
    }
    s = src.buf;
    d = dst.buf;
    if (s != d && s < d + src.len && d < s + src.len) {
        PyErr_SetString(PyExc_ValueError, "input and output overlap partially");
        goto fail;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Xts object used from two threads at once");
        goto fail;
    }
    if (install_guard() != 0) {
        goto fail;
    }
    self->busy = 1;
    rc = 0;
    Py_BEGIN_ALLOW_THREADS
    GUARDED_READ(guard, s, src.len, faulted, rc = run_impl(self, encrypt, s, d, src.len, first));
    Py_END_ALLOW_THREADS
    self->busy = 0;
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    if (faulted) {
        ERR_clear_error();
        return bus_error();
    }
    if (rc != 0) {
        return openssl_error("AES-XTS");
    }
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return NULL;
}

static PyObject *
Xts_encrypt(XtsObject *self, PyObject *args)
{
    return Xts_run(self, args, 1);
}

static PyObject *
Xts_decrypt(XtsObject *self, PyObject *args)
{
    return Xts_run(self, args, 0);
}

static PyMethodDef Xts_methods[] = {
    {"encrypt", (PyCFunction)Xts_encrypt, METH_VARARGS,
     "encrypt(src, dst, first_sector): encrypt whole sectors of src into dst (may be src)."},
    {"decrypt", (PyCFunction)Xts_decrypt, METH_VARARGS,
     "decrypt(src, dst, first_sector): decrypt whole sectors of src into dst (may be src)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Xts_members[] = {
    {"impl", T_STRING, offsetof(XtsObject, impl), READONLY, "the implementation in use"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject XtsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "byok.vhd._xts.Xts",
    .tp_doc = "Xts(key, impl=None): AES-XTS per 512-byte sector with the plain tweak; impl is\n"
              "\"vaes512\", \"vaes\", \"aesni\" or \"openssl\" (None: the fastest this CPU runs).",
    .tp_basicsize = sizeof(XtsObject),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Xts_init,
    .tp_dealloc = (destructor)Xts_dealloc,
    .tp_methods = Xts_methods,
    .tp_members = Xts_members,
};

static PyObject *
xts_is_zero(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    volatile int zero = 1;
    int faulted;
    Guard guard;
    (void)module;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (install_guard() != 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *p = view.buf;
    Py_BEGIN_ALLOW_THREADS
    /* every byte equals the next and the first is zero; memcmp is vectorised */
    GUARDED_READ(guard, p, view.len, faulted,
                 zero = view.len == 0 ||
                        (p[0] == 0 && memcmp(p, p + 1, (size_t)view.len - 1) == 0));
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (faulted) {
        return bus_error();
    }
    return PyBool_FromLong(zero);
}

static PyMethodDef module_methods[] = {
    {"is_zero", xts_is_zero, METH_O, "is_zero(buffer): True when every byte is zero."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef xts_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "byok.vhd._xts",
    .m_doc = "OpenSSL AES-XTS per 512-byte sector (optional accelerator of byok.vhd.xts).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__xts(void)
{
    PyObject *module;
    const uint16_t one = 1;
    if (*(const unsigned char *)&one != 1) {
        PyErr_SetString(PyExc_ImportError, "byok.vhd._xts supports little-endian hosts only");
        return NULL;
    }
    if (PyType_Ready(&XtsType) < 0) {
        return NULL;
    }
    module = PyModule_Create(&xts_module);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&XtsType);
    if (PyModule_AddObject(module, "Xts", (PyObject *)&XtsType) < 0) {
        Py_DECREF(&XtsType);
        Py_DECREF(module);
        return NULL;
    }
    BusError = PyErr_NewExceptionWithDoc(
        "byok.vhd._xts.BusError",
        "Reading the input raised SIGBUS: it is a mapped file that shrank meanwhile.",
        PyExc_OSError, NULL);
    if (BusError == NULL || PyModule_AddObjectRef(module, "BusError", BusError) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
