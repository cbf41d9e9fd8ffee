/* TC ingress heartbeat plane: the kernel takes a fresh HEARTBEAT from a known member and forwards it itself.
 *
 * Attached at clsact ingress of a node's interface (TC, not XDP: XDP cannot clone). For a heartbeat from a member
 * the node already knows, with a sequence above the one accepted, a MAC made with one of the node's keys and the
 * member's Identity byte for byte, the program does what the node's core does (gossip/_core.py `_on_heartbeat`,
 * `_pick`, `_spread`): records the sequence and the time (hb_members, which userspace owns and reads), picks up to
 * `fanout` random live members that are not the origin and not in the infected set (random probes first, then an
 * exact scan of the slots while the cluster is at most HB_SCAN_MAX members), adds the node and its targets to the
 * infected set, signs the result with key 0 and bpf_clone_redirect()s one copy per target out of the node's
 * interface (a loop: chained redirects stop at 8). The original is dropped, so the node's socket never wakes.
 *
 * Userspace stays the authority. A heartbeat of a registered member at or below the sequence accepted (by the node,
 * which raises it in hb_members, or here) is dropped, as the XDP fast path drops what the node accepted. Anything
 * else the program does not handle exactly as the node would -- another type, an unknown origin, a bad MAC, an
 * identity change, a bad checksum, an exact list that would outgrow max_packet_bytes (the node switches to a Bloom filter), too few targets found by probing in a
 * cluster too big to scan -- passes unchanged (TC_ACT_UNSPEC), counted by reason, BEFORE any state changes. The
 * one commit point is a compare-and-swap of the member's sequence, so two copies of one heartbeat on two CPUs are
 * never both taken; after it the packet is rewritten and a failing helper drops it (counted as rewrite_errors).
 *
 * Checksums: the IPv4 header checksum and the UDP checksum of the incoming datagram are checked (the stack would
 * drop a bad one) -- unless the UDP field holds just the pseudo-header sum of a sender that left the checksum to
 * the device (veth with tx offload: CHECKSUM_PARTIAL crosses the veth unverified), in which case the copies carry
 * the same kind of field. Otherwise each copy carries a full UDP checksum: the payload is summed once after the
 * rewrite and each target only adds its address and port.
 *
 * Everything is keyed by the ingress ifindex, so one compiled program serves every node of a testbed; the sizes
 * are -D flags (bpf/hbplane.py `map_sizes`). bcc 0.26 relocates neither bpf_loop callbacks nor BPF-to-BPF calls:
 * loops are bounded, functions inlined. Per-packet scratch lives in a per-CPU map value: blake2b.h's compression
 * already takes most of the 512-byte stack.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>

#include "gossip_common.h"
#include "blake2b.h"

#ifndef HB_MAX_NODES
#define HB_MAX_NODES 64 /* interfaces one program serves */
#endif
#ifndef HB_MAX_MEMBERS
#define HB_MAX_MEMBERS 1024 /* members (slots) per node; a power of two */
#endif
#ifndef HB_MAX_ENTRIES
#define HB_MAX_ENTRIES (HB_MAX_NODES * 64) /* (node, member) pairs over all nodes; allocated as written */
#endif
#ifndef HB_FANOUT_MAX
#define HB_FANOUT_MAX 8
#endif
#ifndef HB_SCAN_MAX
#define HB_SCAN_MAX 32 /* clusters up to this size get the core's exact scan when probes find too few targets; the
                        * verifier's work grows faster than linearly with it (16: 140k, 32: 218k, 64: 533k) */
#endif
#ifndef HB_EVENT_PAGES
#define HB_EVENT_PAGES 64 /* ring buffer of accepted heartbeats: 256 KiB */
#endif

#ifndef HB_KEYS_MAX
#define HB_KEYS_MAX 4 /* keys in a node's ring */
#endif
#define HB_IDENT_MAX       64
#define HB_IDENT_TOO_LONG  0xffff /* ident_len of a member whose Identity does not fit: its heartbeats pass */
#define HB_PROBES_MAX      (3 * HB_FANOUT_MAX)
#define HB_PAYLOAD_MAX     (B2B_MSG_MAX + GOSSIP_MAC_BYTES) /* UDP payload: header + body + MAC */
#define HB_BUF_BYTES       2048 /* a power of two above HB_PAYLOAD_MAX, for masks the verifier reads as bounds */
#define HB_BITMAP_WORDS    (HB_MAX_MEMBERS / 64)
#define HB_BLOOM_HASHES_MAX 8
#define HB_MAX_IDS         (HB_PAYLOAD_MAX / 4)

#define ETH_BYTES  14
#define IP_OFF     ETH_BYTES
#define UDP_OFF    (IP_OFF + 20)
#define PAY_OFF    (UDP_OFF + 8) /* 42: the gossip header */
#define HDRS_BYTES PAY_OFF

#if (HB_MAX_MEMBERS & (HB_MAX_MEMBERS - 1)) || HB_MAX_MEMBERS < 64
#error "HB_MAX_MEMBERS must be a power of two, at least 64"
#endif
#if (HB_FANOUT_MAX & (HB_FANOUT_MAX - 1)) || HB_FANOUT_MAX > 16
#error "HB_FANOUT_MAX must be a power of two, at most 16"
#endif
#if HB_PAYLOAD_MAX + 64 > HB_BUF_BYTES
#error "HB_BUF_BYTES must hold the largest payload"
#endif

/* ---- shared with bpf/hbplane.py (ctypes mirrors there; sizes checked by tests/bpf/test_hbplane.py) ---- */

