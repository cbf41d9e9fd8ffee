/* Keyed BLAKE2b-128 for XDP and TC programs: the wire format's MAC (docs/wire-format.md), computed in the kernel.
 *
 * mac = blake2b(header || body, key=secret, digest_size=16), exactly as Python's hashlib computes it (RFC 7693):
 * the parameter block says digest length 16 and key length k; a non-empty key is zero-padded to a 128-byte block
 * compressed first; the LAST block -- and only it -- is compressed with the final flag, so a message that fills
 * whole blocks gets no extra empty block, and with a key and an empty message the key block is the last one.
 *
 * The message is read from the packet with bpf_xdp_load_bytes / bpf_skb_load_bytes, 128 bytes at a time, into a
 * state the caller keeps in a per-CPU array map (struct b2b_state, 192 bytes; the compression's working vector
 * already fills most of the 512-byte stack with spills).
 *
 *     struct b2b_state *s = b2b_states.lookup(&zero);         // BPF_PERCPU_ARRAY(b2b_states, struct b2b_state, 1)
 *     const struct b2b_key *k = keys.lookup(&slot);           // written by userspace
 *     if (s && k && b2b_mac_skb(skb, s, k, off, len) == 0)    // or b2b_mac_xdp(ctx, ...)
 *         ok = b2b_digest_equal(s, tag);                      // tag: the packet's 16 MAC bytes, as two __u64
 *
 * Shaped for the verifier, which walks every path (bcc 0.26, Debian 12's, relocates neither bpf_loop callbacks nor
 * BPF-to-BPF calls, so there is no subprogram it could check once): the blocks before the last are all full, read
 * with a constant 128-byte load in a bounded loop whose only branch is its exit, and the last block (partial,
 * empty, or the key block of an empty message) is compressed once after it, with no branch on the key's length.
 * Paths then merge before each compression and the verifier walks 13 compressions of ~3,600 instructions for a
 * 1356-byte maximum: ~47,500 processed for a program making one b2b_mac_* call (benchmarks/bench_mac.py prints the
 * count). Each inlined call is ~12,000 instructions of program. The IV constants go through an empty asm so that
 * clang materialises them inside each compression instead of hoisting them out of the loop into stack slots,
 * which took the stack past 512 bytes.
 *
 * With several keys to try (a key ring), b2b_prekey() compresses a key's block once, into the key's own map value,
 * and the prekeyed calls start from it: one compression less per message (half the work for a heartbeat, whose
 * message fits one block).
 *
 * This header declares no maps (bcc wants them in the .c file) and keeps no state of its own; it must never read
 * the packet other than through the load_bytes helpers, whose bounds the kernel checks.
 */
#ifndef GOSSIP_BLAKE2B_H
#define GOSSIP_BLAKE2B_H

#include <linux/types.h>
#include <linux/errno.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "blake2b.h reads message words and writes the digest in host order: little-endian hosts only"
#endif

#define B2B_BLOCK_BYTES 128
#define B2B_KEY_MAX     64
#define B2B_OUT_BYTES   16
#ifndef B2B_MSG_MAX
#define B2B_MSG_MAX 1356 /* 1400-byte datagram - IPv4 (20) - UDP (8) - MAC (16) */
#endif
/* full blocks before the last one of the longest message: the loop's bound */
#define B2B_MAX_FULL_BLOCKS ((B2B_MSG_MAX - 1) / B2B_BLOCK_BYTES)

/* A key as userspace writes it into a map value. The bytes past `len` must be zero (they are the key block's
 * padding; a ctypes structure starts zeroed). Write a new key into a free slot, not over one in use: b2b_prekey()
 * writes h and prekeyed into the same value. */
struct b2b_key {
    __u8 bytes[B2B_KEY_MAX] __attribute__((aligned(8)));
    __u32 len;      /* 0..64; 0 means unkeyed */
    __u32 prekeyed; /* 1 once h holds the chaining value after this key's block; userspace writes 0 */
    __u64 h[8];
};

/* Per-CPU scratch: the chaining value, then the block being compressed. After a b2b_mac_* call that returned 0,
 * h[0] and h[1] are the 16-byte MAC (little-endian words: the bytes hashlib's digest() returns). */
struct b2b_state {
    __u64 h[8];
    __u64 m[16];
};

#define B2B_IV0 0x6a09e667f3bcc908ULL
#define B2B_IV1 0xbb67ae8584caa73bULL
#define B2B_IV2 0x3c6ef372fe94f82bULL
#define B2B_IV3 0xa54ff53a5f1d36f1ULL
#define B2B_IV4 0x510e527fade682d1ULL
#define B2B_IV5 0x9b05688c2b3e6c1fULL
#define B2B_IV6 0x1f83d9abfb41bd6bULL
#define B2B_IV7 0x5be0cd19137e2179ULL

#define B2B_ROTR(x, n) (((x) >> (n)) | ((x) << (64 - (n))))

