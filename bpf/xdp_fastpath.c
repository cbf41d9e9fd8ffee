/* XDP fast path: drop gossip datagrams a node would drop anyway, before the kernel builds an skb for them.
 *
 * One compiled program serves every node of a testbed: all state is keyed by ctx->ingress_ifindex, and each
 * node's veth has a unique ifindex. The program never records what it sees; the node writes the accepted
 * versions (after checking the MAC) through the pinned maps, so a forged or first-seen packet always reaches
 * the node. Drop order follows gossip._wire.decode so XDP and the node count the same reason.
 */
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>

#include "gossip_common.h"
#include "parse_helpers.h"

BPF_TABLE("hash", __u32, struct fp_config, fp_config, FP_MAX_NODES);
BPF_TABLE("lru_hash", struct fp_hb_key, __u64, fp_heartbeat, FP_MAX_HEARTBEATS);
BPF_TABLE("hash", __u32, struct fp_version, fp_metadata, FP_MAX_NODES);
/* allocated as the nodes write it: a heartbeat run never uses it and pays only its buckets */
BPF_F_TABLE("hash", struct fp_hb_key, struct fp_swim, fp_swim, FP_MAX_SWIM, BPF_F_NO_PREALLOC);
BPF_TABLE("percpu_hash", __u32, struct fp_stats, fp_stats, FP_MAX_NODES);
BPF_TABLE("hash", __u32, struct fp_writes, fp_writes, FP_MAX_NODES); /* userspace's own counters, see the header */

static __always_inline struct gossip_hdr *parse_gossip(struct cursor *c)
{
    struct gossip_hdr *g = c->pos;
    if ((void *)(g + 1) > c->end)
        return NULL;
    c->pos = g + 1;
    return g;
}

/* (seq, origin) compared lexicographically: <0, 0, >0 */
static __always_inline int version_cmp(__u64 seq, __u32 origin, __u64 held_seq, __u32 held_origin)
{
    if (seq != held_seq)
        return seq < held_seq ? -1 : 1;
    if (origin != held_origin)
        return origin < held_origin ? -1 : 1;
    return 0;
}

static __always_inline enum fp_stat judge_heartbeat(__u32 ifindex, __u32 origin, __u64 seq)
{
    struct fp_hb_key key = {.ifindex = ifindex, .origin = origin};
    __u64 *accepted = fp_heartbeat.lookup(&key);
    if (accepted && seq == *accepted)
        return FP_DROP_DUPLICATE;
    if (accepted && seq < *accepted)
        return FP_DROP_STALE;
    return FP_PASS_HEARTBEAT;
}

/* PING, PING_REQ, STATE and GOSSIP: as heartbeats, per type, against what the node took from the origin. */
static __always_inline enum fp_stat judge_swim(__u32 ifindex, __u8 type, __u32 origin, __u64 seq)
{
    struct fp_hb_key key = {.ifindex = ifindex, .origin = origin};
    struct fp_swim *taken = fp_swim.lookup(&key);
    if (!taken)
        return FP_PASS_SWIM;
    __u64 held = type == GOSSIP_PING ? taken->ping
                 : type == GOSSIP_PING_REQ ? taken->ping_req
                 : type == GOSSIP_STATE ? taken->state : taken->gossip;
    if (held == 0) /* nothing of this type taken yet */
        return FP_PASS_SWIM;
    if (seq == held)
        return FP_DROP_DUPLICATE;
    if (seq < held)
        return FP_DROP_STALE;
    return FP_PASS_SWIM;
}

static __always_inline int judged(__u8 type)
{
    return (type >= GOSSIP_HEARTBEAT && type <= GOSSIP_SWAP_RESP) || type == GOSSIP_PING
           || type == GOSSIP_PING_REQ || type == GOSSIP_STATE || type == GOSSIP_GOSSIP;
}

/* METADATA and SWAP_RESP drop when not newer than the held version; SWAP_REQ only when equal, because the node
 * must answer an older request with its newer value. */