/* hb_config: ifindex -> the node on that interface. No entry, or enabled 0: everything passes. */
struct hb_config {
    __u32 self_id;
    __u32 cluster_id;
    __be32 addr;        /* the node's address and UDP port: only datagrams to them are judged */
    __be16 port;
    __u8 mac[6];        /* the node's interface MAC: the copies' source */
    __u16 fanout;       /* 1..HB_FANOUT_MAX */
    __u16 max_packet_bytes;
    __u16 nkeys;        /* 1..HB_KEYS_MAX keys in hb_keys; key 0 signs */
    __u16 enabled;
    __u32 members;      /* slots in use, 0..members-1 */
};

struct hb_key_id {
    __u32 ifindex;
    __u32 index; /* key ring position, or (in hb_slots) the slot, or (in hb_members) the node id */
};

/* hb_members: (ifindex, node id) -> what the node knows of that member. Userspace writes it whole; the program
 * writes only seq (compare-and-swap) and last_seen_ns. */
struct hb_member {
    __u64 seq;          /* highest heartbeat sequence accepted from it */
    __u64 last_seen_ns; /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) of the last heartbeat the program accepted */
    __be32 addr;
    __be16 port;
    __u8 mac[6];
    __u32 slot;         /* its index in hb_slots */
    __u16 ident_len;    /* bytes of ident, or HB_IDENT_TOO_LONG */
    __u8 has_mac;       /* 0: no link-layer address known; a heartbeat that would target it passes */
    __u8 pad0;
    __u32 pad1;
    __u8 ident[HB_IDENT_MAX] __attribute__((aligned(8))); /* its Identity as on the wire; zero past ident_len */
};

/* hb_events (ring buffer): one record per heartbeat the program accepted */
struct hb_event {
    __u64 seq;
    __u64 time_ns;  /* bpf_ktime_get_ns() */
    __u32 ifindex;
    __u32 origin;
    __be32 src_addr; /* who sent this copy: the origin itself when it equals the member's address and port */
    __be16 src_port;
    __u16 targets;   /* copies sent */
};

enum hb_stat {
    HB_HANDLED = 0,         /* accepted and forwarded by the program (the original dropped) */
    HB_ACCEPTED_NO_TARGETS, /* accepted; no uninfected member left: nothing sent, as the node would */
    HB_COPIES,              /* copies cloned out */
    HB_CLONE_ERRORS,        /* bpf_clone_redirect failed for a copy (not resent) */
    HB_REWRITE_ERRORS,      /* a helper failed after the accept: the datagram was dropped, its seq stays taken */
    HB_PASS_OTHER,          /* not IPv4/UDP to the node's address and port, a fragment, IP options, GSO */
    HB_PASS_MALFORMED,      /* lengths, magic or version wrong (the node counts them) */
    HB_PASS_FOREIGN_CLUSTER,
    HB_PASS_NOT_HEARTBEAT,  /* another message type */
    HB_PASS_BAD_CHECKSUM,   /* IPv4 header or UDP checksum wrong: the stack decides */
    HB_PASS_UNKNOWN_ORIGIN, /* not in hb_members (a new member, or the node itself) */
    HB_DROPPED_STALE_OR_DUP, /* seq not above the one accepted (by the node or here): dropped, as XDP drops what
                              * the node told it; the kernel's own accepts are news to XDP until the node reads
                              * them back, so without this their forwards' echoes all woke the node */
    HB_PASS_IDENTITY,       /* the body's Identity differs from the stored one, or is too long to store */
    HB_PASS_BODY,           /* the Infected set does not parse, or the body has trailing bytes */
    HB_PASS_BAD_MAC,        /* no key of the ring made the MAC */
    HB_PASS_TOO_BIG,        /* the exact list would push the datagram over max_packet_bytes */
    HB_PASS_FEW_TARGETS,    /* probes found fewer than fanout targets and the cluster is too big to scan */
    HB_PASS_NO_MAC,         /* a chosen target has no known MAC */
    HB_PASS_RACE,           /* another CPU accepted a heartbeat of this origin meanwhile */
    HB_PASS_DISABLED,
    HB_PASS_INTERNAL,       /* a tail call failed (the loader did not fill hb_progs): nothing was changed */
    HB_STAT_COUNT,
};

struct hb_stats {
    __u64 count[HB_STAT_COUNT];
};

/* ---- program-only ---- */

struct hb_dest {
    __be32 addr;
    __be16 port;
    __u8 mac[6];
    __u32 id;
    __u32 slot;
};

/* Ethernet, IPv4 and UDP headers of a copy, written with one helper call per target */
struct hb_out {
    __u8 bytes[HDRS_BYTES];
} __attribute__((aligned(8)));

/* What the judging program hands the sending one (a tail call, on the same CPU: TC runs with migration off) */
struct hb_pkt {
    __u64 seq;      /* the heartbeat's */
    __u64 held;     /* the member's accepted seq when judged: the compare-and-swap's expected value */
    __u32 origin;
    __u32 origin_slot;
    __u32 plen;     /* UDP payload bytes, as received */
    __u32 new_plen; /* ... as forwarded */
    __u32 body_len;
    __u32 inf;      /* payload offset of the Infected set */
    __u32 kind;     /* 0 exact list, 1 Bloom filter */
    __u32 n_ids;
    __u32 hashes;
    __u32 nbytes;
    __u32 added;    /* ids appended to an exact list */
    __u32 chosen;   /* targets in dests */
    __u32 partial;  /* the UDP checksum field holds the pseudo header's sum only (CHECKSUM_PARTIAL) */
    __be32 saddr;
    __be16 sport;
    __u16 pad;
    __u32 copies;   /* what the sending program did, for its counters */
    __u32 errors;
    __u32 marked;   /* target choice's loop-carried counts (see judge) */
    __u32 self_listed;
    __u32 seen;
    __u32 need;
    __u32 key;      /* the key ring position tc_hbplane_mac tries next */
    __u32 members;
};

