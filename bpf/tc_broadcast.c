/* TC egress broadcaster: the node sends one UDP datagram, this program puts one copy per target on the wire.
 *
 * The node writes the target list and the datagram's identity into its slot of the mmap-able bc_slots array
 * (plain memory writes, no syscall; the protocol is described at struct bc_slot), arms the slot and sends the
 * datagram to targets[0]. Here, on egress of the node's interface, the program takes the slot and checks that the
 * datagram is the armed one by its own identity: source port, destination, UDP length, the gossip header (type,
 * cluster, origin, sequence or version) and the MAC, which covers the whole content. Anything else, e.g. an older
 * datagram that waited for ARP after the sender gave up on it, is passed unchanged to its own destination only and
 * counted (mismatches, stale), so it can never take a newer target list. The program then loops: rewrite the
 * destination MAC, address and port (the IP checksum computed here, the UDP one through the helper, which knows
 * whether the stack left it to the device), mark the skb and bpf_clone_redirect it out of the same interface, once
 * per further target. Cloning in a loop, rather than each clone spawning the next, avoids the kernel's xmit
 * recursion limit (8). Each clone passes through this program again; the mark lets it through. Finally the
 * original is restored to targets[0] and passes, so the sender's sendto sees an ordinary success. Helpers (not
 * direct writes) edit the packet: they unshare the data a clone still references. Per copy that is four helper
 * calls (UDP checksum, one 38-byte header store, the flow hash, the clone), five when the port differs. The flow
 * hash spares receive packet steering (RPS) on the far end of the link from dissecting each copy; the original
 * leaves with the hash it came with.
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
#define HDR_BYTES    (UDP_DPORT_OFF + 2) /* Ethernet, IPv4 and UDP up to the destination port: stored at once */
#define PAYLOAD_OFF  (UDP_OFF + sizeof(struct udphdr))

struct dest {
    __be32 addr;
    __be16 port;
    __u8 mac[6];
};

/* The frame's first HDR_BYTES bytes, edited on the stack and written with one helper call per copy. */
struct hdr {
    __u8 bytes[HDR_BYTES];
} __attribute__((aligned(8)));

/* RFC 1624: the checksum CHECK after the 32-bit word OLD became NEW. One's complement sums do not depend on byte
 * order, so the words are used as they lie in memory. */
