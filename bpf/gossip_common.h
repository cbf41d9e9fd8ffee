/* Shared between the BPF programs in this directory and their Python loaders.
 *
 * Every struct here has a ctypes mirror in bpf/_structs.py; the tests compile each program and compare sizes and
 * field offsets, so a change here must be made there too. Integers are host order unless the field is __be*.
 * This header holds no map definitions: each program declares its own maps (bcc wants them in the .c file).
 */
#ifndef GOSSIP_COMMON_H
#define GOSSIP_COMMON_H

#include <linux/types.h>

/* ---- wire format v1 (docs/wire-format.md), fixed header at the start of the UDP payload ---- */
#define GOSSIP_MAGIC          0x4750 /* "GP" */
#define GOSSIP_FORMAT_VERSION 1
#define GOSSIP_HEADER_BYTES   24
#define GOSSIP_MAC_BYTES      16

#define GOSSIP_OFF_MAGIC    0
#define GOSSIP_OFF_VERSION  2
#define GOSSIP_OFF_TYPE     3
#define GOSSIP_OFF_CLUSTER  4
#define GOSSIP_OFF_ORIGIN   8
#define GOSSIP_OFF_FLAGS    12
#define GOSSIP_OFF_BODY_LEN 14
#define GOSSIP_OFF_SEQ      16

enum gossip_type {
    GOSSIP_HEARTBEAT = 1,
    GOSSIP_METADATA = 2,
    GOSSIP_SWAP_REQ = 3,
    GOSSIP_SWAP_RESP = 4,
    GOSSIP_LEAVE = 5, /* not judged by the fast path: passed to the node */
    /* SWIM (docs/wire-format.md). PING, PING_REQ, STATE and GOSSIP carry the sender's message sequence and are
     * judged against the newest of that type the node took from the origin (fp_swim). ACK and NACK carry the
     * sequence of the probe they answer, not the sender's: not judged, passed to the node. */
    GOSSIP_PING = 6,
    GOSSIP_ACK = 7,
    GOSSIP_PING_REQ = 8,
    GOSSIP_NACK = 9,
    GOSSIP_STATE = 10,
    GOSSIP_GOSSIP = 11,
};

/* The header exactly as on the wire (naturally aligned, no padding). */
struct gossip_hdr {
    __be16 magic;
    __u8 version;
    __u8 type;
    __be32 cluster;
    __be32 origin;
    __be16 flags;
    __be16 body_len;
    __be64 seq;
};

/* ---- XDP fast path (xdp_fastpath.c): every map is keyed by the ingress ifindex of a node's veth ----
 * The map sizes are chosen when the program is loaded: bpf/fastpath.py passes -DFP_MAX_NODES, -DFP_MAX_HEARTBEATS
 * and -DFP_MAX_SWIM sized to the run (one program serving N nodes needs N x N (node, origin) pairs). The values
 * here are the defaults of a load that names no size. */
#ifndef FP_MAX_NODES
#define FP_MAX_NODES 4096 /* interfaces one program serves */
#endif
#ifndef FP_MAX_HEARTBEATS
#define FP_MAX_HEARTBEATS 131072 /* (node, origin) pairs; LRU: an evicted pair only means the next copy passes */
#endif
#ifndef FP_MAX_SWIM
#define FP_MAX_SWIM 131072 /* (node, origin) pairs of SWIM sequences; allocated as written, so a heartbeat run pays
                            * only the buckets */
#endif

/* fp_config: ifindex -> what the node on that interface listens for. No entry: the program passes everything. */
struct fp_config {
    __u32 cluster_id; /* the 32-bit cluster id from the header */
    __u16 port;       /* the node's UDP port */
    __u16 pad;
};

/* fp_heartbeat: (ifindex, origin) -> highest heartbeat seq the node accepted from origin */
struct fp_hb_key {
    __u32 ifindex;
    __u32 origin;
};

/* fp_swim: (ifindex, origin) -> the newest sequence of each judged SWIM type the node took from origin (0: none
 * yet; a sequence starts at the sender's clock in us). A STATE is written once the node has every part of it:
 * until then its other parts must pass. A plain hash, not an LRU: nothing is evicted, and a full map only means
 * the node's next origins are not judged (counted as swim_refused). */
struct fp_swim {
    __u64 ping;
    __u64 ping_req;
    __u64 state;
    __u64 gossip;
};

/* fp_writes: ifindex -> what the node's writer did to fp_heartbeat and fp_swim; written by userspace only (one
 * writer per interface), never by the program. An eviction is counted when the node accepts a heartbeat from an
 * origin whose pair it wrote before and finds the pair gone: only the LRU removes a node's pairs while it runs. */
struct fp_writes {
    __u64 inserted; /* pairs created (first heartbeat accepted from an origin, or again after an eviction) */
    __u64 evicted;  /* pairs the LRU had evicted, found missing at the origin's next accepted heartbeat */
    __u64 swim_refused; /* SWIM sequences not written because fp_swim was full */
};

/* fp_metadata: ifindex -> the metadata version the node holds; versions order by (seq, origin) */
struct fp_version {
    __u64 seq;
    __u32 origin;
    __u32 pad;
};

/* fp_stats (per-CPU): ifindex -> one counter per verdict. "passed" is the sum of the passed_<type> counters. */
enum fp_stat {
    FP_DROP_FOREIGN_CLUSTER = 0,
    FP_DROP_UNKNOWN_VERSION,
    FP_DROP_MALFORMED,
    FP_DROP_DUPLICATE,
    FP_DROP_STALE,
    FP_PASS_HEARTBEAT,
    FP_PASS_METADATA,
    FP_PASS_SWAP_REQ,
    FP_PASS_SWAP_RESP,
    FP_PASS_SWIM,  /* PING, PING_REQ, STATE or GOSSIP newer than what the node took from its origin */
    FP_PASS_OTHER, /* not judged: not IPv4/UDP, another port, a fragment, IP options; LEAVE, ACK, NACK, unknown */
    FP_STAT_COUNT,
};