struct hb_scratch {
    struct hb_pkt pkt;
    struct b2b_state b2b;
    __u8 head[PAY_OFF + GOSSIP_HEADER_BYTES] __attribute__((aligned(8))); /* the frame up to the body */
    __u64 tag[2];                       /* the datagram's MAC */
    __u64 taken[HB_BITMAP_WORDS];       /* slots that may not be chosen: origin, infected (exact list), chosen */
    struct hb_dest dests[HB_FANOUT_MAX];
    __be32 ids[HB_FANOUT_MAX + 1];      /* ids appended to an exact list */
    struct hb_out out;
    __u8 buf[HB_BUF_BYTES + 256] __attribute__((aligned(8))); /* the UDP payload, and slack for masked indexes */
};

BPF_TABLE("hash", __u32, struct hb_config, hb_config, HB_MAX_NODES);
/* allocated as written and freed after an RCU grace period: a program still preparing a replaced key (b2b_prekey
 * writes into the value) writes into the old element, never into another key's */
BPF_F_TABLE("hash", struct hb_key_id, struct b2b_key, hb_keys, HB_MAX_NODES * HB_KEYS_MAX, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct hb_key_id, struct hb_member, hb_members, HB_MAX_ENTRIES, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct hb_key_id, __u32, hb_slots, HB_MAX_ENTRIES, BPF_F_NO_PREALLOC);
BPF_TABLE("percpu_hash", __u32, struct hb_stats, hb_stats, HB_MAX_NODES);
BPF_PERCPU_ARRAY(hb_scratch, struct hb_scratch, 1);
BPF_RINGBUF_OUTPUT(hb_events, HB_EVENT_PAGES);
BPF_PROG_ARRAY(hb_progs, 2); /* filled by the loader: */
#define HB_PROG_MAC 0  /* tc_hbplane_mac */
#define HB_PROG_SEND 1 /* tc_hbplane_send */

#define hb_barrier() asm volatile("" ::: "memory")
/* X masked to a buffer index in a way clang cannot drop as redundant (it may prove a bound the verifier cannot) */
#define BOUNDED(x, mask) ({ __u32 _v = (x); asm volatile("" : "+r"(_v)); _v & (mask); })

static __always_inline void count(struct hb_stats *stats, enum hb_stat stat, __u64 n)
{
    if (stats && stat < HB_STAT_COUNT) /* per-CPU: a plain add is safe */
        stats->count[stat] += n;
}

static __always_inline __u32 rd16(const __u8 *p)
{
    return ((__u32)p[0] << 8) | p[1];
}

static __always_inline __u32 rd32(const __u8 *p)
{
    return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
}

/* One's complement sums are kept in memory order (16-bit words as they lie in memory), as csum_partial keeps
 * them: adding raw fields read from the packet needs no byte swap. */
static __always_inline __u16 fold(__u64 s)
{
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (__u16)s;
}

static __always_inline __u64 sum32(__u32 raw)
{
    return (raw & 0xffff) + (raw >> 16);
}

/* The sum of the first LEN bytes of s->buf, zero-padded to a multiple of 4 (bpf_csum_diff takes at most 512
 * bytes a call). */
static __always_inline __u64 payload_sum(struct hb_scratch *s, __u32 len)
{
    __u32 padded = (len + 3) & ~3u;
    __u32 zero = 0;
    __builtin_memcpy(&s->buf[BOUNDED(len, HB_BUF_BYTES - 1)], &zero, sizeof(zero)); /* the pad bytes */
    __u64 sum = 0;
#pragma unroll
    for (int c = 0; c < 3; c++) {
        if (padded <= c * 512)
            break;
        __u32 n = padded - c * 512;
        if (n > 512)
            n = 512;
        long r = bpf_csum_diff(NULL, 0, (__be32 *)&s->buf[c * 512], n & 0x3fc, (__wsum)sum);
        if (r < 0)
            return ~0ULL;
        sum = (__u32)r;
    }
    return sum;
}

static __always_inline int taken(const struct hb_scratch *s, __u32 slot)
{
    return (s->taken[(slot >> 6) & (HB_BITMAP_WORDS - 1)] >> (slot & 63)) & 1;
}

static __always_inline void take(struct hb_scratch *s, __u32 slot)
{
    s->taken[(slot >> 6) & (HB_BITMAP_WORDS - 1)] |= 1ULL << (slot & 63);
}

/* Whether X is in the Bloom filter of NBYTES at BITS_OFF in s->buf, HASHES positions per id (gossip/_wire.py
 * `_bloom_positions`). Without a branch: every branch along a path is one more state the verifier keeps pending,
 * and it refuses more than 8192 of them; this runs inside loops over probes and slots. */