static __always_inline __u16 ip_csum_replace4(__u16 check, __u32 old, __u32 new)
{
    __u32 sum = (__u16)~check + (__u16)~old + (__u16)~(old >> 16) + (__u16)new + (__u16)(new >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (__u16)~sum;
}

/* Point the packet at NEW (currently addressed to CUR; ORIG is its original header). The IP checksum is computed
 * from the original header; the UDP one by the helper: BPF_F_PSEUDO_HDR, the address is in the pseudo header, and
 * with a checksum the device completes (CHECKSUM_PARTIAL) only that part is updated; BPF_F_MARK_MANGLED_0 leaves a
 * zero (absent) UDP checksum alone and never writes one. */
static __always_inline int retarget(struct __sk_buff *skb, const struct hdr *orig, struct hdr *h,
                                    const struct dest *cur, const struct dest *new)
{
    int err = bpf_l4_csum_replace(skb, UDP_CSUM_OFF, cur->addr, new->addr,
                                  BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | sizeof(new->addr));
    if (cur->port != new->port)
        err |= bpf_l4_csum_replace(skb, UDP_CSUM_OFF, cur->port, new->port,
                                   BPF_F_MARK_MANGLED_0 | sizeof(new->port));
    __u16 check;
    __u32 addr;
    __builtin_memcpy(&check, &orig->bytes[IP_CSUM_OFF], sizeof(check));
    __builtin_memcpy(&addr, &orig->bytes[IP_DADDR_OFF], sizeof(addr));
    check = ip_csum_replace4(check, addr, new->addr);
    __builtin_memcpy(&h->bytes[0], new->mac, sizeof(new->mac));
    __builtin_memcpy(&h->bytes[IP_CSUM_OFF], &check, sizeof(check));
    __builtin_memcpy(&h->bytes[IP_DADDR_OFF], &new->addr, sizeof(new->addr));
    __builtin_memcpy(&h->bytes[UDP_DPORT_OFF], &new->port, sizeof(new->port));
    err |= bpf_skb_store_bytes(skb, 0, h->bytes, HDR_BYTES, 0);
    return err;
}

/* A flow hash for the copy from SADDR:SPORT to D, set on the skb before it is cloned. Receive packet steering
 * (RPS) on the other end of the link needs one per packet and would otherwise dissect every copy and siphash its
 * 4-tuple (measured ~9 % of the broadcast's kernel time with RPS on). Any value that is the same for every copy of
 * one flow keeps RPS's promise (a flow stays on one CPU); 0 means "none", so it is never 0. */
static __always_inline __u32 flow_hash(__be32 saddr, __be16 sport, const struct dest *d)
{
    __u32 h = saddr * 0x9E3779B1u ^ d->addr; /* then murmur3's finaliser, the ports mixed in half-way */
    h = (h ^ h >> 16) * 0x85EBCA6Bu ^ ((__u32)sport << 16 | d->port);
    h = (h ^ h >> 13) * 0xC2B2AE35u;
    h ^= h >> 16;
    return h ? h : 1;
}

static __always_inline void count(struct bc_stats *stats, enum bc_stat stat, __u64 n)
{
    if (stats && stat < BC_STAT_COUNT) /* per-CPU: a plain add is safe */
        stats->count[stat] += n;
}

static __always_inline int same(const __u64 *a, const __u64 *b, int words)
{
    __u64 diff = 0;
    for (int i = 0; i < words; i++)
        diff |= a[i] ^ b[i];
    return diff == 0;
}

/* Emit the copies if SKB is the datagram armed in this interface's slot; *ACTION is what becomes of the original. */
static __always_inline enum bc_stat broadcast(struct __sk_buff *skb, __u32 ifindex, struct bc_stats *stats,
                                              int *action)
{
    __u32 *slot_index = bc_ifslot.lookup(&ifindex);
    if (!slot_index)
        return BC_PASSED;
    struct bc_slot *slot = bc_slots.lookup(slot_index);
    if (!slot || !slot->armed)
        return BC_PASSED;

    __u64 gen = slot->armed;
    if (!gen)
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
    struct dest orig = {.addr = ip->daddr, .port = udp->dest};
    __be32 saddr = ip->saddr;
    __be16 sport = udp->source;
    __builtin_memcpy(orig.mac, eth->h_dest, sizeof(orig.mac));
    __u32 udp_len = bpf_ntohs(udp->len);
    if (udp->source != slot->sport || orig.addr != slot->targets[0].addr || orig.port != slot->targets[0].port)
        return BC_MISMATCHES; /* another socket's or another destination's datagram: the slot stays armed */

    /* The identity, compared with the block of generation GEN (a seqlock read: GEN must still be the generation
     * afterwards); then the slot is taken, so no other datagram can use this arming, nor this one a later one. */
    __u64 head[BC_ID_HEAD / 8], tag[BC_ID_TAG / 8];
    if (udp_len != slot->udp_len || udp_len < sizeof(struct udphdr) + BC_ID_HEAD + BC_ID_TAG ||
        bpf_skb_load_bytes(skb, PAYLOAD_OFF, head, sizeof(head)) ||
        bpf_skb_load_bytes(skb, UDP_OFF + (udp_len - BC_ID_TAG), tag, sizeof(tag)) ||
        !same(head, (const __u64 *)slot->head, BC_ID_HEAD / 8) || !same(tag, (const __u64 *)slot->tag, BC_ID_TAG / 8))
        return BC_STALE;
    if (__sync_fetch_and_add(&slot->generation, 0) != gen || __sync_val_compare_and_swap(&slot->armed, gen, 0) != gen)
        return BC_TORN; /* re-armed while we compared: not ours to use */

    struct hdr orig_hdr, h;
    if (bpf_skb_load_bytes(skb, 0, orig_hdr.bytes, HDR_BYTES))
        return BC_PASSED;
    h = orig_hdr;
    struct dest cur = orig;
    __u32 mark = skb->mark, hash = skb->hash;
    __u32 n = slot->count;
    __u32 failed = 0;
    __u64 copies = 1, errors = 0, egress_drops = 0;
    int broken = 0, torn = 0;

    for (__u32 i = 1; i < BC_MAX_TARGETS; i++) {
        if (i >= n)
            break;
        struct dest next = {.addr = slot->targets[i].addr, .port = slot->targets[i].port};
        __builtin_memcpy(next.mac, slot->targets[i].mac, sizeof(next.mac));
        /* the target was read under generation GEN: if userspace has begun rewriting the slot it may be torn */
        if (__sync_fetch_and_add(&slot->generation, 0) != gen) {
            torn = 1;
            failed |= ~((1u << i) - 1);
            break;
        }
        if (retarget(skb, &orig_hdr, &h, &cur, &next)) {
            /* the headers may be half rewritten: stop, drop the original, let the sender resend the rest */
            broken = 1;
            failed |= ~((1u << i) - 1) | 1u;
            break;
        }
        cur = next;
        bpf_set_hash(skb, flow_hash(saddr, sport, &next));
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
    if (n > 1 && hash) /* the original leaves with the hash it came with, or none, for the kernel to compute */
        bpf_set_hash(skb, hash);
    else if (n > 1)
        bpf_set_hash_invalid(skb);
    if (!broken && n > 1 && retarget(skb, &orig_hdr, &h, &cur, &orig)) {
        broken = 1;
        failed |= 1u;
    }
    if (broken) {
        *action = TC_ACT_SHOT;
        copies--;
    }

    slot->failed = failed;
    asm volatile("" ::: "memory"); /* "failed" before "done": userspace reads done, then failed */
    slot->done = (__u32)gen;
    count(stats, BC_COPIES, copies);
    count(stats, BC_CLONE_ERRORS, errors);
    count(stats, BC_EGRESS_DROPS, egress_drops);
    if (torn)
        count(stats, BC_TORN, 1);
    return BC_BROADCASTS;
}

int tc_broadcast(struct __sk_buff *skb)
{
    __u32 ifindex = skb->ifindex;
    int action = TC_ACT_UNSPEC; /* no verdict of our own: later filters (faults) still see every copy */

    if (skb->mark == BC_MARK) {
        skb->mark = 0; /* one of our clones on its own pass: let it out unchanged */
    } else {
        struct bc_stats *stats = bc_stats.lookup(&ifindex);
        count(stats, broadcast(skb, ifindex, stats, &action), 1);
    }
    return action;
}