#define B2B_G(a, b, c, d, x, y)          \
    do {                                 \
        a = a + b + m[x];                \
        d = B2B_ROTR(d ^ a, 32);         \
        c = c + d;                       \
        b = B2B_ROTR(b ^ c, 24);         \
        a = a + b + m[y];                \
        d = B2B_ROTR(d ^ a, 16);         \
        c = c + d;                       \
        b = B2B_ROTR(b ^ c, 63);         \
    } while (0)

/* One round, the message schedule sigma[r] spelled out: every index is a constant, so each message word is one
 * load at a fixed offset of the map value and the verifier checks no index. */
#define B2B_ROUND(s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15) \
    do {                                                                                \
        B2B_G(v0, v4, v8, v12, s0, s1);                                                 \
        B2B_G(v1, v5, v9, v13, s2, s3);                                                 \
        B2B_G(v2, v6, v10, v14, s4, s5);                                                \
        B2B_G(v3, v7, v11, v15, s6, s7);                                                \
        B2B_G(v0, v5, v10, v15, s8, s9);                                                \
        B2B_G(v1, v6, v11, v12, s10, s11);                                              \
        B2B_G(v2, v7, v8, v13, s12, s13);                                               \
        B2B_G(v3, v4, v9, v14, s14, s15);                                               \
    } while (0)

/* Compress s->m into s->h. T: bytes hashed so far, this block included (< 2^32 here, so the counter's high word
 * is 0). FINAL: this is the last block. */
static __always_inline void b2b_compress(struct b2b_state *s, __u64 t, int final)
{
    const __u64 *m = s->m;
    __u64 v0 = s->h[0], v1 = s->h[1], v2 = s->h[2], v3 = s->h[3];
    __u64 v4 = s->h[4], v5 = s->h[5], v6 = s->h[6], v7 = s->h[7];
    __u64 v8 = B2B_IV0, v9 = B2B_IV1, v10 = B2B_IV2, v11 = B2B_IV3;
    __u64 v12 = B2B_IV4, v13 = B2B_IV5, v14 = B2B_IV6, v15 = B2B_IV7;
    asm volatile("" : "+r"(v8), "+r"(v9), "+r"(v10), "+r"(v11)); /* not hoisted: see the top of this file */
    asm volatile("" : "+r"(v12), "+r"(v13), "+r"(v14), "+r"(v15));
    v12 ^= t;
    v14 ^= final ? ~0ULL : 0;

    B2B_ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    B2B_ROUND(14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3);
    B2B_ROUND(11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4);
    B2B_ROUND(7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8);
    B2B_ROUND(9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13);
    B2B_ROUND(2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9);
    B2B_ROUND(12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11);
    B2B_ROUND(13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10);
    B2B_ROUND(6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5);
    B2B_ROUND(10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0);
    B2B_ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    B2B_ROUND(14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3);

    s->h[0] ^= v0 ^ v8;
    s->h[1] ^= v1 ^ v9;
    s->h[2] ^= v2 ^ v10;
    s->h[3] ^= v3 ^ v11;
    s->h[4] ^= v4 ^ v12;
    s->h[5] ^= v5 ^ v13;
    s->h[6] ^= v6 ^ v14;
    s->h[7] ^= v7 ^ v15;
}

/* The chaining value before any block: IV xor the parameter block (digest length 16, key length KLEN, fanout 1,
 * depth 1). */
static __always_inline void b2b_start(struct b2b_state *s, __u32 klen)
{
    s->h[0] = B2B_IV0 ^ (0x01010000ULL | ((__u64)klen << 8) | B2B_OUT_BYTES);
    s->h[1] = B2B_IV1;
    s->h[2] = B2B_IV2;
    s->h[3] = B2B_IV3;
    s->h[4] = B2B_IV4;
    s->h[5] = B2B_IV5;
    s->h[6] = B2B_IV6;
    s->h[7] = B2B_IV7;
}

/* The key block: the key's 64 bytes (zero past its length), then 64 zero bytes. No branch on the length. */
static __always_inline void b2b_load_key_block(struct b2b_state *s, const struct b2b_key *k)
{
    const __u64 *w = (const __u64 *)k->bytes;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        s->m[i] = w[i];
        s->m[i + 8] = 0;
    }
}

/* The MAC over LEN (0..B2B_MSG_MAX) bytes at OFF of PKT (IS_SKB: a struct __sk_buff, else a struct xdp_md),
 * keyed with KEY, into s->h[0..1]. PREKEYED: start from the key's chaining value (b2b_prekey), one compression
 * less; -EINVAL if it was not prepared. An empty message (whose key block is its final block) never starts there.
 * Returns 0, -E2BIG (message or key too long) or the load_bytes error (-EFAULT: the bytes are not in the packet). */