static __always_inline __u32 bloom_has(const struct hb_scratch *s, __u32 bits_off, __u32 nbytes, __u32 hashes,
                                       __u32 x)
{
    __u32 h2 = (x * 0x9E3779B1u) | 1;
    __u64 nbits = (__u64)nbytes * 8;
    __u32 all = 1;
#pragma unroll
    for (__u32 j = 0; j < HB_BLOOM_HASHES_MAX; j++) {
        __u64 p = ((__u64)x + (__u64)j * h2) % nbits;
        __u32 at = BOUNDED(bits_off + (__u32)(p >> 3), HB_BUF_BYTES - 1);
        __u32 bit = (s->buf[at] >> (p & 7)) & 1;
        __u32 unused = ((hashes - j - 1) >> 31) & 1; /* 1 when j >= hashes (hashes <= 8) */
        all &= bit | unused;
    }
    return all;
}

/* Whether the member in SLOT of the node on IFINDEX may be a target, its id in *NID: a slot that holds a member,
 * not the node itself, and (KIND 1) not in the heartbeat's Bloom filter. The probes and the exact scan both ask. */
static __always_inline int target_in(const struct hb_scratch *s, __u32 ifindex, __u32 slot, __u32 self_id,
                                     __u32 kind, __u32 bits_off, __u32 nbytes, __u32 hashes, __u32 *nid)
{
    struct hb_key_id skey = {.ifindex = ifindex, .index = slot};
    __u32 *id = hb_slots.lookup(&skey);
    if (!id)
        return 0;
    *nid = *id;
    return *nid != self_id && !(kind == 1 && bloom_has(s, bits_off, nbytes, hashes, *nid));
}

static __always_inline void bloom_add(struct hb_scratch *s, __u32 bits_off, __u32 nbytes, __u32 hashes, __u32 x)
{
    __u32 h2 = (x * 0x9E3779B1u) | 1;
    __u64 nbits = (__u64)nbytes * 8;
#pragma unroll
    for (int j = 0; j < HB_BLOOM_HASHES_MAX; j++) {
        if (j >= hashes)
            break;
        __u64 p = ((__u64)x + (__u64)j * h2) % nbits;
        __u32 at = BOUNDED(bits_off + (__u32)(p >> 3), HB_BUF_BYTES - 1);
        s->buf[at] |= 1 << (p & 7);
    }
}

/* Whether the LEN (<= 64) Identity bytes at s->buf[24] equal the member's (zero past its length). */
static __always_inline int same_identity(const struct hb_scratch *s, const struct hb_member *m, __u32 len)
{
    __u64 diff = 0;
#pragma unroll
    for (int w = 0; w < HB_IDENT_MAX / 8; w++) {
        __u64 a, b;
        __builtin_memcpy(&a, &s->buf[GOSSIP_HEADER_BYTES + 8 * w], 8);
        __builtin_memcpy(&b, &m->ident[8 * w], 8);
        __u32 have = len > 8 * w ? len - 8 * w : 0;
        __u64 mask = have >= 8 ? ~0ULL : ((1ULL << (8 * have)) - 1); /* little-endian: first bytes are low */
        diff |= (a & mask) ^ b;
    }
    return diff == 0;
}

/* ---- program 1, tc_hbplane: judge. Changes nothing; a heartbeat it would handle goes on to tc_hbplane_mac ---- */

static __always_inline enum hb_stat parse(struct __sk_buff *skb, __u32 ifindex, const struct hb_config *cfg,
                                          struct hb_scratch *s)
{
    struct hb_pkt *pk = &s->pkt;
    if (!cfg->enabled)
        return HB_PASS_DISABLED;
    if (skb->protocol != bpf_htons(ETH_P_IP) || skb->gso_size || skb->len < HDRS_BYTES + GOSSIP_HEADER_BYTES)
        return HB_PASS_OTHER;

    /* ---- parse: Ethernet / IPv4 (no options, not a fragment) / UDP to the node / gossip header ---- */
    if (bpf_skb_load_bytes(skb, 0, s->head, sizeof(s->head)))
        return HB_PASS_OTHER;
    const struct ethhdr *eth = (const void *)s->head;
    const struct iphdr *ip = (const void *)&s->head[IP_OFF];
    const struct udphdr *udp = (const void *)&s->head[UDP_OFF];
    const struct gossip_hdr *g = (const void *)&s->head[PAY_OFF];
    if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->version != 4 || ip->ihl != 5 || ip->protocol != IPPROTO_UDP ||
        (ip->frag_off & bpf_htons(0x3fff)) || ip->daddr != cfg->addr || udp->dest != cfg->port)
        return HB_PASS_OTHER;
    __u32 tot_len = bpf_ntohs(ip->tot_len);
    __u32 udp_len = bpf_ntohs(udp->len);
    if (skb->len != ETH_BYTES + tot_len || udp_len != tot_len - 20 ||
        udp_len < 8 + GOSSIP_HEADER_BYTES + GOSSIP_MAC_BYTES || g->magic != bpf_htons(GOSSIP_MAGIC) ||
        g->version != GOSSIP_FORMAT_VERSION)
        return HB_PASS_MALFORMED;
    if (bpf_ntohl(g->cluster) != cfg->cluster_id)
        return HB_PASS_FOREIGN_CLUSTER;
    if (g->type != GOSSIP_HEARTBEAT)
        return HB_PASS_NOT_HEARTBEAT;
    __u32 plen = udp_len - 8;
    __u32 body_len = bpf_ntohs(g->body_len);
    if (plen != GOSSIP_HEADER_BYTES + body_len + GOSSIP_MAC_BYTES)
        return HB_PASS_MALFORMED;
    if (plen > HB_PAYLOAD_MAX)
        return HB_PASS_TOO_BIG;
    __u64 ipsum = 0;