static __always_inline enum fp_stat judge_version(__u32 ifindex, __u8 type, __u32 origin, __u64 seq)
{
    enum fp_stat pass = type == GOSSIP_METADATA ? FP_PASS_METADATA
                        : type == GOSSIP_SWAP_REQ ? FP_PASS_SWAP_REQ : FP_PASS_SWAP_RESP;
    struct fp_version *held = fp_metadata.lookup(&ifindex);
    if (!held)
        return pass;
    int cmp = version_cmp(seq, origin, held->seq, held->origin);
    if (cmp == 0)
        return FP_DROP_DUPLICATE;
    if (cmp < 0 && type != GOSSIP_SWAP_REQ)
        return FP_DROP_STALE;
    return pass;
}

static __always_inline enum fp_stat classify(struct xdp_md *ctx, __u32 ifindex, const struct fp_config *cfg)
{
    struct cursor c = {.pos = (void *)(long)ctx->data, .end = (void *)(long)ctx->data_end};

    struct ethhdr *eth = parse_eth(&c);
    if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
        return FP_PASS_OTHER;
    struct iphdr *ip = parse_ipv4(&c);
    if (!ip || ip->ihl != 5 || ip->protocol != IPPROTO_UDP || (ip->frag_off & bpf_htons(0x3fff)))
        return FP_PASS_OTHER; /* 0x3fff: more-fragments flag and fragment offset */
    struct udphdr *udp = parse_udp(&c);
    if (!udp || udp->dest != bpf_htons(cfg->port))
        return FP_PASS_OTHER;

    /* From here on the datagram is addressed to the node: anything wrong with it is the peer's fault. */
    __u32 udp_len = bpf_ntohs(udp->len);
    if (udp_len < sizeof(*udp) + GOSSIP_HEADER_BYTES + GOSSIP_MAC_BYTES)
        return FP_DROP_MALFORMED;
    struct gossip_hdr *g = parse_gossip(&c);
    if (!g || g->magic != bpf_htons(GOSSIP_MAGIC))
        return FP_DROP_MALFORMED;
    if (g->version != GOSSIP_FORMAT_VERSION)
        return FP_DROP_UNKNOWN_VERSION;
    if (bpf_ntohl(g->cluster) != cfg->cluster_id)
        return FP_DROP_FOREIGN_CLUSTER;
    /* A type this program does not judge (LEAVE, ACK, NACK, or one it does not know) goes to the node, whose
     * decoder is the authority: it counts an unknown type as malformed itself, and a new type needs no change. */
    if (!judged(g->type))
        return FP_PASS_OTHER;
    if (udp_len != sizeof(*udp) + GOSSIP_HEADER_BYTES + bpf_ntohs(g->body_len) + GOSSIP_MAC_BYTES)
        return FP_DROP_MALFORMED;

    __u32 origin = bpf_ntohl(g->origin);
    __u64 seq = bpf_ntohll(g->seq);
    if (g->type == GOSSIP_HEARTBEAT)
        return judge_heartbeat(ifindex, origin, seq);
    if (g->type >= GOSSIP_PING)
        return judge_swim(ifindex, g->type, origin, seq);
    return judge_version(ifindex, g->type, origin, seq);
}

int xdp_fastpath(struct xdp_md *ctx)
{
    __u32 ifindex = ctx->ingress_ifindex;
    enum fp_stat verdict = FP_PASS_OTHER;

    struct fp_config *cfg = fp_config.lookup(&ifindex);
    if (cfg) {
        verdict = classify(ctx, ifindex, cfg);
        struct fp_stats *stats = fp_stats.lookup(&ifindex); /* per-CPU: a plain increment is safe */
        if (stats && verdict < FP_STAT_COUNT)
            stats->count[verdict] += 1;
    }
    return verdict < FP_PASS_HEARTBEAT ? XDP_DROP : XDP_PASS;
}
