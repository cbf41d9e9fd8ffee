/* Test and benchmark harness for blake2b.h: the wire format's MAC computed over a packet, run with
 * BPF_PROG_TEST_RUN (tests/bpf/test_blake2b_mac.py, benchmarks/bench_mac.py). Not attached anywhere.
 *
 * The packet is any bytes: from mt_config.off to its end it is "message || 16-byte MAC", the way a gossip datagram's
 * UDP payload is. Each program MACs the message with the key in mt_key[0], stores the MAC and the error in
 * mt_out[0], and returns PASS when the MAC matches the packet's last 16 bytes, DROP when it does not, ABORTED /
 * TC_ACT_SHOT on an error (packet shorter than off + 16, message longer than B2B_MSG_MAX, key longer than 64).
 * The XDP and the TC program share the code, so both ways of reading the packet pass the verifier and are tested.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#include "gossip_common.h"
#include "blake2b.h"

struct mt_config {
    __u32 off;      /* where the message starts in the packet */
    __u32 prekeyed; /* 1: use (and fill, when not yet prepared) the key's chaining value */
};

struct mt_out {
    __u64 mac[2]; /* the MAC computed, as hashlib's digest() bytes */
    __s32 err;    /* 0, or the negative errno of the failure */
    __u32 len;    /* message bytes MACed */
};

enum mt_stat {
    MT_MATCH = 0,
    MT_MISMATCH,
    MT_ERROR,
    MT_STAT_COUNT,
};

struct mt_stats {
    __u64 count[MT_STAT_COUNT];
};

BPF_ARRAY(mt_config, struct mt_config, 1);
BPF_ARRAY(mt_key, struct b2b_key, 1);
BPF_ARRAY(mt_out, struct mt_out, 1);
BPF_PERCPU_ARRAY(mt_state, struct b2b_state, 1);
BPF_PERCPU_ARRAY(mt_stats, struct mt_stats, 1);

/* MT_MATCH, MT_MISMATCH or MT_ERROR for a packet of PKT_LEN bytes; IS_SKB picks the load_bytes helper. */
static __always_inline enum mt_stat check(void *pkt, __u32 pkt_len, int is_skb)
{
    __u32 zero = 0;
    struct mt_config *cfg = mt_config.lookup(&zero);
    struct b2b_key *key = mt_key.lookup(&zero);
    struct b2b_state *s = mt_state.lookup(&zero);
    struct mt_out *out = mt_out.lookup(&zero);
    if (!cfg || !key || !s || !out)
        return MT_ERROR;

    __u32 off = cfg->off;
    int err = -EINVAL;
    if (pkt_len < off + GOSSIP_MAC_BYTES || off > pkt_len)
        goto done;
    __u32 len = pkt_len - off - GOSSIP_MAC_BYTES;
    out->len = len;
    if (cfg->prekeyed && !key->prekeyed)
        b2b_prekey(s, key);
    err = b2b_mac(pkt, is_skb, s, key, off, len, cfg->prekeyed);
    if (err)
        goto done;
    out->mac[0] = s->h[0];
    out->mac[1] = s->h[1];

    __u64 tag[2];
    err = is_skb ? bpf_skb_load_bytes(pkt, off + len, tag, sizeof(tag))
                 : bpf_xdp_load_bytes(pkt, off + len, tag, sizeof(tag));
done:
    out->err = err;
    if (err)
        return MT_ERROR;
    return b2b_digest_equal(s, tag) ? MT_MATCH : MT_MISMATCH;
}

static __always_inline void count(enum mt_stat verdict)
{
    __u32 zero = 0;
    struct mt_stats *stats = mt_stats.lookup(&zero); /* per-CPU: a plain increment is safe */
    if (stats && verdict < MT_STAT_COUNT)
        stats->count[verdict] += 1;
}

int xdp_mac_test(struct xdp_md *ctx)
{
    enum mt_stat verdict = check(ctx, ctx->data_end - ctx->data, 0);
    count(verdict);
    return verdict == MT_MATCH ? XDP_PASS : verdict == MT_MISMATCH ? XDP_DROP : XDP_ABORTED;
}

int tc_mac_test(struct __sk_buff *skb)
{
    enum mt_stat verdict = check(skb, skb->len, 1);
    count(verdict);
    return verdict == MT_MATCH ? TC_ACT_OK : verdict == MT_MISMATCH ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}