#pragma unroll
    for (int w = 0; w < 10; w++) {
        __u16 half;
        __builtin_memcpy(&half, &s->head[IP_OFF + 2 * w], 2);
        ipsum += half;
    }
    if (fold(ipsum) != 0xffff)
        return HB_PASS_BAD_CHECKSUM;

    /* ---- the member, its sequence, its identity (cheap, before the MAC) ---- */
    __u32 origin = bpf_ntohl(g->origin);
    __u64 seq = bpf_ntohll(g->seq);
    struct hb_key_id mkey = {.ifindex = ifindex, .index = origin};
    struct hb_member *m = hb_members.lookup(&mkey);
    if (!m || origin == cfg->self_id)
        return HB_PASS_UNKNOWN_ORIGIN;
    __u64 held = m->seq;
    if (seq <= held)
        return HB_DROPPED_STALE_OR_DUP;
    __u32 ident_len = m->ident_len;
    if (ident_len > HB_IDENT_MAX || body_len < ident_len + 3)
        return HB_PASS_IDENTITY;
    if (bpf_skb_load_bytes(skb, PAY_OFF, s->buf, plen & 0x7ff))
        return HB_PASS_OTHER;
    if (!same_identity(s, m, ident_len))
        return HB_PASS_IDENTITY;

    /* the UDP checksum: full, absent, or just the pseudo header's (CHECKSUM_PARTIAL from a local sender) */
    __u64 pay = payload_sum(s, plen);
    if (pay == ~0ULL)
        return HB_PASS_OTHER;
    __u64 pseudo = sum32(ip->saddr) + sum32(ip->daddr) + bpf_htons(IPPROTO_UDP) + udp->len;
    __u32 partial = 0;
    if (udp->check) {
        __u64 all = pay + pseudo + udp->source + udp->dest + udp->len + udp->check;
        if (fold(all) != 0xffff) {
            if (udp->check != fold(pseudo))
                return HB_PASS_BAD_CHECKSUM;
            partial = 1;
        }
    }

    /* ---- the Infected set ---- */
    __u32 inf = (GOSSIP_HEADER_BYTES + ident_len) & 0x7f; /* <= 88 */
    __u32 kind = s->buf[inf];
    __u32 n_ids = 0, hashes = 0, nbytes = 0;
    if (kind == 0) {
        n_ids = rd16(&s->buf[inf + 1]);
        if (body_len != ident_len + 3 + 4 * n_ids)
            return HB_PASS_BODY;
    } else if (kind == 1) {
        hashes = s->buf[inf + 1];
        nbytes = rd16(&s->buf[inf + 2]);
        if (hashes < 1 || hashes > HB_BLOOM_HASHES_MAX || nbytes == 0 || nbytes > HB_PAYLOAD_MAX ||
            body_len != ident_len + 4 + nbytes)
            return HB_PASS_BODY;
    } else {
        return HB_PASS_BODY;
    }
    pk->seq = seq;
    pk->held = held;
    pk->origin = origin;
    pk->origin_slot = m->slot;
    pk->plen = plen;
    pk->body_len = body_len;
    pk->inf = inf;
    pk->kind = kind;
    pk->n_ids = n_ids;
    pk->hashes = hashes;
    pk->nbytes = nbytes;
    pk->partial = partial;
    pk->saddr = ip->saddr;
    pk->sport = udp->source;
    return HB_HANDLED; /* so far: pick() chooses the targets */
}

/* The targets, as `_pick`: up to fanout random live members that are not the origin, not the node, not infected;
 * random probes first, then (clusters of at most HB_SCAN_MAX) an exact scan. Shaped for the verifier, which walks
 * every iteration of a bounded loop: everything comes from the scratch (read after a compiler barrier), so every
 * path of parse() reaches these loops in one state; loop-carried counts live in the scratch too, so each loop head
 * sees one state whichever way the previous iteration went; no clamp (a clamp splits a path in two with different
 * bounds): out-of-range values pass instead; and few branches per iteration, since every branch along the path is
 * a state the verifier keeps pending (it refuses more than 8192). */
