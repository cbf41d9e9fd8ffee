/* TC egress broadcaster: the node sends one UDP datagram, this program puts one copy per target on the wire.
 *
 * The node writes the target list into its slot of the mmap-able bc_slots array (no syscall), marks the slot
 * armed and sends the datagram to targets[0]. Here, on egress of the node's interface, the armed datagram is
 * recognised by (source port, destination address, destination port). The program then loops: rewrite the
 * destination MAC, address and port (fixing the IP and UDP checksums incrementally), mark the skb and
 * bpf_clone_redirect it out of the same interface, once per further target. Cloning in a loop, rather than each
 * clone spawning the next, avoids the kernel's xmit recursion limit (8). Each clone passes through this program
 * again; the mark lets it through. Finally the original is restored to targets[0] and passes, so the sender's
 * sendto sees an ordinary success. Helpers (not direct writes) edit the packet: they unshare the data a clone
 * still references.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>

#include "gossip_common.h"
#include "parse_helpers.h"

BPF_F_TABLE("array", __u32, struct bc_slot, bc_slots, BC_MAX_SLOTS, BPF_F_MMAPABLE);
BPF_TABLE("hash", __u32, __u32, bc_ifslot, BC_MAX_SLOTS);
BPF_TABLE("percpu_hash", __u32, struct bc_stats, bc_stats, BC_MAX_SLOTS);

#define IP_OFF       sizeof(struct ethhdr)
#define IP_CSUM_OFF  (IP_OFF + __builtin_offsetof(struct iphdr, check))
#define IP_DADDR_OFF (IP_OFF + __builtin_offsetof(struct iphdr, daddr))
#define UDP_OFF      (IP_OFF + sizeof(struct iphdr))
#define UDP_DPORT_OFF (UDP_OFF + __builtin_offsetof(struct udphdr, dest))
#define UDP_CSUM_OFF (UDP_OFF + __builtin_offsetof(struct udphdr, check))

struct dest {
    __be32 addr;
    __be16 port;
    __u8 mac[6];
};

/* Point the packet at NEW (currently addressed to CUR). BPF_F_PSEUDO_HDR: the address is in the UDP pseudo
 * header; BPF_F_MARK_MANGLED_0 leaves a zero (absent) UDP checksum alone and never writes one. */
static __always_inline int retarget(struct __sk_buff *skb, const struct dest *cur, const struct dest *new)
{
    int err = 0;
    err |= bpf_l4_csum_replace(skb, UDP_CSUM_OFF, cur->addr, new->addr,
                               BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | sizeof(new->addr));
    err |= bpf_l4_csum_replace(skb, UDP_CSUM_OFF, cur->port, new->port, BPF_F_MARK_MANGLED_0 | sizeof(new->port));
    err |= bpf_l3_csum_replace(skb, IP_CSUM_OFF, cur->addr, new->addr, sizeof(new->addr));
    err |= bpf_skb_store_bytes(skb, IP_DADDR_OFF, &new->addr, sizeof(new->addr), 0);
    err |= bpf_skb_store_bytes(skb, UDP_DPORT_OFF, &new->port, sizeof(new->port), 0);
    err |= bpf_skb_store_bytes(skb, 0, new->mac, sizeof(new->mac), 0);
    return err;
}

static __always_inline void count(__u32 ifindex, enum bc_stat stat, __u64 n)
{
    struct bc_stats *stats = bc_stats.lookup(&ifindex); /* per-CPU: a plain add is safe */
    if (stats && stat < BC_STAT_COUNT)
        stats->count[stat] += n;
}

/* Emit the copies if SKB is the datagram armed in this interface's slot; *ACTION is what becomes of the original. */
static __always_inline enum bc_stat broadcast(struct __sk_buff *skb, __u32 ifindex, int *action)
{
    __u32 *slot_index = bc_ifslot.lookup(&ifindex);
    if (!slot_index)
        return BC_PASSED;
    struct bc_slot *slot = bc_slots.lookup(slot_index);
    if (!slot || slot->state != BC_ARMED)
        return BC_PASSED;

    struct cursor c = {.pos = (void *)(long)skb->data, .end = (void *)(long)skb->data_end};
    struct ethhdr *eth = parse_eth(&c);
    if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
        return BC_PASSED;
    struct iphdr *ip = parse_ipv4(&c);
    if (!ip || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
        return BC_PASSED;
    struct udphdr *udp = parse_udp(&c);
    if (!udp)
        return BC_PASSED;
    if (udp->source != slot->sport || ip->daddr != slot->targets[0].addr || udp->dest != slot->targets[0].port)
        return BC_MISMATCHES;

    /* the original's destination, restored at the end (packet pointers die at the first helper call) */
    struct dest orig = {.addr = ip->daddr, .port = udp->dest};
    __builtin_memcpy(orig.mac, eth->h_dest, sizeof(orig.mac));
    struct dest cur = orig;
    __u32 mark = skb->mark;
    __u32 n = slot->count;
    __u32 failed = 0;
    __u64 copies = 1, errors = 0, egress_drops = 0;
    int broken = 0;

    for (__u32 i = 1; i < BC_MAX_TARGETS; i++) {
        if (i >= n)
            break;
        struct dest next = {.addr = slot->targets[i].addr, .port = slot->targets[i].port};
        __builtin_memcpy(next.mac, slot->targets[i].mac, sizeof(next.mac));
        if (retarget(skb, &cur, &next)) {
            /* the headers may be half rewritten: stop, drop the original, let the sender resend the rest */
            broken = 1;
            failed |= ~((1u << i) - 1) | 1u;
            break;
        }
        cur = next;
        skb->mark = BC_MARK;
        long ret = bpf_clone_redirect(skb, ifindex, 0);
        if (ret < 0) { /* no clone went out: the sender resends this one */
            failed |= 1u << i;
            errors++;
        } else if (ret > 0) { /* the clone was queued and dropped (e.g. by a fault filter), as a sendto could be */
            egress_drops++;
        } else {
            copies++;
        }
    }
    skb->mark = mark;
    if (!broken && n > 1 && retarget(skb, &cur, &orig)) {
        broken = 1;
        failed |= 1u;
    }
    if (broken) {
        *action = TC_ACT_SHOT;
        copies--;
    }

    slot->failed = failed;
    slot->state = BC_DONE;
    count(ifindex, BC_COPIES, copies);
    count(ifindex, BC_CLONE_ERRORS, errors);
    count(ifindex, BC_EGRESS_DROPS, egress_drops);
    return BC_BROADCASTS;
}

int tc_broadcast(struct __sk_buff *skb)
{
    __u32 ifindex = skb->ifindex;
    int action = TC_ACT_UNSPEC; /* no verdict of our own: later filters (faults) still see every copy */

    if (skb->mark == BC_MARK)
        skb->mark = 0; /* one of our clones on its own pass: let it out unchanged */
    else
        count(ifindex, broadcast(skb, ifindex, &action), 1);
    return action;
}
