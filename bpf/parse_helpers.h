/* Header parsing shared by every program: a cursor over the packet, and one parser per header that does exactly
 * one bounds check, advances the cursor past its header and returns it (NULL when it does not fit). */
#ifndef XDP_GOSSIP_PARSE_HELPERS_H
#define XDP_GOSSIP_PARSE_HELPERS_H

#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>

struct cursor {
    void *pos;
    void *end;
};

static __always_inline struct ethhdr *parse_eth(struct cursor *c)
{
    struct ethhdr *eth = c->pos;
    if ((void *)(eth + 1) > c->end)
        return NULL;
    c->pos = eth + 1;
    return eth;
}

/* Only option-less headers: a sender of ours never sets IP options, so anything else goes to the stack. */
static __always_inline struct iphdr *parse_ipv4(struct cursor *c)
{
    struct iphdr *ip = c->pos;
    if ((void *)(ip + 1) > c->end)
        return NULL;
    c->pos = ip + 1;
    return ip;
}

static __always_inline struct udphdr *parse_udp(struct cursor *c)
{
    struct udphdr *udp = c->pos;
    if ((void *)(udp + 1) > c->end)
        return NULL;
    c->pos = udp + 1;
    return udp;
}

#endif