static __always_inline enum hb_stat pick(__u32 ifindex, const struct hb_config *cfg, struct hb_scratch *s)
{
    struct hb_pkt *pk = &s->pkt;
    __u32 members = cfg->members, fanout = cfg->fanout, self_id = cfg->self_id;
    if (members == 0 || members > HB_MAX_MEMBERS || fanout == 0 || fanout > HB_FANOUT_MAX)
        return HB_PASS_FEW_TARGETS;
    __u32 inf = BOUNDED(pk->inf, 0x7f), kind = pk->kind, n_ids = pk->n_ids;
    __u32 hashes = pk->hashes, nbytes = pk->nbytes, bits_off = inf + 4;
    pk->marked = 1;
    pk->self_listed = 0;
    pk->chosen = 0;
    pk->seen = 0;

    /* slots that may not be chosen: the origin's and, for an exact list, every listed member's */
#pragma unroll
    for (int w = 0; w < HB_BITMAP_WORDS; w++)
        s->taken[w] = 0;
    take(s, pk->origin_slot);
    __u32 ids_off = inf + 3;
#pragma clang loop unroll(disable)
    for (__u32 i = 0; i < HB_MAX_IDS; i++) {
        hb_barrier();
        if (i >= n_ids)
            break;
        __u32 id = rd32(&s->buf[BOUNDED(ids_off + 4 * i, HB_BUF_BYTES - 1)]);
        pk->self_listed |= id == self_id; /* the node is no member: its lookup below finds nothing */
        struct hb_key_id lkey = {.ifindex = ifindex, .index = id};
        struct hb_member *listed = hb_members.lookup(&lkey);
        if (listed) { /* marked, and counted without a branch */
            __u32 slot = listed->slot;
            __u64 *word = &s->taken[(slot >> 6) & (HB_BITMAP_WORDS - 1)];
            __u64 bit = 1ULL << (slot & 63), had = *word;
            pk->marked += ((had & bit) >> (slot & 63)) ^ 1;
            *word = had | bit;
        }
    }

#pragma clang loop unroll(disable)
    for (__u32 p = 0; p < HB_PROBES_MAX; p++) {
        hb_barrier();
        __u32 chosen = pk->chosen;
        if (p >= 3 * fanout || chosen >= fanout)
            break;
        __u32 slot = bpf_get_prandom_u32() % members;
        if (taken(s, slot))
            continue;
        take(s, slot);
        __u32 nid;
        if (!target_in(s, ifindex, slot, self_id, kind, bits_off, nbytes, hashes, &nid))
            continue;
        __u32 d = BOUNDED(chosen, HB_FANOUT_MAX - 1);
        s->dests[d].slot = slot;
        s->dests[d].id = nid;
        pk->chosen = chosen + 1;
    }
    hb_barrier();
    __u32 chosen = pk->chosen, marked = pk->marked;
    /* an exact list tells how many members are left: once probes found them all, there is nothing to scan */
    if (chosen < fanout && !(kind == 0 && members >= marked && chosen == members - marked)) {
        if (members > HB_SCAN_MAX)
            return HB_PASS_FEW_TARGETS;
        /* every eligible slot, sampled without replacement (reservoir): the core's rng.sample of the rest */
        pk->need = fanout - chosen;
        pk->members = members;
#pragma clang loop unroll(disable)
        for (__u32 slot = 0; slot < HB_SCAN_MAX; slot++) {
            hb_barrier();
            if (slot >= pk->members) /* from memory: a register here would carry a bound per iteration */
                break;
            __u32 nid;
            if (taken(s, slot) || !target_in(s, ifindex, slot, self_id, kind, bits_off, nbytes, hashes, &nid))
                continue;
            __u32 seen = pk->seen + 1, need = pk->need;
            pk->seen = seen;
            __u32 at = seen <= need ? seen - 1 : bpf_get_prandom_u32() % seen;
            if (at < need) {
                __u32 d = BOUNDED(pk->chosen + at, HB_FANOUT_MAX - 1);
                s->dests[d].slot = slot;
                s->dests[d].id = nid;
            }
        }
        hb_barrier();
        pk->chosen += pk->seen < pk->need ? pk->seen : pk->need;
    }
    return HB_HANDLED;
}

/* Where each target listens, and whether the datagram as forwarded still fits (as the node's exact list must: it
 * would switch to a Bloom filter). */
static __always_inline enum hb_stat resolve(__u32 ifindex, const struct hb_config *cfg, struct hb_scratch *s)
{
    struct hb_pkt *pk = &s->pkt;
    __u32 chosen = pk->chosen;
    if (chosen > HB_FANOUT_MAX)
        return HB_PASS_RACE; /* cannot happen */
#pragma clang loop unroll(disable)
    for (__u32 t = 0; t < HB_FANOUT_MAX; t++) {
        hb_barrier();
        if (t >= pk->chosen)
            break;
        struct hb_dest *d = &s->dests[BOUNDED(t, HB_FANOUT_MAX - 1)];
        struct hb_key_id tkey = {.ifindex = ifindex, .index = d->id};
        struct hb_member *tm = hb_members.lookup(&tkey);
        if (!tm)
            return HB_PASS_RACE; /* removed while we chose it */
        if (!tm->has_mac)
            return HB_PASS_NO_MAC;
        d->addr = tm->addr;
        d->port = tm->port;
        __builtin_memcpy(d->mac, tm->mac, 6);
    }
    __u32 added = pk->kind == 0 && chosen > 0 ? (pk->self_listed ? 0 : 1) + chosen : 0;
    __u32 new_plen = pk->plen + 4 * added;
    if (new_plen > HB_PAYLOAD_MAX || 28 + new_plen > cfg->max_packet_bytes)
        return HB_PASS_TOO_BIG;
    pk->added = added;
    pk->new_plen = new_plen;
    return HB_HANDLED;
}

int tc_hbplane(struct __sk_buff *skb)
{
    __u32 ifindex = skb->ifindex, zero = 0;
    struct hb_config *cfg = hb_config.lookup(&ifindex);
    struct hb_scratch *s = hb_scratch.lookup(&zero);
    if (!cfg || !s)
        return TC_ACT_UNSPEC;
    enum hb_stat verdict = parse(skb, ifindex, cfg, s);
    if (verdict == HB_HANDLED) {
        hb_barrier();
        verdict = pick(ifindex, cfg, s);
    }
    if (verdict == HB_HANDLED) {
        hb_barrier();
        verdict = resolve(ifindex, cfg, s);
    }
    if (verdict == HB_HANDLED) {
        s->pkt.key = 0;
        hb_progs.call(skb, HB_PROG_MAC); /* does not return when it works */
        verdict = HB_PASS_INTERNAL;
    }
    struct hb_stats *stats = hb_stats.lookup(&ifindex);
    count(stats, verdict, 1);
    if (verdict == HB_DROPPED_STALE_OR_DUP)
        return TC_ACT_SHOT;
    return TC_ACT_UNSPEC; /* no verdict of our own: the stack, and the node, take it */
}