struct fp_stats {
    __u64 count[FP_STAT_COUNT];
};

/* ---- TC egress broadcaster (tc_broadcast.c) ---- */
#define BC_MAX_TARGETS 32
#define BC_MAX_SLOTS   1024
#define BC_MARK        0x42430001 /* skb->mark of a clone on its own pass through the program */
#define BC_ID_HEAD     GOSSIP_HEADER_BYTES /* identity: the datagram's gossip header ... */
#define BC_ID_TAG      GOSSIP_MAC_BYTES    /* ... and its MAC, the last bytes of the UDP payload */

struct bc_target {
    __be32 addr;
    __be16 port;
    __u8 mac[6];
};

/* bc_slots: one slot per attached interface, in an mmap-able array shared with the sending process, so arming
 * is plain memory writes (no syscall). Arming is a seqlock: userspace makes `generation` odd, writes sport..targets
 * (the "arm block", one memcpy), makes `generation` even (g) and sets `armed` = g last; then it sends the datagram
 * to targets[0]. The program takes the slot by exchanging `armed` with 0, emits copies only if the datagram is the
 * armed one by its own identity (source port, destination, UDP length, gossip header, MAC), re-checks before each
 * copy that `generation` is still g (the block was not rewritten under it), and finally writes `failed`, then
 * `done` = g. A datagram that is not the armed one (an older or delayed one) is passed unchanged to its own
 * destination and counted. */
struct bc_slot {
    __u64 armed;      /* generation of the pending broadcast, 0 none; written last by userspace, zeroed on take */
    __u64 generation; /* seqlock word: odd while userspace writes the arm block (64-bit: bcc's BPF atomics are) */
    __u32 done;       /* generation the program completed (low 32 bits); "failed" belongs to it */
    __u32 failed;     /* bit i set: no copy to targets[i] could be made (userspace resends it) */
    __u32 ifindex;    /* the interface owning the slot, 0 if free */
    __u16 enabled;    /* 1 while the program is attached to ifindex */
    __be16 sport;     /* arm block from here: UDP source port of the socket that sends the armed datagram */
    __u16 count;      /* targets in use, 2..BC_MAX_TARGETS */
    __u16 udp_len;    /* UDP length (header + payload) of the armed datagram */
    __u8 head[BC_ID_HEAD]; /* its gossip header as sent */
    __u8 tag[BC_ID_TAG];   /* its MAC */
    __u32 pad;
    struct bc_target targets[BC_MAX_TARGETS];
};

enum bc_stat {
    BC_BROADCASTS = 0, /* armed datagrams turned into a broadcast */
    BC_COPIES,         /* datagrams that left per broadcast, the original included */
    BC_CLONE_ERRORS,   /* bpf_clone_redirect failed to make a copy: the sender resends it */
    BC_EGRESS_DROPS,   /* a copy was dropped on egress (a fault filter, a full queue): not resent, like a sendto */
    BC_MISMATCHES,     /* a slot was armed but the datagram came from another port or went to another destination */
    BC_STALE,          /* same port and destination, another identity (older or delayed datagram): passed as is */
    BC_TORN,           /* userspace rewrote the slot during a broadcast: the copies not yet made were left out */
    BC_PASSED,         /* everything else, passed unchanged */
    BC_STAT_COUNT,
};

struct bc_stats {
    __u64 count[BC_STAT_COUNT];
};

/* ---- fault injection (faults.c), attached to both clsact hooks of the bridge-side end of each node's veth ----
 * There, TC egress carries what goes to the node (before its XDP program sees it) and TC ingress what comes from
 * it, which is what the to_node / from_node names below mean. Every map is keyed by that root-side ifindex. */

/* ft_loss: ifindex -> drop threshold; drop when prandom_u32 < threshold, so threshold = p * 2^32 (2^32 drops
 * everything). Key FT_GLOBAL is the whole network's rule, judged once per packet on its way to the receiver;
 * an interface's own key is its node's rule, judged on packets from it and on packets to it. */
#define FT_GLOBAL 0

/* ft_side: IPv4 address -> partition side (>= 1). Drop when both ends have a side and the sides differ. */

/* ft_node_mac: ifindex -> the node's MAC, given by userspace at attach or learned by the from_node program from
 * the source MAC of what the node sends. The bridge floods a frame for a MAC it has not learned out of every
 * port; toward a node whose MAC is known, a unicast frame for another MAC is such a flood copy: not for this
 * node, neither judged nor counted. */
struct ft_mac {
    __u8 addr[6];
    __u16 pad;
};

/* ft_stats (per-CPU): ifindex -> one counter per direction and verdict; unicast IPv4 only (nothing else is
 * judged). In each direction seen = passed + the drops. */
enum ft_stat {
    FT_FROM_NODE_SEEN = 0,
    FT_FROM_NODE_DROP_LOSS,
    FT_FROM_NODE_PASSED,
    FT_TO_NODE_SEEN,
    FT_TO_NODE_DROP_LOSS,
    FT_TO_NODE_DROP_PARTITION,
    FT_TO_NODE_PASSED,
    FT_STAT_COUNT,
};

struct ft_stats {
    __u64 count[FT_STAT_COUNT];
};

#define FT_MAX_RULES 16384

#endif /* GOSSIP_COMMON_H */
