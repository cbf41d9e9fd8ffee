/* Fault injection where the network is: random loss and partitions, steered at run time through maps.
 *
 * Both programs go on the bridge-side (root-namespace) end of each node's veth: faults_to_node on its TC egress
 * (what the bridge hands to the node, before the node's XDP program sees it), faults_from_node on its TC ingress
 * (what the node sends, before the bridge forwards it). Attached anywhere else the direction names do not hold.
 *
 * The rules are those of the simulator (testbed/sim/_engine.py `_route`): a packet from X to Y is kept with
 * probability (1 - global)(1 - loss[X])(1 - loss[Y]) and crosses only if X and Y are on the same side. Each
 * factor is judged exactly once per packet: X's rule on the way out of X, the partition, the global rule and Y's
 * rule on the way into Y. Only unicast IPv4 is judged and counted; everything else always passes uncounted: ARP,
 * so a partition cannot poison neighbour tables, and multicast and broadcast, which nodes do not send but the
 * root namespace does on the bridge (IGMP reports of the bridge device), and which would blur the counters that
 * tests compare with what nodes sent and received. Nothing is templated into the source: one compiled program
 * serves every interface and every fault schedule.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>

#include "gossip_common.h"
#include "parse_helpers.h"

BPF_TABLE("hash", __u32, __u64, ft_loss, FT_MAX_RULES);
BPF_TABLE("hash", __be32, __u32, ft_side, FT_MAX_RULES);
BPF_TABLE("hash", __u32, struct ft_mac, ft_node_mac, FT_MAX_RULES);
BPF_TABLE("percpu_hash", __u32, struct ft_stats, ft_stats, FT_MAX_RULES);

/* KEY is FT_GLOBAL or an interface; no rule: nothing is lost */
static __always_inline int lost(__u32 key)
{
    __u64 *threshold = ft_loss.lookup(&key);
    return threshold && (__u64)bpf_get_prandom_u32() < *threshold;
}

static __always_inline int partitioned(__be32 a, __be32 b)
{
    __u32 *side_a = ft_side.lookup(&a);
    __u32 *side_b = ft_side.lookup(&b);
    return side_a && side_b && *side_a != *side_b;
}

static __always_inline int same_mac(const __u8 *a, const __u8 *b)
{
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5];
}

/* Written only when it changes: a map update per packet would cost more than the lookup. */
static __always_inline void learn_node_mac(__u32 ifindex, const __u8 *source)
{
    struct ft_mac *known = ft_node_mac.lookup(&ifindex);
    if (known && same_mac(known->addr, source))
        return;
    struct ft_mac mac = {};
    __builtin_memcpy(mac.addr, source, 6);
    ft_node_mac.update(&ifindex, &mac);
}

static __always_inline int unicast(const __u8 *mac)
{
    return !(mac[0] & 1);
}

/* Whether a unicast frame on its way to the node is for another MAC: a copy the bridge flooded because it has not
 * learned that MAC yet, which the node's stack discards. At egress every bridged frame has pkt_type
 * PACKET_OTHERHOST (it was for another MAC than the bridge port it came in on), flood copies and frames for this
 * node alike, so pkt_type cannot tell them apart; the node's MAC can. Userspace may write it at attach time;
 * otherwise, until the node has sent a frame, its MAC is unknown and every frame is taken as for it. */
static __always_inline int flood_copy(__u32 ifindex, const __u8 *dest)
{
    struct ft_mac *node = ft_node_mac.lookup(&ifindex);
    return node && !same_mac(node->addr, dest);
}

/* Returns FT_STAT_COUNT for a packet that is not judged (passed, not counted). */
static __always_inline enum ft_stat judge_from_node(struct __sk_buff *skb, __u32 ifindex)
{
    struct cursor c = {.pos = (void *)(long)skb->data, .end = (void *)(long)skb->data_end};
    struct ethhdr *eth = parse_eth(&c);
    if (!eth)
        return FT_STAT_COUNT;
    learn_node_mac(ifindex, eth->h_source); /* from any frame: ARP usually comes first */
    if (!unicast(eth->h_dest) || eth->h_proto != bpf_htons(ETH_P_IP) || !parse_ipv4(&c))
        return FT_STAT_COUNT;
    return lost(ifindex) ? FT_FROM_NODE_DROP_LOSS : FT_FROM_NODE_PASSED;
}

static __always_inline enum ft_stat judge_to_node(struct __sk_buff *skb, __u32 ifindex)
{
    struct cursor c = {.pos = (void *)(long)skb->data, .end = (void *)(long)skb->data_end};
    struct ethhdr *eth = parse_eth(&c);
    if (!eth || !unicast(eth->h_dest) || flood_copy(ifindex, eth->h_dest) || eth->h_proto != bpf_htons(ETH_P_IP))
        return FT_STAT_COUNT;
    struct iphdr *ip = parse_ipv4(&c);
    if (!ip)
        return FT_STAT_COUNT;
    /* the partition before loss, as the simulator does; either way the packet is gone */
    if (partitioned(ip->saddr, ip->daddr))
        return FT_TO_NODE_DROP_PARTITION;
    if (lost(FT_GLOBAL) || lost(ifindex))
        return FT_TO_NODE_DROP_LOSS;
    return FT_TO_NODE_PASSED;
}

/* Counts VERDICT (and SEEN) unless the packet was not judged, and says what becomes of it: both programs end here. */
static __always_inline int verdict_action(__u32 ifindex, enum ft_stat verdict, enum ft_stat seen,
                                          enum ft_stat passed)
{
    if (verdict >= FT_STAT_COUNT) /* also bounds the index below for the verifier */
        return TC_ACT_UNSPEC;
    struct ft_stats *stats = ft_stats.lookup(&ifindex); /* per-CPU: plain increments are safe */
    if (stats) {
        stats->count[seen] += 1;
        stats->count[verdict] += 1;
    }
    return verdict == passed ? TC_ACT_UNSPEC : TC_ACT_SHOT;
}

int faults_from_node(struct __sk_buff *skb)
{
    __u32 ifindex = skb->ifindex;
    return verdict_action(ifindex, judge_from_node(skb, ifindex), FT_FROM_NODE_SEEN, FT_FROM_NODE_PASSED);
}

int faults_to_node(struct __sk_buff *skb)
{
    __u32 ifindex = skb->ifindex;
    return verdict_action(ifindex, judge_to_node(skb, ifindex), FT_TO_NODE_SEEN, FT_TO_NODE_PASSED);
}
