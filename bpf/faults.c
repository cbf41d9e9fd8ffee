/* Fault injection at TC ingress/egress: random loss and partitions, steered at run time through maps.
 *
 * Nothing is templated into the source: one compiled program serves every interface and every fault schedule.
 * Loss is keyed by (ifindex, peer address), partitions by address, so the same program works on a node's own
 * interface or on its bridge-side veth end. Only IPv4 is judged; ARP and everything else always pass, so a
 * partition cannot poison neighbour tables. Every verdict is counted per interface.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/ip.h>

#include "gossip_common.h"
#include "parse_helpers.h"

BPF_TABLE("hash", struct ft_loss_key, __u64, ft_loss, FT_MAX_RULES);
BPF_TABLE("hash", __be32, __u32, ft_side, FT_MAX_RULES);
BPF_TABLE("percpu_hash", __u32, struct ft_stats, ft_stats, FT_MAX_RULES);

static __always_inline int partitioned(__be32 a, __be32 b)
{
    __u32 *side_a = ft_side.lookup(&a);
    __u32 *side_b = ft_side.lookup(&b);
    return side_a && side_b && *side_a != *side_b;
}

static __always_inline int lost(__u32 ifindex, __be32 peer)
{
    struct ft_loss_key key = {.ifindex = ifindex, .peer = peer};
    __u64 *threshold = ft_loss.lookup(&key);
    if (!threshold) {
        key.peer = 0; /* no rule for this peer: the interface's rule for any peer */
        threshold = ft_loss.lookup(&key);
    }
    return threshold && (__u64)bpf_get_prandom_u32() < *threshold;
}

/* PEER_IS_SOURCE: at ingress the peer is the sender, at egress the receiver. */
static __always_inline enum ft_stat judge(struct __sk_buff *skb, __u32 ifindex, int peer_is_source)
{
    /* a frame for another host (a bridge flooding an unknown MAC) is discarded by the stack anyway */
    if (peer_is_source && skb->pkt_type == PACKET_OTHERHOST)
        return FT_STAT_COUNT; /* not judged, not counted */
    struct cursor c = {.pos = (void *)(long)skb->data, .end = (void *)(long)skb->data_end};
    struct ethhdr *eth = parse_eth(&c);
    if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
        return FT_STAT_COUNT;
    struct iphdr *ip = parse_ipv4(&c);
    if (!ip)
        return FT_STAT_COUNT;
    if (partitioned(ip->saddr, ip->daddr))
        return FT_DROP_PARTITION;
    if (lost(ifindex, peer_is_source ? ip->saddr : ip->daddr))
        return FT_DROP_LOSS;
    return FT_PASSED;
}

static __always_inline int run(struct __sk_buff *skb, int peer_is_source)
{
    __u32 ifindex = skb->ifindex;
    enum ft_stat verdict = judge(skb, ifindex, peer_is_source);

    struct ft_stats *stats = ft_stats.lookup(&ifindex); /* per-CPU: plain increments are safe */
    if (stats && verdict < FT_STAT_COUNT) {
        stats->count[FT_SEEN] += 1;
        stats->count[verdict] += 1;
    }
    return verdict == FT_DROP_PARTITION || verdict == FT_DROP_LOSS ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}

int faults_ingress(struct __sk_buff *skb)
{
    return run(skb, 1);
}

int faults_egress(struct __sk_buff *skb)
{
    return run(skb, 0);
}