/* ---- program 2, tc_hbplane_mac: the MAC, with key pk->key of the ring; the next key is the next tail call ----
 * One key per program run, not a loop over the ring: the verifier walks a MAC's ~50k instructions once per
 * distinct state it starts in, and every path out of one MAC starts the next in another state (two keys in one
 * program took 0.99M of its 1M instructions). Tail calls chain at most 33 deep; a ring has at most 4 keys. */
int tc_hbplane_mac(struct __sk_buff *skb)
{
    __u32 ifindex = skb->ifindex, zero = 0;
    struct hb_config *cfg = hb_config.lookup(&ifindex);
    struct hb_scratch *s = hb_scratch.lookup(&zero);
    if (!cfg || !s)
        return TC_ACT_UNSPEC;
    enum hb_stat verdict = HB_PASS_BAD_MAC;
    __u32 i = s->pkt.key;
    struct hb_key_id kid = {.ifindex = ifindex, .index = i};
    struct b2b_key *k = hb_keys.lookup(&kid);
    if (k && i < cfg->nkeys && i < HB_KEYS_MAX) {
        if (!k->prekeyed)
            b2b_prekey(&s->b2b, k);
        __u32 mlen = BOUNDED(s->pkt.plen, 0x7ff) - GOSSIP_MAC_BYTES;
        __builtin_memcpy(s->tag, &s->buf[BOUNDED(mlen, HB_BUF_BYTES - 1)], sizeof(s->tag));
        if (b2b_mac(skb, 1, &s->b2b, k, PAY_OFF, mlen, 1) == 0 && b2b_digest_equal(&s->b2b, s->tag)) {
            hb_progs.call(skb, HB_PROG_SEND);
            verdict = HB_PASS_INTERNAL;
        } else if (i + 1 < cfg->nkeys && i + 1 < HB_KEYS_MAX) {
            s->pkt.key = i + 1;
            hb_progs.call(skb, HB_PROG_MAC);
            verdict = HB_PASS_INTERNAL;
        }
    }
    struct hb_stats *stats = hb_stats.lookup(&ifindex);
    count(stats, verdict, 1);
    return TC_ACT_UNSPEC;
}

/* ---- program 3, tc_hbplane_send: accept, rewrite, sign, clone. Reached only by tail call from tc_hbplane ---- */

static __always_inline enum hb_stat send(struct __sk_buff *skb, __u32 ifindex, const struct hb_config *cfg,
                                         struct hb_scratch *s, int *action)
{
    struct hb_pkt *pk = &s->pkt;
    struct hb_key_id mkey = {.ifindex = ifindex, .index = pk->origin};
    struct hb_member *m = hb_members.lookup(&mkey);
    if (!m)
        return HB_PASS_RACE;

    /* ---- commit: the one state change, and the only one that can lose a race ---- */
    if (__sync_val_compare_and_swap(&m->seq, pk->held, pk->seq) != pk->held)
        return HB_PASS_RACE;
    __u64 now = bpf_ktime_get_ns();
    m->last_seen_ns = now;
    *action = TC_ACT_SHOT;
    struct hb_event ev = {.seq = pk->seq, .time_ns = now, .ifindex = ifindex, .origin = pk->origin,
                          .src_addr = pk->saddr, .src_port = pk->sport, .targets = pk->chosen};
    hb_events.ringbuf_output(&ev, sizeof(ev), 0);
    __u32 chosen = pk->chosen;
    if (chosen == 0)
        return HB_ACCEPTED_NO_TARGETS;
    if (chosen > HB_FANOUT_MAX)
        return HB_REWRITE_ERRORS;

    /* ---- the infected set, rewritten ---- */
    __u32 inf = pk->inf & 0x7f;
    __u32 plen = pk->plen & 0x7ff;
    __u32 new_plen = pk->new_plen & 0x7ff;
    if (pk->kind == 0) {
        __u32 k = 0;
        if (pk->added > chosen)
            s->ids[k++] = bpf_htonl(cfg->self_id);
#pragma unroll
        for (int t = 0; t < HB_FANOUT_MAX; t++) {
            if (t >= chosen)
                break;
            if (k <= HB_FANOUT_MAX)
                s->ids[k] = bpf_htonl(s->dests[t].id);
            k++;
        }
        __u16 new_count = bpf_htons(pk->n_ids + k);
        __u16 new_body = bpf_htons(pk->body_len + 4 * k);
        __u32 grow = (4 * k) & 0x7c;
        if (grow == 0 || plen < GOSSIP_HEADER_BYTES + GOSSIP_MAC_BYTES ||
            bpf_skb_change_tail(skb, PAY_OFF + new_plen, 0) ||
            bpf_skb_store_bytes(skb, PAY_OFF + plen - GOSSIP_MAC_BYTES, s->ids, grow, 0) ||
            bpf_skb_store_bytes(skb, PAY_OFF + inf + 1, &new_count, 2, 0) ||
            bpf_skb_store_bytes(skb, PAY_OFF + GOSSIP_OFF_BODY_LEN, &new_body, 2, 0))
            return HB_REWRITE_ERRORS;
    } else {
        __u32 bits_off = inf + 4, nbytes = BOUNDED(pk->nbytes, 0x7ff), hashes = pk->hashes;
        if (nbytes == 0)
            return HB_REWRITE_ERRORS;
        bloom_add(s, bits_off, nbytes, hashes, cfg->self_id);
#pragma unroll
        for (int t = 0; t < HB_FANOUT_MAX; t++) {
            if (t >= chosen)
                break;
            bloom_add(s, bits_off, nbytes, hashes, s->dests[t].id);
        }
        if (bpf_skb_store_bytes(skb, PAY_OFF + bits_off, &s->buf[bits_off], nbytes, 0))
            return HB_REWRITE_ERRORS;
    }