static __always_inline int b2b_mac(void *pkt, int is_skb, struct b2b_state *s, const struct b2b_key *key,
                                   __u32 off, __u32 len, int prekeyed)
{
    __u32 klen = key->len;
    if (len > B2B_MSG_MAX || klen > B2B_KEY_MAX)
        return -E2BIG;
    /* bytes compressed before the message's: 128 with a key, else 0 (no branch: see the end of this function) */
    __u64 counted = ((klen + B2B_BLOCK_BYTES - 1) / B2B_BLOCK_BYTES) * B2B_BLOCK_BYTES;

    if (prekeyed && klen > 0 && len > 0) {
        if (!key->prekeyed)
            return -EINVAL;
        /* copied, not pointed at: compressing writes s->h */
#pragma unroll
        for (int w = 0; w < 8; w++)
            s->h[w] = key->h[w];
    } else {
        b2b_start(s, klen);
        if (klen > 0 && len > 0) { /* a key block that is not the last block */
            b2b_load_key_block(s, key);
            b2b_compress(s, B2B_BLOCK_BYTES, 0);
        }
    }

    /* every message block but the last: full, so the load has a constant size */
    __u32 full = len > 0 ? (len - 1) / B2B_BLOCK_BYTES : 0;
#pragma clang loop unroll(disable)
    for (__u32 i = 0; i < B2B_MAX_FULL_BLOCKS; i++) {
        if (i >= full)
            break;
        long err = is_skb ? bpf_skb_load_bytes(pkt, off + i * B2B_BLOCK_BYTES, s->m, B2B_BLOCK_BYTES)
                          : bpf_xdp_load_bytes(pkt, off + i * B2B_BLOCK_BYTES, s->m, B2B_BLOCK_BYTES);
        if (err)
            return (int)err;
        b2b_compress(s, counted + (i + 1) * B2B_BLOCK_BYTES, 0);
    }

    /* the last block: the message's last 1..128 bytes, or for an empty message the key block or nothing */
    if (len > 0) {
        __u32 n = ((len - 1) & (B2B_BLOCK_BYTES - 1)) + 1; /* 1..128, a range the verifier sees */
#pragma unroll
        for (int w = 0; w < 16; w++)
            s->m[w] = 0;
        long err = is_skb ? bpf_skb_load_bytes(pkt, off + len - n, s->m, n)
                          : bpf_xdp_load_bytes(pkt, off + len - n, s->m, n);
        if (err)
            return (int)err;
    } else {
        /* the key block, final; unkeyed, that is 128 zero bytes (a key's bytes past its length are 0). Not a
         * branch on klen: one here would make the verifier keep klen exact and walk the loop once per kind of key */
        b2b_load_key_block(s, key);
    }
    b2b_compress(s, counted + len, 1);
    return 0;
}

static __always_inline int b2b_mac_xdp(struct xdp_md *ctx, struct b2b_state *s, const struct b2b_key *key, __u32 off,
                                       __u32 len)
{
    return b2b_mac(ctx, 0, s, key, off, len, 0);
}

static __always_inline int b2b_mac_skb(struct __sk_buff *skb, struct b2b_state *s, const struct b2b_key *key,
                                       __u32 off, __u32 len)
{
    return b2b_mac(skb, 1, s, key, off, len, 0);
}

static __always_inline int b2b_mac_xdp_prekeyed(struct xdp_md *ctx, struct b2b_state *s, const struct b2b_key *key,
                                                __u32 off, __u32 len)
{
    return b2b_mac(ctx, 0, s, key, off, len, 1);
}

static __always_inline int b2b_mac_skb_prekeyed(struct __sk_buff *skb, struct b2b_state *s,
                                                const struct b2b_key *key, __u32 off, __u32 len)
{
    return b2b_mac(skb, 1, s, key, off, len, 1);
}

/* Compress KEY's block (non-final: a message follows) and store the chaining value in the key's map value, for
 * the prekeyed calls. One compression; do it when key->prekeyed is 0. Two CPUs doing it at once write the same
 * bytes. Returns 0 or -E2BIG. */
static __always_inline int b2b_prekey(struct b2b_state *s, struct b2b_key *key)
{
    __u32 klen = key->len;
    if (klen > B2B_KEY_MAX)
        return -E2BIG;
    if (klen == 0) /* an unkeyed MAC has no key block: the prekeyed calls take the full path */
        return 0;
    b2b_start(s, klen);
    b2b_load_key_block(s, key);
    b2b_compress(s, B2B_BLOCK_BYTES, 0);
#pragma unroll
    for (int w = 0; w < 8; w++)
        key->h[w] = s->h[w];
    key->prekeyed = 1;
    return 0;
}

/* Whether the MAC in s->h equals TAG (the packet's 16 MAC bytes read as two __u64), without an early exit. */
static __always_inline int b2b_digest_equal(const struct b2b_state *s, const __u64 tag[2])
{
    return ((s->h[0] ^ tag[0]) | (s->h[1] ^ tag[1])) == 0;
}

#endif /* GOSSIP_BLAKE2B_H */