    /* ---- the MAC over header and body, with key 0 ---- */
    struct hb_key_id k0 = {.ifindex = ifindex, .index = 0};
    struct b2b_key *key = hb_keys.lookup(&k0);
    if (!key)
        return HB_REWRITE_ERRORS;
    if (!key->prekeyed)
        b2b_prekey(&s->b2b, key);
    if (new_plen < GOSSIP_HEADER_BYTES + GOSSIP_MAC_BYTES ||
        b2b_mac(skb, 1, &s->b2b, key, PAY_OFF, new_plen - GOSSIP_MAC_BYTES, 1) ||
        bpf_skb_store_bytes(skb, PAY_OFF + new_plen - GOSSIP_MAC_BYTES, s->b2b.h, GOSSIP_MAC_BYTES, 0))
        return HB_REWRITE_ERRORS;
    return HB_HANDLED;
}

/* Headers as a sendto would make them (a fresh IPv4 header: DF, TTL 64, a random id), one copy per target. The
 * sums are taken once without the per-target fields; each target adds its address (and port). */
static __always_inline enum hb_stat fan_out(struct __sk_buff *skb, __u32 ifindex, const struct hb_config *cfg,
                                            struct hb_scratch *s)
{
    struct hb_pkt *pk = &s->pkt;
    __u32 new_plen = pk->new_plen & 0x7ff;
    __u32 chosen = pk->chosen;
    if (new_plen == 0 || bpf_skb_load_bytes(skb, PAY_OFF, s->buf, new_plen))
        return HB_REWRITE_ERRORS;
    __u64 pay = payload_sum(s, new_plen);
    if (pay == ~0ULL)
        return HB_REWRITE_ERRORS;
    struct hb_out *o = &s->out;
    struct ethhdr *oeth = (void *)o->bytes;
    struct iphdr *oip = (void *)&o->bytes[IP_OFF];
    struct udphdr *oudp = (void *)&o->bytes[UDP_OFF];
    __builtin_memcpy(oeth->h_source, cfg->mac, 6);
    oeth->h_proto = bpf_htons(ETH_P_IP);
    oip->version = 4;
    oip->ihl = 5;
    oip->tos = 0;
    oip->tot_len = bpf_htons(20 + 8 + new_plen);
    oip->id = (__u16)bpf_get_prandom_u32();
    oip->frag_off = bpf_htons(0x4000); /* DF, as the node's socket sends */
    oip->ttl = 64;
    oip->protocol = IPPROTO_UDP;
    oip->check = 0;
    oip->saddr = cfg->addr;
    oip->daddr = 0;
    oudp->source = cfg->port;
    oudp->len = bpf_htons(8 + new_plen);
    __u64 ipbase = 0;
#pragma unroll
    for (int w = 0; w < 10; w++) {
        __u16 half;
        __builtin_memcpy(&half, &o->bytes[IP_OFF + 2 * w], 2);
        ipbase += half;
    }
    __u64 pbase = sum32(cfg->addr) + bpf_htons(IPPROTO_UDP) + oudp->len; /* pseudo header without daddr */
    __u64 ubase = pay + pbase + oudp->source + oudp->len;
    __u32 partial = pk->partial;

    __u32 mark = skb->mark;
    __u64 copies = 0, errors = 0;
#pragma clang loop unroll(disable)
    for (__u32 t = 0; t < HB_FANOUT_MAX; t++) {
        if (t >= chosen)
            break;
        struct hb_dest *d = &s->dests[BOUNDED(t, HB_FANOUT_MAX - 1)];
        __builtin_memcpy(oeth->h_dest, d->mac, 6);
        oip->daddr = d->addr;
        oip->check = ~fold(ipbase + sum32(d->addr));
        oudp->dest = d->port;
        if (partial) {
            oudp->check = fold(pbase + sum32(d->addr));
        } else {
            __u16 c = ~fold(ubase + sum32(d->addr) + d->port);
            oudp->check = c ? c : 0xffff;
        }
        if (bpf_skb_store_bytes(skb, 0, o->bytes, HDRS_BYTES, 0)) {
            errors++;
            continue;
        }
        skb->mark = BC_MARK; /* the broadcaster, if on this egress, lets it through unjudged */
        if (bpf_clone_redirect(skb, ifindex, 0) < 0)
            errors++;
        else
            copies++;
    }
    skb->mark = mark;
    pk->copies = copies;
    pk->errors = errors;
    return HB_HANDLED;
}

int tc_hbplane_send(struct __sk_buff *skb)
{
    __u32 ifindex = skb->ifindex, zero = 0;
    int action = TC_ACT_UNSPEC;
    struct hb_config *cfg = hb_config.lookup(&ifindex);
    struct hb_scratch *s = hb_scratch.lookup(&zero);
    if (!cfg || !s)
        return action;
    s->pkt.copies = s->pkt.errors = 0;
    enum hb_stat verdict = send(skb, ifindex, cfg, s, &action);
    if (verdict == HB_HANDLED) {
        asm volatile("" ::: "memory"); /* everything from here on is read back from the scratch */
        verdict = fan_out(skb, ifindex, cfg, s);
    }
    struct hb_stats *stats = hb_stats.lookup(&ifindex);
    count(stats, verdict, 1);
    count(stats, HB_COPIES, s->pkt.copies);
    count(stats, HB_CLONE_ERRORS, s->pkt.errors);
    return action;
}
